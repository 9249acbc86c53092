import math

import torch

from optimization import metrics


def test_psnr_and_l1_known_values():
    a = torch.zeros(2, 3, 8, 8)
    assert metrics.l1(a, a).tolist() == [0.0, 0.0]
    assert metrics.psnr(a, a)[0] >= 99.0
    b = a.clone()
    b[1] += 0.2  # 0.1 on the [0, 1] scale everywhere
    assert torch.allclose(metrics.l1(a, b), torch.tensor([0.0, 0.1], dtype=torch.float64))
    assert math.isclose(float(metrics.psnr(a, b)[1]), 20.0, abs_tol=1e-4)  # mse 0.01 -> 20 dB


def test_masked_l1_only_counts_masked_pixels():
    a = torch.zeros(1, 3, 8, 8)
    b = a.clone()
    b[..., :4, :] = 1.0  # top half differs by 0.5 on the [0, 1] scale
    top = torch.zeros(8, 8, dtype=torch.bool)
    top[:4] = True
    assert float(metrics.l1(a, b, mask=top)) == 0.5
    assert float(metrics.l1(a, b, mask=~top)) == 0.0
    assert float(metrics.l1(a, b)) == 0.25


def test_success_and_preservation():
    a_ref = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    a_q = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    mask = a_q != a_ref
    before = torch.tensor([[0.1, 0.9, 0.2, 0.8]])
    flipped = torch.tensor([[0.9, 0.9, 0.2, 0.8]])
    assert bool(metrics.edit_success(flipped, a_q, mask)[0])
    assert not bool(metrics.edit_success(before, a_q, mask)[0])
    assert float(metrics.preservation(flipped, before, mask)[0]) == 1.0
    broke_one = torch.tensor([[0.9, 0.1, 0.2, 0.8]])
    assert abs(float(metrics.preservation(broke_one, before, mask)[0]) - 2 / 3) < 1e-6
