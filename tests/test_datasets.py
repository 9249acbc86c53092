"""Tests of guided_diffusion.image_datasets: layout checks, batching, flips, sharding, resumable streams."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from guided_diffusion.image_datasets import ImageDataset, center_crop_arr, list_image_files, load_data

NUM_ATTRIBUTES = 5


def make_dataset(root, n=6, size=16, num_attributes=NUM_ATTRIBUTES, width=None):
    """Image i: left half grey level 20*i, right half white; attributes row i = binary code of i."""
    root.mkdir(parents=True, exist_ok=True)
    width = width or size
    for i in range(n):
        arr = np.full((size, width, 3), 255, dtype=np.uint8)
        arr[:, : width // 2] = 20 * i
        Image.fromarray(arr).save(root / f"{i:05d}.png")
    attributes = torch.tensor(
        [[(i >> b) & 1 for b in range(num_attributes)] for i in range(n)], dtype=torch.float32
    )
    torch.save(attributes, root / "attributes.pt")
    return attributes


def image_id(image):
    """Recover i from the grey level of an (unflipped or flipped) image in [-1, 1]."""
    pixels = (image + 1) * 127.5
    dark_half = torch.minimum(pixels[:, :, 0].mean(), pixels[:, :, -1].mean())
    return int(round(dark_half.item() / 20))


def take(gen, k):
    return [next(gen) for _ in range(k)]


def test_batches_pair_each_image_with_its_attributes(tmp_path):
    attributes = make_dataset(tmp_path, n=6)
    data = load_data(
        data_dir=str(tmp_path), batch_size=4, image_size=16, seed=0, num_attributes=NUM_ATTRIBUTES
    )
    for images, cond in take(data, 6):
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
        ids = [image_id(img) for img in images]
        assert torch.equal(cond["y"], attributes[ids])


def test_shuffled_epochs_visit_every_image_once(tmp_path):
    make_dataset(tmp_path, n=6)
    data = load_data(data_dir=str(tmp_path), batch_size=3, image_size=16, seed=1, random_flip=False)
    epochs = [sorted(image_id(img) for batch, _ in take(data, 2) for img in batch) for _ in range(3)]
    assert all(e == list(range(6)) for e in epochs)


def test_deterministic_order_and_flips_mirror_images(tmp_path):
    make_dataset(tmp_path, n=8)
    plain = load_data(
        data_dir=str(tmp_path), batch_size=8, image_size=16, deterministic=True, random_flip=False
    )
    flipped = load_data(data_dir=str(tmp_path), batch_size=8, image_size=16, deterministic=True, seed=3)
    images, _ = next(plain)
    assert [image_id(img) for img in images] == list(range(8))
    num_flipped = 0
    for _ in range(4):
        candidates, _ = next(flipped)
        for img, ref in zip(candidates, images):
            is_flipped = torch.equal(img, ref.flip(-1))
            assert is_flipped or torch.equal(img, ref)
            num_flipped += is_flipped
    assert 4 <= num_flipped <= 28  # about half of 32


def test_start_batch_resumes_the_same_stream(tmp_path):
    make_dataset(tmp_path, n=5)
    kwargs = dict(data_dir=str(tmp_path), batch_size=3, image_size=16, seed=7)
    full = take(load_data(**kwargs), 7)
    resumed = take(load_data(start_batch=4, **kwargs), 3)
    for (a, ya), (b, yb) in zip(full[4:], resumed):
        assert torch.equal(a, b) and torch.equal(ya["y"], yb["y"])
    other_seed = take(load_data(**{**kwargs, "seed": 8}), 7)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(full, other_seed))


def test_shards_partition_the_dataset(tmp_path):
    make_dataset(tmp_path, n=7)
    seen = []
    for shard in range(3):
        data = load_data(
            data_dir=str(tmp_path),
            batch_size=1,
            image_size=16,
            deterministic=True,
            random_flip=False,
            shard=shard,
            num_shards=3,
        )
        n_shard = len(range(shard, 7, 3))
        seen += [image_id(next(data)[0][0]) for _ in range(n_shard)]
    assert sorted(seen) == list(range(7))


def test_lazy_decoding_matches_cache(tmp_path):
    make_dataset(tmp_path, n=5)
    kwargs = dict(data_dir=str(tmp_path), batch_size=4, image_size=16, seed=2)
    cached = take(load_data(**kwargs), 3)
    lazy = take(load_data(max_cache_bytes=0, **kwargs), 3)
    for (a, ya), (b, yb) in zip(cached, lazy):
        assert torch.equal(a, b) and torch.equal(ya["y"], yb["y"])


def test_unconditional_and_class_conditional(tmp_path):
    make_dataset(tmp_path, n=4)
    _, cond = next(load_data(data_dir=str(tmp_path), batch_size=2, image_size=16, attribute_cond=False))
    assert cond == {}
    (tmp_path / "classes").mkdir()
    for name in ["cat_1.png", "dog_1.png", "cat_2.png"]:
        Image.new("RGB", (8, 8)).save(tmp_path / "classes" / name)
    _, cond = next(
        load_data(
            data_dir=str(tmp_path / "classes"),
            batch_size=3,
            image_size=8,
            attribute_cond=False,
            class_cond=True,
            deterministic=True,
        )
    )
    assert cond["y"].dtype == torch.long and cond["y"].tolist() == [0, 0, 1]


def test_center_crop_keeps_the_middle(tmp_path):
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 20:60] = 255  # a white square in the middle of a wide black image
    out = center_crop_arr(Image.fromarray(arr), 16)
    assert out.shape == (16, 16, 3)
    assert out[:, 2:-2].min() >= 250  # only the bicubic fringe may touch the black
    out = out.astype(np.float32)
    assert np.allclose(out, out[:, ::-1], atol=3)  # symmetric input, symmetric crop


def test_dataset_item_matches_batch(tmp_path):
    make_dataset(tmp_path, n=3, width=24)  # non-square images are cropped to squares
    paths = list_image_files(str(tmp_path))
    dataset = ImageDataset(paths, 16, attributes=torch.eye(3), progress=False)
    images, cond = dataset.get_batch([2, 0])
    image, item_cond = dataset[2]
    assert (
        image.shape == (3, 16, 16) and torch.equal(images[0], image) and torch.equal(cond["y"][0], item_cond["y"])
    )


@pytest.mark.parametrize(
    "breakage, error, message",
    [
        ("missing_dir", FileNotFoundError, "not found"),
        ("empty_dir", ValueError, "no images"),
        ("corrupt_image", ValueError, "00001.png"),
        ("short_attributes", ValueError, "rows"),
        ("missing_attributes", FileNotFoundError, "attributes.pt"),
        ("wrong_width", ValueError, "5 attributes per image, the model has 20"),
        ("bad_values", ValueError, "[0, 1]"),
    ],
)
def test_bad_datasets_give_one_clear_error(tmp_path, breakage, error, message):
    data_dir = tmp_path / "data"
    if breakage != "missing_dir":
        make_dataset(data_dir, n=3)
    if breakage == "empty_dir":
        for name in os.listdir(data_dir):
            os.remove(data_dir / name)
    if breakage == "corrupt_image":
        (data_dir / "00001.png").write_bytes(b"this is not a png")
    if breakage == "short_attributes":
        torch.save(torch.zeros(2, NUM_ATTRIBUTES), data_dir / "attributes.pt")
    if breakage == "missing_attributes":
        os.remove(data_dir / "attributes.pt")
    if breakage == "bad_values":
        torch.save(torch.full((3, NUM_ATTRIBUTES), 2.0), data_dir / "attributes.pt")
    num_attributes = 20 if breakage == "wrong_width" else NUM_ATTRIBUTES
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_data(data_dir=str(data_dir), batch_size=2, image_size=16, num_attributes=num_attributes)
