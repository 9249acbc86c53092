"""
Write a synthetic-faces dataset (the project's embedded default data).

    python preprocess/make_synthetic_dataset.py --out DIR --num_images 30000 \
        --image_size 64 --seed 0 [--attributes independent]

Layout (docs/design.md, "Dataset folder"): ``00000.png`` ..., ``attributes.pt`` (float [N, 20] of
0/1), ``attributes.txt`` (CelebA text format) and ``identities.json`` (each
face's identity and attributes, enough to re-render it or any counterfactual).
Face i depends only on (seed, i), so different seeds give disjoint identities:
a held-out set is just another seed. The dataset is built in a temporary
directory beside DIR (``.DIR.building-<pid>-*``) and renamed at the end, so
an interrupted run leaves no partial dataset; the folder a killed run (SIGKILL,
power loss) could not remove is removed by the next run for the same DIR, which
says so. Ctrl-C prints one line, and the rendering processes die with the main one.
--overwrite replaces only a dataset this script wrote (its ``.cyclediff-output.json``
marker, or for datasets from before the marker an identities.json of this format
beside nothing but the dataset's own files): guided_diffusion/safe_paths.py.
"""

import json
import multiprocessing
import os
import re
import shutil
import signal
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

from guided_diffusion import safe_paths
from guided_diffusion.atomic import atomic_write
from preprocess.attributes import (
    ATTRIBUTE_NAMES,
    image_filename,
    write_attributes,
)
from preprocess.synthetic_faces import (
    ATTRIBUTE_SAMPLERS,
    IDENTITIES_FORMAT,
    IDENTITIES_JSON,
    example_face,
    identities_header,
    person_view,
    render,
)

CHUNK = 200


def _worker_init(parent_pid):
    """Rendering processes leave Ctrl-C and SIGTERM to the main process (which stops them and
    cleans up), and on Linux die with it, so a killed run leaves no process writing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


TOOL = "make_synthetic_dataset.py"
_DATASET_FILE = re.compile(r"(\d+\.png|attributes\.pt|attributes\.txt|identities\.json)")


def is_legacy_dataset(folder):
    """A dataset this script wrote before it marked its output: an identities.json of this format and
    nothing but the dataset's own files."""
    try:
        with open(os.path.join(folder, IDENTITIES_JSON)) as f:
            if json.load(f).get("format") != IDENTITIES_FORMAT:
                return False
    except (OSError, ValueError, AttributeError):
        return False
    return all(_DATASET_FILE.fullmatch(name) for name in safe_paths.listing(folder))


def remove_stale_builds(out):
    """The ``.NAME.building-*`` folders a killed run left beside ``out``, removed (safe_paths)."""
    return safe_paths.remove_stale_builds(out)


def _render_chunk(job):
    """Render faces [start, stop) of dataset ``seed`` into ``directory``.

    :return: list of (identity, attributes list) for those faces.
    """
    directory, seed, start, stop, count, image_size, sampling, views_per_person = job
    faces = []
    for index in range(start, stop):
        if views_per_person:
            identity, attributes = person_view(seed, index // views_per_person, index % views_per_person, sampling)
        else:
            identity, attributes = example_face(seed, index, sampling)
        pixels = render(identity, attributes, image_size)
        Image.fromarray(pixels).save(os.path.join(directory, image_filename(index, count)))
        faces.append((identity, attributes.tolist()))
    return faces


def make_dataset(out, num_images, image_size=64, seed=0, workers=2, overwrite=False, progress=True,
                 sampling="celeba", views_per_person=0):
    """
    Render ``num_images`` faces of dataset ``seed`` into the directory ``out``.

    :param workers: processes rendering in parallel (1 renders in this process).
    :param overwrite: replace an existing ``out``; otherwise it is an error.
    :param sampling: attribute statistics, "celeba" (correlated like CelebA: the
        training data) or "independent" (fair coins: for an evaluation classifier).
    :param views_per_person: 0 for one face per person (face i is person i); K > 0 for K views of
        each person (face i is view i % K of person i // K: :func:`person_view`), the data of the
        identity networks. ``identities.json`` then gives each face its ``person``.
    """
    if views_per_person < 0:
        raise ValueError(f"--views_per_person must be >= 0, got {views_per_person}")
    if views_per_person and num_images % views_per_person:
        raise ValueError(f"--num_images {num_images} is not a multiple of --views_per_person {views_per_person}")
    if num_images < 1:
        raise ValueError(f"--num_images must be positive, got {num_images}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    example_face(seed, 0, sampling)  # a bad sampling name fails before anything is written
    render(example_face(seed, 0)[0], np.zeros(len(ATTRIBUTE_NAMES), dtype=np.int64), image_size)
    safe_paths.check_new_folder(out, "--out", TOOL, overwrite, recognise=is_legacy_dataset)
    out = os.path.abspath(out)
    building = safe_paths.start_building(out)
    try:
        jobs = [
            (building, seed, start, min(start + CHUNK, num_images), num_images, image_size, sampling,
             views_per_person)
            for start in range(0, num_images, CHUNK)
        ]
        faces = []
        with tqdm(total=num_images, desc="rendering", disable=not progress) as bar:
            if workers > 1:
                # fork starts instantly (no re-import of torch in the workers).
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                context = multiprocessing.get_context(method)
                with context.Pool(workers, initializer=_worker_init, initargs=(os.getpid(),)) as pool:
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
        if views_per_person:
            record["views_per_person"] = views_per_person
            for index, face in enumerate(record["faces"]):
                face["person"] = index // views_per_person
        atomic_write(os.path.join(building, IDENTITIES_JSON), json.dumps(record, separators=(",", ":")))
        safe_paths.publish(building, out, TOOL, recognise=is_legacy_dataset)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out


def main(argv=None):
    parser = safe_paths.OneLineParser(description="Render a synthetic-faces dataset with ground-truth attributes.")
    parser.add_argument("--out", required=True, help="dataset directory to create")
    parser.add_argument("--num_images", type=int, default=30000)
    parser.add_argument("--image_size", type=int, default=64, help="32..256")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; another seed gives other people")
    parser.add_argument("--attributes", choices=sorted(ATTRIBUTE_SAMPLERS), default="celeba",
                        help="attribute statistics: CelebA-like correlations (the training data) or "
                             "independent fair coins within the renderer's hard rules (for an "
                             "evaluation classifier that must not read one attribute from another)")
    parser.add_argument("--views_per_person", type=int, default=0,
                        help="K > 0: K views of each person (face i is person i // K; pose, light, "
                             "background, clothes and attributes redrawn per view), for the identity "
                             "networks; 0: one face per person")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it is a dataset this script wrote (nothing else is ever replaced)")
    args = parser.parse_args(argv)
    previous_term = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM cleans up like Ctrl-C
    try:
        out = make_dataset(args.out, args.num_images, args.image_size, args.seed, args.workers, args.overwrite,
                           sampling=args.attributes, views_per_person=args.views_per_person)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        return safe_paths.report_input_error(e)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {os.path.abspath(args.out)} not written (nor changed)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    print(f"wrote {args.num_images} faces ({args.image_size}x{args.image_size}) to {out}")
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
