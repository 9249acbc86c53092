"""Tests of the attribute classifier (preprocess/classifier.py) and its training script."""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import Resize

from preprocess import encoder_train
from preprocess.classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AttributeClassifier,
    infer_architecture,
    load_classifier,
)

NUM_ATTRIBUTES = 20


@pytest.fixture(autouse=True)
def one_thread():
    """One thread per process: on shared cores, spinning OpenMP threads cost far more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_dataset(directory, num_images=48, size=32, num_attributes=NUM_ATTRIBUTES, seed=0):
    """Images whose attribute k is a bright square in grid cell k, on dim noise."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    attributes = rng.integers(0, 2, (num_images, num_attributes)).astype(np.float32)
    cell = size // 5
    for i in range(num_images):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        for k in np.flatnonzero(attributes[i]):
            row, col = divmod(int(k) % 25, 5)
            image[row * cell + 1:(row + 1) * cell, col * cell + 1:(col + 1) * cell] = 220
        Image.fromarray(image).save(os.path.join(directory, f"{i:05d}.png"))
    torch.save(torch.from_numpy(attributes), os.path.join(directory, "attributes.pt"))
    return directory


def perturbed_classifier(seed=0, **kwargs):
    """A small classifier in eval mode with BatchNorm statistics and heads moved off their init."""
    torch.manual_seed(seed)
    kwargs = dict(dict(input_size=32, head_hidden_dim=16, feature_dim=32), **kwargs)
    model = AttributeClassifier(**kwargs)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model.eval()


def train_args(data_dir, exp_dir, *extra):
    return encoder_train.create_argparser().parse_args(
        [
            "--data_dir", str(data_dir), "--exp_dir", str(exp_dir), "--batch_size", "8", "--max_steps", "6",
            "--log_interval", "1", "--eval_interval", "3", "--save_interval", "3", "--num_workers", "1",
            "--feature_dim", "32", "--head_hidden_dim", "16", "--val_fraction", "0.25", "--num_threads", "1",
            "--device", "cpu",  # gloo ranks and bit-exact resumes, also on a machine with a GPU
            *extra,
        ]
    )


def run_main(monkeypatch, *args):
    """Run the script's main() in this process with these command-line arguments."""
    monkeypatch.setattr(sys, "argv", ["encoder_train.py", "--device", "cpu", *map(str, args)])
    encoder_train.main()


# ---------------------------------------------------------------- model


def test_probabilities_shape_range_and_logits():
    model = perturbed_classifier()
    for side in (16, 32, 48):
        x = torch.rand(3, 3, side, side) * 2 - 1
        with torch.no_grad():
            p = model(x)
            logits = model.logits(x)
        assert p.shape == (3, NUM_ATTRIBUTES)
        assert torch.all((p > 0) & (p < 1))
        torch.testing.assert_close(p, torch.sigmoid(logits))
    # Different images give different predictions (the model is not constant).
    assert (p[0] - p[1]).abs().max() > 1e-4


def test_logit_temperature_keeps_decisions_and_the_attribute_gradient_alive(tmp_path):
    model = perturbed_classifier()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    warm = AttributeClassifier(**dict(model.opts, logit_temperature=4.0))
    warm.load_state_dict(model.state_dict())
    warm.eval()
    with torch.no_grad():
        torch.testing.assert_close(warm.logits(x), model.logits(x) / 4)
        assert torch.equal(warm(x) > 0.5, model(x) > 0.5)  # same decisions
    # A saturated probability: the cross-entropy's gradient on the logit, p - 1, is ~0 as trained and
    # not at temperature 4 (the editor's attribute term keeps pushing).
    logit = torch.tensor(12.0)
    assert 1 - torch.sigmoid(logit) < 1e-5 and 1 - torch.sigmoid(logit / 4) > 0.04
    # stored in the opts: a checkpoint loads with it; one written before it loads at 1
    torch.save({"state_dict": warm.state_dict(), "opts": warm.opts}, tmp_path / "warm.pt")
    assert load_classifier(str(tmp_path / "warm.pt")).logit_temperature == 4.0
    old_opts = {k: v for k, v in model.opts.items() if k != "logit_temperature"}
    torch.save({"state_dict": model.state_dict(), "opts": old_opts}, tmp_path / "old.pt")
    assert load_classifier(str(tmp_path / "old.pt")).logit_temperature == 1.0
    with pytest.raises(ValueError, match="logit_temperature"):
        AttributeClassifier(**dict(model.opts, logit_temperature=0))


def test_input_is_mapped_to_imagenet_statistics_and_resized_like_torchvision():
    model = perturbed_classifier(input_size=40)
    image01 = torch.rand(2, 3, 24, 24)
    expected = torchvision.transforms.functional.resize(image01, [40, 40], antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.prepare(image01 * 2 - 1), (expected - mean) / std, atol=1e-5, rtol=1e-5)
    raw = perturbed_classifier(input_size=32, input_normalization="none")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(raw.prepare(x), x)


def test_gradient_wrt_input_is_finite_nonzero_and_raises_the_probability():
    model = perturbed_classifier().requires_grad_(False)
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    target = 4
    p = model(x)[:, target]
    (grad,) = torch.autograd.grad(p.sum(), x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # A small step along the gradient raises the probability, against it lowers it.
    step = 1e-2 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    with torch.no_grad():
        assert torch.all(model(x + step)[:, target] > p)
        assert torch.all(model(x - step)[:, target] < p)


def test_state_dict_follows_the_paper_layout():
    model = AttributeClassifier(input_size=32, feature_dim=32, head_hidden_dim=16)
    keys = set(model.state_dict())
    assert "base_model.model.conv1.weight" in keys
    assert model.state_dict()["base_model.model.fc.weight"].shape == (32, 512)
    for i in range(NUM_ATTRIBUTES):
        assert model.state_dict()[f"classify_headers.classify_headers.{i}.0.weight"].shape == (16, 32)
        assert model.state_dict()[f"classify_headers.classify_headers.{i}.3.weight"].shape == (1, 16)
    assert not any(k.startswith("input_") for k in keys)
    assert infer_architecture(model.state_dict()) == dict(
        arch="resnet18", num_attributes=NUM_ATTRIBUTES, feature_dim=32, head_hidden_dim=16, trunk_fc_dim=0
    )


# The paper's released classifier, transcribed from gongshuai1/CycleDiff preprocess/coach.py (its last
# version, the one the paper's editor loads); only the pretrained download is left out.


class ReleasedFeedForward(nn.Module):
    def __init__(self, dim, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim // 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.net(x)


class ReleasedImageEncoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.model = nn.ModuleList([
            Resize(224),
            torchvision.models.resnet18(weights=None),
            nn.GELU(),
            nn.Linear(1000, self.dim),
            nn.GELU(),
        ])

    def forward(self, x):
        for layer in self.model:
            x = layer(x)
        return x


class ReleasedAttributeClassifierHeaders(nn.Module):
    def __init__(self, in_dim, att_num):
        super().__init__()
        self.att_num = att_num
        self.in_dim = in_dim
        self.classify_headers = nn.ModuleList([])
        for _ in range(self.att_num):
            self.classify_headers.append(ReleasedFeedForward(self.in_dim))

    def forward(self, x):
        y = [header(x) for header in self.classify_headers]
        y = torch.squeeze(torch.stack(y, dim=0), dim=2).permute(1, 0)
        return y


class ReleasedAttributeClassifier(nn.Module):
    def __init__(self, feature_dim, att_num):
        super().__init__()
        self.feature_dim = feature_dim
        self.att_num = att_num
        self.base_model = ReleasedImageEncoder(dim=self.feature_dim)
        self.classify_headers = ReleasedAttributeClassifierHeaders(in_dim=self.feature_dim, att_num=self.att_num)

    def forward(self, x):
        feature = self.base_model(x)
        y = self.classify_headers(feature)
        return y


def released_checkpoint(path, seed=0):
    """The released classifier with random weights (BatchNorm statistics moved off their init), saved as
    its Coach saved it: {"state_dict": DDP's state dict ("module." keys), "opts": vars(args)}. Returns the model."""
    torch.manual_seed(seed)
    model = ReleasedAttributeClassifier(feature_dim=256, att_num=NUM_ATTRIBUTES)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    ddp = nn.Module()
    ddp.module = model  # DistributedDataParallel keeps the model as .module
    opts = dict(data_dir="data/celeba-256", exp_dir="runs/attribute-classifier", learning_rate=1e-5,
                batch_size=64, max_steps=300, save_interval=50, attribute_count=20, world_size=1, rank=0,
                dist_url="env://", dist_backend="nccl", gpu=0, multiprocessing_distributed=True, distributed=True)
    torch.save({"state_dict": ddp.state_dict(), "opts": opts}, path)
    return model.eval()


def test_released_paper_checkpoint_loads_with_the_same_probabilities(tmp_path):
    path = tmp_path / "released.pt"
    reference = released_checkpoint(path)
    state_dict = torch.load(path, weights_only=True)["state_dict"]
    assert "module.base_model.model.1.conv1.weight" in state_dict
    assert state_dict["module.base_model.model.1.fc.weight"].shape == (1000, 512)
    assert state_dict["module.base_model.model.3.weight"].shape == (256, 1000)
    assert state_dict["module.classify_headers.classify_headers.19.net.0.weight"].shape == (128, 256)
    assert state_dict["module.classify_headers.classify_headers.19.net.3.bias"].shape == (1,)

    loaded = load_classifier(str(path))
    assert loaded.opts == dict(arch="resnet18", num_attributes=NUM_ATTRIBUTES, feature_dim=256, input_size=224,
                               head_hidden_dim=128, dropout=0.0, input_normalization="none",
                               feature_activation="gelu", trunk_fc_dim=1000, logit_temperature=1.0)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = reference(x)
        probabilities = loaded(x)
    assert probabilities.shape == (3, NUM_ATTRIBUTES)
    assert 0.02 < expected.min() and expected.max() < 0.98  # not saturated: the comparison means something
    torch.testing.assert_close(probabilities, expected, atol=1e-6, rtol=0)
    with torch.no_grad():  # at the trunk's own size too (torchvision's Resize leaves 224 px as it is)
        x224 = torch.rand(1, 3, 224, 224) * 2 - 1
        torch.testing.assert_close(loaded(x224), reference(x224), atol=1e-6, rtol=0)
    # Re-saved in the project's layout, it loads the same way.
    torch.save({"state_dict": loaded.state_dict(), "opts": loaded.opts}, tmp_path / "project.pt")
    with torch.no_grad():
        assert torch.equal(load_classifier(str(tmp_path / "project.pt"))(x), probabilities)


def test_released_paper_checkpoint_evaluates_from_the_command_line(tmp_path, repo_root):
    path = tmp_path / "released.pt"
    reference = released_checkpoint(path, seed=2)
    data = make_dataset(tmp_path / "data", num_images=6, size=32)
    output = tmp_path / "acc.json"
    command = [sys.executable, os.path.join(repo_root, "preprocess", "encoder_train.py"), "--evaluate", str(path),
               "--data_dir", str(data), "--output", str(output), "--device", "cpu", "--num_workers", "1",
               "--num_threads", "1", "--batch_size", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["num_images"] == 6 and len(report["attributes"]) == NUM_ATTRIBUTES
    images, attributes = encoder_train.load_labelled_images(str(data), NUM_ATTRIBUTES, progress=False)
    with torch.no_grad():
        predicted = reference(encoder_train.to_model_range(images)) >= 0.5
    expected_accuracy = (predicted == attributes.bool()).double().mean(0)
    reported = torch.tensor([a["accuracy"] for a in report["attributes"].values()], dtype=torch.float64)
    torch.testing.assert_close(reported, expected_accuracy)


def test_released_paper_checkpoint_guides_the_editor(tmp_path):
    from optimization.arguments import DEFAULT_MODEL_PATH
    from optimization.attribute_editor import AttributeEditor

    path = tmp_path / "released.pt"
    reference = released_checkpoint(path, seed=3)
    editor = AttributeEditor(DEFAULT_MODEL_PATH, str(path), device="cpu")
    x = torch.rand(2, 3, editor.image_size, editor.image_size) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(editor.classify(x), reference(x), atol=1e-6, rtol=0)


def test_early_published_coach_layout_checkpoint_loads_with_identical_outputs(tmp_path):
    # The first published gongshuai1/CycleDiff preprocess/coach.py: a bare torchvision ResNet (1000-way fc) as
    # base_model, heads FeedForward(1000, 768) as classify_headers.<i>.net, no activation between them.
    reference = perturbed_classifier(
        input_size=224, input_normalization="none", feature_dim=1000, head_hidden_dim=24, feature_activation="none"
    )
    state_dict = {}
    for key, value in reference.state_dict().items():
        if key.startswith("base_model.model."):
            key = "base_model." + key[len("base_model.model."):]
        else:
            head, layer, param = key.rsplit(".", 3)[1:]
            key = f"classify_headers.{head}.net.{layer}.{param}"
        state_dict[f"module.{key}"] = value.clone()
    assert "module.base_model.fc.weight" in state_dict and "module.classify_headers.19.net.3.bias" in state_dict
    torch.save({"state_dict": state_dict, "opts": {"attribute_count": 20}}, tmp_path / "coach.pt")
    loaded = load_classifier(str(tmp_path / "coach.pt"))
    assert loaded.opts["feature_activation"] == "none" and loaded.opts["feature_dim"] == 1000
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))


def test_pretrained_trunk_loads_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    trunk = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(trunk.state_dict(), path)
    model = AttributeClassifier(input_size=32, feature_dim=32, head_hidden_dim=16)
    fc_before = model.base_model.model.fc.weight.clone()
    model.load_pretrained_trunk(str(path))
    torch.testing.assert_close(model.base_model.model.conv1.weight, trunk.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.base_model.model.layer4[1].bn2.running_var, trunk.layer4[1].bn2.running_var)
    assert torch.equal(model.base_model.model.fc.weight, fc_before)  # fc is the project's own layer
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match="resnet18"):
        model.load_pretrained_trunk(str(tmp_path / "resnet34.pth"))
    with pytest.raises(FileNotFoundError):
        model.load_pretrained_trunk(str(tmp_path / "absent.pth"))


def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_classifier(str(tmp_path / "absent.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_classifier(str(tmp_path / "corrupt.pt"))
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_classifier(str(tmp_path / "other.pt"))

    resnet34 = AttributeClassifier(arch="resnet34", input_size=32, feature_dim=32, head_hidden_dim=16)
    torch.save({"state_dict": resnet34.state_dict(), "opts": resnet34.opts}, tmp_path / "r34.pt")
    assert load_classifier(str(tmp_path / "r34.pt")).opts["arch"] == "resnet34"
    with pytest.raises(ValueError, match="arch='resnet34', expected arch='resnet18'"):
        load_classifier(str(tmp_path / "r34.pt"), arch="resnet18")
    with pytest.raises(ValueError, match="num_attributes=20, expected num_attributes=40"):
        load_classifier(str(tmp_path / "r34.pt"), num_attributes=40)
    # opts that contradict the weights (e.g. a hand-edited checkpoint)
    torch.save({"state_dict": resnet34.state_dict(), "opts": dict(resnet34.opts, arch="resnet18")}, tmp_path / "lie.pt")
    with pytest.raises(ValueError, match="opts say arch='resnet18' but its weights are arch='resnet34'"):
        load_classifier(str(tmp_path / "lie.pt"))


# ---------------------------------------------------------------- data and metrics


def test_accuracy_and_balanced_accuracy_on_a_hand_made_case():
    # attribute 0: 3 positives (2 found), 1 negative (found): acc 3/4, balanced (2/3 + 1) / 2
    # attribute 1: no positives, 4 negatives, 1 false alarm: acc 3/4, balanced = TNR = 3/4
    targets = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 0]], dtype=torch.float32)
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.2], [0.4, 0.7], [0.2, 0.3]])
    counts = encoder_train.confusion_counts(probs, targets)
    assert counts.tolist() == [[2, 0], [0, 1], [1, 3], [1, 0]]
    accuracy, balanced = encoder_train.accuracy_from_counts(counts)
    torch.testing.assert_close(accuracy, torch.tensor([0.75, 0.75], dtype=torch.float64))
    torch.testing.assert_close(balanced, torch.tensor([(2 / 3 + 1) / 2, 0.75], dtype=torch.float64))


def test_balanced_loss_gives_positives_and_negatives_equal_total_weight():
    labels = (torch.rand(200, NUM_ATTRIBUTES) < torch.linspace(0.02, 0.9, NUM_ATTRIBUTES)).float()
    labels[:, 0] = 0  # an attribute nobody has
    pos_weight = encoder_train.balancing_pos_weight(labels)
    positives = labels.sum(0)
    assert pos_weight[0] == 1
    torch.testing.assert_close((pos_weight * positives)[1:], (len(labels) - positives)[1:])
    # With it, a constant prediction's loss gradient no longer pushes rare attributes towards "absent".
    logits = torch.zeros(200, NUM_ATTRIBUTES, requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight).backward()
    torch.testing.assert_close(logits.grad.sum(0)[1:], torch.zeros(NUM_ATTRIBUTES - 1), atol=1e-6, rtol=0)


def test_split_and_batches_are_deterministic_and_disjoint():
    train, val = encoder_train.split_indices(100, 0.2, split_seed=3)
    assert len(val) == 20 and len(train) == 80
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(set(train.tolist()) | set(val.tolist())) == 100
    assert torch.equal(val, encoder_train.split_indices(100, 0.2, split_seed=3)[1])
    assert not torch.equal(val, encoder_train.split_indices(100, 0.2, split_seed=4)[1])
    # One epoch of batches covers the training split exactly once.
    epoch = torch.cat([encoder_train.step_batch(train, s, 16, seed=0, random_flip=True)[0] for s in range(5)])
    assert sorted(epoch.tolist()) == sorted(train.tolist())
    flips = encoder_train.step_batch(train, 7, 16, seed=0, random_flip=True)[1]
    assert 0 < flips.sum() < 16
    assert torch.equal(flips, encoder_train.step_batch(train, 7, 16, seed=0, random_flip=True)[1])


def test_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        encoder_train.load_labelled_images(str(tmp_path / "absent"), NUM_ATTRIBUTES)
    data = make_dataset(tmp_path / "data", num_images=4, size=16)
    torch.save(torch.zeros(4, 19), os.path.join(data, "attributes.pt"))
    with pytest.raises(ValueError, match="19 attributes per image, the classifier has 20"):
        encoder_train.load_labelled_images(data, NUM_ATTRIBUTES)
    torch.save(torch.zeros(5, 20), os.path.join(data, "attributes.pt"))
    with pytest.raises(ValueError, match="5 rows but .* 4 images"):
        encoder_train.load_labelled_images(data, NUM_ATTRIBUTES)
    torch.save(torch.full((4, 20), 0.5), os.path.join(data, "attributes.pt"))
    with pytest.raises(ValueError, match="0 or 1"):
        encoder_train.load_labelled_images(data, NUM_ATTRIBUTES)
    torch.save(torch.zeros(4, 20), os.path.join(data, "attributes.pt"))
    with open(os.path.join(data, "00002.png"), "wb") as f:
        f.write(b"\x89PNG broken")
    with pytest.raises(ValueError, match="00002.png"):
        encoder_train.load_labelled_images(data, NUM_ATTRIBUTES)
    os.remove(os.path.join(data, "00002.png"))
    with pytest.raises(ValueError, match="image 2 is missing"):
        encoder_train.load_labelled_images(data, NUM_ATTRIBUTES)
    Image.new("RGB", (16, 16)).save(os.path.join(data, "00002.png"))
    assert encoder_train.load_labelled_images(data, NUM_ATTRIBUTES, progress=False)[0].shape == (4, 3, 16, 16)
    os.remove(os.path.join(data, "attributes.pt"))
    with pytest.raises(FileNotFoundError, match="attributes.pt"):
        encoder_train.load_labelled_images(data, NUM_ATTRIBUTES)


# ---------------------------------------------------------------- training script


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA variant needs a GPU (deterministic cuDNN on resume)"))])
def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path, device):
    data = make_dataset(tmp_path / "data")
    encoder_train.run_training(train_args(data, tmp_path / "straight", "--device", device))

    interrupted = tmp_path / "interrupted"
    encoder_train.run_training(train_args(data, interrupted, "--device", device))
    # Undo everything after the step-3 checkpoint, as if the run had died there.
    os.remove(interrupted / "checkpoints" / "classifier_000006.pt")
    os.remove(interrupted / "classifier.pt")
    assert [s for s, _ in encoder_train.checkpoint_paths(str(interrupted))] == [3]
    encoder_train.run_training(train_args(data, interrupted, "--device", device))

    straight = torch.load(tmp_path / "straight" / "classifier.pt", weights_only=True)
    resumed = torch.load(interrupted / "classifier.pt", weights_only=True)
    assert straight["step"] == resumed["step"] == 6
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    with open(interrupted / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["lr"]) == 0.0  # cosine schedule ends at zero
    # The classifier learnt something: the loss fell.
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert os.path.getsize(interrupted / "training_curves.png") > 0

    # The final file is a loadable classifier for the editor.
    loaded = load_classifier(str(interrupted / "classifier.pt"))
    assert loaded.opts["input_size"] == 32 and loaded.opts["arch"] == "resnet18"

    # Resuming the same exp_dir with another architecture is refused.
    with pytest.raises(ValueError, match="arch='resnet18', this run asks for 'resnet34'"):
        encoder_train.run_training(train_args(data, interrupted, "--arch", "resnet34"))


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    encoder_train.run_training(train_args(data, run))
    newest = run / "checkpoints" / "classifier_000006.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # killed while writing, say
    os.remove(run / "classifier.pt")
    capsys.readouterr()
    encoder_train.run_training(train_args(data, run))
    out, err = capsys.readouterr()
    assert f"warning: not resuming from {newest}: cannot read checkpoint {newest} (corrupt or truncated?)" in err
    assert f"resuming from {run / 'checkpoints' / 'classifier_000003.pt'}" in out
    assert torch.load(run / "classifier.pt", weights_only=True)["step"] == 6
    assert torch.load(newest, weights_only=True)["step"] == 6  # rewritten
    with open(run / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    for _, path in encoder_train.checkpoint_paths(str(run)):
        with open(path, "wb") as f:
            f.write(b"\x00" * 10)
    with pytest.raises(ValueError, match="every checkpoint in .* is unreadable"):
        encoder_train.run_training(train_args(data, run))


def test_two_process_training_keeps_replicas_identical_and_evaluates(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data")
    exp = tmp_path / "ddp"
    args = train_args(
        data, exp, "--nprocs", "2", "--max_steps", "4", "--eval_interval", "2", "--save_interval", "4",
        "--world_size", "1", "--rank", "0", "--multiprocessing_distributed", "True",
    )
    encoder_train.run_training(args)  # spawns two gloo processes
    with open(exp / "val_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["replica_max_abs_diff"]) == 0.0 for r in rows)
    checkpoint = torch.load(exp / "classifier.pt", weights_only=True)
    torch.manual_seed(0)
    initial = AttributeClassifier(**{k: checkpoint["opts"][k] for k in ("input_size", "feature_dim", "head_hidden_dim")})
    assert not torch.equal(initial.state_dict()["base_model.model.conv1.weight"],
                           checkpoint["state_dict"]["base_model.model.conv1.weight"])

    # --evaluate reports what the classifier predicts on the held-out split.
    output = tmp_path / "results.json"
    run_main(monkeypatch, "--evaluate", exp / "classifier.pt", "--data_dir", data, "--eval_split", "val",
             "--output", output, "--num_workers", 1)
    report = json.loads(output.read_text())
    assert report["num_images"] == 12 and len(report["attributes"]) == NUM_ATTRIBUTES
    model = load_classifier(str(exp / "classifier.pt"))
    images, attributes = encoder_train.load_labelled_images(str(data), NUM_ATTRIBUTES, progress=False)
    val = encoder_train.split_indices(len(attributes), 0.25, 0)[1]
    with torch.no_grad():
        predicted = model(encoder_train.to_model_range(images[val])) >= 0.5
    expected_accuracy = (predicted == attributes[val].bool()).double().mean(0)
    reported = torch.tensor([a["accuracy"] for a in report["attributes"].values()], dtype=torch.float64)
    torch.testing.assert_close(reported, expected_accuracy)


def test_script_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", num_images=4, size=16)
    os.remove(os.path.join(data, "attributes.pt"))
    for argv, named in (
        (("--data_dir", data, "--exp_dir", tmp_path / "exp", "--max_steps", 1), "attributes.pt"),
        (("--evaluate", tmp_path / "absent.pt", "--data_dir", data), "absent.pt"),
        (("--data_dir", data, "--batch_size", 3, "--nprocs", 2), "divisible"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_main(monkeypatch, *argv)
        assert exit_info.value.code != 0
        stderr = capsys.readouterr().err.strip()
        assert stderr.startswith("error:") and "\n" not in stderr and named in stderr


def test_more_processes_than_gpus_is_refused_before_nccl_fails(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", num_images=4, size=16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit):
        run_main(monkeypatch, "--data_dir", data, "--exp_dir", tmp_path / "exp", "--device", "cuda", "--nprocs", 2)
    assert "--nprocs 2 exceeds the 1 visible GPU(s)" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        run_main(monkeypatch, "--data_dir", data, "--exp_dir", tmp_path / "exp", "--device", "cuda")
    assert "no CUDA device is visible" in capsys.readouterr().err


def test_the_papers_command_runs_the_file_and_fails_cleanly(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "preprocess", "encoder_train.py")
    command = [sys.executable, script, "--world_size", "1", "--rank", "0", "--multiprocessing_distributed", "True",
               "--data_dir", str(tmp_path / "absent"), "--exp_dir", str(tmp_path / "exp")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: dataset directory not found: {tmp_path / 'absent'}"


def test_three_stage_trunks_are_smaller_and_recognised_from_weights(tmp_path):
    for arch, full in (("resnet18_3stage", "resnet18"), ("resnet34_3stage", "resnet34")):
        small = AttributeClassifier(arch=arch, input_size=32)
        big = AttributeClassifier(arch=full, input_size=32)
        assert sum(p.numel() for p in small.parameters()) < 0.8 * sum(p.numel() for p in big.parameters())
        path = tmp_path / f"{arch}.pt"
        torch.save({"state_dict": small.state_dict(), "opts": small.opts}, path)
        loaded = load_classifier(str(path))
        assert loaded.opts["arch"] == arch
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        assert torch.equal(loaded(x), small.eval()(x))


def _is_gone(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and ("Z" in line or "X" in line) for line in f)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_spawned_workers_die_with_a_killed_launcher(tmp_path):
    # A launcher killed with SIGKILL (no chance to clean up) must not leave its training workers
    # running and writing to exp_dir: each worker asks the kernel for SIGTERM on its parent's death.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    worker = ("import os, sys, time; sys.path.insert(0, %r); from preprocess import encoder_train; "
              "encoder_train._die_with_parent(os.getppid()); print('ready', flush=True); time.sleep(60)") % root
    launcher = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', %r], stdout=subprocess.PIPE, "
                "text=True); assert p.stdout.readline().strip() == 'ready'; print(p.pid, flush=True); time.sleep(60)") % worker
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert not _is_gone(child)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while not _is_gone(child) and time.time() < deadline:
        time.sleep(0.1)
    assert _is_gone(child)
