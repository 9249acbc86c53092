"""Tests of the synthetic-faces identity networks (preprocess/identity.py, identity_train.py) and of
the views-per-person datasets they learn from."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from preprocess.identity import ArcMarginHead, IdentityLoss, IdentityNet, load_identity_net
from preprocess.identity_train import best_threshold, verification_accuracy, verification_pairs
from preprocess.synthetic_faces import VIEW_FIELDS, example_face, person_view

TINY = dict(widths=(8, 8, 16, 16), embedding_dim=16, input_size=32)


def perturbed(model, seed=0):
    """Random BatchNorm statistics and affine weights, so the tiny network is not near-constant."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def test_person_view_keeps_the_person_and_redraws_the_scene():
    person, _ = example_face(3, 7)
    a, attrs_a = person_view(3, 7, 0)
    b, attrs_b = person_view(3, 7, 1)
    for key in person:
        if key in VIEW_FIELDS:
            continue
        assert a[key] == person[key] == b[key], key
    assert any(a[k] != b[k] for k in VIEW_FIELDS)
    assert not np.array_equal(attrs_a, attrs_b) or a["background"] != b["background"]
    again, attrs_again = person_view(3, 7, 1)
    assert again == b and np.array_equal(attrs_again, attrs_b)  # deterministic


def test_views_dataset_records_each_faces_person(tmp_path):
    out = tmp_path / "people"
    subprocess.run([sys.executable, "preprocess/make_synthetic_dataset.py", "--out", str(out), "--num_images", "6",
                    "--views_per_person", "3", "--image_size", "32", "--workers", "1"], check=True,
                   capture_output=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    record = json.loads((out / "identities.json").read_text())
    assert record["views_per_person"] == 3
    assert [f["person"] for f in record["faces"]] == [0, 0, 0, 1, 1, 1]
    identity, attributes = person_view(0, 1, 2, "celeba")
    assert record["faces"][5]["identity"] == identity
    assert record["faces"][5]["attributes"] == attributes.tolist()


def test_embeddings_are_unit_vectors_and_see_only_the_crop():
    model = perturbed(IdentityNet(**TINY))
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    e = model(x)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    # Pixels outside the central crop (rows/cols 1/8..7/8) do not change the embedding; inside they do.
    outside = x.clone()
    outside[:, :, :8] = torch.rand(3, 3, 8, 64)
    torch.testing.assert_close(model(outside), e)
    inside = x.clone()
    inside[:, :, 20:40, 20:40] = -x[:, :, 20:40, 20:40]
    assert (model(inside) - e).abs().max() > 1e-3


def test_arc_margin_lowers_only_the_true_class_logit():
    torch.manual_seed(0)
    head = ArcMarginHead(8, 5, scale=10.0, margin=0.3)
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    labels = torch.tensor([0, 1, 2, 3])
    plain = head(e, labels, margin=0.0)
    cosine = e @ torch.nn.functional.normalize(head.weight, dim=1).T
    torch.testing.assert_close(plain, 10.0 * cosine, atol=1e-5, rtol=0)
    margin = head(e, labels)
    true = torch.zeros_like(plain, dtype=torch.bool)
    true[torch.arange(4), labels] = True
    torch.testing.assert_close(margin[~true], plain[~true])
    theta = torch.acos(cosine[true].clamp(-1, 1))
    expected = torch.where(theta + 0.3 < math.pi, torch.cos(theta + 0.3), cosine[true] - math.sin(math.pi - 0.3) * 0.3)
    torch.testing.assert_close(margin[true], 10.0 * expected, atol=1e-4, rtol=0)
    assert (margin[true] < plain[true]).all()


def test_identity_loss_is_zero_for_the_same_image_and_a_gradient_step_lowers_it():
    torch.manual_seed(0)
    loss_fn = IdentityLoss(perturbed(IdentityNet(**TINY)))
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loss_fn(y, y), torch.zeros(2), atol=1e-5, rtol=0)
    y_hat = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)  # other images
    before = loss_fn(y_hat, y)
    assert (before > 1e-3).all()
    before.sum().backward()
    with torch.no_grad():
        after = loss_fn(y_hat - 0.5 * y_hat.grad / y_hat.grad.norm(), y)
    assert (after < before).all()


def test_verification_threshold_and_accuracy():
    similarity = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1, 0.75])
    same = torch.tensor([True, True, True, False, False, False])
    threshold = best_threshold(similarity, same)
    assert 0.75 < threshold <= 0.8 or 0.2 < threshold < 0.7
    assert ((similarity >= threshold) == same).sum() == 5
    separable = torch.cat([torch.rand(100) * 0.4, 0.6 + torch.rand(100) * 0.4])
    labels = torch.cat([torch.zeros(100, dtype=torch.bool), torch.ones(100, dtype=torch.bool)])
    accuracy, _ = verification_accuracy(separable, labels)
    assert accuracy == 1.0
    chance, _ = verification_accuracy(torch.rand(2000), torch.rand(2000) < 0.5)
    assert 0.4 < chance < 0.6


def test_verification_pairs_are_balanced():
    people = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pairs, same = verification_pairs(people)
    assert same.sum() == 3 + 1 + 3 and (~same).sum() == same.sum()
    assert (people[pairs[same, 0]] == people[pairs[same, 1]]).all()
    assert (people[pairs[~same, 0]] != people[pairs[~same, 1]]).all()


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ids") / "people"
    subprocess.run([sys.executable, "preprocess/make_synthetic_dataset.py", "--out", str(out), "--num_images", "48",
                    "--views_per_person", "4", "--image_size", "32", "--workers", "1", "--attributes",
                    "independent"], check=True, capture_output=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    return out


def _train(people_dir, exp_dir, *extra):
    command = [sys.executable, "preprocess/identity_train.py", "--data_dir", str(people_dir), "--exp_dir", str(exp_dir),
               "--widths", "8,8,16,16", "--embedding_dim", "16", "--input_size", "32", "--val_people", "2",
               "--batch_size", "8", "--max_steps", "8", "--save_interval", "4", "--log_interval", "2",
               "--margin_warmup_steps", "3", "--num_threads", "1", *extra]
    return subprocess.run(command, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def test_training_resumes_exactly_and_evaluates(people_dir, tmp_path):
    full = _train(people_dir, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    os.remove(tmp_path / "full" / "identity.pt")
    # An interrupted run: the same command with only the step-4 checkpoint on disk.
    os.makedirs(tmp_path / "cut" / "checkpoints")
    os.replace(tmp_path / "full" / "checkpoints" / "identity_000004.pt",
               tmp_path / "cut" / "checkpoints" / "identity_000004.pt")
    resumed = _train(people_dir, tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    final_full = torch.load(tmp_path / "full" / "checkpoints" / "identity_000008.pt", weights_only=True)
    final_cut = torch.load(tmp_path / "cut" / "checkpoints" / "identity_000008.pt", weights_only=True)
    for key, value in final_full["trainer"].items():
        torch.testing.assert_close(final_cut["trainer"][key], value, atol=0, rtol=0, msg=key)
    model = load_identity_net(str(tmp_path / "cut" / "identity.pt"))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 16)

    report = tmp_path / "eval.json"
    evaluated = subprocess.run([sys.executable, "preprocess/identity_train.py", "--evaluate",
                                str(tmp_path / "cut" / "identity.pt"), "--data_dir", str(people_dir),
                                "--output", str(report), "--figure", str(tmp_path / "sim.png")],
                               capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(report.read_text())["summary"]
    assert 0.0 <= summary["verification_accuracy"] <= 1.0
    assert set(summary["attribute_flip_by_attribute"]) == {"Bags_Under_Eyes", "Eyeglasses", "Male",
                                                           "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick",
                                                           "Young"}
    assert (tmp_path / "sim.png").stat().st_size > 1000


def test_training_refuses_another_runs_checkpoints(people_dir, tmp_path):
    assert _train(people_dir, tmp_path / "run").returncode == 0
    other = _train(people_dir, tmp_path / "run", "--margin", "0.3")
    assert other.returncode == 2
    assert other.stderr.strip().startswith("error: cannot resume") and "margin" in other.stderr


def test_data_parallel_training_runs(people_dir, tmp_path):
    result = _train(people_dir, tmp_path / "ddp", "--nprocs", "2")
    assert result.returncode == 0, result.stderr
    assert load_identity_net(str(tmp_path / "ddp" / "identity.pt")) is not None


def test_load_identity_net_refuses_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not an identity-network checkpoint"):
        load_identity_net(str(path))
    with pytest.raises(FileNotFoundError):
        load_identity_net(str(tmp_path / "missing.pt"))
