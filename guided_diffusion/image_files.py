"""
Image files of a folder: which names count as images, and the dataset
folder's numbering (image i is ``00000.png`` ... with i as its number, more
digits when the dataset needs them; ``.jpg`` and the others below work too).
"""

import os

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def is_image_file(name):
    """Whether ``name`` has one of IMAGE_EXTENSIONS (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _check_directory(directory, what):
    if not os.path.exists(directory):
        raise FileNotFoundError(f"{what} not found: {directory}")
    if not os.path.isdir(directory):
        raise ValueError(f"{what} is not a directory: {directory}")


def list_image_files(data_dir):
    """Sorted paths of the images directly inside ``data_dir``; clear errors when there are none."""
    _check_directory(data_dir, "data directory")
    names = sorted(n for n in os.listdir(data_dir) if is_image_file(n))
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in data directory {data_dir}")
    return [os.path.join(data_dir, n) for n in names]


def numbered_image_files(data_dir):
    """
    Paths of a dataset folder's numbered images, path i being image i; the
    numbers must run from 0 to N-1 without gaps or repeats. Images with other
    names are ignored.
    """
    _check_directory(data_dir, "dataset directory")
    by_index = {}
    for name in os.listdir(data_dir):
        stem = os.path.splitext(name)[0]
        if is_image_file(name) and stem.isdigit():
            if int(stem) in by_index:
                raise ValueError(f"{data_dir}: two images with index {int(stem)}")
            by_index[int(stem)] = os.path.join(data_dir, name)
    if not by_index:
        raise ValueError(f"{data_dir}: no images named 00000.png (or .jpg) ...")
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise ValueError(f"{data_dir}: image {missing[0]} is missing (images must be numbered 0 to N-1 without gaps)")
    return [by_index[i] for i in range(len(by_index))]


def find_numbered_image(data_dir, index):
    """Path of image ``index`` of a dataset folder (``00007.png``, ``00007.jpg``, ...), or None."""
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(data_dir, f"{index:05d}{ext}")
        if os.path.isfile(path):
            return path
    return None
