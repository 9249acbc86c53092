"""Reading and writing images for the editor: files of any size and mode, dataset folders, and the
synthetic faces rendered on the fly ("synthetic:SEED")."""
import os

import numpy as np
import torch
from PIL import Image

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


def load_dataset_item(dataset_dir, index, image_size):
    """(image [1, 3, S, S] in [-1, 1], attributes [20] or None) for `index` of a dataset.

    `dataset_dir` is a dataset folder (docs/design.md, "Dataset folder") or 'synthetic:SEED' (rendered on
    the fly).
    """
    if dataset_dir.startswith("synthetic"):
        from preprocess.synthetic_faces import example_face, render
        seed = int(dataset_dir.split(":", 1)[1]) if ":" in dataset_dir else 1000
        identity, attributes = example_face(seed, index)
        return to_tensor(render(identity, attributes, image_size)), torch.as_tensor(attributes, dtype=torch.float32)
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset directory not found: {dataset_dir}")
    path = None
    for ext in (".png", ".jpg", ".jpeg"):
        candidate = os.path.join(dataset_dir, f"{index:05d}{ext}")
        if os.path.isfile(candidate):
            path = candidate
            break
    attributes = None
    attr_path = os.path.join(dataset_dir, "attributes.pt")
    if os.path.isfile(attr_path):
        table = torch.load(attr_path, map_location="cpu")
        if index >= len(table):
            raise ValueError(f"image index {index} out of range: {attr_path} has {len(table)} rows")
        attributes = table[index].float()
    if path is None:
        raise FileNotFoundError(f"no image {index:05d}.png/.jpg in {dataset_dir}")
    return load_image_file(path, image_size), attributes
