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
power loss) could not remove is removed by the next run for the same DIR.
Ctrl-C prints one line, and the rendering processes die with the main one.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile

import numpy as np
from PIL import Image
from tqdm import tqdm

from guided_diffusion.atomic import atomic_write
from preprocess.attributes import (
    ATTRIBUTE_NAMES,
    image_filename,
    replace_directory,
    write_attributes,
)
from preprocess.synthetic_faces import (
    ATTRIBUTE_SAMPLERS,
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


def _building_prefix(out):
    return f".{os.path.basename(out)}.building-"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_builds(out):
    """Remove the ``.NAME.building-*`` folders beside ``out`` that no running process owns (left by
    a killed run); return their paths. A folder whose pid is still alive is kept (a concurrent run)."""
    parent, prefix = os.path.dirname(out), _building_prefix(out)
    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not (name.startswith(prefix) and os.path.isdir(path)):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # older versions wrote no pid: such folders are stale by now
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


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
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"{out} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    for path in remove_stale_builds(out):
        print(f"removed {path}, left by an interrupted run", file=sys.stderr)
    building = tempfile.mkdtemp(dir=parent, prefix=f"{_building_prefix(out)}{os.getpid()}-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(building, 0o777 & ~umask)  # mkdtemp makes it private
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
    parser.add_argument("--views_per_person", type=int, default=0,
                        help="K > 0: K views of each person (face i is person i // K; pose, light, "
                             "background, clothes and attributes redrawn per view), for the identity "
                             "networks; 0: one face per person")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    previous_term = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM cleans up like Ctrl-C
    try:
        out = make_dataset(args.out, args.num_images, args.image_size, args.seed, args.workers, args.overwrite,
                           sampling=args.attributes, views_per_person=args.views_per_person)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
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
