"""Sample-quality measures (optimization/sample_metrics.py) on known cases, and
scripts/evaluate_samples.py end to end on tiny models."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from optimization.sample_metrics import channel_mean_w1, conditioning_accuracy, wasserstein_1d
from test_evaluation import tiny_classifier, tiny_unet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    spec = importlib.util.spec_from_file_location(
        "evaluate_samples", os.path.join(ROOT, "scripts", "evaluate_samples.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_samples = load_script()


def test_wasserstein_of_shifted_samples_is_the_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    assert wasserstein_1d(a, a + 0.25) == pytest.approx(0.25, abs=1e-12)
    assert wasserstein_1d(a, a) == 0.0
    # Unequal sizes: {0, 1} against {0, 0, 1, 1, 1}: |F_a - F_b| = |0.5 - 0.4| on [0, 1).
    assert wasserstein_1d([0, 1], [0, 0, 1, 1, 1]) == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ValueError):
        wasserstein_1d([], [1.0])


def test_channel_mean_w1_reads_a_colour_cast():
    x = torch.rand(40, 3, 8, 8) * 2 - 1
    cast = x.clone()
    cast[:, 1] += 0.2  # green +0.2 in [-1, 1] units = +0.1 in [0, 1] units, one channel of three
    assert channel_mean_w1(x, x) == 0.0
    assert channel_mean_w1(cast, x) == pytest.approx(0.1 / 3, abs=1e-9)


def test_conditioning_accuracy_per_attribute():
    attributes = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    probs = torch.tensor([[0.9, 0.6], [0.2, 0.4]])
    assert conditioning_accuracy(probs, attributes).tolist() == [1.0, 0.5]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_models")
    return dict(model=tiny_unet(str(root)), eval_classifier=tiny_classifier(str(root / "eval.pt"), 1))


def test_script_writes_measures_grid_and_samples(models, tmp_path):
    out = tmp_path / "out"
    flags = [f"--model_path={models['model']}", f"--eval_classifier_path={models['eval_classifier']}",
             "--num_samples=6", "--batch_size=4", "--timestep_respacing=ddim4", "--grid_rows=1",
             f"--output_dir={out}", "--device=cpu"]
    assert evaluate_samples.main(flags) == 0
    results = json.loads((out / "samples.json").read_text())
    for key in ("fd", "fd_floor", "conditioning_accuracy", "conditioning_accuracy_editable",
                "conditioning_accuracy_floor", "color_w1", "color_w1_floor", "saturated_fraction"):
        assert np.isfinite(results[key]), key
    assert results["steps"] == 4 and results["floor_seed"] == 1001
    assert results["saturated_fraction_floor"] == 0.0 and 0 <= results["saturated_fraction"] <= 1
    assert results["fd_floor"] > 0 and results["color_w1_floor"] > 0  # other people differ
    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (6, 32, 32, 3) and data["attributes"].shape == (6, 20)
    assert (out / "grid.png").is_file()
    # Same seed, same samples.
    again = tmp_path / "again"
    assert evaluate_samples.main(flags[:-2] + [f"--output_dir={again}", "--device=cpu"]) == 0
    assert np.array_equal(np.load(again / "samples.npz")["samples"], data["samples"])


@pytest.mark.parametrize("flags, message", [
    (["--num_samples=1"], "at least 2"),
    (["--batch_size=0"], "batch_size"),
    (["--model_path=/nonexistent.pt"], "no such file"),
    (["--sampler=ddpm", "--timestep_respacing=ddim50"], "DDIM spacing"),
    (["--floor_seed=1000"], "floor_seed"),
])
def test_bad_arguments_are_one_line_before_any_model_loads(flags, message, tmp_path, capsys):
    assert evaluate_samples.main(flags + [f"--output_dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
