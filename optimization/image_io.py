"""Reading and writing images for the editor: files of any size and mode, dataset folders, and the
synthetic faces rendered on the fly ("synthetic:SEED")."""
import os

import numpy as np
import torch
from PIL import Image

from .cli_checks import synthetic_seed  # noqa: F401 (re-exported)
from .visualization import save_image_atomic


def load_image_file(path, image_size):
    """Any image file -> [1, 3, S, S] float in [-1, 1] (centre crop, antialiased resize)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            im = im.convert("RGB")
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.LANCZOS)
    return to_tensor(np.array(im))


def to_tensor(array):
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(x):
    """float [N, 3, H, W] in [-1, 1] -> uint8 numpy [N, H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_png(array, path):
    """Write a uint8 [H, W, 3] image atomically."""
    save_image_atomic(Image.fromarray(array), path)


def read_dataset_labels(dataset_dir, num_attributes=20):
    """The attribute table [N, 20] of a dataset folder, or None when it has no attributes.pt.

    ValueError (one line, naming the file) when the file is unreadable, not a 2-D tensor, has
    another number of columns, holds values other than 0/1 (CelebA's -1/+1 convention named as
    such), or has another number of rows than the folder has numbered images."""
    from guided_diffusion.attribute_table import ATTRIBUTES_FILE, read_attribute_table
    from guided_diffusion.image_files import numbered_image_files

    path = os.path.join(dataset_dir, ATTRIBUTES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        table = read_attribute_table(dataset_dir, num_attributes=num_attributes, expected_by="the editor")
    except ValueError as err:
        raise ValueError(_attribute_hint(path, err)) from None
    images = numbered_image_files(dataset_dir)
    if len(images) != len(table):
        raise ValueError(f"{path} has {len(table)} rows but {dataset_dir} has {len(images)} numbered images: "
                         f"row i must hold the labels of image i")
    return table


def _attribute_hint(path, err):
    """The attribute reader's message, with what to do for the usual mistakes."""
    message = str(err)
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return message
    if isinstance(table, torch.Tensor) and table.numel() and table.dim() == 2:
        values = set(torch.unique(table.float()).tolist())
        if values <= {-1.0, 1.0} and -1.0 in values:
            return (f"{path} holds -1/+1 labels (CelebA's convention); the editor needs 0/1: "
                    f"convert with (table + 1) / 2, or prepare the folder with preprocess/prepare_images.py")
        if values <= {-1.0, 0.0, 1.0} and -1.0 in values:
            return f"{path} holds -1 values; the editor needs 0/1 labels (1 = the attribute is present)"
        if "0 or 1" in message:
            bad = sorted(v for v in values if v not in (0.0, 1.0))[:3]
            return f"{path}: attribute values must be 0 or 1; found {', '.join(f'{v:g}' for v in bad)}"
    return message


def dataset_image_path(dataset_dir, index, labels=None):
    """The file of image `index` of a dataset folder; FileNotFoundError / ValueError naming what is wrong."""
    from guided_diffusion.image_files import find_numbered_image

    if not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset directory not found: {dataset_dir}")
    if not os.path.isdir(dataset_dir):
        raise ValueError(f"--dataset_dir {dataset_dir} is a file, not a dataset directory")
    if labels is not None and index >= len(labels):
        raise ValueError(f"image index {index} out of range: {dataset_dir} has {len(labels)} images (0-{len(labels) - 1})")
    path = find_numbered_image(dataset_dir, index)
    if path is None:
        raise FileNotFoundError(f"no image {index:05d}.png/.jpg in {dataset_dir}")
    return path


def load_dataset_item(dataset_dir, index, image_size, labels=False):
    """(image [1, 3, S, S] in [-1, 1], attributes [20] or None) for `index` of a dataset.

    `dataset_dir` is a dataset folder (docs/design.md, "Dataset folder") or 'synthetic:SEED' (rendered on
    the fly).
    `labels`: the folder's table when the caller already read it (`read_dataset_labels`), else read here.
    """
    seed = synthetic_seed(dataset_dir)
    if seed is not None:
        from preprocess.synthetic_faces import example_face, render
        identity, attributes = example_face(seed, index)
        return to_tensor(render(identity, attributes, image_size)), torch.as_tensor(attributes, dtype=torch.float32)
    if labels is False:
        if not os.path.isdir(dataset_dir):
            dataset_image_path(dataset_dir, index)  # raises the right error
        labels = read_dataset_labels(dataset_dir)
    path = dataset_image_path(dataset_dir, index, labels)
    return load_image_file(path, image_size), (None if labels is None else labels[index].float())
