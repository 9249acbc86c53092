"""The CycleDiff editing engine: options, the guided model stack, the inversions and `AttributeEditor`.

No argument parsing and no file writing here: `optimization.attribute_editor` is the command line
(`python main.py`), and the scripts and the evaluation use this module directly.
"""
import time
import warnings
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Dict, List, Optional, Sequence

import torch

from guided_diffusion.script_util import diffusion_from_config, load_diffusion_model
from preprocess.classifier import load_classifier

from .guidance import (CYCLE_NOISES, CYCLE_SCHEMAS, CYCLE_TARGETS, GUIDANCE_GRADIENTS, STEP_BY_STEP_RENOISES,
                       AttributeContrastModel, EditProblem, GuidanceConfig, GuidanceWeights, ReuseGuidancePass, make_cond_fn)
from .losses import load_lpips
from .queries import NUM_ATTRIBUTES
from .region import infer_edit_region, keep_outside_region, level_index, parse_attribute_thresholds, parse_levels


# EditOptions, its choices and the weights' translation live in the torch-free optimization.options
# (python main.py builds and checks its flags from them before importing torch).
from .options import (FINAL_OUTPUTS, INVERSIONS, PIXEL_MEAN_TERMS, REGIONS, EditOptions,  # noqa: E402,F401
                      translate_weights)


@dataclass
class EditResult:
    images: torch.Tensor            # [N, 3, H, W] in [-1, 1]
    unet_evals: float               # UNet evaluations per image (inversion included), mean over the batch
    seconds: float
    frames: List[torch.Tensor]      # x0_hat per step (with record_frames)
    guidance_log: List[Dict]
    region: Optional[torch.Tensor] = None  # [N, 1, H, W] in [0, 1] with region='inferred'



class CountingModel(torch.nn.Module):
    """Wraps the UNet to count the images it evaluates: a call on a batch of B images adds B (calls on
    a subset of the batch, e.g. the region's per-attribute passes, add only that subset)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x, *args, **kwargs):
        self.images += x.shape[0]
        return self.model(x, *args, **kwargs)


def _per_sample_noise(seeds, shape, device, dtype):
    """Noise [len(seeds), *shape] with sample i drawn from its own seed (batch == one by one)."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(shape, generator=g, dtype=torch.float64))
    return torch.stack(out).to(device=device, dtype=dtype)


# Each random draw of an edit of seed s uses seed s + offset * (j + 1) for its purpose and step j:
# the offsets are primes far apart, so that no two purposes of nearby seeds share a stream.
SEED_OFFSET_INVERSION = 7919      # the x_t draws of the edit-friendly inversion / SDEdit's noise
SEED_OFFSET_SAMPLER = 104729      # DDPM's per-step noise when no inversion stored it
SEED_OFFSET_FRESH_CYCLE = 15485863  # cycle_noise="fresh": the generator of every re-noising
SEED_OFFSET_REGION = 32452843     # the noise the region map is read at


def guided_model_stack(counting_model, a_ref, cfg_scale, conditional=True, batched=False):
    """The model the guided sampler and cond_fn call, outermost first:

    ReuseGuidancePass (the sampler's call at x_t is served from cond_fn's forward pass at the same
    inputs) -> AttributeContrastModel (classifier-free contrast from a_ref, only when cfg_scale != 1;
    `batched`: its two passes in one call) -> the counting UNet.
    """
    model = counting_model
    if cfg_scale != 1.0 and conditional:
        model = AttributeContrastModel(model, a_ref, cfg_scale, batched=batched)
    return ReuseGuidancePass(model)


@dataclass
class Inversion:
    """Where guided sampling starts: x at level k-1, the latents of the input at levels 0..k-1 (for
    the `inversion` cycle target and the region blending), and DDPM noise that reproduces them."""

    x_start: torch.Tensor
    trajectory: Dict[int, torch.Tensor]
    noise_sequence: Optional[List[torch.Tensor]] = None
    eps_ref: Optional[Dict[int, torch.Tensor]] = None  # the model's eps at trajectory[t] under a_ref


def invert_ddim(diffusion, model, x, model_kwargs, k, fixed_point_iterations=0, progress=False):
    """Deterministic DDIM inversion of x to level k-1."""
    trajectory = {}
    for out in diffusion.ddim_reverse_sample_loop_progressive(
            model, x, clip_denoised=False, model_kwargs=model_kwargs, device=x.device, progress=progress,
            num_steps=k, fixed_point_iterations=fixed_point_iterations):
        trajectory[int(out["t"][0])] = out["sample"]
    return Inversion(trajectory[k - 1], trajectory)


def invert_ddpm_noise(diffusion, model, x, model_kwargs, k, seeds, progress=False, max_batch=None):
    """Edit-friendly DDPM inversion: exact reconstruction by construction (`max_batch`: its k
    independent model calls stacked into calls of at most that many images)."""
    shape = tuple(x.shape[1:])
    noises = [_per_sample_noise([s + SEED_OFFSET_INVERSION * (j + 1) for s in seeds], shape, x.device, x.dtype)
              for j in range(k)]
    inv = diffusion.ddpm_inversion(model, x, clip_denoised=False, model_kwargs=model_kwargs, num_steps=k,
                                   progress=progress, noise=noises, max_batch=max_batch)
    return Inversion(inv["x_T"], dict(enumerate(inv["trajectory"])), inv["noise_sequence"], dict(enumerate(inv["eps"])))


def noise_input(diffusion, x, k, seeds):
    """SDEdit: the input noised to each level with one fresh noise (no model call)."""
    noise = _per_sample_noise([s + SEED_OFFSET_INVERSION for s in seeds], tuple(x.shape[1:]), x.device, x.dtype)
    trajectory = {t: diffusion.q_sample(x, torch.full((x.shape[0],), t, device=x.device), noise=noise)
                  for t in range(k)}
    return Inversion(trajectory[k - 1], trajectory)


def input_as_start(x):
    """The released code's start: the clean input itself at the noisiest level sampled."""
    return Inversion(x.clone(), {})


def region_latents(diffusion, inv, x, levels, seeds):
    """The latents the region map is read at: for each level (a fraction of the chain) the
    inversion's own latent and reference eps when the edit passes through that level, else x
    noised there with the region's seeded noise (eps then computed by the region)."""
    latents, eps_ref = [], []
    noise = None
    for level in levels:
        t = level_index(level, diffusion.num_timesteps)
        if t in inv.trajectory:
            latents.append((t, inv.trajectory[t]))
            eps_ref.append(inv.eps_ref.get(t) if inv.eps_ref else None)
            continue
        if noise is None:
            noise = _per_sample_noise([s + SEED_OFFSET_REGION for s in seeds], tuple(x.shape[1:]), x.device, x.dtype)
        latents.append((t, diffusion.q_sample(x, torch.full((x.shape[0],), t, device=x.device), noise=noise)))
        eps_ref.append(None)
    return latents, eps_ref


class AttributeEditor:
    """Loads the diffusion model, the classifier and optional LPIPS / identity models once.

    :param model_path: diffusion checkpoint with its JSON beside it.
    :param classifier_path: attribute classifier checkpoint, or None for no attribute guidance.
    :param lpips: load LPIPS (when its weights are on disk).
    :param ir_se50_weights: ArcFace IR-SE50 weights for the identity loss (real faces), or None.
    :param identity_net: a `preprocess.identity` checkpoint for the identity loss (synthetic faces),
        used when no IR-SE50 weights are given, or None.
    :param fast_path: the faster way to compute the same edit (`set_fast_path`); False computes it
        the way earlier versions did, for comparisons (scripts/bench_edit.py --compare).
    """

    def __init__(self, model_path, classifier_path=None, device=None, lpips=False, ir_se50_weights=None,
                 dtype=torch.float32, identity_net=None, fast_path=True):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        model, _, self.config = load_diffusion_model(model_path, device=self.device)
        model.requires_grad_(False).to(dtype)
        self.model = CountingModel(model)
        self.image_size = int(self.config["image_size"])
        self.conditional = bool(self.config.get("num_attributes"))
        self.classifier = None
        if classifier_path is not None:
            self.classifier = load_classifier(classifier_path, device=self.device).requires_grad_(False).to(dtype)
            n = self.classifier.num_attributes
            if n != NUM_ATTRIBUTES:
                raise ValueError(f"classifier {classifier_path} predicts {n} attributes; the editor needs {NUM_ATTRIBUTES}")
        self.lpips_fn = load_lpips(self.device) if lpips else None
        self.id_fn = None
        self.identity_source = None
        if ir_se50_weights:
            from .id_loss import load_id_loss
            self.id_fn = load_id_loss(ir_se50_weights, self.device)
            self.identity_source = f"ArcFace IR-SE50 ({ir_se50_weights})"
        elif identity_net:
            from preprocess.identity import IdentityLoss, load_identity_net
            self.id_fn = IdentityLoss(load_identity_net(identity_net, self.device)).to(dtype)
            self.identity_source = f"synthetic-faces identity network ({identity_net})"
        self._diffusions = {}
        self.set_fast_path(fast_path)

    def set_fast_path(self, enabled=True):
        """Switch between two ways of computing the same edit (equal up to float rounding).

        On: independent UNet passes share calls (the edit-friendly inversion's steps, the region's
        levels, the contrast's two attribute vectors; at most `max_batch` images per call), the
        attention blocks work on [N, T, C] tokens, and on a CPU the UNet and the classifier run in
        channels_last memory format (oneDNN's native layout). Off: one call per pass, NCHW, the
        attention in guided-diffusion's layout.
        """
        self.fast_path = bool(enabled)
        self.max_batch = (64 if self.device.type == "cpu" else 512) if enabled else None
        fmt = torch.channels_last if enabled and self.device.type == "cpu" else torch.contiguous_format
        for net in (self.model, self.classifier):
            if net is not None:
                net.to(memory_format=fmt)
        for module in self.model.modules():
            if hasattr(module, "token_layout"):
                module.token_layout = self.fast_path

    def diffusion(self, timestep_respacing):
        """The model's diffusion under `timestep_respacing` ('' = all steps), cached."""
        key = timestep_respacing or ""
        if key not in self._diffusions:
            self._diffusions[key] = diffusion_from_config(self.config, key)
        return self._diffusions[key]

    @torch.no_grad()
    def classify(self, x):
        """Attribute probabilities [N, 20] of images x [N, 3, H, W] in [-1, 1]."""
        if self.classifier is None:
            raise ValueError("no classifier loaded")
        return self.classifier(x.to(self.device, self.dtype)).float()

    def edit(self, x, a_ref, a_q, opts: EditOptions, seeds: Sequence[int] = (0,), progress=False,
             record_frames=False) -> EditResult:
        """Edit images x [N, 3, H, W] (in [-1, 1]) from attributes a_ref [N, 20] to a_q [N, 20].

        `seeds` (one per image, or one for all) fix every random draw of image i, so a batch gives
        the same images as editing one by one with the same seeds.
        """
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"images must be [N, 3, {self.image_size}, {self.image_size}]; got {list(x.shape)}")
        n = x.shape[0]
        if len(seeds) == 1:
            seeds = [seeds[0]] * n
        if len(seeds) != n:
            raise ValueError(f"need one seed per image ({n}); got {len(seeds)}")
        x = x.to(self.device, self.dtype)
        a_ref = a_ref.to(self.device, self.dtype).reshape(n, NUM_ATTRIBUTES)
        a_q = a_q.to(self.device, self.dtype).reshape(n, NUM_ATTRIBUTES)
        diffusion = self.diffusion(opts.timestep_respacing)
        k = opts.num_steps(diffusion.num_timesteps)
        self.model.images = 0
        start = time.time()
        shape = tuple(x.shape[1:])

        problem = EditProblem(
            x_origin=x, a_ref=a_ref, a_q=a_q, conditional=self.conditional,
            cycle_noise=_per_sample_noise(seeds, shape, self.device, self.dtype),
            noise_generators=[torch.Generator().manual_seed(int(s) + SEED_OFFSET_FRESH_CYCLE) for s in seeds])

        # Inversion under the reference attributes.
        ref_kwargs = problem.model_kwargs(a_ref)
        if opts.inversion == "ddim":
            inv = invert_ddim(diffusion, self.model, x, ref_kwargs, k, opts.inversion_fixed_point, progress)
        elif opts.inversion == "ddpm_noise":
            inv = invert_ddpm_noise(diffusion, self.model, x, ref_kwargs, k, seeds, progress, self.max_batch)
        elif opts.inversion == "sdedit":
            inv = noise_input(diffusion, x, k, seeds)
        else:
            inv = input_as_start(x)

        # The edit's region, and outside it the input's own trajectory.
        region, postprocess_fn = None, None
        if opts.region == "inferred":
            latents, eps_ref = region_latents(diffusion, inv, x, parse_levels(opts.region_levels), seeds)
            region, _ = infer_edit_region(diffusion, self.model, latents, a_ref, a_q, opts.region_threshold,
                                          opts.region_blur, eps_ref, self.conditional,
                                          parse_attribute_thresholds(opts.region_attribute_thresholds),
                                          max_batch=self.max_batch)
            postprocess_fn = keep_outside_region(region, inv.trajectory, x)

        # Guided sampling under the query attributes.
        problem.origin_trajectory = inv.trajectory
        problem.region = region
        model = guided_model_stack(self.model, a_ref, opts.cfg_scale, self.conditional, batched=self.fast_path)
        log = []
        cond_fn = make_cond_fn(diffusion, model, self.classifier, problem, opts.guidance_config(self.image_size),
                               lpips_fn=self.lpips_fn, id_fn=self.id_fn, log=log)
        common = dict(noise=inv.x_start, clip_denoised=False, cond_fn=cond_fn, model_kwargs=problem.model_kwargs(a_q),
                      device=self.device, progress=progress, num_steps=k, postprocess_fn=postprocess_fn)
        if opts.sampler == "ddim":
            loop = diffusion.ddim_sample_loop_progressive(model, x.shape, eta=0.0, **common)
        else:
            noise_sequence = inv.noise_sequence
            if noise_sequence is None:  # plain DDPM: fresh noise per step, none at the last one
                noise_sequence = [torch.zeros_like(x)] + [
                    _per_sample_noise([s + SEED_OFFSET_SAMPLER * j for s in seeds], shape, self.device, self.dtype)
                    for j in range(1, k)]
            loop = diffusion.p_sample_loop_progressive(model, x.shape, noise_sequence=noise_sequence, **common)
        frames = []
        final = None
        for out in loop:
            if record_frames:
                frames.append(out["pred_xstart"].detach().clamp(-1, 1).cpu())
            final = out[opts.final_output]
        unguided = getattr(cond_fn, "unguided_steps", [])
        if unguided:
            warnings.warn(
                f"guidance gradient was not finite at {len(unguided)} of {k} steps (t = {unguided[0]}..{unguided[-1]}); "
                f"those steps were left unguided. The loss weights are too strong for this model (the paper "
                f"preset's were set for a 256 px CelebA-HQ model): try --preset fast, smaller weights or a "
                f"--guidance_max_step cap")
        bad = (~torch.isfinite(final)).flatten(1).any(dim=1)
        if bool(bad.any()):
            warnings.warn(f"{int(bad.sum())} of {n} edited images have non-finite pixels (NaN or inf): the edit "
                          f"diverged (rows {bad.nonzero().flatten().tolist()}); its loss weights are too strong "
                          f"for this model: try --preset fast or smaller weights")
        return EditResult(images=final.detach().clamp(-1, 1), unet_evals=self.model.images / n,
                          seconds=time.time() - start, frames=frames, guidance_log=log, region=region)
