"""Does a diffusion model pass the noise's per-channel mean to its prediction?

At the noisiest levels x_t is almost all noise, so the right eps prediction carries x_t's
per-channel spatial mean with slope sqrt(1 - alphabar_t) ~ 1. A model that misses it shifts its x0
prediction by the missed part times sqrt(1 / alphabar_t - 1) (158 at t = 999 of the linear
schedule): the colour casts of samples drawn from pure noise.

For each level t: x_t = noise + delta (a per-channel offset, std --offset), and the printed slope is
d mean(eps_hat) / d delta, averaged over images and channels, with the x0 shift this causes. Near
t = T-1 the offset can only be noise (the noise's channel mean has variance 1 / pixels, the image's
colour is scaled by sqrt(alphabar) ~ 0.006), so the right slope is ~1 and the right x0 shift ~0; at
lower levels part of an offset is rightly read as the image's colour.

    python scripts/diagnose_channel_mean.py --model_path checkpoints/diffusion_eps.pt
"""
import argparse
import os
import sys


def main(argv=None):
    from guided_diffusion.safe_paths import OneLineParser, report_input_error

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default="checkpoints/diffusion.pt")
    p.add_argument("--levels", default="999,900,700,500,200", help="comma-separated timesteps")
    p.add_argument("--num_images", type=int, default=8)
    p.add_argument("--offset", type=float, default=0.05, help="std of the per-channel offset added to x_t")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        levels = [int(v) for v in args.levels.split(",")]
    except ValueError:
        return report_input_error(f"--levels must be comma-separated timesteps; got {args.levels!r}")
    if not os.path.isfile(args.model_path):
        return report_input_error(f"--model_path: checkpoint not found: {args.model_path}")
    if args.num_images < 1:
        return report_input_error(f"--num_images must be at least 1; got {args.num_images}")
    import torch

    from guided_diffusion.script_util import load_diffusion_model

    model, diffusion, config = load_diffusion_model(args.model_path)
    g = torch.Generator().manual_seed(args.seed)
    n, size = args.num_images, config["image_size"]
    y = (torch.rand(n, config["num_attributes"], generator=g) > 0.5).float() if config["num_attributes"] else None
    kwargs = {} if y is None else {"y": y}
    print(f"{args.model_path}: predicts {'v' if config.get('predict_v') else 'eps'}")
    print("   t   sqrt(1-abar)   eps slope   x0 shift per unit offset")
    for level in levels:
        t = torch.full((n,), level, dtype=torch.long)
        z = torch.randn(n, 3, size, size, generator=g)
        delta = torch.randn(n, 3, 1, 1, generator=g) * args.offset
        with torch.no_grad():
            base = diffusion.p_mean_variance(model, z, t, clip_denoised=False, model_kwargs=kwargs)
            moved = diffusion.p_mean_variance(model, z + delta, t, clip_denoised=False, model_kwargs=kwargs)
        per_unit = lambda a, b: float(((b - a).mean(dim=(2, 3)) / delta[:, :, 0, 0]).mean())  # noqa: E731
        right = float(diffusion.sqrt_one_minus_alphas_cumprod[level])
        print(f"{level:4d}   {right:12.3f}   {per_unit(base['eps'], moved['eps']):9.3f}   "
              f"{per_unit(base['pred_xstart'], moved['pred_xstart']):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
