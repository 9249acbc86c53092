"""CelebA annotations -> the paper's 20 attributes, and preparing image folders."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from preprocess import attributes as at
from preprocess.prepare_images import prepare, square_resize


def _celeba_text(rows):
    """CelebA's exact layout: count, names (trailing space), then values
    right-aligned in width 2 (so ' 1' follows a double space)."""
    lines = [str(len(rows)), " ".join(at.CELEBA_ATTRIBUTE_NAMES) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in values) for name, values in rows]
    return "\n".join(lines) + "\n"


def _hq_text(rows):
    lines = ["idx".ljust(12) + "orig_idx".ljust(12) + "orig_file".ljust(12)]
    lines += [str(i).ljust(12) + str(o).ljust(12) + f.ljust(12) for i, o, f in rows]
    return "\n".join(lines) + "\n"


def _row(*positive):
    values = -np.ones(40, dtype=int)
    values[list(positive)] = 1
    return values.tolist()


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_names_and_constants():
    assert len(at.ATTRIBUTE_NAMES) == 20 and len(at.ATTRIBUTE_SHORT_NAMES) == 20
    assert len(at.CELEBA_ATTRIBUTE_NAMES) == 40 and len(at.PAPER_FROM_CELEBA) == 20
    assert [at.ATTRIBUTE_NAMES[i] for i in at.EDITABLE_ATTRIBUTES] == [
        "Bags_Under_Eyes", "Eyeglasses", "Male", "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick", "Young"
    ]
    assert at.RECONSTRUCTION_INDEX == 20
    # Single-source attributes carry CelebA's name.
    for name, sources in zip(at.ATTRIBUTE_NAMES, at.PAPER_FROM_CELEBA):
        if len(sources) == 1 and name != "Beard":
            assert at.CELEBA_ATTRIBUTE_NAMES[sources[0]] == name


def test_celeba_to_paper_follows_design_table():
    c = at.CELEBA_ATTRIBUTE_NAMES.index
    p = at.ATTRIBUTE_NAMES.index
    rows = [
        _row(),
        _row(c("5_o_Clock_Shadow")),
        _row(c("Mustache")),
        _row(c("Sideburns")),
        _row(c("Receding_Hairline")),
        _row(c("Bald"), c("Male"), c("Young")),
        _row(*range(40)),
    ]
    out = at.celeba_to_paper(rows)
    assert out.dtype == torch.float32 and out.shape == (7, 20)
    assert out[0].sum() == 0 and out[6].sum() == 20
    for i in (1, 2, 3):
        assert out[i].nonzero().flatten().tolist() == [p("Beard")]
    assert out[4].nonzero().flatten().tolist() == [p("Bald")]
    assert sorted(out[5].nonzero().flatten().tolist()) == sorted([p("Bald"), p("Male"), p("Young")])
    # Every CelebA column used by the table switches on exactly its attributes.
    for k, sources in enumerate(at.PAPER_FROM_CELEBA):
        for column in sources:
            assert at.celeba_to_paper([_row(column)])[0].nonzero().flatten().tolist() == [k]
    with pytest.raises(ValueError, match="shape"):
        at.celeba_to_paper(np.ones((2, 39)))
    with pytest.raises(ValueError, match="-1, 1"):
        at.celeba_to_paper(np.zeros((2, 40)))


def test_read_exact_celeba_format(tmp_path):
    rows = [("000002.jpg", _row(20, 39)), ("000001.jpg", _row(0, 3)), ("000003.jpg", _row())]
    path = _write(tmp_path / "list_attr_celeba.txt", _celeba_text(rows))
    assert "-1  1" in open(path).read()  # the double spaces are really there
    names, files, values, lines = at.read_attribute_file(path, at.CELEBA_ATTRIBUTE_NAMES)
    assert names == at.CELEBA_ATTRIBUTE_NAMES
    assert files == ["000002.jpg", "000001.jpg", "000003.jpg"] and lines == [3, 4, 5]
    assert values.shape == (3, 40) and values[0, 20] == 1 and values[0].sum() == -36
    keys, attributes, sources = at.load_celeba_attributes(path)
    assert keys == ["000001.jpg", "000002.jpg", "000003.jpg"]  # dataset order: sorted
    assert sources[0].endswith(":4")
    torch.testing.assert_close(attributes, at.celeba_to_paper([rows[1][1], rows[0][1], rows[2][1]]))


def test_hq_mapping_gives_hq_order(tmp_path):
    rows = [("000001.jpg", _row(20)), ("000002.jpg", _row(39)), ("000003.jpg", _row(15))]
    celeba = _write(tmp_path / "attr.txt", _celeba_text(rows))
    mapping = _write(tmp_path / "map.txt", _hq_text([(0, 2, "000003.jpg"), (1, 0, "000001.jpg")]))
    assert at.read_hq_mapping(mapping) == [(0, 2, "000003.jpg"), (1, 0, "000001.jpg")]
    keys, attributes, sources = at.load_celeba_attributes(celeba, mapping)
    assert keys == ["0", "1"] and sources == [f"{mapping}:2", f"{mapping}:3"]
    assert attributes[0].nonzero().flatten().tolist() == [at.ATTRIBUTE_NAMES.index("Eyeglasses")]
    assert attributes[1].nonzero().flatten().tolist() == [at.ATTRIBUTE_NAMES.index("Male")]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("000002.jpg -1", "000002.jpg"), r"attr.txt:4: expected a filename and 40 values, got 40"),
        (lambda t: t.replace("000002.jpg -1", "000002.jpg  0"), r"attr.txt:4: values must be -1 or 1, got '0'"),
        (lambda t: "3" + t[1:], r"line 1 announces 3 rows, found 2"),
        (lambda t: "many" + t[1:], r"attr.txt:1: expected the image count"),
        (lambda t: t.replace("Young", "Old"), r"attr.txt:2: expected the 40 names"),
    ],
)
def test_malformed_celeba_file_names_file_and_line(tmp_path, mutate, message):
    text = _celeba_text([("000001.jpg", _row()), ("000002.jpg", _row(1))])
    path = _write(tmp_path / "attr.txt", mutate(text))
    with pytest.raises(ValueError, match=message):
        at.load_celeba_attributes(path)


def test_malformed_hq_mapping(tmp_path):
    celeba = _write(tmp_path / "attr.txt", _celeba_text([("000001.jpg", _row())]))
    bad_header = _write(tmp_path / "a.txt", "index orig\n0 0 000001.jpg\n")
    with pytest.raises(ValueError, match="a.txt:1: expected the header"):
        at.read_hq_mapping(bad_header)
    bad_row = _write(tmp_path / "b.txt", _hq_text([(0, 0, "000001.jpg")]) + "1 x\n")
    with pytest.raises(ValueError, match="b.txt:3: expected 'idx orig_idx orig_file'"):
        at.read_hq_mapping(bad_row)
    gap = _write(tmp_path / "c.txt", _hq_text([(0, 0, "000001.jpg"), (2, 0, "000001.jpg")]))
    with pytest.raises(ValueError, match="c.txt:3: expected idx 1, got 2"):
        at.read_hq_mapping(gap)
    unknown = _write(tmp_path / "d.txt", _hq_text([(0, 5, "000006.jpg")]))
    with pytest.raises(ValueError, match="d.txt:2: HQ image 0 refers to 000006.jpg"):
        at.load_celeba_attributes(celeba, unknown)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        at.load_celeba_attributes(str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="mapping file not found"):
        at.read_hq_mapping(str(tmp_path / "missing.txt"))


def test_write_and_read_attributes_roundtrip(tmp_path):
    values = torch.tensor(np.random.default_rng(0).integers(0, 2, (5, 20)), dtype=torch.float32)
    names = [at.image_filename(i, 5) for i in range(5)]
    at.write_attributes(str(tmp_path), names, values)
    torch.testing.assert_close(at.read_attributes(str(tmp_path)), values)
    header, files, signs, _ = at.read_attribute_file(str(tmp_path / "attributes.txt"), at.ATTRIBUTE_NAMES)
    assert files == names and header == at.ATTRIBUTE_NAMES
    np.testing.assert_array_equal(signs, values.numpy() * 2 - 1)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    with pytest.raises(ValueError, match=r"\[N, 20\]"):
        at.write_attributes(str(tmp_path), names, values[:, :19])
    with pytest.raises(ValueError, match="0 or 1"):
        at.write_attributes(str(tmp_path), names, values * 2)
    with pytest.raises(ValueError, match="4 filenames for 5"):
        at.write_attributes(str(tmp_path), names[:4], values)
    torch.save(torch.zeros(3, 7), tmp_path / "attributes.pt")
    with pytest.raises(ValueError, match="attributes.pt.*shape"):
        at.read_attributes(str(tmp_path))
    assert at.image_filename(3, 10) == "00003.png" and at.image_filename(7, 202599) == "000007.png"


def test_attributes_cli(tmp_path, repo_root):
    script = os.path.join(repo_root, "preprocess", "attributes.py")
    celeba = _write(tmp_path / "attr.txt", _celeba_text([("000002.jpg", _row(20)), ("000001.jpg", _row())]))
    ok = subprocess.run([sys.executable, script, "--celeba_attr", celeba, "--out", str(tmp_path / "d")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert at.read_attributes(str(tmp_path / "d"))[:, at.ATTRIBUTE_NAMES.index("Male")].tolist() == [0.0, 1.0]
    bad_text = _celeba_text([("000001.jpg", _row())]).replace("-1\n", "2\n")  # last value 2
    bad = _write(tmp_path / "bad.txt", bad_text)
    failed = subprocess.run([sys.executable, script, "--celeba_attr", bad, "--out", str(tmp_path / "e")],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "bad.txt:3" in failed.stderr
    assert not os.path.exists(tmp_path / "e")
    _solid(tmp_path / "d" / "00000.png", (0, 0, 0))  # 1 image, 2 rows
    mismatch = subprocess.run([sys.executable, script, "--celeba_attr", celeba, "--out", str(tmp_path / "d")],
                              capture_output=True, text=True)
    assert mismatch.returncode == 2 and "holds 1 images but the annotations list 2" in mismatch.stderr


# --- prepare_images ---------------------------------------------------------


def _solid(path, colour, size=(178, 218)):
    Image.new("RGB", size, colour).save(path)


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def _celeba_folder(tmp_path):
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    for i, colour in enumerate(COLOURS):
        _solid(images / f"{i + 1:06d}.jpg", colour)
    rows = [(f"{i + 1:06d}.jpg", _row(20) if i % 2 else _row()) for i in range(4)][::-1]
    return images, _write(tmp_path / "attr.txt", _celeba_text(rows))


def _centre(path):
    image = np.asarray(Image.open(path)).astype(int)
    return image[image.shape[0] // 2, image.shape[1] // 2]


def test_prepare_celeba_order_size_and_attributes(tmp_path):
    images, celeba = _celeba_folder(tmp_path)
    out = tmp_path / "celeba32"
    assert prepare(str(images), str(out), 32, celeba_attr=celeba, workers=1, progress=False) == 4
    for i, colour in enumerate(COLOURS):
        stored = Image.open(out / f"{i:05d}.png")
        assert stored.size == (32, 32) and stored.mode == "RGB"
        assert np.abs(_centre(out / f"{i:05d}.png") - colour).max() < 12  # JPEG tolerance
    male = at.read_attributes(str(out))[:, at.ATTRIBUTE_NAMES.index("Male")]
    assert male.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_prepare_hq_uses_numeric_index_order(tmp_path):
    images = tmp_path / "hq"
    images.mkdir()
    for i in (0, 1, 2, 10):
        _solid(images / f"{i}.png", (20 * i, 100, 100), size=(64, 64))
    celeba = _write(tmp_path / "attr.txt", _celeba_text([(f"{i:06d}.jpg", _row(i)) for i in range(1, 12)]))
    mapping = _write(tmp_path / "map.txt", _hq_text([(i, i, f"{i + 1:06d}.jpg") for i in range(11)]))
    with pytest.raises(ValueError, match=r"map.txt:5: HQ image 3 is listed but there is no such image"):
        prepare(str(images), str(tmp_path / "out"), 16, celeba, mapping, workers=1, progress=False)
    assert not os.path.exists(tmp_path / "out")
    rows = [(i, i, f"{i + 1:06d}.jpg") for i in range(3)] + [(3, 10, "000011.jpg")]
    mapping = _write(tmp_path / "map.txt", _hq_text(rows))
    with pytest.raises(ValueError, match=r"map.txt:5: HQ image 3 is listed"):
        prepare(str(images), str(tmp_path / "out"), 16, celeba, mapping, workers=1, progress=False)
    (images / "10.png").rename(images / "3.png")
    prepare(str(images), str(tmp_path / "out"), 16, celeba, mapping, workers=2, progress=False)
    reds = [_centre(tmp_path / "out" / f"{i:05d}.png")[0] for i in range(4)]
    assert reds == [0, 20, 40, 200]
    attributes = at.read_attributes(str(tmp_path / "out"))
    expected = at.celeba_to_paper([_row(1), _row(2), _row(3), _row(11)])
    torch.testing.assert_close(attributes, expected)


def test_prepare_unlabelled_folder_via_cli(tmp_path, repo_root):
    images = tmp_path / "mine"
    images.mkdir()
    _solid(images / "b.png", (10, 10, 10), size=(50, 40))
    _solid(images / "a.jpg", (250, 250, 250), size=(40, 50))
    (images / "notes.txt").write_text("not an image")
    script = os.path.join(repo_root, "preprocess", "prepare_images.py")
    result = subprocess.run(
        [sys.executable, script, "--input", str(images), "--out", str(tmp_path / "out"), "--image_size", "24",
         "--workers", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "estimate attributes with the classifier" in result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == [".cyclediff-output.json", "00000.png", "00001.png"]
    assert _centre(tmp_path / "out" / "00000.png")[0] > 200  # a.jpg sorts first


def test_prepare_bad_inputs_leave_nothing(tmp_path):
    images, celeba = _celeba_folder(tmp_path)
    os.remove(images / "000003.jpg")
    with pytest.raises(ValueError, match=r"attr.txt:4: 000003.jpg is listed but there is no such image"):
        prepare(str(images), str(tmp_path / "out"), 16, celeba_attr=celeba, workers=1, progress=False)
    _solid(images / "000003.jpg", (1, 2, 3))
    _solid(images / "000099.jpg", (1, 2, 3))
    with pytest.raises(ValueError, match="holds 5 images but the annotations list 4"):
        prepare(str(images), str(tmp_path / "out"), 16, celeba_attr=celeba, workers=1, progress=False)
    os.remove(images / "000099.jpg")
    (images / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*000002.jpg"):
        prepare(str(images), str(tmp_path / "out"), 16, celeba_attr=celeba, workers=2, progress=False)
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"), 16, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        prepare(str(empty), str(tmp_path / "out"), 16, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["attr.txt", "empty", "img_align_celeba"]


def test_square_resize_crops_centre_and_antialiases():
    stripes = np.zeros((20, 60, 3), dtype=np.uint8)
    stripes[:, :20] = (255, 0, 0)
    stripes[:, 20:40] = (0, 255, 0)
    stripes[:, 40:] = (0, 0, 255)
    out = np.asarray(square_resize(Image.fromarray(stripes), 10)).astype(int)
    assert np.abs(out[2:-2, 2:-2] - (0, 255, 0)).max() <= 2
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    small = np.asarray(square_resize(Image.fromarray(checker).convert("RGB"), 16)).astype(float)
    assert small.std() < 10 and abs(small.mean() - 127.5) < 5  # no aliasing: flat grey


def test_prepared_dataset_loads_with_guided_diffusion_loader(tmp_path):
    image_datasets = pytest.importorskip("guided_diffusion.image_datasets")
    images, celeba = _celeba_folder(tmp_path)
    prepare(str(images), str(tmp_path / "out"), 16, celeba_attr=celeba, workers=1, progress=False)
    batch, kwargs = next(
        image_datasets.load_data(data_dir=str(tmp_path / "out"), batch_size=4, image_size=16, deterministic=True,
                                 random_flip=False, shard=0, num_shards=1)
    )
    assert batch.shape == (4, 3, 16, 16)
    reds = ((batch[:, 0, 8, 8] + 1) * 127.5).round()
    assert (reds - torch.tensor([200.0, 30, 30, 200])).abs().max() < 12
    torch.testing.assert_close(kwargs["y"], at.read_attributes(str(tmp_path / "out")))
