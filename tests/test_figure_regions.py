"""scripts/make_figures.py's regions figure (inferred region | renderer's mask, with the IoU), on an
editor stub whose regions are known: no model runs."""
import importlib.util
import os

import pytest
import torch

from optimization.editor import EditResult
from preprocess.attributes import EDITABLE_ATTRIBUTES
from preprocess.synthetic_faces import attribute_mask, example_face

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("make_figures", os.path.join(ROOT, "scripts", "make_figures.py"))
make_figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_figures)


class MaskEditor:
    """Returns the input unchanged, with the renderer's own mask as the region of the first attribute
    edited and an empty region for the others (IoU 1 and 0); `region=False` returns no region."""

    image_size = 32

    def __init__(self, region=True):
        self.region = region
        self.index = 0

    def edit(self, x, a_ref, a_q, opts, seeds, progress):
        identity, _ = example_face(1000, self.index)
        self.index += 1
        region = torch.zeros(x.shape[0], 1, 32, 32)
        region[0, 0] = torch.from_numpy(attribute_mask(identity, EDITABLE_ATTRIBUTES[0], 32)).float()
        return EditResult(images=x, unet_evals=0, seconds=0.0, frames=[], guidance_log=[],
                          region=region if self.region else None)


def test_regions_figure_scores_each_edit_against_the_renderers_mask(capsys):
    image, ious = make_figures.figure_regions(MaskEditor(), None, [0, 1], seed=0, cell=48)
    assert list(ious) == list(EDITABLE_ATTRIBUTES)
    assert ious[EDITABLE_ATTRIBUTES[0]] == [1.0, 1.0]
    assert all(v == 0.0 for k in EDITABLE_ATTRIBUTES[1:] for v in ious[k])
    # One row of inputs and one per attribute; two cells per face.
    assert image.height > 8 * 48 and image.width > 4 * 48
    printed = capsys.readouterr().out
    assert "mean 1.000" in printed and "all 14 edits" in printed


def test_regions_figure_needs_a_region():
    with pytest.raises(ValueError, match="no region"):
        make_figures.figure_regions(MaskEditor(region=False), None, [0], seed=0, cell=48)
