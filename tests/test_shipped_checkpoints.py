"""The embedded default: the shipped checkpoints load and edit (skipped only when a file is missing)."""
import os

import pytest
import torch

from optimization import attribute_editor as ae
from optimization.arguments import DEFAULT_CLASSIFIER_PATH, DEFAULT_MODEL_PATH
from preprocess.classifier import load_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_CLASSIFIER_PATH = os.path.join(ROOT, "checkpoints", "eval_classifier.pt")


def _require(path):
    if not os.path.isfile(path):
        pytest.skip(f"{os.path.relpath(path, ROOT)} is not in this checkout (see checkpoints/README.md)")


@pytest.mark.parametrize("path", [DEFAULT_CLASSIFIER_PATH, EVAL_CLASSIFIER_PATH])
def test_shipped_classifiers_read_held_out_faces(path):
    _require(path)
    clf = load_classifier(path)
    x = torch.cat([ae.load_dataset_item("synthetic:1000", i, 64)[0] for i in range(16)])
    labels = torch.stack([ae.load_dataset_item("synthetic:1000", i, 64)[1] for i in range(16)])
    with torch.no_grad():
        accuracy = ((clf(x) > 0.5).float() == labels).float().mean()
    assert accuracy > 0.9, f"{path}: accuracy {accuracy:.3f} on 16 held-out faces"


def test_shipped_diffusion_model_runs_a_short_edit():
    _require(DEFAULT_MODEL_PATH)
    _require(DEFAULT_CLASSIFIER_PATH)
    editor = ae.AttributeEditor(DEFAULT_MODEL_PATH, DEFAULT_CLASSIFIER_PATH, device="cpu")
    x, a = ae.load_dataset_item("synthetic:1000", 0, editor.image_size)
    opts = ae.EditOptions.from_preset("fast", timestep_respacing="25", edit_strength=0.2)
    res = editor.edit(x, a[None], ae.query_from_indices(a[None], [9]), opts)
    assert res.images.shape == x.shape and torch.isfinite(res.images).all()
    # Reconstruction through the exact inversion returns the input.
    recon = editor.edit(x, a[None], a[None], ae.EditOptions.from_preset(
        "fast", timestep_respacing="25", edit_strength=0.2, cycle_reconstruct_lambda=0.0,
        attribute_guidance_lambda=0.0, range_lambda=0.0))
    assert float(ae.metrics.psnr(recon.images, x)[0]) > 40
