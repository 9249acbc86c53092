"""The benchmark's statistics: bootstrap intervals, paired differences, the region IoU."""
import math

import numpy as np
import pytest
import torch

from optimization import evaluation as ev
from optimization.editor import EditOptions


def test_bootstrap_interval_covers_a_known_mean():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        values = rng.normal(loc=3.0, scale=2.0, size=200)
        low, high = ev.bootstrap_interval(values, seed=trial)
        assert low < values.mean() < high
        covered += low <= 3.0 <= high
        assert high - low == pytest.approx(2 * 1.96 * 2.0 / math.sqrt(200), rel=0.25)
    assert covered >= 34  # about 95 % of 40
    assert all(math.isnan(v) for v in ev.bootstrap_interval([1.0, float("nan")]))


def test_paired_differences_match_edits_and_skip_nans():
    rows = [dict(method="a", identity=0, attribute=9, psnr_gt=30.0), dict(method="a", identity=1, attribute=9, psnr_gt=20.0),
            dict(method="b", identity=0, attribute=9, psnr_gt=31.5), dict(method="b", identity=1, attribute=9,
                                                                          psnr_gt=float("nan")),
            dict(method="b", identity=2, attribute=9, psnr_gt=40.0)]
    assert ev.paired_differences(rows, "psnr_gt", "b", "a") == [1.5]
    table = ev.interval_tables(rows, ["psnr_gt"], reference="a")
    assert "Paired differences against a" in table and "| b |" in table


def test_region_iou_against_the_renderer_mask():
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    region = torch.zeros(2, 1, 4, 4)
    region[0, 0, :2, :] = 1  # 4 of the mask's 4 pixels, plus 4 more: IoU 4 / 8
    a_ref = torch.zeros(2, 20)
    a_q = a_ref.clone()
    a_q[0, 9] = 1  # row 1 is a reconstruction
    iou = ev.region_iou(region, mask, a_ref, a_q)
    assert iou[0].item() == 0.5 and math.isnan(iou[1].item())
    assert torch.isnan(ev.region_iou(None, mask, a_ref, a_q)).all()


def test_the_default_method_is_the_default_preset():
    assert ev.method_options(ev.DEFAULT_METHOD) == EditOptions()
    assert ev.method_options("cyclediff_sbs_inversion_region_fast").region == "inferred"
