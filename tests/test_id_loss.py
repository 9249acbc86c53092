"""Tests of the ArcFace IR-SE50 identity loss (optimization/id_loss.py).

A randomly initialised IR-SE50 stands in for the public checkpoint: the layout tests pin the
module to that checkpoint's keys and shapes, the loss tests check the maths on any weights.
"""
import math

import pytest
import torch

from optimization.id_loss import IDLoss, IRSE50, load_id_loss


def reference_parameter_count():
    """IR-SE50 parameters counted from TreB1eN/InsightFace_Pytorch model.py (Backbone, ir_se, 50 layers).

    input: Conv 3->64 3x3 + BN(64) + PReLU(64); per unit (in -> d): BN(in), Conv in->d 3x3, PReLU(d),
    Conv d->d 3x3, BN(d), SE fc1/fc2 d <-> d/16; a 1x1 Conv + BN(d) shortcut where in != d;
    output: BN(512), Linear(512*7*7 -> 512) with bias, BatchNorm1d(512) (affine).
    """
    count = 3 * 64 * 9 + 2 * 64 + 64
    in_ch = 64
    for depth, units in ((64, 3), (128, 4), (256, 14), (512, 3)):
        for _ in range(units):
            count += 2 * in_ch + in_ch * depth * 9 + depth + depth * depth * 9 + 2 * depth
            count += 2 * depth * (depth // 16)
            if in_ch != depth:
                count += in_ch * depth + 2 * depth
            in_ch = depth
    return count + 2 * 512 + 512 * 7 * 7 * 512 + 512 + 2 * 512


# A few entries of the public model_ir_se50.pth, named as in its state dict.
KNOWN_SHAPES = {
    "input_layer.0.weight": (64, 3, 3, 3),
    "input_layer.1.running_var": (64,),
    "input_layer.2.weight": (64,),
    "body.0.res_layer.0.weight": (64,),
    "body.0.res_layer.1.weight": (64, 64, 3, 3),
    "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
    "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
    "body.3.shortcut_layer.1.running_mean": (128,),
    "body.7.shortcut_layer.0.weight": (256, 128, 1, 1),
    "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
    "body.21.res_layer.3.weight": (512, 512, 3, 3),
    "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
    "output_layer.0.weight": (512,),
    "output_layer.3.weight": (512, 512 * 7 * 7),
    "output_layer.3.bias": (512,),
    "output_layer.4.weight": (512,),
    "output_layer.4.running_var": (512,),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = IRSE50()
    # Non-trivial BatchNorm statistics, so loading them is actually checked.
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def weights_file(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("irse50") / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def id_loss(weights_file):
    return IDLoss(weights_file)


def smooth_images(n, size, seed):
    """[n, 3, size, size] face-sized blobs in [-1, 1]: low-frequency, so pooling keeps them distinct."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def test_layout_matches_public_checkpoint(net):
    state = net.state_dict()
    for key, shape in KNOWN_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    # Units whose channels do not change subsample without parameters.
    assert not any(k.startswith("body.0.shortcut_layer") for k in state)
    assert not any(k.startswith("body.4.shortcut_layer") for k in state)
    assert len(net.body) == 24
    assert sum(p.numel() for p in net.parameters()) == reference_parameter_count()
    assert math.isclose(reference_parameter_count(), 43.8e6, rel_tol=0.01)


def test_embedding_is_unit_and_rejects_wrong_size(net):
    with torch.no_grad():
        f = net(smooth_images(2, 112, 0))
    assert f.shape == (2, 512)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="112"):
        net(torch.zeros(1, 3, 64, 64))


def test_loads_strictly_and_is_frozen(net, id_loss):
    loaded = id_loss.facenet.state_dict()
    for key, value in net.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert not any(p.requires_grad for p in id_loss.parameters())
    id_loss.train()
    assert not id_loss.training and not id_loss.facenet.training


@pytest.mark.parametrize("size", [64, 256])
def test_same_face_zero_other_face_positive(id_loss, size):
    y = smooth_images(1, size, 1).expand(2, -1, -1, -1)
    y_hat = torch.cat([y[:1].clone(), smooth_images(1, size, 2)])
    loss = id_loss(y_hat, y)
    assert loss.shape == (2,)
    assert abs(loss[0]) < 1e-5
    assert 1e-3 < loss[1] <= 2


@pytest.mark.parametrize("size", [64, 256])
def test_gradient_lowers_the_loss(id_loss, size):
    y = smooth_images(1, size, 3)
    y_hat = (y + 0.5 * smooth_images(1, size, 4)).requires_grad_(True)
    loss = id_loss(y_hat, y)
    (grad,) = torch.autograd.grad(loss.sum(), y_hat)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    with torch.no_grad():
        stepped = y_hat - 0.05 * grad / grad.norm() * y_hat.norm()
        assert id_loss(stepped, y) < loss
    if size == 256:
        # At 256 px the loss sees the paper's face crop, rows 35:223 and columns 32:220, only.
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[35:223, 32:220] = True
        assert grad[..., ~inside].abs().max() == 0
        assert grad[..., inside].abs().min() > 0


def test_rejects_bad_images(id_loss):
    with pytest.raises(ValueError, match="one shape"):
        id_loss(torch.zeros(1, 3, 64, 64), torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="RGB"):
        id_loss(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64))


def test_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        IDLoss(missing)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_id_loss(missing)
    for path in (None, ""):
        assert load_id_loss(path) is None
        out = capsys.readouterr().out.strip()
        assert out and len(out.splitlines()) == 1


def test_wrong_contents(net, tmp_path):
    state = net.state_dict()
    broken = dict(state)
    del broken["body.5.res_layer.1.weight"]
    broken["body.5.res_layer.1.weigth"] = state["body.5.res_layer.1.weight"]
    broken["output_layer.3.weight"] = torch.zeros(512, 100)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError) as err:
        IDLoss(str(path))
    message = str(err.value)
    for part in ("broken.pth", "body.5.res_layer.1.weight", "body.5.res_layer.1.weigth", "output_layer.3.weight"):
        assert part in message

    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="other.pth"):
        IDLoss(str(other))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_id_loss(str(garbage))


def test_checkpoint_without_batch_counters_loads(net, tmp_path):
    """Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked entries."""
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    loaded = IDLoss(str(path)).facenet.state_dict()
    assert torch.equal(loaded["output_layer.4.running_var"], old["output_layer.4.running_var"])
