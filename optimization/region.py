"""The edit's own region, read from the conditional model (as DiffEdit does for text prompts).

Where the model's noise predictions under the query and the reference attributes differ,
|eps(x_t, a_q) - eps(x_t, a_ref)|, is where the model would change the image. Averaged over a few
noise levels and the colour channels, smoothed, normalised by its maximum and thresholded, that
difference marks the pixels an edit may touch. The map is read at the input's own latents from
the inversion that starts the edit, reusing the inversion's reference predictions where it made
them (the edit-friendly inversion does): one UNet call per level and flipped attribute. Outside
the region the editor keeps the input's own inversion trajectory at every step; inside it,
sampling and guidance act as usual. The renderer's
masks of the synthetic faces are never used here (the evaluation scores the region with them).
"""
import math

import torch
import torch.nn.functional as F

from preprocess.attributes import ATTRIBUTE_NAMES  # noqa: F401

from .options import parse_attribute_thresholds, parse_levels  # noqa: F401 (torch-free: main.py checks them early)


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


def level_index(level, steps):
    """The chain index (0..steps-1) of a noise level given as a fraction of a `steps`-step chain."""
    return min(steps - 1, max(0, int(round(level * steps)) - 1))


@torch.no_grad()
def infer_edit_region(diffusion, model, latents, a_ref, a_q, threshold, blur, eps_ref=None, conditional=True,
                      attribute_thresholds=None, max_batch=None):
    """The soft region [N, 1, H, W] in [0, 1] an edit from a_ref to a_q may change.

    For each attribute the query flips, |eps(x_t, a_ref with that attribute flipped) -
    eps(x_t, a_ref)| is averaged over the channels and the given latents, smoothed (Gaussian,
    `blur` pixels) and divided by its maximum; the attributes' maps are joined by their maximum (a
    joint edit's region is the union of its attributes' regions), each thresholded at its own
    threshold (`attribute_thresholds`, else `threshold`), and the binary region blurred again for
    a soft boundary. A row with nothing flipped gets an empty region.

    :param diffusion: the diffusion whose chain the latents' indices refer to.
    :param model: the plain conditional model (no classifier-free contrast).
    :param latents: list of (t, x_t): chain index t and the input's latent x_t [N, 3, H, W] there
        (the editor passes its inversion's latents: the points the edit itself starts from).
    :param a_ref, a_q: [N, A] 0/1.
    :param eps_ref: optional list, one entry per latent: eps(x_t, a_ref) [N, 3, H, W] when already
        computed (the edit-friendly inversion has it), or None to compute it here.
    :param attribute_thresholds: optional {attribute index: threshold} overriding `threshold` for
        those attributes (attributes that change the whole face spread their map: gender, age).
    :param max_batch: None: one model call per level and attribute; else those calls, which are
        independent, are stacked into calls of at most this many images (same map up to rounding).
    :return: (region [N, 1, H, W], union of the attributes' maps [N, 1, H, W], each normalised to max 1).
    """
    x0 = latents[0][1]
    n = x0.shape[0]
    flipped = a_q != a_ref
    maps = torch.zeros(n, 1, *x0.shape[2:], device=x0.device, dtype=x0.dtype)
    if not conditional or not bool(flipped.any()):
        return maps, maps
    if eps_ref is None:
        eps_ref = [None] * len(latents)
    attributes = flipped.any(dim=0).nonzero().flatten().tolist()
    per_attribute = {k: torch.zeros_like(maps) for k in attributes}
    # Every model call the map needs, as (x, t, y): the reference where not given, then each
    # flipped attribute on the rows that flip it, level by level.
    calls, ref_index, eps_index = [], {}, {}
    for i, ((step, x_t), ref) in enumerate(zip(latents, eps_ref)):
        t = torch.full((n,), step, device=x_t.device, dtype=torch.long)
        if ref is None:
            ref_index[i] = len(calls)
            calls.append((x_t, t, a_ref))
        for k in attributes:
            rows = flipped[:, k]
            a_k = a_ref[rows].clone()
            a_k[:, k] = 1 - a_k[:, k]
            eps_index[i, k] = len(calls)
            calls.append((x_t[rows], t[rows], a_k))
    eps = _eps_of_calls(diffusion, model, calls, max_batch)
    for i, ref in enumerate(eps_ref):
        ref = eps[ref_index[i]] if ref is None else ref
        for k in attributes:
            rows = flipped[:, k]
            per_attribute[k][rows] += (eps[eps_index[i, k]] - ref[rows]).abs().mean(dim=1, keepdim=True) / len(latents)
    # Each attribute's map is normalised by its own maximum before the union: one attribute's larger
    # differences (an open mouth) must not push another's (bags under the eyes) below the threshold.
    normalised, binary = maps, torch.zeros_like(maps, dtype=torch.bool)
    for k in attributes:
        smooth = gaussian_blur(per_attribute[k], blur)
        peak = smooth.flatten(1).amax(dim=1).view(n, 1, 1, 1)
        own = torch.where(peak > 0, smooth / peak.clamp(min=1e-30), torch.zeros_like(smooth))
        normalised = torch.maximum(normalised, own)
        binary |= own > (attribute_thresholds or {}).get(k, threshold)
    binary = binary.to(x0.dtype)
    region = gaussian_blur(binary, blur).clamp(0, 1)
    return torch.maximum(region, binary), normalised


def _eps_of_calls(diffusion, model, calls, max_batch):
    """eps of each (x, t, y) in `calls`: one model call each (max_batch None), or stacked into calls
    of at most max_batch images (a call larger than that runs alone)."""
    if max_batch is None:
        return [diffusion.p_mean_variance(model, x, t, clip_denoised=False, model_kwargs={"y": y})["eps"]
                for x, t, y in calls]
    out, group = [], []

    def flush():
        if group:
            eps = diffusion.p_mean_variance(model, torch.cat([c[0] for c in group]), torch.cat([c[1] for c in group]),
                                            clip_denoised=False, model_kwargs={"y": torch.cat([c[2] for c in group])})["eps"]
            out.extend(eps.split([c[0].shape[0] for c in group]))
            group.clear()

    for call in calls:
        if group and sum(c[0].shape[0] for c in group) + call[0].shape[0] > max_batch:
            flush()
        group.append(call)
    flush()
    return out


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
