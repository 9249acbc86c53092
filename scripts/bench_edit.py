"""
Seconds and UNet evaluations per edit, for each preset and resolution.

With --model_path (default: the shipped checkpoint when present) the real model and classifier
are timed; otherwise a randomly initialised model of the given config is built for each
--resolutions entry (speed does not depend on the weights).

    python scripts/bench_edit.py                                  # shipped models, the fast preset
    python scripts/bench_edit.py --presets fast,paper             # also the 1000-step paper preset (minutes)
    python scripts/bench_edit.py --random --resolutions 64,128    # random models of the default config
"""
import argparse
import os
import sys
import tempfile
import time

import torch

from guided_diffusion.script_util import (
    create_model_and_diffusion,
    model_and_diffusion_defaults,
    save_model_config,
)
from optimization.arguments import DEFAULT_CLASSIFIER_PATH, DEFAULT_MODEL_PATH
from optimization.editor import AttributeEditor, EditOptions
from optimization.queries import query_from_indices
from preprocess.classifier import AttributeClassifier

# Seconds per 64 px edit on 2 CPU cores, measured (README): what the start-up line's estimate scales.
CPU_SECONDS_PER_EDIT = {"fast": 3.0, "paper": 515.0}

# The embedded default's model config, used for --random runs.
RANDOM_CONFIG = dict(num_channels=32, channel_mult="1,2,2,2", num_res_blocks=1, attention_resolutions="16,8",
                     num_heads=4)


def random_checkpoint(folder, image_size):
    """Write a random-weight model (+ JSON) and classifier of the default config; return their paths."""
    config = model_and_diffusion_defaults()
    config.update(RANDOM_CONFIG, image_size=image_size)
    model, _ = create_model_and_diffusion(**config)
    model_path = os.path.join(folder, f"diffusion{image_size}.pt")
    torch.save(model.state_dict(), model_path)
    save_model_config(config, os.path.splitext(model_path)[0] + ".json")
    clf = AttributeClassifier(arch="resnet18_3stage", input_size=64)
    clf_path = os.path.join(folder, "classifier.pt")
    torch.save({"state_dict": clf.state_dict(), "opts": clf.opts}, clf_path)
    return model_path, clf_path


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_preset(editor, preset, repeats, paper_steps):
    overrides = dict(lpips_sim_lambda=0.0, id_lambda=0.0)  # LPIPS / ArcFace need weights not on disk
    if preset == "paper" and paper_steps:
        overrides["timestep_respacing"] = str(paper_steps)
    opts = EditOptions.from_preset(preset, **overrides)
    s = editor.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, s, s, generator=g) * 2 - 1
    a = (torch.rand(1, 20, generator=g) > 0.5).float()
    q = query_from_indices(a, [9])
    editor.edit(x, a, q, opts)  # warm-up
    times, evals = [], []
    for r in range(repeats):
        _sync(editor.device)
        start = time.perf_counter()
        res = editor.edit(x, a, q, opts, seeds=[r])
        _sync(editor.device)
        times.append(time.perf_counter() - start)
        evals.append(res.unet_evals)
    return sum(times) / len(times), evals[0], opts


def announce(args, sizes):
    """What will be timed and, on a CPU, about how long it takes (said before the first edit)."""
    total = 0.0
    for size in sizes:
        scale = ((size or 64) / 64) ** 2
        for preset in args.presets.split(","):
            per_edit = CPU_SECONDS_PER_EDIT.get(preset, CPU_SECONDS_PER_EDIT["fast"]) * scale
            if preset == "paper" and args.paper_steps:
                per_edit *= args.paper_steps / 1000
            total += per_edit * (args.repeats + 1)  # + the warm-up edit
    what = f"timing preset(s) {args.presets}, {args.repeats} edits + 1 warm-up each"
    return f"{what}; about {total / 60:.0f} min on 2 CPU cores" if total >= 90 else f"{what}; about {total:.0f} s on 2 CPU cores"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=DEFAULT_MODEL_PATH)
    p.add_argument("--classifier_path", default=DEFAULT_CLASSIFIER_PATH)
    p.add_argument("--random", action="store_true", help="time random-weight models of the default config")
    p.add_argument("--resolutions", default="64", help="with --random: comma list of image sizes")
    p.add_argument("--presets", default="fast",
                   help="comma list of presets to time (paper: the 1000-step preset, about 9 min per edit on a CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paper_steps", type=int, default=0,
                   help="time the paper preset with this many steps instead of 1000 (0: all 1000)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (the figures in the README) or cuda")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_random = args.random or not os.path.isfile(args.model_path)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, "
          f"{'random-weight models' if use_random else args.model_path}")
    sizes = [int(s) for s in args.resolutions.split(",")] if use_random else [None]
    print(announce(args, sizes), flush=True)
    print(f"{'preset':8s} {'res':>4s} {'steps':>6s} {'sampler':>8s} {'inversion':>10s} {'s/edit':>8s} {'UNet evals':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            if use_random:
                model_path, clf_path = random_checkpoint(tmp, size)
            else:
                model_path, clf_path = args.model_path, args.classifier_path
            editor = AttributeEditor(model_path, clf_path, device=device)
            for preset in args.presets.split(","):
                seconds, evals, opts = time_preset(editor, preset, args.repeats, args.paper_steps)
                steps = opts.timestep_respacing or "1000"
                print(f"{preset:8s} {editor.image_size:4d} {steps:>6s} {opts.sampler:>8s} {opts.inversion:>10s} "
                      f"{seconds:8.2f} {evals:11g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
