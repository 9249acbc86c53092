"""The edit's inferred region in `python main.py`'s outputs: a second grid row (the input dimmed outside
the region, its contour drawn) under each edit, and `region_fraction` in the report. In-process, with
the tiny models of test_editor.py."""
import json

import numpy as np
from PIL import Image

from optimization import attribute_editor as ae
from optimization.visualization import REGION_COLOUR, region_overlay
from test_cli_errors import base_args, models, run_cli  # noqa: F401 (models is a fixture)

PAD = 4  # labelled_grid's default padding


def test_region_overlay_keeps_the_inside_dims_the_outside_and_draws_the_contour():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, size=(16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), dtype=np.float32)
    mask[4:12, 4:12] = 1
    out = region_overlay(image, mask, size=64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    big = np.asarray(Image.fromarray(image).resize((64, 64), Image.NEAREST))
    assert np.array_equal(out[24:40, 24:40], big[24:40, 24:40])          # deep inside: the input itself
    assert (out[:8, :8].astype(int).sum(2) < big[:8, :8].astype(int).sum(2)).all()  # outside: darker
    contour = (out == REGION_COLOUR).all(axis=2)
    assert contour[32, 14:18].any() and contour[14:18, 32].any()         # on the square's edges
    assert not contour[24:40, 24:40].any() and not contour[:8].any()
    # An empty region: all dimmed, no contour; a full one: the input, no contour.
    assert not (region_overlay(image, np.zeros((16, 16)), 64) == REGION_COLOUR).all(axis=2).any()
    assert np.array_equal(region_overlay(image, np.ones((16, 16)), 64), big)


def _grid_and_report(capsys, models, out, extra):  # noqa: F811
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1", "--attribute_index", "9,15"]
                            + extra)
    assert rc == 0, err
    grid = np.asarray(Image.open(out / "00001_9+15_grid.png").convert("RGB"))
    return grid, json.loads((out / "00001_9+15_edit.json").read_text())


def test_grid_has_a_region_row_only_when_a_region_is_inferred(models, tmp_path, capsys):  # noqa: F811
    with_region, report = _grid_and_report(capsys, models, tmp_path / "inferred", ["--region", "inferred"])
    without, report_none = _grid_and_report(capsys, models, tmp_path / "none", ["--region", "none"])
    cell = ae.GRID_CELL
    # Same columns; the inferred region's grid has two rows of the same height, --region none's one.
    assert with_region.shape[1] == without.shape[1]
    row_height = without.shape[0] - PAD
    assert with_region.shape[0] - PAD == 2 * row_height

    def second_row_cell(c):
        x, y = PAD + c * (cell + PAD), PAD + row_height
        return with_region[y:y + cell, x:x + cell]

    assert (second_row_cell(0) == 255).all() and (second_row_cell(1) == 255).all()  # input, reconstruction
    assert not (second_row_cell(2) == 255).all()                                   # the edit's region

    recon, edit = report["edits"]
    assert recon["kind"] == "reconstruction" and recon["region_fraction"] == 0.0
    assert 0.0 <= edit["region_fraction"] <= 1.0
    assert "region_fraction" in report["region_fraction_rule"]
    assert all(e["region_fraction"] is None for e in report_none["edits"])
    # The edit's caption is still drawn under the first row, the region's under the second.
    x = PAD + 2 * (cell + PAD)
    assert (with_region[PAD + cell:row_height, x:x + cell] < 128).any()
    assert (with_region[row_height + cell:2 * row_height, x:x + cell] < 128).any()


def test_region_fraction_counts_pixels_above_one_half():
    import torch

    region = torch.zeros(1, 1, 4, 4)
    region[..., :2, :] = 0.9
    region[..., 2, :] = 0.5  # on the threshold: outside
    assert ae.region_fraction(region) == 0.5
    assert ae.region_fraction(None) is None

