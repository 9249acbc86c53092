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


IDENTITY_PATHS = [os.path.join(ROOT, "checkpoints", n) for n in ("identity.pt", "eval_identity.pt")]


@pytest.mark.parametrize("path", IDENTITY_PATHS)
def test_shipped_identity_networks_tell_an_edit_from_another_person(path):
    """On held-out people: a face and the same face with glasses or a smile added are closer than
    two different people, for every one of 8 faces; the id term's loss orders them the same way."""
    _require(path)
    from preprocess.identity import IdentityLoss, load_identity_net
    from preprocess.synthetic_faces import example_face, render
    from optimization.image_io import to_tensor

    net = load_identity_net(path)
    faces, edits = [], []
    for i in range(8):
        identity, attributes = example_face(1000, i)
        edited = list(attributes)
        for k in (9, 15):
            edited[k] = 1
        faces.append(to_tensor(render(identity, list(attributes), 64)))
        edits.append(to_tensor(render(identity, edited, 64)))
    faces, edits = torch.cat(faces), torch.cat(edits)
    with torch.no_grad():
        e, f = net(edits), net(faces)
        same = (e * f).sum(1)
        other = (f * f.roll(1, 0)).sum(1)
        loss = IdentityLoss(net)
        assert (loss(edits, faces) < loss(faces.roll(1, 0), faces)).all()
    assert (same > other).all(), f"{path}: same {same.tolist()} other {other.tolist()}"
    assert float(same.mean()) > 0.8 and float(other.mean()) < 0.4


def test_shipped_checkpoints_fit_the_budget():
    total = sum(os.path.getsize(os.path.join(ROOT, "checkpoints", n))
                for n in os.listdir(os.path.join(ROOT, "checkpoints")) if n.endswith(".pt"))
    assert total <= 40 * 10**6, f"checkpoints/*.pt: {total / 1e6:.1f} MB, over the 40 MB budget"
