"""
Turn training outputs into the shipped checkpoints (half precision to fit the 40 MB budget).

    python scripts/export_checkpoints.py --diffusion runs/diffusion/ema_0.999_006000.pt \\
        --classifier runs/classifier/classifier.pt --eval_classifier runs/eval_classifier/classifier.pt

writes checkpoints/diffusion.pt + diffusion.json (the hyper-parameters recorded beside the
training checkpoint), checkpoints/classifier.pt and checkpoints/eval_classifier.pt. Each file is
checked to load (and to give the same outputs as the float32 original, within half-precision
rounding) before it replaces anything.
"""
import argparse
import os
import sys

import torch

from guided_diffusion.atomic import atomic_torch_save, atomic_write
from guided_diffusion.script_util import (
    create_model_and_diffusion,
    load_diffusion_model,
    save_model_config,
)
from preprocess.classifier import load_classifier

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _half(state_dict):
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state_dict.items()}


def _report(path):
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MB)")


def export_diffusion(src, out_dir):
    model, _, config = load_diffusion_model(src)
    half = _half(model.state_dict())
    check, _ = create_model_and_diffusion(**config)
    check.load_state_dict(half)
    s = config["image_size"]
    x, t = torch.randn(2, 3, s, s), torch.tensor([10, 500])
    y = {"y": torch.ones(2, config["num_attributes"])} if config.get("num_attributes") else {}
    with torch.no_grad():
        err = (check.eval()(x, t, **y) - model(x, t, **y)).abs().max().item()
    if err > 1e-2:
        raise ValueError(f"half-precision diffusion model differs from {src} by {err:.3g}")
    dst = os.path.join(out_dir, "diffusion.pt")
    save_model_config(config, os.path.join(out_dir, "diffusion.json"))
    atomic_torch_save(half, dst)
    _report(dst)


def export_classifier(src, dst):
    model = load_classifier(src)

    def write_and_check(tmp):  # the file replaces dst only once it loads and agrees with the original
        torch.save({"state_dict": _half(model.state_dict()), "opts": model.opts}, tmp)
        check = load_classifier(tmp)
        x = torch.rand(4, 3, 64, 64) * 2 - 1
        with torch.no_grad():
            err = (check(x) - model(x)).abs().max().item()
        if err > 1e-2:
            raise ValueError(f"half-precision classifier differs from {src} by {err:.3g}")

    atomic_write(dst, write_and_check)
    _report(dst)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--diffusion", help="training checkpoint (e.g. an EMA file) with its JSON beside it")
    p.add_argument("--classifier", help="guidance classifier (encoder_train.py's classifier.pt)")
    p.add_argument("--eval_classifier", help="evaluation classifier")
    p.add_argument("--out_dir", default=OUT_DIR)
    args = p.parse_args(argv)
    try:
        os.makedirs(args.out_dir, exist_ok=True)
        if args.diffusion:
            export_diffusion(args.diffusion, args.out_dir)
        if args.classifier:
            export_classifier(args.classifier, os.path.join(args.out_dir, "classifier.pt"))
        if args.eval_classifier:
            export_classifier(args.eval_classifier, os.path.join(args.out_dir, "eval_classifier.pt"))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
