"""scripts/summarise_edits.py: an evaluate_edits run becomes the results file the docs render from,
with means, bootstrap intervals and paired differences recomputable from the rows it copies."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, ROOT)

import render_docs  # noqa: E402
import summarise_edits  # noqa: E402
from optimization import reports  # noqa: E402
from optimization.evaluation import DEFAULT_METHOD  # noqa: E402


def _rows():
    """Two methods over the same 6 edits: the other method is 1 dB below the default on each, and
    misses one edit of six."""
    rows = []
    for identity in range(3):
        for attribute, direction in ((9, "add"), (15, "remove")):
            base = dict(identity=identity, attribute=attribute, direction=direction, preservation=0.98,
                        preservation_gt=0.97, l1_gt=0.01, l1_outside_mask=0.001, region_iou=0.5, identity_input=0.9,
                        identity_gt=0.92, seconds=1.5, unet_evals=58.0)
            psnr = 30.0 + identity + (attribute == 9)
            rows.append(dict(base, method=DEFAULT_METHOD, success=1.0, psnr_gt=psnr))
            rows.append(dict(base, method="other", success=0.0 if (identity, attribute) == (0, 9) else 1.0,
                             psnr_gt=psnr - 1.0, identity_input=float("nan")))
    return rows


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    reports.write_rows_atomic(str(run / "results.csv"), _rows(), reports.SYNTHETIC_COLUMNS)
    (run / "results.md").write_text(f"# Edit evaluation\n\n- Models: diffusion `{ROOT}/checkpoints/diffusion.pt`\n")
    (run / "run.json").write_text(json.dumps({"mode": "synthetic", "inputs": 1000,
                                              "model_path": f"{ROOT}/checkpoints/diffusion.pt"}))
    return run


def test_means_intervals_and_paired_differences(tmp_path):
    per_method, ci, paired = summarise_edits.summarise(_rows(), DEFAULT_METHOD)
    other = per_method["other"]
    assert other["n"] == 6 and abs(other["success"] - 100 * 5 / 6) < 0.051  # in percent
    assert per_method[DEFAULT_METHOD]["psnr_gt"] == 31.5 and other["psnr_gt"] == 30.5
    assert other["identity_input"] is None  # no finite value: left out, not 0
    # every edit is exactly 1 dB lower: the paired difference and its interval are -1 dB
    assert paired["other"]["psnr_gt"] == {"value": -1.0, "low": -1.0, "high": -1.0}
    # the unpaired interval of a spread measure contains its mean and has width
    c = ci[DEFAULT_METHOD]["psnr_gt"]
    assert c["low"] < c["value"] < c["high"]
    assert DEFAULT_METHOD not in paired


def test_cli_writes_json_rows_and_a_report_without_this_checkout_s_paths(tmp_path):
    run = _run_dir(tmp_path)
    out, report = tmp_path / "results" / "x.json", tmp_path / "report.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "summarise_edits.py"), str(run),
                           "--output", str(out), "--report", str(report), "--command", "mpiexec ... --methods $M",
                           "--wall_time", "3 min"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["default_method"] == DEFAULT_METHOD and doc["methods_variable_M"] == [DEFAULT_METHOD, "other"]
    assert doc["models"] == "model_path: checkpoints/diffusion.pt"
    assert "first 3 people" not in doc["data"] and "seed 1000" in doc["data"]
    assert (tmp_path / "results" / "x" / "results.csv").read_text() == (run / "results.csv").read_text()
    text = report.read_text()
    assert ROOT not in text and "`checkpoints/diffusion.pt`" in text and "(3 min)" in text
    # the renderer reads it: the table has the identity column, with a dash where nothing was scored
    doc["source_report"] = "docs/x.md"
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "evaluation_synthetic_448.json").write_text(json.dumps(doc))
    table = render_docs.render_edits_single(str(tmp_path), "README.md")
    assert "identity similarity to the input" in table and "0.900 [0.900, 0.900]" in table
    assert "| `other` | 83.3 % [" in table and " | – | " in table


def test_unfinished_run_is_refused(tmp_path):
    run = _run_dir(tmp_path)
    (run / "results.csv").unlink()
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "summarise_edits.py"), str(run),
                           "--output", str(out), "--command", "c"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no results.csv" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_joint_split_reads_its_pair_column(tmp_path):
    run = _run_dir(tmp_path)
    rows = [dict(r, pair="9+15" if r["attribute"] == 9 else "2+12") for r in _rows()]
    columns = ("method", "identity", "pair") + reports.SYNTHETIC_COLUMNS[reports.KEY_COLUMNS:]
    reports.write_rows_atomic(str(run / "results_joint.csv"), rows, columns)
    out = tmp_path / "joint.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "summarise_edits.py"), str(run), "--split",
                           "joint", "--data", "pairs", "--output", str(out), "--command", "c"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    # paired on (identity, pair): six edits, each 1 dB below the default
    assert doc["paired_vs_default"]["other"]["psnr_gt"]["value"] == -1.0 and doc["data"] == "pairs"


def test_what_it_did_not_write_is_never_replaced(tmp_path):
    run = _run_dir(tmp_path)
    script = os.path.join(ROOT, "scripts", "summarise_edits.py")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    essay = tmp_path / "essay.md"
    essay.write_text("# My essay\n")
    for args, message in [(["--output", str(notes)], "is not an edit results file"),
                          (["--output", str(tmp_path / "res.json")], "holds other files"),
                          (["--output", str(tmp_path / "ok.json"), "--report", str(essay)], "not an edit evaluation report")]:
        proc = subprocess.run([sys.executable, script, str(run), "--command", "c", *args], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert notes.read_text() == '{"mine": 1}' and essay.read_text() == "# My essay\n"
    assert sorted(os.listdir(folder)) == ["keep.txt"] and not (tmp_path / "ok.json").exists()
    # its own files it replaces
    for _ in range(2):
        proc = subprocess.run([sys.executable, script, str(run), "--command", "c", "--output", str(tmp_path / "ok.json"),
                               "--report", str(tmp_path / "r.md")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_ablation_summary_replaces_only_what_it_wrote(tmp_path):
    edits = tmp_path / "run" / "edits"
    edits.mkdir(parents=True)
    reports.write_rows_atomic(str(edits / "results.csv"), _rows(), reports.SYNTHETIC_COLUMNS)
    (edits / "run.json").write_text(json.dumps({"inputs": 1000, "method_options": {}}))
    script = os.path.join(ROOT, "scripts", "summarise_ablation.py")
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}')
    run = lambda out: subprocess.run([sys.executable, script, str(tmp_path / "run"), "--steps", "10",  # noqa: E731
                                      "--reference", "other", "--output", str(out)], capture_output=True, text=True)
    proc = run(mine)
    assert proc.returncode == 2 and "not an ablation results file" in proc.stderr and mine.read_text() == '{"mine": 1}'
    proc = run(tmp_path / "run.json")  # its rows would go into the run's own folder
    assert proc.returncode == 2 and "did not write" in proc.stderr
    for _ in range(2):
        proc = run(tmp_path / "abl.json")
        assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "abl.json").read_text())
    assert doc["edits"][DEFAULT_METHOD]["psnr_gt_vs_other"]["mean"] == 1.0
