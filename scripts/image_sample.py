"""
Sample images from a trained diffusion model, one grid row per attribute vector.

    python scripts/image_sample.py --checkpoint checkpoints/diffusion.pt \\
        --attributes "0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,1,0,0,1,1" --num_samples 8 \\
        --use_ddim True --timestep_respacing ddim50 --output outputs/samples.png

--checkpoint is a .pt file (default: the shipped 64 px model) or a training
log dir (its latest EMA weights, or model weights with --use_ema False); the
hyper-parameters come from the JSON beside it. An attribute vector has one
0/1 value per attribute, in the order of preprocess/attributes.py (listed at
the end of --help): the example asks for a young, smiling blond person with
lipstick (positions 6, 15, 18, 19). Writes the PNG grid and an .npz of the
same name (arr_0: uint8 samples [N, H, W, 3], attributes: float [N, A] or
labels: long [N]). A progress bar counts the sampling steps of all batches.
"""

import argparse
import io
import os
import sys

import numpy as np
from PIL import Image

from guided_diffusion.atomic import atomic_save_image, atomic_write
from guided_diffusion.safe_paths import OneLineParser, check_output_file, report_input_error
from guided_diffusion.script_util import load_model_config, str2bool
from preprocess.attributes import ATTRIBUTE_NAMES


def main(argv=None):
    args = create_argparser().parse_args(argv)
    try:
        check_outputs(args)  # before torch and the model load: a bad path costs no sampling
        sample(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        return report_input_error(exc)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.output} not written", file=sys.stderr)
        return 130
    return 0


def check_outputs(args):
    """The grid and the .npz beside it can be written: not below a file, not an existing folder."""
    if args.num_samples <= 0 or args.batch_size <= 0:
        raise ValueError("--num_samples and --batch_size must be positive")
    check_output_file(args.output, "--output")
    check_output_file(os.path.splitext(args.output)[0] + ".npz", "--output's .npz")


def sample(args):
    import torch
    from torchvision.utils import make_grid
    from tqdm.auto import tqdm

    from guided_diffusion.script_util import load_diffusion_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = resolve_checkpoint(args.checkpoint, args.use_ema, args.ema_rate)
    conditions = parse_conditions(args, load_model_config(path))
    respacing = args.timestep_respacing or None
    model, diffusion, config = load_diffusion_model(path, device=device, timestep_respacing=respacing)
    print(f"sampling {args.num_samples} per condition from {path}", file=sys.stderr)

    # Row r holds the samples of condition r: repeat each condition num_samples times.
    y = None if conditions is None else conditions.repeat_interleave(args.num_samples, dim=0)
    total = args.num_samples * (1 if conditions is None else len(conditions))
    shape = (3, config["image_size"], config["image_size"])
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.randn((total, *shape), generator=generator)
    if args.use_ddim:
        sample_loop = diffusion.ddim_sample_loop_progressive
    else:
        sample_loop = diffusion.p_sample_loop_progressive
    torch.manual_seed(args.seed)  # DDPM's per-step noise

    images = []
    starts = range(0, total, args.batch_size)
    sampler = "DDIM" if args.use_ddim else "DDPM"
    desc = f"{sampler} sampling, {len(starts)} batch{'es' if len(starts) > 1 else ''}"
    with tqdm(total=len(starts) * diffusion.num_timesteps, desc=desc, unit="step") as bar:
        for start in starts:  # one bar step per denoising step of a batch
            part = slice(start, start + args.batch_size)
            model_kwargs = {} if y is None else {"y": y[part].to(device)}
            out = None
            for out in sample_loop(
                model,
                (noise[part].shape[0], *shape),
                noise=noise[part].to(device),
                clip_denoised=args.clip_denoised,
                model_kwargs=model_kwargs,
                device=device,
            ):
                bar.update(1)
            images.append(out["sample"].cpu())
    images = torch.cat(images)
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    grid = make_grid(pixels, nrow=args.num_samples, padding=2).permute(1, 2, 0).numpy()
    save_png(grid, args.output)
    arrays = {"arr_0": pixels.permute(0, 2, 3, 1).numpy()}
    if y is not None:
        arrays["attributes" if y.is_floating_point() else "labels"] = y.numpy()
    npz_path = os.path.splitext(args.output)[0] + ".npz"
    save_npz(arrays, npz_path)
    print(f"wrote {args.output} and {npz_path}", file=sys.stderr)


def resolve_checkpoint(checkpoint, use_ema, ema_rate):
    """A .pt file as given; for a log dir, its latest EMA (or model) checkpoint."""
    from guided_diffusion.train_util import find_ema_checkpoint, find_resume_checkpoint

    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if not os.path.isdir(checkpoint):
        return checkpoint
    if use_ema:
        return find_ema_checkpoint(checkpoint, rate=ema_rate or None)
    path = find_resume_checkpoint("", checkpoint)
    if path is None:
        raise FileNotFoundError(f"no modelNNNNNN.pt in {checkpoint}")
    return path


def parse_conditions(args, config):
    """
    The conditioning rows: float [K, A] attribute vectors, long [K] labels,
    or None for an unconditional model.
    """
    import torch

    num_attributes = config["num_attributes"]
    if config["class_cond"]:
        if not args.class_labels:
            raise ValueError("this model is class-conditional: pass --class_labels, e.g. 1,7")
        try:
            return torch.tensor([int(v) for v in args.class_labels.split(",")], dtype=torch.long)
        except ValueError:
            raise ValueError(
                f"--class_labels must be comma-separated integers, got {args.class_labels!r}"
            ) from None
    if not num_attributes:
        if args.attributes or args.attributes_file:
            raise ValueError("this model is unconditional: drop --attributes / --attributes_file")
        return None
    if args.attributes and args.attributes_file:
        raise ValueError("pass either --attributes or --attributes_file, not both")
    if args.attributes_file:
        rows = read_attributes_file(args.attributes_file)
    elif args.attributes:
        rows = [row for row in args.attributes.split(";") if row.strip()]
    else:
        raise ValueError(
            f"this model is attribute-conditional: pass --attributes ({num_attributes} comma-separated "
            "values in [0, 1] per vector) or --attributes_file"
        )
    vectors = []
    for i, row in enumerate(rows):
        values = row.split(",") if isinstance(row, str) else row
        try:
            vector = [float(v) for v in values]
        except ValueError:
            raise ValueError(f"attribute vector {i} is not comma-separated numbers: {row!r}") from None
        if len(vector) != num_attributes:
            raise ValueError(
                f"attribute vector {i} has {len(vector)} values, the model expects {num_attributes}"
                + (" (the attributes listed in --help, in that order)" if num_attributes == len(ATTRIBUTE_NAMES) else "")
            )
        if not all(0 <= v <= 1 for v in vector):
            raise ValueError(f"attribute vector {i} has values outside [0, 1]: {row!r}")
        vectors.append(vector)
    return torch.tensor(vectors, dtype=torch.float32)


def read_attributes_file(path):
    """Attribute rows from a .pt tensor [K, A] or a text file with one comma-separated vector per line."""
    if os.path.isdir(path):
        raise ValueError(f"--attributes_file {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"attributes file not found: {path}")
    if path.endswith(".pt"):
        import torch

        try:
            tensor = torch.load(path, map_location="cpu")
        except Exception as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
            raise ValueError(f"{path} must hold a 2-D tensor [K, num_attributes]")
        return tensor.tolist()
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def save_png(array, path):
    """Write a uint8 [H, W, 3] image atomically."""
    atomic_save_image(Image.fromarray(array), path, format="PNG")


def save_npz(arrays, path):
    """Write an .npz atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                                  "diffusion.pt")


def attribute_help():
    """--help's epilog: which position of a 20-value attribute vector is which attribute."""
    half = (len(ATTRIBUTE_NAMES) + 1) // 2
    rows = [f"  {i:2d} {ATTRIBUTE_NAMES[i]:<20}" + (f"{i + half:2d} {ATTRIBUTE_NAMES[i + half]}"
            if i + half < len(ATTRIBUTE_NAMES) else "") for i in range(half)]
    example = ",".join("1" if i in (6, 15, 18, 19) else "0" for i in range(len(ATTRIBUTE_NAMES)))
    return ("attribute vector positions (preprocess/attributes.py; 1 = has it, 0 = has not):\n" + "\n".join(rows)
            + f"\n\ne.g. --attributes \"{example}\"\nasks for a young blond woman (Male = 0), smiling, with "
            "lipstick and none of the other attributes.")


def create_argparser():
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0].strip(),
        epilog=attribute_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=".pt file or training log dir (hyper-parameters from the JSON beside it); default: the "
        "shipped model, 64 px synthetic faces",
    )
    parser.add_argument(
        "--use_ema",
        type=str2bool,
        default=True,
        metavar="BOOL",
        help="for a log dir: EMA weights (default) or raw model weights",
    )
    parser.add_argument(
        "--ema_rate",
        default="",
        help="for a log dir with several EMA rates: which one (default: the largest)",
    )
    parser.add_argument(
        "--attributes",
        default="",
        help="attribute vectors: one 0/1 value per attribute (20 for this project's models, in the order "
        "listed below), comma-separated; several vectors separated by ';'",
    )
    parser.add_argument(
        "--attributes_file",
        default="",
        help=".pt tensor [K, A] or text file with one comma-separated vector per line",
    )
    parser.add_argument(
        "--class_labels", default="", help="for class-conditional models: comma-separated labels"
    )
    parser.add_argument(
        "--num_samples", type=int, default=8, help="samples per attribute vector (one grid row each)"
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--use_ddim",
        type=str2bool,
        default=False,
        metavar="BOOL",
        help="DDIM (deterministic) instead of DDPM sampling",
    )
    parser.add_argument(
        "--timestep_respacing",
        default="",
        help="e.g. ddim50 or 250 (default: the trained respacing, normally all steps)",
    )
    parser.add_argument("--clip_denoised", type=str2bool, default=True, metavar="BOOL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--output", default=os.path.join("outputs", "samples.png"), help="PNG grid; the .npz goes beside it"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
