"""Sample quality of a diffusion model from pure noise, against held-out synthetic faces.

Each sample is conditioned on the attribute vector of one held-out face of --synthetic_seed (face
i -> sample i). The same measures are computed for real faces of --floor_seed (other people,
rendered, never generated) against the same reference faces: the floor a perfect model reaches.

    python scripts/evaluate_samples.py --num_samples 500 --sampler ddim --timestep_respacing ddim50
    python scripts/evaluate_samples.py --num_samples 500 --sampler ddpm            # all 1000 steps

Measures (samples.json):
- fd: Fréchet distance between the evaluation classifier's 256-d shared features (the layer feeding
  its 20 attribute heads) of the samples and of the reference faces; fd_floor for the floor faces.
- conditioning_accuracy: how often the evaluation classifier reads each conditioned attribute
  (threshold 0.5), averaged over the 20 and over the 7 editable ones; the floor reads real faces'
  own labels.
- color_w1: 1-D Wasserstein distance between the per-image channel means (pixel values in [0, 1])
  of the samples and of the reference faces, averaged over R, G, B; color_w1_floor likewise.
- saturated_fraction: fraction of pixels the model's last x0 prediction puts outside [-1, 1]
  before any clipping (real faces: 0). With --clip_denoised False (default) that prediction is the
  raw sample; every other measure reads the samples clamped to [-1, 1].

Outputs in --output_dir: samples.json, grid.png (held-out faces and the samples conditioned on
their attributes, row by row), samples.npz (uint8 samples and their attribute vectors).
"""
import argparse
import json
import os
import sys
import time

from guided_diffusion.safe_paths import OneLineParser, check_reusable_folder, write_marker

SAMPLERS = ("ddim", "ddpm")
TOOL = "evaluate_samples.py"
OUTPUTS = {"samples.json", "grid.png", "samples.npz"}


def _earlier_run(folder):
    """A folder of this script's outputs from before it marked them: those files only, and its samples.json."""
    from guided_diffusion.safe_paths import listing

    try:
        with open(os.path.join(folder, "samples.json")) as f:
            ours = {"floor_seed", "saturated_fraction"} <= set(json.load(f))
    except (OSError, ValueError, TypeError):
        return False
    return ours and set(listing(folder)) <= OUTPUTS


def build_parser():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=os.path.join("checkpoints", "diffusion.pt"),
                   help="diffusion checkpoint (its JSON beside it)")
    p.add_argument("--eval_classifier_path", default=os.path.join("checkpoints", "eval_classifier.pt"),
                   help="classifier that reads the samples (never the guidance one)")
    p.add_argument("--synthetic_seed", type=int, default=1000,
                   help="held-out faces whose attribute vectors condition the samples (training used seed 0)")
    p.add_argument("--floor_seed", type=int, default=None,
                   help="real faces measured the same way, the floor (default: synthetic_seed + 1)")
    p.add_argument("--num_samples", type=int, default=500, help="samples, one per held-out face")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="DDIM (eta 0) or DDPM")
    p.add_argument("--timestep_respacing", default=None,
                   help="e.g. ddim50 or 100 (default: ddim50 for ddim, all 1000 steps for ddpm)")
    p.add_argument("--clip_denoised", choices=("True", "False"), default="False",
                   help="clamp the x0 prediction to [-1, 1] at every step (hides, does not fix, a "
                        "model's range errors)")
    p.add_argument("--batch_size", type=int, default=100, help="samples per batch")
    p.add_argument("--seed", type=int, default=0, help="seeds the starting noise and DDPM's draws")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--grid_rows", type=int, default=4, help="grid.png: pairs of rows (faces, samples), 8 each")
    p.add_argument("--output_dir", default=os.path.join("evaluation", "samples"), help="where results go")
    return p


def validate(args):
    """Argument errors as one message, before torch or any model loads."""
    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.num_samples < 2:
        raise ValueError("--num_samples must be at least 2 (a Fréchet distance needs a covariance)")
    if args.grid_rows < 0:
        raise ValueError(f"--grid_rows must be >= 0, got {args.grid_rows}")
    # A folder this script did not write (its marker, or its own three files) keeps its samples.json and grid.png.
    check_reusable_folder(args.output_dir, "--output_dir", TOOL, recognise=_earlier_run)
    for name in ("model_path", "eval_classifier_path"):
        if not os.path.isfile(getattr(args, name)):
            raise FileNotFoundError(f"--{name}: no such file {getattr(args, name)}")
    if args.floor_seed is None:
        args.floor_seed = args.synthetic_seed + 1
    if args.floor_seed == args.synthetic_seed:
        raise ValueError("--floor_seed must differ from --synthetic_seed (the floor compares other people)")
    if args.timestep_respacing is None:
        args.timestep_respacing = "ddim50" if args.sampler == "ddim" else ""
    if args.sampler == "ddpm" and args.timestep_respacing.startswith("ddim"):
        raise ValueError(f"--timestep_respacing {args.timestep_respacing} is a DDIM spacing; "
                         "for --sampler ddpm give a number of steps such as 100, or '' for all")
    args.clip_denoised = args.clip_denoised == "True"
    return args


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        validate(args)
        results = evaluate(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))
    return 0


def evaluate(args):
    import numpy as np
    import torch

    from guided_diffusion.atomic import atomic_write
    from guided_diffusion.script_util import load_diffusion_model
    from optimization.sample_metrics import SampleMetrics
    from optimization.visualization import save_image_atomic
    from preprocess.classifier import load_classifier

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, diffusion, config = load_diffusion_model(args.model_path, device=device,
                                                    timestep_respacing=args.timestep_respacing)
    classifier = load_classifier(args.eval_classifier_path, device=device).eval()
    metrics = SampleMetrics(classifier, config["image_size"], device)
    reference, attributes = metrics.held_out_faces(args.synthetic_seed, args.num_samples)
    floor, floor_attributes = metrics.held_out_faces(args.floor_seed, args.num_samples)

    start = time.time()
    samples, saturated = sample(model, diffusion, attributes, config["image_size"], args, device)
    seconds = time.time() - start
    results = {
        "model_path": args.model_path,
        "eval_classifier_path": args.eval_classifier_path,
        "synthetic_seed": args.synthetic_seed,
        "floor_seed": args.floor_seed,
        "num_samples": args.num_samples,
        "sampler": args.sampler,
        "timestep_respacing": args.timestep_respacing or str(config["diffusion_steps"]),
        "steps": diffusion.num_timesteps,
        "clip_denoised": args.clip_denoised,
        "prediction": "v" if config.get("predict_v") else "x0" if config.get("predict_xstart") else "eps",
        "seed": args.seed,
        "seconds_sampling": round(seconds, 1),
        **metrics.compare(samples, attributes, reference, floor, floor_attributes),
        "saturated_fraction": saturated,
        "saturated_fraction_floor": float(((floor < -1) | (floor > 1)).float().mean()),
    }

    os.makedirs(args.output_dir, exist_ok=True)
    write_marker(args.output_dir, TOOL, files=None)
    rows, titles = [], []
    for r in range(min(args.grid_rows, (args.num_samples + 7) // 8)):
        part = slice(8 * r, 8 * r + 8)
        rows += [list(to_uint8(reference[part])), list(to_uint8(samples[part]))]
        titles += ["held-out", "sample"]
    if rows:
        from optimization.reports import sample_grid

        grid = sample_grid(rows, titles, [""] * 8)
        save_image_atomic(grid, os.path.join(args.output_dir, "grid.png"))
    npz = os.path.join(args.output_dir, "samples.npz")
    atomic_write(npz, lambda tmp: np.savez_compressed(tmp, samples=to_uint8(samples), attributes=attributes.numpy()))
    path = os.path.join(args.output_dir, "samples.json")
    atomic_write(path, json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return results


def sample(model, diffusion, attributes, image_size, args, device):
    """Samples [N, 3, H, W] clamped to [-1, 1] (CPU) and the saturated fraction of the last x0."""
    import torch
    from tqdm import tqdm

    n = len(attributes)
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.randn((n, 3, image_size, image_size), generator=generator)
    torch.manual_seed(args.seed)  # DDPM's per-step draws
    loop = diffusion.ddim_sample_loop_progressive if args.sampler == "ddim" else diffusion.p_sample_loop_progressive
    last_x0 = {}

    def record(x0):  # sees x0 before clipping; the last call is the last step's
        last_x0["x0"] = x0
        return x0

    samples, outside = [], 0.0
    bar = tqdm(total=n * diffusion.num_timesteps, desc=f"{args.sampler} sampling", unit="img-step",
               unit_scale=True)
    for begin in range(0, n, args.batch_size):
        part = slice(begin, begin + args.batch_size)
        x = noise[part].to(device)
        for out in loop(model, tuple(x.shape), noise=x, clip_denoised=args.clip_denoised, denoised_fn=record,
                        model_kwargs={"y": attributes[part].to(device)}):
            bar.update(x.shape[0])
        raw = last_x0["x0"].float().cpu()
        outside += float(((raw < -1) | (raw > 1)).float().sum())
        samples.append(out["sample"].float().cpu().clamp(-1, 1))
    bar.close()
    return torch.cat(samples), outside / (n * 3 * image_size * image_size)


def to_uint8(images):
    """[N, 3, H, W] in [-1, 1] -> uint8 numpy [N, H, W, 3]."""
    return ((images + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


if __name__ == "__main__":
    sys.exit(main())
