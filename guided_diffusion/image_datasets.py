"""
Training data: a folder of images plus, for attribute-conditional models, an
attributes.pt tensor.

Layout (docs/design.md, "Dataset folder"): images 00000.png ... (or .jpg) directly in the folder,
sorted by name; attributes.pt is a float tensor [N, A] of 0/1 whose row i
belongs to the i-th image. Other files in the folder are ignored.

Small datasets are decoded once into a uint8 tensor in memory (30k 64x64 RGB
images take 370 MB), so a training step costs an index and a cast instead of
PNG decoding on the two CPU cores we usually have.
"""

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import dist_util
from .attribute_table import read_attribute_table
from .image_files import list_image_files

DEFAULT_CACHE_BYTES = 4 * 2**30


def load_data(
    *,
    data_dir,
    batch_size,
    image_size,
    attribute_cond=True,
    class_cond=False,
    deterministic=False,
    random_flip=True,
    shard=None,
    num_shards=None,
    num_attributes=None,
    seed=None,
    start_batch=0,
    max_cache_bytes=DEFAULT_CACHE_BYTES,
):
    """
    An endless generator of training batches (the folder is checked and decoded on the call).

    Each yielded item is (images, model_kwargs): images is a float tensor
    [batch_size, 3, image_size, image_size] in [-1, 1]; model_kwargs holds
    "y": float [batch_size, A] attributes (attribute_cond), long [batch_size]
    class indices (class_cond, classes taken from the file-name prefix before
    the first "_"), or nothing (unconditional).

    Batches run over an endless stream of epochs (a new permutation each,
    unless `deterministic`), so a dataset smaller than a batch is fine. The
    stream is a pure function of (seed, shard, batch index): `start_batch=k`
    yields exactly what the k-th batch onwards would have been, which lets a
    resumed training run see the same data as an uninterrupted one.

    :param shard, num_shards: this rank reads images shard, shard + num_shards, ...;
        default the distributed rank and world size.
    :param num_attributes: when given, attributes.pt must have this many columns.
    :param seed: seeds shuffling and flips; None draws a fresh seed.
    :param max_cache_bytes: decode everything into memory when it fits in this.
    """
    if attribute_cond and class_cond:
        raise ValueError("attribute_cond and class_cond cannot both be set")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    shard = dist_util.get_rank() if shard is None else shard
    num_shards = dist_util.get_world_size() if num_shards is None else num_shards
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} out of range for {num_shards} shards")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])

    paths = list_image_files(data_dir)
    attributes = read_attributes(data_dir, len(paths), num_attributes) if attribute_cond else None
    classes = class_indices(paths) if class_cond else None

    paths = paths[shard::num_shards]
    if not paths:
        raise ValueError(f"{data_dir} has fewer images than the {num_shards} ranks reading it")
    dataset = ImageDataset(
        paths,
        image_size,
        attributes=None if attributes is None else attributes[shard::num_shards],
        classes=None if classes is None else classes[shard::num_shards],
        max_cache_bytes=max_cache_bytes,
        progress=shard == 0,
    )
    return _batches(dataset, batch_size, deterministic, random_flip, seed, shard, start_batch)


def _batches(dataset, batch_size, deterministic, random_flip, seed, shard, start_batch):
    indices = _batch_indices(len(dataset), batch_size, deterministic, seed, shard, start_batch)
    if dataset.cached:
        items = (dataset.get_batch(idx) for idx in indices)
    else:
        items = iter(DataLoader(dataset, batch_sampler=indices, num_workers=min(2, os.cpu_count() or 1)))
    for step, (images, cond) in enumerate(items, start=start_batch):
        if random_flip:
            flips = torch.rand(images.shape[0], generator=_generator(seed, shard, step, 1)) < 0.5
            images[flips] = images[flips].flip(-1)
        yield images, cond


def _batch_indices(n, batch_size, deterministic, seed, shard, start_batch):
    """Endless lists of `batch_size` indices in [0, n), epochs back to back."""
    position = start_batch * batch_size
    epoch, offset = divmod(position, n)
    order = _epoch_order(n, deterministic, seed, shard, epoch)
    while True:
        batch = []
        while len(batch) < batch_size:
            take = order[offset : offset + batch_size - len(batch)]
            batch.extend(take)
            offset += len(take)
            if offset == n:
                epoch, offset = epoch + 1, 0
                order = _epoch_order(n, deterministic, seed, shard, epoch)
        yield batch


def _epoch_order(n, deterministic, seed, shard, epoch):
    if deterministic:
        return list(range(n))
    return torch.randperm(n, generator=_generator(seed, shard, epoch, 0)).tolist()


def _generator(*keys):
    """A torch.Generator seeded from a tuple of integers (independent streams)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def read_attributes(data_dir, num_images, num_attributes=None):
    """
    The float tensor [num_images, A] in attributes.pt, checked against the folder
    (values in [0, 1]); see guided_diffusion.attribute_table.
    """
    return read_attribute_table(
        data_dir, num_attributes=num_attributes, num_images=num_images, binary=False, expected_by="the model",
        missing_hint="attribute-conditional training needs it (or train with --num_attributes 0)",
    )


def class_indices(paths):
    """Long tensor of class indices from file names `<class>_<anything>.png` (sorted class names)."""
    names = [os.path.basename(p).split("_")[0] for p in paths]
    lookup = {name: i for i, name in enumerate(sorted(set(names)))}
    return torch.tensor([lookup[n] for n in names], dtype=torch.long)


def load_image(path, image_size):
    """Decode `path` to a uint8 tensor [3, image_size, image_size] (resized, centre-cropped)."""
    try:
        with Image.open(path) as pil_image:
            pil_image.load()
            arr = center_crop_arr(pil_image.convert("RGB"), image_size)
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image {path}: not an image file PIL can decode") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def center_crop_arr(pil_image, image_size):
    """Resize so the short side is `image_size`, then crop the centre: uint8 [S, S, 3]."""
    # Halve with a box filter first: one bicubic step from far above aliases.
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


class ImageDataset(Dataset):
    """
    Images (and their conditioning) as float tensors [3, S, S] in [-1, 1].

    Item i is (image, model_kwargs) with model_kwargs {"y": attributes[i]} or
    {"y": classes[i]} or {}. No augmentation here: load_data flips batches.

    :param image_paths: image files, in the order of `attributes` / `classes`.
    :param attributes: optional float tensor [N, A].
    :param classes: optional long tensor [N].
    :param max_cache_bytes: decode all images into memory up front when
        their uint8 pixels fit in this many bytes; else decode on access.
    """

    def __init__(
        self,
        image_paths,
        image_size,
        attributes=None,
        classes=None,
        max_cache_bytes=DEFAULT_CACHE_BYTES,
        progress=True,
    ):
        super().__init__()
        self.image_paths = list(image_paths)
        self.image_size = image_size
        self.conditions = attributes if attributes is not None else classes
        if self.conditions is not None and len(self.conditions) != len(self.image_paths):
            raise ValueError(f"{len(self.conditions)} conditioning rows for {len(self.image_paths)} images")
        self.cached = len(self.image_paths) * 3 * image_size**2 <= max_cache_bytes
        self.pixels = None
        if self.cached:
            self.pixels = torch.empty(len(self.image_paths), 3, image_size, image_size, dtype=torch.uint8)
            for i, path in enumerate(
                tqdm(self.image_paths, desc="decoding images", disable=not progress, leave=False)
            ):
                self.pixels[i] = load_image(path, image_size)

    def __len__(self):
        return len(self.image_paths)

    def __getitem__(self, idx):
        pixels = self.pixels[idx] if self.cached else load_image(self.image_paths[idx], self.image_size)
        return _to_float(pixels), self._cond(idx)

    def get_batch(self, indices):
        """Stacked items for a list of indices (fast path for the in-memory cache)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.cached:
            return _to_float(self.pixels[idx]), self._cond(idx)
        images = torch.stack([self[i][0] for i in indices])
        return images, self._cond(idx)

    def _cond(self, idx):
        return {} if self.conditions is None else {"y": self.conditions[idx]}


def _to_float(pixels):
    return pixels.float() / 127.5 - 1.0
