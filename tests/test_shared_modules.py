"""Tests of the project-wide helpers in guided_diffusion: atomic writes, MPI launch detection, image
discovery and the attribute table reader."""

import os
import stat
import sys

import pytest
import torch
from PIL import Image

from guided_diffusion import mpi_launch
from guided_diffusion.atomic import atomic_save_image, atomic_torch_save, atomic_write
from guided_diffusion.attribute_table import read_attribute_table
from guided_diffusion.image_files import (
    find_numbered_image,
    is_image_file,
    list_image_files,
    numbered_image_files,
)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda value: os.umask(value)
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_create_files_with_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    atomic_write(str(tmp_path / "a.bin"), b"\x00\x01")
    atomic_write(str(tmp_path / "b.txt"), "text é\n")

    def write_csv(tmp):
        with open(tmp, "w") as f:
            f.write("x\n")

    atomic_write(str(tmp_path / "c.csv"), write_csv)
    atomic_torch_save({"w": torch.ones(2)}, str(tmp_path / "d.pt"))
    atomic_save_image(image, str(tmp_path / "e.png"))
    atomic_save_image(image, str(tmp_path / "f"))  # no extension: PNG
    open(tmp_path / "reference", "w").close()  # what open() gives under this umask
    expected = mode(tmp_path / "reference")
    assert expected == 0o666 & ~mask
    for name in ("a.bin", "b.txt", "c.csv", "d.pt", "e.png", "f"):
        assert mode(tmp_path / name) == expected, name
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "text é\n"
    assert torch.equal(torch.load(tmp_path / "d.pt", weights_only=True)["w"], torch.ones(2))
    with Image.open(tmp_path / "e.png") as e, Image.open(tmp_path / "f") as f:
        assert e.format == "PNG" and f.format == "PNG" and e.getpixel((0, 0)) == (10, 20, 30)
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt", "c.csv", "d.pt", "e.png", "f", "reference"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "sub" / "file.pt"
    atomic_torch_save({"w": torch.ones(3)}, str(path))  # creates the folder
    seen = []

    def failing(tmp):
        seen.append(tmp)
        assert tmp.endswith("file.pt") and os.path.dirname(tmp) == str(path.parent)
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        atomic_write(str(path), failing)
    with pytest.raises(Exception):
        atomic_torch_save({"w": lambda: None}, str(path))  # unpicklable
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert os.listdir(path.parent) == ["file.pt"] and not os.path.exists(seen[0])


def test_classifier_training_files_follow_the_umask(tmp_path, umask):
    # encoder_train used to write its checkpoints, logs and plot with mode 0600 whatever the umask.
    from preprocess import encoder_train
    from test_classifier import make_dataset, train_args

    umask(0o022)
    data = make_dataset(tmp_path / "data", num_images=16, size=32)
    exp = tmp_path / "exp"
    encoder_train.run_training(train_args(data, exp, "--max_steps", "2", "--save_interval", "2",
                                          "--eval_interval", "2", "--batch_size", "4"))
    written = [exp / "classifier.pt", exp / "train_log.csv", exp / "val_log.csv", exp / "training_curves.png",
               *sorted((exp / "checkpoints").iterdir())]
    assert len(written) == 5
    for path in written:
        assert mode(path) == 0o644, path
    output = tmp_path / "acc.json"
    encoder_train.run_evaluation(
        encoder_train.create_argparser().parse_args(
            ["--evaluate", str(exp / "classifier.pt"), "--data_dir", str(data), "--output", str(output),
             "--num_workers", "1", "--device", "cpu"]))
    assert mode(output) == 0o644


# ---------------------------------------------------------------- MPI launch detection


def test_mpi_detection_reads_the_launchers_variables(monkeypatch):
    for name in mpi_launch.MPI_ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not mpi_launch.launched_by_mpiexec()
    assert mpi_launch.mpi_world() == (None, 0, 1) and mpi_launch.mpi_rank_and_size() == (0, 1)
    for env in ({"PMI_RANK": "0", "PMI_SIZE": "2"}, {"OMPI_COMM_WORLD_SIZE": "2"}, {"PMIX_RANK": "1"},
                {"MPI_LOCALNRANKS": "1"}):
        assert mpi_launch.launched_by_mpiexec(env)
    assert not mpi_launch.launched_by_mpiexec({"RANK": "0", "WORLD_SIZE": "2"})  # torchrun is not mpiexec


def test_mpi_world_without_mpi4py_under_mpiexec_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails
    with pytest.raises(RuntimeError, match="started by mpiexec but mpi4py cannot be loaded"):
        mpi_launch.mpi_world()


def test_every_mpi_user_asks_the_one_detector():
    # No module keeps its own list of launcher variables.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders = []
    for folder in ("guided_diffusion", "optimization", "preprocess", "scripts"):
        for name in sorted(os.listdir(os.path.join(root, folder))):
            path = os.path.join(root, folder, name)
            if name.endswith(".py") and path != mpi_launch.__file__:
                with open(path) as f:
                    text = f.read()
                if any(f'"{v}"' in text for v in mpi_launch.MPI_ENVIRONMENT_VARIABLES) or "import mpi4py" in text \
                        or "from mpi4py" in text:
                    offenders.append(os.path.join(folder, name))
    assert offenders == []


# ---------------------------------------------------------------- image files


def test_image_discovery(tmp_path):
    for name in ("00001.PNG", "00000.jpg", "00002.webp", "notes.txt", "cover.bmp"):
        (tmp_path / name).write_bytes(b"")
    assert [is_image_file(n) for n in ("a.png", "a.JPEG", "a.bmp", "a.webp", "a.gif", "a.pt")] == [
        True, True, True, True, False, False]
    assert [os.path.basename(p) for p in list_image_files(str(tmp_path))] == [
        "00000.jpg", "00001.PNG", "00002.webp", "cover.bmp"]
    assert [os.path.basename(p) for p in numbered_image_files(str(tmp_path))] == [
        "00000.jpg", "00001.PNG", "00002.webp"]
    assert find_numbered_image(str(tmp_path), 0) == str(tmp_path / "00000.jpg")
    assert find_numbered_image(str(tmp_path), 7) is None
    (tmp_path / "00004.png").write_bytes(b"")
    with pytest.raises(ValueError, match="image 3 is missing"):
        numbered_image_files(str(tmp_path))
    (tmp_path / "00003.png").write_bytes(b"")
    (tmp_path / "00003.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="two images with index 3"):
        numbered_image_files(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        list_image_files(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_image_files(str(tmp_path / "empty"))


# ---------------------------------------------------------------- attribute table


def test_attribute_table_reader_checks_and_names_the_file(tmp_path):
    path = tmp_path / "attributes.pt"
    with pytest.raises(FileNotFoundError, match="attributes.pt not found.*; train without"):
        read_attribute_table(str(tmp_path), missing_hint="train without")
    table = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.uint8)
    torch.save(table, path)
    out = read_attribute_table(str(tmp_path), num_attributes=3, num_images=2)
    assert out.dtype == torch.float32 and torch.equal(out, table.float())
    with pytest.raises(ValueError, match=r"shape \[2, 3\]: 3 attributes per image, the classifier has 20"):
        read_attribute_table(str(tmp_path), num_attributes=20, expected_by="the classifier")
    with pytest.raises(ValueError, match="has 2 rows but .* has 5 images"):
        read_attribute_table(str(tmp_path), num_images=5)
    torch.save(torch.tensor([[0.5, 1.0]]), path)
    with pytest.raises(ValueError, match="0 or 1"):
        read_attribute_table(str(tmp_path))
    assert read_attribute_table(str(tmp_path), binary=False).tolist() == [[0.5, 1.0]]
    torch.save(torch.tensor([[1.5, 1.0]]), path)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        read_attribute_table(str(tmp_path), binary=False)
    torch.save(torch.zeros(4), path)
    with pytest.raises(ValueError, match="2-D tensor"):
        read_attribute_table(str(tmp_path))
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_attribute_table(str(tmp_path))
