"""Synthetic faces: determinism, locality of every attribute, visibility,
CelebA-like statistics, disjoint seeds, and the dataset generator."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from preprocess import synthetic_faces as sf
from preprocess.attributes import ATTRIBUTE_NAMES, read_attribute_file, read_attributes
from preprocess.make_synthetic_dataset import make_dataset


def _consistent(attributes, index, value):
    """``attributes`` with attribute ``index`` set to ``value``, clearing what
    the sampler never combines with it (so the change is visible)."""
    a = np.array(attributes, dtype=np.int64)
    a[index] = value
    if value:
        if index in sf.HAIR_COLOURS:
            a[list(sf.HAIR_COLOURS)] = 0
            a[index] = 1
        exclusive = {sf.BALD: sf.BANGS, sf.BANGS: sf.BALD, sf.STRAIGHT: sf.WAVY, sf.WAVY: sf.STRAIGHT}
        if index in exclusive:
            a[exclusive[index]] = 0
    if index in (sf.STRAIGHT, sf.WAVY) + sf.HAIR_COLOURS:
        a[sf.BALD] = 0  # a bald head has little hair to show it on
    if index in (sf.BEARD, sf.GOATEE):
        a[sf.MALE] = 1
    return a


def test_render_is_deterministic_and_json_roundtrips():
    identity, attributes = sf.example_face(7, 3)
    first = sf.render(identity, attributes)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    again_identity, again_attributes = sf.example_face(7, 3)
    from_json = json.loads(json.dumps(identity))
    np.testing.assert_array_equal(first, sf.render(again_identity, again_attributes))
    np.testing.assert_array_equal(first, sf.render(from_json, list(attributes)))
    assert sf.make_identities(7, 5) == sf.make_identities(7, 5)
    np.testing.assert_array_equal(sf.make_attributes(7, 5), sf.make_attributes(7, 5))


@pytest.mark.parametrize("size", [32, 48, 64, 128, 256])
def test_render_sizes_and_antialiasing(size):
    identity, attributes = sf.example_face(0, 1)
    image = sf.render(identity, attributes, size)
    assert image.shape == (size, size, 3)
    # Downsampled drawing gives intermediate colours along edges.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 100


def test_sizes_agree_with_each_other():
    """A face at 128 px box-reduced to 64 px is close to the 64 px render."""
    identity, attributes = sf.example_face(0, 2)
    big = sf.render(identity, attributes, 128).astype(np.float64)
    reduced = big.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    small = sf.render(identity, attributes, 64).astype(np.float64)
    assert np.abs(reduced - small).mean() < 6
    other = sf.render(sf.example_face(0, 3)[0], attributes, 64).astype(np.float64)
    assert np.abs(other - small).mean() > 2 * np.abs(reduced - small).mean()


def test_every_attribute_change_stays_inside_its_mask():
    rng = np.random.default_rng(0)
    for person in range(3):
        identity, _ = sf.example_face(101, person)
        for k in range(len(ATTRIBUTE_NAMES)):
            mask = sf.attribute_mask(identity, k)
            assert mask.shape == (64, 64) and mask.dtype == bool
            for _ in range(2):
                a = sf.sample_attributes(rng)
                a[k] = 0
                without = sf.render(identity, a)
                a[k] = 1
                changed = (sf.render(identity, a) != without).any(axis=-1)
                outside = changed & ~mask
                assert not outside.any(), f"{ATTRIBUTE_NAMES[k]} changed {outside.sum()} pixels outside its mask"


def test_masks_are_local():
    identity, _ = sf.example_face(5, 0)
    fraction = {name: sf.attribute_mask(identity, k).mean() for k, name in enumerate(ATTRIBUTE_NAMES)}
    for name in ("Goatee", "Bags_Under_Eyes", "Eyeglasses", "Heavy_Makeup", "Mouth_Slightly_Open",
                 "Narrow_Eyes", "Smiling", "Wearing_Lipstick"):
        assert 0 < fraction[name] < 0.1, name
    for name in ("Pale_Skin", "Young", "Male", "Bald", "Beard"):
        assert 0.05 < fraction[name] < 0.6, name
    # Eyes and mouth are disjoint.
    assert not (sf.attribute_mask(identity, sf.NARROW_EYES) & sf.attribute_mask(identity, sf.SMILING)).any()
    # Masks at other sizes cover the same part of the picture.
    large = sf.attribute_mask(identity, sf.SMILING, 128).reshape(64, 2, 64, 2).any(axis=(1, 3))
    assert (large == sf.attribute_mask(identity, sf.SMILING, 64)).mean() > 0.99


def test_every_attribute_is_visible():
    """Turning an attribute on changes the 64x64 image noticeably, for several
    people (skin tones, sexes), on top of their own attributes: either a
    local change (some pixels move by more than 25 levels) or a tint over the
    attribute's region (most of its mask moves by more than 8 levels)."""
    for person in range(8):
        identity, attributes = sf.example_face(202, person)
        for k, name in enumerate(ATTRIBUTE_NAMES):
            on = sf.render(identity, _consistent(attributes, k, 1)).astype(np.int64)
            off = sf.render(identity, _consistent(_consistent(attributes, k, 1), k, 0)).astype(np.int64)
            change = np.abs(on - off).max(axis=-1)
            strongly_changed = (change > 25).sum()
            tinted = (change[sf.attribute_mask(identity, k)] > 8).mean()
            assert strongly_changed >= 4 or tinted > 0.5, (
                f"{name} barely visible for person {person}: {strongly_changed} pixels changed by >25, "
                f"{tinted:.2f} of its mask by >8"
            )


def test_marginals_match_intended_table():
    rng = np.random.default_rng(1234)
    samples = np.stack([sf.sample_attributes(rng) for _ in range(5000)])
    assert set(sf.INTENDED_MARGINALS) == set(ATTRIBUTE_NAMES)
    for k, name in enumerate(ATTRIBUTE_NAMES):
        # 0.025 is > 3.5 standard errors at n = 5000 for any p.
        assert abs(samples[:, k].mean() - sf.INTENDED_MARGINALS[name]) < 0.025, name
    male = samples[:, sf.MALE] == 1
    assert samples[:, list(sf.HAIR_COLOURS)].sum(axis=1).max() <= 1
    assert not samples[~male][:, [sf.BEARD, sf.GOATEE]].any()
    assert not (samples[:, sf.STRAIGHT] & samples[:, sf.WAVY]).any()
    assert not (samples[:, sf.BALD] & samples[:, sf.BANGS]).any()
    assert samples[~male, sf.LIPSTICK].mean() > 10 * samples[male, sf.LIPSTICK].mean()
    assert samples[male, sf.BALD].mean() > 3 * samples[~male, sf.BALD].mean()
    smiling = samples[:, sf.SMILING] == 1
    assert samples[smiling, sf.MOUTH_OPEN].mean() > samples[~smiling, sf.MOUTH_OPEN].mean() + 0.3


def test_independent_sampling_keeps_hard_rules_and_drops_correlations():
    rng = np.random.default_rng(99)
    samples = np.stack([sf.sample_attributes_independent(rng) for _ in range(5000)]).astype(float)
    assert samples[:, list(sf.HAIR_COLOURS)].sum(axis=1).max() <= 1
    assert not (samples[:, sf.STRAIGHT] * samples[:, sf.WAVY]).any()
    assert not (samples[:, sf.BALD] * samples[:, sf.BANGS]).any()
    for k in (sf.MALE, sf.LIPSTICK, sf.BEARD, sf.SMILING, sf.MOUTH_OPEN, sf.YOUNG, sf.EYEGLASSES):
        assert abs(samples[:, k].mean() - 0.5) < 0.025, ATTRIBUTE_NAMES[k]
    corr = np.corrcoef(samples.T)
    # CelebA-like data ties these strongly (|r| 0.3-0.8); independent ones are within noise (~0.014 sd).
    for i, j in ((sf.MALE, sf.LIPSTICK), (sf.MALE, sf.BEARD), (sf.MALE, sf.MAKEUP), (sf.SMILING, sf.MOUTH_OPEN)):
        assert abs(corr[i, j]) < 0.05, (ATTRIBUTE_NAMES[i], ATTRIBUTE_NAMES[j])
    celeba = sf.make_attributes(99, 3000).astype(float)
    assert np.corrcoef(celeba.T)[sf.MALE, sf.LIPSTICK] < -0.5
    # Same people whichever statistics: only the attributes differ.
    assert sf.example_face(3, 7, "independent")[0] == sf.example_face(3, 7)[0]
    with pytest.raises(ValueError, match="attribute sampling"):
        sf.example_face(3, 7, "uniform")


def test_seeds_give_disjoint_identities():
    first, second = sf.make_identities(0, 300), sf.make_identities(1, 300)
    encoded = {json.dumps(identity, sort_keys=True) for identity in first}
    assert not encoded & {json.dumps(identity, sort_keys=True) for identity in second}
    # Not merely different somewhere: continuous features never coincide.
    assert not {i["face_width"] for i in first} & {i["face_width"] for i in second}
    assert len(encoded) == 300


def test_bad_input_raises_clear_errors():
    identity, attributes = sf.example_face(0, 0)
    with pytest.raises(ValueError, match="image_size"):
        sf.render(identity, attributes, 31)
    with pytest.raises(ValueError, match="image_size"):
        sf.render(identity, attributes, 512)
    with pytest.raises(ValueError, match="shape"):
        sf.render(identity, attributes[:19])
    with pytest.raises(ValueError, match="0 or 1"):
        sf.render(identity, np.full(20, 2))
    with pytest.raises(ValueError, match="attribute_index"):
        sf.attribute_mask(identity, 20)
    with pytest.raises(ValueError, match="non-negative"):
        sf.example_face(-1, 0)


def _assert_no_leftovers(parent):
    assert not [n for n in os.listdir(parent) if n.startswith(".")], os.listdir(parent)


def test_make_dataset_layout_and_rerender(tmp_path):
    out = tmp_path / "faces"
    make_dataset(str(out), 12, image_size=32, seed=5, workers=2, progress=False)
    names = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    assert names == [f"{i:05d}.png" for i in range(12)]
    attributes = read_attributes(str(out))
    assert attributes.shape == (12, 20) and attributes.dtype == torch.float32
    text_names, files, values, _ = read_attribute_file(str(out / "attributes.txt"), ATTRIBUTE_NAMES)
    assert files == names
    np.testing.assert_array_equal((values + 1) // 2, attributes.numpy())
    record = sf.read_identities(str(out))
    assert record["image_size"] == 32 and record["seed"] == 5 and len(record["faces"]) == 12
    for i, face in enumerate(record["faces"]):
        assert face["file"] == names[i]
        assert face["attributes"] == attributes[i].long().tolist()
        stored = np.asarray(Image.open(out / face["file"]))
        np.testing.assert_array_equal(stored, sf.render(face["identity"], face["attributes"], 32))
        identity, expected = sf.example_face(5, i)
        assert face["identity"] == identity and face["attributes"] == expected.tolist()
    assert record["attribute_sampling"] == "celeba"
    _assert_no_leftovers(tmp_path)
    with pytest.raises(ValueError, match="already exists"):
        make_dataset(str(out), 3, image_size=32, seed=5, workers=1, progress=False)
    independent = tmp_path / "independent"
    make_dataset(str(independent), 12, image_size=32, seed=5, workers=1, progress=False, sampling="independent")
    record = sf.read_identities(str(independent))
    assert record["attribute_sampling"] == "independent"
    expected = sf.make_attributes(5, 12, "independent")
    np.testing.assert_array_equal(read_attributes(str(independent)).long().numpy(), expected)
    assert not np.array_equal(expected, sf.make_attributes(5, 12))
    with pytest.raises(ValueError, match="attribute sampling"):
        make_dataset(str(tmp_path / "bad"), 3, image_size=32, seed=5, workers=1, progress=False, sampling="x")
    assert not (tmp_path / "bad").exists()


def test_interrupted_make_dataset_leaves_nothing(tmp_path, monkeypatch):
    import preprocess.make_synthetic_dataset as script

    calls = []

    def failing_render(identity, attributes, image_size):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return sf.render(identity, attributes, image_size)

    monkeypatch.setattr(script, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        script.make_dataset(str(tmp_path / "faces"), 10, image_size=32, workers=1, progress=False)
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_whole_dataset(tmp_path):
    out = tmp_path / "faces"
    make_dataset(str(out), 6, image_size=32, seed=1, workers=1, progress=False)
    make_dataset(str(out), 3, image_size=32, seed=2, workers=1, progress=False, overwrite=True)
    assert sorted(n for n in os.listdir(out) if n.endswith(".png")) == ["00000.png", "00001.png", "00002.png"]
    assert sf.read_identities(str(out))["seed"] == 2
    _assert_no_leftovers(tmp_path)


def test_cli_reports_bad_input_in_one_line(tmp_path, repo_root):
    script = os.path.join(repo_root, "preprocess", "make_synthetic_dataset.py")
    result = subprocess.run(
        [sys.executable, script, "--out", str(tmp_path / "x"), "--num_images", "2", "--image_size", "20"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "image_size" in result.stderr
    assert not os.path.exists(tmp_path / "x")


def test_read_identities_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="identities.json"):
        sf.read_identities(str(tmp_path))
    (tmp_path / "identities.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        sf.read_identities(str(tmp_path))
    (tmp_path / "identities.json").write_text(json.dumps({"faces": []}))
    with pytest.raises(ValueError, match="not a"):
        sf.read_identities(str(tmp_path))


def test_dataset_loads_with_guided_diffusion_loader(tmp_path):
    image_datasets = pytest.importorskip("guided_diffusion.image_datasets")
    out = tmp_path / "faces"
    make_dataset(str(out), 6, image_size=32, seed=3, workers=1, progress=False)
    batches = image_datasets.load_data(
        data_dir=str(out), batch_size=6, image_size=32, deterministic=True, random_flip=False, shard=0, num_shards=1
    )
    images, kwargs = next(batches)
    assert images.shape == (6, 3, 32, 32) and -1 <= images.min() and images.max() <= 1
    expected = torch.stack(
        [torch.from_numpy(sf.render(f["identity"], f["attributes"], 32)) for f in sf.read_identities(str(out))["faces"]]
    )
    expected = expected.permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(kwargs["y"], read_attributes(str(out)))


def _start_generation(tmp_path, repo_root, out_name="faces", num_images=3000):
    """The CLI rendering many faces in a session of its own (a terminal's Ctrl-C reaches the whole
    process group); returns (process, the hidden building folder once it holds a face)."""
    import signal
    import time

    script = os.path.join(repo_root, "preprocess", "make_synthetic_dataset.py")
    process = subprocess.Popen(
        [sys.executable, script, "--out", str(tmp_path / out_name), "--num_images", str(num_images),
         "--image_size", "32", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # A foreground command in a terminal has Ctrl-C's default action; a test suite started in the
        # background (`cmd &`) has SIGINT ignored, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        building = [n for n in os.listdir(tmp_path) if n.startswith(f".{out_name}.building-")]
        if building and any(n.endswith(".png") for n in os.listdir(tmp_path / building[0])):
            return process, tmp_path / building[0]
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the generator wrote no face: {process.communicate()[1][-2000:]}")


def _group_gone(pgid, timeout=20):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_ctrl_c_prints_one_line_and_leaves_nothing(tmp_path, repo_root):
    import signal

    process, _ = _start_generation(tmp_path, repo_root)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "not written" in lines[0], err[-2000:]
    assert _group_gone(process.pid), "rendering processes outlived the interrupted run"
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_rerun_removes_what_a_killed_run_left(tmp_path, repo_root, capsys):
    import signal

    process, building = _start_generation(tmp_path, repo_root)
    os.kill(process.pid, signal.SIGKILL)  # no cleanup possible: the folder stays behind
    process.communicate(timeout=60)
    assert _group_gone(process.pid), "rendering processes outlived their killed parent"
    assert building.is_dir()
    # A folder of a live run for the same destination (this test's own pid) is not touched.
    alive = tmp_path / f".faces.building-{os.getpid()}-concurrent"
    alive.mkdir()
    out = make_dataset(str(tmp_path / "faces"), 4, image_size=32, seed=0, workers=1, progress=False)
    assert f"removed {building}" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, "faces"])
    assert len([n for n in os.listdir(out) if n.endswith(".png")]) == 4
