"""scripts/gpu_run.sh end to end on the CPU with tiny settings: every stage runs, the summary is
written, and a second run skips the finished stages."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(DEVICE="cpu", DATA_IMAGES="16", WORKERS="1", TRAIN_STEPS="2", TRAIN_BATCH="4", SAVE_INTERVAL="1",
            SAMPLES="4", SAMPLE_RESPACING="ddim4", SAMPLE_BATCH="4", DDPM_SAMPLES="2", DDPM_RESPACING="4",
            BENCH_BATCHES="1,2", BENCH_REPEATS="1", BENCH_EXTRA="--random --resolutions 16 --threads 1",
            OMP_NUM_THREADS="1")


def run(out, **env):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_run.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **TINY, "OUT": str(out), **env})


def test_gpu_run_end_to_end_tiny(tmp_path):
    out = tmp_path / "run"
    proc = run(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {s: summary["stages"][s]["status"] for s in summary["stages"]} == {
        "data": "ok", "train": "ok", "samples": "ok", "ddpm": "ok", "bench": "ok"}, proc.stdout
    assert summary["trained"].endswith("ema_0.999_000002.pt")
    assert set(summary["samples"]) == {"samples_start_ddim", "samples_finetuned_ddim", "samples_finetuned_ddpm"}
    assert summary["samples"]["samples_finetuned_ddim"]["model_path"].endswith("ema_0.999_000002.pt")
    assert [e["batch_size"] for e in summary["edits"]] == [1, 2]
    assert all(e["speedup"] and e["unet_evals"] == 58 for e in summary["edits"])
    assert "| train | ok |" in (out / "summary.md").read_text()

    again = run(out, SKIP="bench")  # finished stages are not run again; a skipped one is recorded
    assert again.returncode == 0
    assert again.stdout.count("done in an earlier run") == 4 and "== bench: skipped" in again.stdout
    assert json.loads((out / "summary.json").read_text())["stages"]["bench"]["status"] == "skipped"


def test_gpu_run_time_box_records_timed_out_stage(tmp_path):
    out = tmp_path / "run"
    proc = run(out, SKIP="train,samples,ddpm,bench", DATA_IMAGES="5000", T_DATA="2")
    assert proc.returncode == 0
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages["data"]["status"] == "timed_out" and not (out / "data.done").exists()
