"""
Turn a folder of face images into a dataset directory (docs/design.md, "Dataset folder").

    # CelebA-HQ (1024x1024 images named by HQ index):
    python preprocess/prepare_images.py --input CelebA-HQ-img --out data/celebahq256 \
        --image_size 256 --celeba_attr list_attr_celeba.txt \
        --hq_mapping CelebA-HQ-to-CelebA-mapping.txt
    # CelebA aligned (178x218):
    python preprocess/prepare_images.py --input img_align_celeba --out data/celeba64 \
        --image_size 64 --celeba_attr list_attr_celeba.txt
    # Your own photos, no labels:
    python preprocess/prepare_images.py --input my_faces --out data/mine --image_size 256

Each image is centre-cropped to a square and resized with an antialiasing
filter, then written as ``00000.png`` ... in dataset order: the order of the
attribute rows when annotations are given (CelebA's sorted filenames, or the HQ
index), else the images sorted by name (numerically when names are numbers).
With annotations, ``attributes.pt`` and ``attributes.txt`` are written too.
--input may be any path blobfile reads. The dataset is built in a temporary
directory beside --out (``.OUT.building-<pid>-*``) and renamed at the end: a failed
run leaves nothing, and the folder a killed run could not remove is removed by the
next run for the same --out, which says so. --out may be neither --input nor a folder
containing it; --overwrite replaces only a dataset this script wrote (its
``.cyclediff-output.json`` marker): guided_diffusion/safe_paths.py.
"""

import multiprocessing
import os
import shutil
import sys

import blobfile as bf
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from guided_diffusion import safe_paths
from guided_diffusion.image_files import IMAGE_EXTENSIONS, is_image_file
from preprocess.attributes import (
    image_filename,
    image_sort_key,
    load_celeba_attributes,
    write_attributes,
)


TOOL = "prepare_images.py"
# Larger squares are no face dataset: 16384 px is already 1 GB of pixels per image in memory.
MAX_IMAGE_SIZE = 4096


def list_images(input_dir):
    """Image files directly in ``input_dir`` (blobfile path), in dataset order."""
    if not bf.isdir(input_dir):
        if bf.exists(input_dir):
            raise ValueError(f"--input {input_dir} is a file, not a folder of images")
        raise FileNotFoundError(f"input folder not found: {input_dir}")
    names = [n for n in bf.listdir(input_dir) if is_image_file(n)]
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {input_dir}")
    return sorted(names, key=image_sort_key)


def square_resize(image, image_size):
    """Centre-crop a PIL image to a square and resize it to ``image_size``
    (Lanczos, which low-passes when shrinking)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((image_size, image_size), Image.LANCZOS, reducing_gap=3.0)


def _convert(job):
    source, target, image_size = job
    try:
        with bf.BlobFile(source, "rb") as f:
            image = Image.open(f)
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {source}: {e}") from None
    square_resize(image.convert("RGB"), image_size).save(target)


def _check_readable(path):
    try:
        with Image.open(path) as image:
            image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def _match_rows(input_dir, names, keys, sources, hq):
    """Image file for each annotated row, in row order.

    CelebA rows are matched by file stem (``000001.jpg`` also finds
    ``000001.png``), HQ rows by the number in the file name (``0.jpg``,
    ``00000.png``).
    """
    if hq:
        by_key = {str(int(os.path.splitext(n)[0])): n for n in names if os.path.splitext(n)[0].isdigit()}
    else:
        by_key = {os.path.splitext(n)[0]: n for n in names}
    matched = []
    for key, source in zip(keys, sources):
        name = by_key.get(key if hq else os.path.splitext(key)[0])
        if name is None:
            what = f"HQ image {key}" if hq else key
            raise ValueError(f"{source}: {what} is listed but there is no such image in {input_dir}")
        matched.append(name)
    if len(names) != len(matched):
        raise ValueError(
            f"{input_dir} holds {len(names)} images but the annotations list {len(matched)}; "
            "pass a folder with exactly the annotated images"
        )
    return matched


def prepare(
    input_dir, out, image_size=256, celeba_attr=None, hq_mapping=None, workers=2, overwrite=False, progress=True
):
    """
    Build a dataset directory from a folder of images.

    :return: number of images written; attributes.pt/.txt only with ``celeba_attr``.
    """
    if not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"--image_size must be in [8, {MAX_IMAGE_SIZE}], got {image_size}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if hq_mapping is not None and celeba_attr is None:
        raise ValueError("--hq_mapping needs --celeba_attr (the attributes come from CelebA's file)")
    names = list_images(input_dir)
    attributes = None
    if celeba_attr is not None:
        keys, attributes, sources = load_celeba_attributes(celeba_attr, hq_mapping)
        names = _match_rows(input_dir, names, keys, sources, hq=hq_mapping is not None)
    if "://" not in input_dir:  # every image's header read before any work (remote files are read once, below)
        for name in names:
            _check_readable(os.path.join(input_dir, name))
    local_inputs = [(flag, path) for flag, path in
                     (("--input", input_dir), ("--celeba_attr", celeba_attr), ("--hq_mapping", hq_mapping))
                     if path is not None and "://" not in path]
    safe_paths.check_new_folder(out, "--out", TOOL, overwrite, inputs=local_inputs)
    out = os.path.abspath(out)
    building = safe_paths.start_building(out)
    try:
        count = len(names)
        targets = [image_filename(i, count) for i in range(count)]
        jobs = [(bf.join(input_dir, n), os.path.join(building, t), image_size) for n, t in zip(names, targets)]
        with tqdm(total=count, desc="images", disable=not progress) as bar:
            if workers > 1:
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                with multiprocessing.get_context(method).Pool(workers) as pool:
                    for _ in pool.imap(_convert, jobs, chunksize=16):
                        bar.update(1)
            else:
                for job in jobs:
                    _convert(job)
                    bar.update(1)
        if attributes is not None:
            write_attributes(building, targets, attributes)
        safe_paths.publish(building, out, TOOL)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return count


def main(argv=None):
    parser = safe_paths.OneLineParser(description="Square, resized, renamed face images (+ attributes) for training.")
    parser.add_argument("--input", required=True, help="folder of images (any blobfile path)")
    parser.add_argument("--out", required=True, help="dataset directory to create")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--celeba_attr", default=None, help="list_attr_celeba.txt (omit for unlabelled images)")
    parser.add_argument("--hq_mapping", default=None, help="CelebA-HQ-to-CelebA-mapping.txt (CelebA-HQ images)")
    parser.add_argument("--workers", type=int, default=2, help="processes converting images")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it is a dataset this script wrote (nothing else is ever replaced)")
    args = parser.parse_args(argv)
    try:
        count = prepare(
            args.input, args.out, args.image_size, args.celeba_attr, args.hq_mapping, args.workers, args.overwrite
        )
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        return safe_paths.report_input_error(e)
    print(f"wrote {count} images ({args.image_size}x{args.image_size}) to {args.out}")
    if args.celeba_attr is None:
        print("no annotations given: no attributes.pt written; the editor will estimate attributes with the classifier")
    return 0


if __name__ == "__main__":
    sys.exit(main())
