"""
Write a synthetic-faces dataset (the project's embedded default data).

    python preprocess/make_synthetic_dataset.py --out DIR --num_images 30000 \
        --image_size 64 --seed 0 [--attributes independent]

Layout (DESIGN §4): ``00000.png`` ..., ``attributes.pt`` (float [N, 20] of
0/1), ``attributes.txt`` (CelebA text format) and ``identities.json`` (each
face's identity and attributes, enough to re-render it or any counterfactual).
Face i depends only on (seed, i), so different seeds give disjoint identities:
a held-out set is just another seed. The dataset is built in a temporary
directory beside DIR and renamed at the end, so an interrupted run leaves no
partial dataset.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from preprocess.attributes import (  # noqa: E402
    ATTRIBUTE_NAMES,
    atomic_write,
    image_filename,
    replace_directory,
    write_attributes,
)
from preprocess.synthetic_faces import (  # noqa: E402
    ATTRIBUTE_SAMPLERS,
    IDENTITIES_JSON,
    example_face,
    identities_header,
    render,
)

CHUNK = 200


def _render_chunk(job):
    """Render faces [start, stop) of dataset ``seed`` into ``directory``.

    :return: list of (identity, attributes list) for those faces.
    """
    directory, seed, start, stop, count, image_size, sampling = job
    faces = []
    for index in range(start, stop):
        identity, attributes = example_face(seed, index, sampling)
        pixels = render(identity, attributes, image_size)
        Image.fromarray(pixels).save(os.path.join(directory, image_filename(index, count)))
        faces.append((identity, attributes.tolist()))
    return faces


def make_dataset(out, num_images, image_size=64, seed=0, workers=2, overwrite=False, progress=True,
                 sampling="celeba"):
    """
    Render ``num_images`` faces of dataset ``seed`` into the directory ``out``.

    :param workers: processes rendering in parallel (1 renders in this process).
    :param overwrite: replace an existing ``out``; otherwise it is an error.
    :param sampling: attribute statistics, "celeba" (correlated like CelebA: the
        training data) or "independent" (fair coins: for an evaluation classifier).
    """
    if num_images < 1:
        raise ValueError(f"--num_images must be positive, got {num_images}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    example_face(seed, 0, sampling)  # a bad sampling name fails before anything is written
    render(example_face(seed, 0)[0], np.zeros(len(ATTRIBUTE_NAMES), dtype=np.int64), image_size)
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"{out} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    building = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.building-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(building, 0o777 & ~umask)  # mkdtemp makes it private
    try:
        jobs = [
            (building, seed, start, min(start + CHUNK, num_images), num_images, image_size, sampling)
            for start in range(0, num_images, CHUNK)
        ]
        faces = []
        with tqdm(total=num_images, desc="rendering", disable=not progress) as bar:
            if workers > 1:
                # fork starts instantly (no re-import of torch in the workers).
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                with multiprocessing.get_context(method).Pool(workers) as pool:
                    for chunk in pool.imap(_render_chunk, jobs):
                        faces.extend(chunk)
                        bar.update(len(chunk))
            else:
                for job in jobs:
                    chunk = _render_chunk(job)
                    faces.extend(chunk)
                    bar.update(len(chunk))
        filenames = [image_filename(i, num_images) for i in range(num_images)]
        write_attributes(building, filenames, np.array([a for _, a in faces]))
        record = identities_header(seed, image_size, sampling)
        record["faces"] = [
            {"file": name, "identity": identity, "attributes": attributes}
            for name, (identity, attributes) in zip(filenames, faces)
        ]
        atomic_write(os.path.join(building, IDENTITIES_JSON), json.dumps(record, separators=(",", ":")).encode())
        replace_directory(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Render a synthetic-faces dataset with ground-truth attributes.")
    parser.add_argument("--out", required=True, help="dataset directory to create")
    parser.add_argument("--num_images", type=int, default=30000)
    parser.add_argument("--image_size", type=int, default=64, help="32..256")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; another seed gives other people")
    parser.add_argument("--attributes", choices=sorted(ATTRIBUTE_SAMPLERS), default="celeba",
                        help="attribute statistics: CelebA-like correlations (the training data) or "
                             "independent fair coins within the renderer's hard rules (for an "
                             "evaluation classifier that must not read one attribute from another)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        out = make_dataset(args.out, args.num_images, args.image_size, args.seed, args.workers, args.overwrite,
                           sampling=args.attributes)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.num_images} faces ({args.image_size}x{args.image_size}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
