"""scripts/make_ablation_figure.py: the same held-out edits through each configuration, with each
edit's PSNR to the renderer's counterfactual printed beside it (computed, not copied)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from optimization.queries import query_from_indices
from scripts import make_ablation_figure
from scripts.evaluate_edits import SyntheticFaces, edit_image_path

SEED, SIZE = 1000, 32


def fake_run(folder, methods):
    """An evaluate_edits.py output folder: method 'perfect' saved the counterfactuals, 'input' the
    unedited inputs, for identities 0 and 1 and attributes 9 (glasses) and 15 (smile)."""
    source = SyntheticFaces(SEED, 0, SIZE)
    for method in methods:
        for index in (0, 1):
            for code in (9, 15):
                a_ref = source.labels(index)
                image = source.ground_truth(index, query_from_indices(a_ref, [code])) if method == "perfect" \
                    else source.image(index)
                path = edit_image_path(str(folder), method, index, code)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                pixels = ((image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path)
    with open(folder / "run.json", "w") as f:
        json.dump({"mode": "synthetic", "inputs": SEED, "method_options": {m: {} for m in methods}}, f)
    return source


def test_rows_are_the_first_edit_of_each_attribute_and_psnr_is_computed(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path, ["perfect", "input"])
    assert make_ablation_figure.edit_rows(str(tmp_path), "perfect", "") == [(0, 9), (0, 15)]
    assert make_ablation_figure.edit_rows(str(tmp_path), "perfect", "1_15") == [(1, 15)]
    titles = []
    monkeypatch.setattr("optimization.reports.sample_grid",
                        lambda images, row_titles, columns: titles.extend(row_titles) or Image.new("RGB", (8, 8)))
    out = tmp_path / "fig.png"
    assert make_ablation_figure.main([str(tmp_path), "--methods", "perfect,input", "--output", str(out)]) == 0
    assert out.is_file()
    # The counterfactual scores the PSNR cap; the unedited input a finite PSNR below it.
    assert len(titles) == 2
    for title in titles:
        perfect, unedited = title.split(": ")[-1].split(" / ")
        assert float(perfect) == pytest.approx(100.0)
        assert 10.0 < float(unedited) < 60.0


def test_the_grid_has_a_column_per_configuration(tmp_path):
    fake_run(tmp_path, ["perfect", "input"])
    out = tmp_path / "fig.png"
    make_ablation_figure.main([str(tmp_path), "--methods", "input,perfect", "--labels", "a,b", "--output", str(out)])
    one = tmp_path / "one.png"
    make_ablation_figure.main([str(tmp_path), "--methods", "input", "--output", str(one)])
    wide, narrow = Image.open(out).size[0], Image.open(one).size[0]
    assert wide > narrow  # one more column of cells


def test_refusals(tmp_path):
    fake_run(tmp_path, ["perfect"])
    with pytest.raises(SystemExit) as e:
        make_ablation_figure.main([str(tmp_path), "--methods", "missing", "--output", str(tmp_path / "x.png")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        make_ablation_figure.main([str(tmp_path), "--labels", "a,b", "--output", str(tmp_path / "x.png")])
    assert e.value.code == 2
    assert not (tmp_path / "x.png").exists()
