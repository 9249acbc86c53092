"""The edit's own region, read from the conditional model (as DiffEdit does for text prompts).

Where the model's noise predictions under the query and the reference attributes differ,
|eps(x_t, a_q) - eps(x_t, a_ref)|, is where the model would change the image. Averaged over a few
noise levels and the colour channels, smoothed, normalised by its maximum and thresholded, that
difference marks the pixels an edit may touch. Outside the region the editor keeps the input's own
inversion trajectory at every step; inside it, sampling and guidance act as usual. The renderer's
masks of the synthetic faces are never used here (the evaluation scores the region with them).
"""
import math

import torch
import torch.nn.functional as F


def gaussian_blur(x, sigma):
    """Blur maps x [N, C, H, W] with a Gaussian of `sigma` pixels, truncated at 2 sigma (so that a
    pixel further than that from every non-zero one stays exactly 0); sigma 0 returns x."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(2 * sigma)))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-coords**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def parse_levels(text):
    """'0.3,0.5' -> (0.3, 0.5): noise levels as fractions of the model's chain, each in (0, 1]."""
    try:
        levels = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"region_levels must be comma-separated numbers in (0, 1]; got {text!r}") from None
    if not levels or any(not 0 < v <= 1 for v in levels):
        raise ValueError(f"region_levels must be comma-separated numbers in (0, 1]; got {text!r}")
    return levels


@torch.no_grad()
def infer_edit_region(diffusion, model, x, a_ref, a_q, levels, threshold, blur, noise, conditional=True):
    """The soft region [N, 1, H, W] in [0, 1] an edit from a_ref to a_q may change.

    For each attribute the query flips, |eps(x_t, a_ref with that attribute flipped) -
    eps(x_t, a_ref)| is averaged over the channels and the noise levels; the attributes' maps are
    joined by their maximum (a joint edit's region is the union of its attributes' regions). The
    map is smoothed (Gaussian, `blur` pixels), divided by its maximum, thresholded at `threshold`,
    and the binary region blurred again for a soft boundary. A row with nothing flipped gets an
    empty region.

    :param diffusion: the diffusion whose levels `levels` (fractions of its chain) index.
    :param model: the plain conditional model (no classifier-free contrast).
    :param x: inputs [N, 3, H, W] in [-1, 1]; a_ref, a_q: [N, A] 0/1.
    :param noise: [N, 3, H, W] standard normal noise, the same at every level.
    :return: (region [N, 1, H, W], raw map [N, 1, H, W] normalised to max 1).
    """
    n = x.shape[0]
    flipped = a_q != a_ref
    maps = torch.zeros(n, 1, *x.shape[2:], device=x.device, dtype=x.dtype)
    if not conditional or not bool(flipped.any()):
        return maps, maps
    steps = diffusion.num_timesteps
    attributes = flipped.any(dim=0).nonzero().flatten().tolist()
    per_attribute = {k: torch.zeros_like(maps) for k in attributes}
    for level in levels:
        t = torch.full((n,), min(steps - 1, max(0, int(round(level * steps)) - 1)), device=x.device,
                       dtype=torch.long)
        x_t = diffusion.q_sample(x, t, noise=noise)
        eps_ref = diffusion.p_mean_variance(model, x_t, t, clip_denoised=False, model_kwargs={"y": a_ref})["eps"]
        for k in attributes:
            rows = flipped[:, k]
            a_k = a_ref[rows].clone()
            a_k[:, k] = 1 - a_k[:, k]
            eps_k = diffusion.p_mean_variance(model, x_t[rows], t[rows], clip_denoised=False,
                                              model_kwargs={"y": a_k})["eps"]
            per_attribute[k][rows] += (eps_k - eps_ref[rows]).abs().mean(dim=1, keepdim=True) / len(levels)
    for k in attributes:
        maps = torch.maximum(maps, per_attribute[k])
    smooth = gaussian_blur(maps, blur)
    peak = smooth.flatten(1).amax(dim=1).view(n, 1, 1, 1)
    normalised = torch.where(peak > 0, smooth / peak.clamp(min=1e-30), torch.zeros_like(smooth))
    binary = (normalised > threshold).to(x.dtype)
    region = gaussian_blur(binary, blur).clamp(0, 1)
    return torch.maximum(region, binary), normalised


def keep_outside_region(region, trajectory, x_origin):
    """postprocess_fn for the samplers: outside `region` each step lands on the input's own latent.

    sample <- region * sample + (1 - region) * origin at level t-1 (the input itself after the
    last step), so pixels where region == 0 follow the inversion trajectory exactly.
    """
    def blend(out, t):
        level = int(t[0]) - 1
        origin = x_origin if level < 0 else trajectory[level]
        out = dict(out)
        out["sample"] = region * out["sample"] + (1 - region) * origin
        return out

    return blend
