"""Collect a scripts/gpu_run.sh output folder into summary.json and summary.md.

    python scripts/gpu_run_summary.py runs/gpu_run --device cuda

Reads OUT/stages.jsonl (each stage's status and seconds; the latest entry per stage counts), the
samples.json of each evaluation and bench_edit.json. Missing parts are reported as missing.
"""
import argparse
import datetime
import json
import os
import sys

SAMPLE_RUNS = (("samples_start_ddim", "start model, DDIM"), ("samples_finetuned_ddim", "fine-tuned, DDIM"),
               ("samples_finetuned_ddpm", "fine-tuned, DDPM"))
SAMPLE_KEYS = ("num_samples", "steps", "fd", "fd_floor", "conditioning_accuracy", "conditioning_accuracy_editable",
               "color_w1", "saturated_fraction", "seconds_sampling")


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(out):
    stages = {}
    try:
        with open(os.path.join(out, "stages.jsonl")) as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    stages[entry["stage"]] = entry
    except OSError:
        pass
    samples = {}
    for folder, label in SAMPLE_RUNS:
        doc = _load(os.path.join(out, folder, "samples.json"))
        if doc is not None:
            samples[folder] = dict(label=label, model_path=doc.get("model_path"),
                                   **{k: doc.get(k) for k in SAMPLE_KEYS})
    bench = _load(os.path.join(out, "bench_edit.json"))
    edits = []
    if bench:
        for row in bench.get("rows", []) + bench.get("batched_rows", []):
            edits.append({k: row.get(k) for k in ("preset", "batch_size", "seconds_per_edit", "edits_per_second",
                                                   "baseline_seconds_per_edit", "speedup", "unet_evals",
                                                   "peak_memory_mib")})
    return dict(stages=stages, samples=samples, edits=edits, bench_hardware=(bench or {}).get("hardware"))


def _num(value, spec):
    return "–" if value is None else format(value, spec)


def markdown(summary):
    lines = [f"# GPU run {summary['date']}", "", f"Folder `{summary['out']}`, device {summary['device']}"
             + (f" ({summary['bench_hardware']})" if summary.get("bench_hardware") else "")
             + f"; start model `{summary['init']}`, fine-tuned `{summary['trained']}`.", "",
             "| stage | status | seconds |", "| --- | --- | ---: |"]
    for name in ("data", "train", "samples", "ddpm", "bench"):
        s = summary["stages"].get(name, {})
        lines.append(f"| {name} | {s.get('status', 'not run (or done earlier)')} | {s.get('seconds', '–')} |")
    lines += ["", "| samples | n | steps | FD (floor) | cond. acc. | editable | colour W1 | saturated | s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summary["samples"].values():
        lines.append(f"| {s['label']} | {s['num_samples']} | {s['steps']} | {_num(s['fd'], '.2f')} "
                     f"({_num(s['fd_floor'], '.2f')}) | {_num(s['conditioning_accuracy'], '.3f')} | "
                     f"{_num(s['conditioning_accuracy_editable'], '.3f')} | {_num(s['color_w1'], '.4f')} | "
                     f"{_num(s['saturated_fraction'], '.4f')} | {_num(s['seconds_sampling'], '.0f')} |")
    lines += ["", "| edit preset | batch | s / edit | edits / s | reference path s / edit | ratio | UNet evals | MiB |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in summary["edits"]:
        lines.append(f"| {e['preset']} | {e['batch_size']} | {_num(e['seconds_per_edit'], '.3f')} | "
                     f"{_num(e['edits_per_second'], '.1f')} | {_num(e['baseline_seconds_per_edit'], '.3f')} | "
                     f"{_num(e['speedup'], '.2f')} | {_num(e['unet_evals'], 'g')} | {_num(e['peak_memory_mib'], '.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from guided_diffusion.safe_paths import OneLineParser  # refusals: one `error:` line, exit 2

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the gpu_run.sh output folder")
    p.add_argument("--device", default="cuda")
    p.add_argument("--init", default="checkpoints/diffusion.pt")
    p.add_argument("--trained", default="")
    args = p.parse_args(argv)
    if not os.path.isdir(args.out):
        print(f"error: no folder {args.out}", file=sys.stderr)
        return 2
    summary = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), out=args.out,
                   device=args.device, init=args.init, trained=args.trained or args.init, **collect(args.out))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
