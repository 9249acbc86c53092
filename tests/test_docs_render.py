"""The results tables of README.md, checkpoints/README.md and docs/*.md are what scripts/render_docs.py
renders from docs/results/ now: a number changed by hand, or a results file changed without
re-rendering, fails here."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import render_docs  # noqa: E402


def test_every_region_is_current():
    stale = render_docs.stale_regions(ROOT)
    assert not stale, ("results regions differ from docs/results (run `python scripts/render_docs.py`): "
                       + ", ".join(f"{page}:{name}" for page, name in stale))


def test_every_renderer_is_used():
    used = set()
    for page in render_docs.pages(ROOT):
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            used |= set(render_docs.OPEN_MARKER.findall(f.read()))
    assert set(render_docs.RENDERERS) <= used, f"renderers no page uses: {set(render_docs.RENDERERS) - used}"


def test_readme_results_are_rendered():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    for name in ("edits_single", "paper_ablation", "speed"):
        assert f"<!-- results:{name} -->" in text


def test_check_mode_exit_status(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "render_docs.py"), "--check"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def copy_tree(tmp_path):
    """A copy of the pages and docs/results/ to tamper with."""
    root = tmp_path / "repo"
    for page in render_docs.pages(ROOT):
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, page), root / page)
    shutil.copytree(os.path.join(ROOT, "docs", "results"), root / "docs" / "results", dirs_exist_ok=True)
    return root


def test_hand_edited_number_is_caught(tmp_path):
    root = copy_tree(tmp_path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("<!-- results:edits_single -->")
    end = text.index("<!-- /results:edits_single -->")
    region = text[start:end]
    row = next(line for line in region.splitlines() if line.startswith("| **CycleDiff"))
    tampered = row.replace("58", "57", 1) if "58" in row else row + " "
    readme.write_text(text[:start] + region.replace(row, tampered) + text[end:], encoding="utf-8")
    assert ("README.md", "edits_single") in render_docs.stale_regions(str(root))
    render_docs.render_all(str(root))
    assert render_docs.stale_regions(str(root)) == []
    assert readme.read_text(encoding="utf-8") == text


def test_changed_results_file_is_caught(tmp_path):
    root = copy_tree(tmp_path)
    path = root / "docs" / "results" / "evaluation_synthetic_448.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["per_method_ci"][doc["default_method"]]["psnr_gt"]["value"] += 1.0
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert ("README.md", "edits_single") in render_docs.stale_regions(str(root))


IDENTITY_RESULT = {
    "checkpoint": "checkpoints/identity.pt",
    "data_dir": "runs/data/people64_s1000",
    "summary": {"verification_accuracy": 0.9875, "threshold": 0.41, "mean_same_person_views": 0.8,
                "mean_different_people_pairs": 0.05, "mean_attribute_flip": 0.85, "min_attribute_flip": 0.4,
                "mean_different_people": 0.02, "attribute_flip_by_attribute": {"Eyeglasses": 0.8, "Male": 0.7}},
    "distributions": {},
}


@pytest.mark.parametrize("name, region", [("identity.json", "identity"), ("eval_identity.json", "eval_identity")])
def test_identity_pending_then_rendered(tmp_path, name, region):
    root = copy_tree(tmp_path)
    results = root / "docs" / "results" / name
    if results.exists():
        results.unlink()
    pending = render_docs.RENDERERS[region](str(root), "checkpoints/README.md")
    assert "pending" in pending and "--evaluate" in pending
    results.write_text(json.dumps(dict(IDENTITY_RESULT, checkpoint=f"checkpoints/{name[:-5]}.pt")), encoding="utf-8")
    rendered = render_docs.RENDERERS[region](str(root), "checkpoints/README.md")
    assert "pending" not in rendered
    assert "0.9875" in rendered and "Male flipped" in rendered


def test_speed_prefers_the_bench_output(tmp_path):
    root = copy_tree(tmp_path)
    row = {"preset": "fast", "resolution": 64, "steps": "25", "sampler": "ddpm", "inversion": "ddpm_noise",
           "batch_size": 1, "seconds_per_edit": 1.23, "unet_evals": 58.0, "peak_memory_mib": 10.0,
           "baseline_seconds_per_edit": 2.46, "speedup": 2.0}
    bench = {"command": "python scripts/bench_edit.py --output docs/results/bench_edit.json", "date": "2030-01-01",
             "hardware": "test hardware", "torch": "9.9", "rows": [row],
             "batched_rows": [dict(row, batch_size=8, seconds_per_edit=0.5)]}
    (root / "docs" / "results" / "bench_edit.json").write_text(json.dumps(bench), encoding="utf-8")
    text = render_docs.render_speed(str(root), "README.md")
    assert "1.23" in text and "0.50" in text and "2.00 ×" in text
    assert "test hardware" in text and "2030-01-01" in text and "--output docs/results/bench_edit.json" in text
    assert ("README.md", "speed") in render_docs.stale_regions(str(root))


def test_unknown_and_unclosed_regions_are_refused():
    with pytest.raises(ValueError, match="unknown results region"):
        render_docs.render_page("<!-- results:nope -->\nx\n<!-- /results:nope -->\n", "X.md", ROOT)
    with pytest.raises(ValueError, match="without their closing marker"):
        render_docs.render_page("<!-- results:speed -->\nx\n", "X.md", ROOT)


def test_transcribed_results_name_their_source():
    folder = os.path.join(ROOT, "docs", "results")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, dict) and "transcribed_from" in doc:
            for key in ("command", "date", "hardware", "note"):
                assert doc.get(key), f"{name}: a transcribed result needs {key!r}"
            assert os.path.isfile(os.path.join(ROOT, doc["transcribed_from"])), name


def _ablation_doc(identity_guidance, identity_scored):
    entry = lambda mean: {"mean": mean, "low": mean - 0.5, "high": mean + 0.5}  # noqa: E731
    options = {"cycle_schema": "step_to_origin", "cycle_reconstruct_lambda": 1000.0, "attribute_guidance_lambda": 50.0,
               "id_lambda": 500.0, "weight_resolution": 0}
    return {
        "steps": 250, "seed": 1000, "command": "cmd", "date": "2026-12-07", "hardware": "2 CPU cores",
        "reference": "no_cycle", "complete": True, "identity_guidance": identity_guidance,
        "identity_scored": identity_scored,
        "edits": {"preset": {"n": 14, "success": entry(0.9), "preservation": entry(0.95), "psnr_gt": entry(23.4),
                             "psnr_gt_vs_no_cycle": entry(6.78), "identity_input": entry(0.876),
                             "identity_input_vs_no_cycle": entry(0.123)},
                  "no_cycle": {"n": 14, "success": entry(1.0), "preservation": entry(0.96), "psnr_gt": entry(16.0)}},
        "reconstructions": {"preset": {"n": 4, "psnr_gt": entry(21.5)}},
        "options": {"preset": options, "no_cycle": dict(options, cycle_schema="none", cycle_reconstruct_lambda=0.0)},
    }


def test_ablation_table_names_the_identity_term_only_where_its_network_ran(tmp_path):
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    for active in (False, True):
        (results / "abl.json").write_text(json.dumps(_ablation_doc(active, active)))
        text = render_docs.render_paper_ablation(str(tmp_path), "README.md", "abl.json")
        preset_row = next(line for line in text.splitlines() if line.startswith("| step-to-origin"))
        assert ("identity 500" in preset_row) == active
        assert "`--preset paper`" in preset_row  # the preset's own weights, whichever way
        assert "23.4 [22.9, 23.9]" in preset_row and "6.8 [6.3, 7.3]" in preset_row
        # Identity similarity and its paired difference are columns only when an evaluation network scored them.
        assert ("0.876 [0.376, 1.376]" in preset_row) == active and ("0.123" in preset_row) == active
        assert ("identity term uses the shipped identity network" in text) == active
