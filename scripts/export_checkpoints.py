"""
Turn training outputs into the shipped checkpoints (half precision to fit the 40 MB budget).

    python scripts/export_checkpoints.py --diffusion runs/diffusion/ema_0.999_006000.pt \\
        --classifier runs/classifier/classifier.pt --eval_classifier runs/eval_classifier/classifier.pt

writes checkpoints/diffusion.pt + diffusion.json (the hyper-parameters recorded beside the
training checkpoint), checkpoints/classifier.pt and checkpoints/eval_classifier.pt (and, with
--identity / --eval_identity, checkpoints/identity.pt and eval_identity.pt). Each file is
checked to load (and to give the same outputs as the float32 original, within half-precision
rounding) before it replaces anything. A destination that exists is replaced only when it is a
PyTorch checkpoint (a file of another kind at that name is refused), and never by its own source.
"""
import argparse
import os
import sys

from guided_diffusion.atomic import atomic_torch_save, atomic_write
from guided_diffusion.safe_paths import OneLineParser, check_not_below_file, report_input_error
from guided_diffusion.script_util import save_model_config

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _half(state_dict):
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state_dict.items()}


def _report(path):
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MB)")


def export_diffusion(src, out_dir):
    import torch

    from guided_diffusion.script_util import create_model_and_diffusion, load_diffusion_model

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


def _write_checked(model, payload, load, src, dst, what):
    """Write `payload` (the half-precision checkpoint of `model`) to dst atomically: the file replaces
    dst only once `load` reads it back and it agrees with the float32 original."""
    import torch

    def write_and_check(tmp):
        torch.save(payload, tmp)
        check = load(tmp)
        x = torch.rand(4, 3, 64, 64) * 2 - 1
        with torch.no_grad():
            err = (check(x) - model(x)).abs().max().item()
        if err > 1e-2:
            raise ValueError(f"half-precision {what} differs from {src} by {err:.3g}")

    atomic_write(dst, write_and_check)
    _report(dst)


def export_classifier(src, dst, temperature=None):
    from preprocess.classifier import load_classifier

    model = load_classifier(src)
    if temperature is not None:  # stored in the opts; the weights stay as trained
        model.opts["logit_temperature"] = float(temperature)
    _write_checked(model, {"state_dict": _half(model.state_dict()), "opts": model.opts}, load_classifier, src, dst,
                   "classifier")


def export_identity(src, dst):
    from preprocess.identity import CHECKPOINT_KIND, load_identity_net, read_identity_checkpoint

    model = load_identity_net(src)
    payload = {"kind": CHECKPOINT_KIND, "state_dict": _half(model.state_dict()), "opts": model.opts,
               "run": read_identity_checkpoint(src).get("run")}
    _write_checked(model, payload, load_identity_net, src, dst, "identity network")


def _is_checkpoint(path):
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"  # torch.save's zip format, or a legacy pickle


def check_flags(args):
    """Every source a readable file; --out_dir a folder; each destination absent or a checkpoint, and not
    its own source (the float32 original would be replaced by its half-precision copy)."""
    jobs = [(flag, getattr(args, flag), name) for flag, name in
            (("diffusion", "diffusion.pt"), ("classifier", "classifier.pt"), ("eval_classifier", "eval_classifier.pt"),
             ("identity", "identity.pt"), ("eval_identity", "eval_identity.pt"))
            if getattr(args, flag)]
    if not jobs:
        raise ValueError("nothing to export: give --diffusion, --classifier, --eval_classifier, --identity and/or "
                         "--eval_identity")
    check_not_below_file(args.out_dir, "--out_dir")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise ValueError(f"--out_dir {args.out_dir} is a file, not a folder")
    for flag, src, name in jobs:
        if not os.path.exists(src):
            raise FileNotFoundError(f"--{flag}: checkpoint not found: {src}")
        if not os.path.isfile(src):
            raise ValueError(f"--{flag} {src} is a folder, not a checkpoint file")
        if not _is_checkpoint(src):
            raise ValueError(f"--{flag} {src} is not a PyTorch checkpoint")
        dst = os.path.join(args.out_dir, name)
        if os.path.exists(dst):
            if os.path.realpath(dst) == os.path.realpath(src):
                raise ValueError(f"--{flag} {src} is the file the export would replace; export to another --out_dir")
            if not os.path.isfile(dst) or not _is_checkpoint(dst):
                raise ValueError(f"{dst} exists and is not a checkpoint; move it away or use another --out_dir")


def main(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--diffusion", help="training checkpoint (e.g. an EMA file) with its JSON beside it")
    p.add_argument("--classifier", help="guidance classifier (encoder_train.py's classifier.pt)")
    p.add_argument("--classifier_temperature", type=float, default=None, metavar="T",
                   help="divide the guidance classifier's logits by T (default: as the source has it; its "
                        "decisions do not change, its probabilities saturate later)")
    p.add_argument("--eval_classifier", help="evaluation classifier")
    p.add_argument("--identity", help="identity network of the id_lambda term (identity_train.py's identity.pt)")
    p.add_argument("--eval_identity", help="evaluation identity network (trained on other people)")
    p.add_argument("--out_dir", default=OUT_DIR)
    args = p.parse_args(argv)
    try:
        check_flags(args)
        if args.classifier_temperature is not None and not args.classifier_temperature > 0:
            raise ValueError(f"--classifier_temperature must be > 0, got {args.classifier_temperature}")
        if args.classifier_temperature is not None and not args.classifier:
            raise ValueError("--classifier_temperature needs --classifier")
        os.makedirs(args.out_dir, exist_ok=True)
        if args.diffusion:
            export_diffusion(args.diffusion, args.out_dir)
        if args.classifier:
            export_classifier(args.classifier, os.path.join(args.out_dir, "classifier.pt"), args.classifier_temperature)
        if args.eval_classifier:
            export_classifier(args.eval_classifier, os.path.join(args.out_dir, "eval_classifier.pt"))
        for flag in ("identity", "eval_identity"):
            if getattr(args, flag):
                export_identity(getattr(args, flag), os.path.join(args.out_dir, f"{flag}.pt"))
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        return report_input_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
