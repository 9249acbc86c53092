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


# ddim: deterministic DDIM inversion; ddpm_noise: edit-friendly DDPM inversion (exact);
# sdedit: no inversion, the input noised to the start level with fresh noise (SDEdit, a baseline);
# input: no inversion, the clean input itself is the start latent at the noisiest level sampled
# (what the paper's released code does: it overwrites its q_sample of the input with the input).
INVERSIONS = ("ddim", "ddpm_noise", "sdedit", "input")
# What an edit returns: the sampler's last sample, or its last x0 prediction (the released code).
FINAL_OUTPUTS = ("sample", "pred_xstart")
# none: the whole image is re-sampled; inferred: only the edit's region (optimization.region).
REGIONS = ("none", "inferred")


def _option(default, help, choices=None):
    """A dataclass field with the help text and choices its command-line flag is built from."""
    return field(default=default, metadata=dict(help=help, choices=choices))


@dataclass
class EditOptions:
    """How to edit. The defaults are the `fast` preset's (`optimization.presets.PRESETS`), and the
    method flags of `python main.py` are generated from these fields (`optimization.arguments`)."""

    sampler: str = _option("ddpm", "the sampler", ("ddim", "ddpm"))
    timestep_respacing: str = _option("25", "respacing of the model's steps: '' (all), '50', 'ddim25', '10,10,5'")
    edit_strength: float = _option(0.56, "fraction of the (respaced) trajectory inverted and re-sampled, in (0, 1]")
    skip_timesteps: Optional[int] = _option(
        None, "the paper's form of --edit_strength: respaced steps left out at the noisy end")
    inversion: str = _option(
        "ddpm_noise", "ddim: deterministic DDIM inversion; ddpm_noise: edit-friendly DDPM inversion, exact by "
        "construction (needs --sampler ddpm); sdedit: just noise the input (a baseline); input: no inversion, "
        "the clean input is the start latent (the released code)", INVERSIONS)
    inversion_fixed_point: int = _option(
        0, "fixed-point refinements per DDIM inversion step (each one UNet evaluation; near-exact round trip)")
    cycle_schema: str = _option("step_by_step", "the cycle-consistency scheme", CYCLE_SCHEMAS)
    cycle_target: str = _option(
        "inversion", "step-by-step target: q_sample of the input (paper) or the inversion latent", CYCLE_TARGETS)
    blend_x0: bool = _option(True, "feed the classifier the paper's blend of x0_hat and x_t (False: x0_hat)")
    guidance_max_step: float = _option(
        0.02, "cap on how far guidance moves the image in one step (RMS, [-1, 1] units; 0 = no cap)")
    cfg_scale: float = _option(
        2.0, "classifier-free contrast from the reference attributes to the query ones: eps(a_ref) + s * "
        "(eps(a_q) - eps(a_ref)); 1 = the plain conditional model (the paper), > 1 amplifies the model's own "
        "edit (one more UNet call per pass under a_q)")
    weights: GuidanceWeights = field(default_factory=lambda: GuidanceWeights(
        attribute_guidance_lambda=10.0, cycle_reconstruct_lambda=1000.0, range_lambda=50.0,
        lpips_sim_lambda=0.0, id_lambda=0.0, preserve_lambda=10.0))
    cycle_noise: str = _option(
        "fixed", "re-noising in the cycle term: one noise per edit, or fresh draws at every use (the released "
        "code)", CYCLE_NOISES)
    step_by_step_renoise: str = _option(
        "forward_step", "step-by-step: take x_{t-1} back to level t by one forward step, or by the released "
        "code's q_sample(x_{t-1}, t-1)", STEP_BY_STEP_RENOISES)
    guidance_gradient: str = _option(
        "skip_unet", "how the guidance loss is differentiated: through the UNet (the paper), or with the "
        "UNet's outputs held fixed (no backward pass through it: faster)", GUIDANCE_GRADIENTS)
    guide_reconstructions: bool = _option(False, "guide images with nothing to edit too (the released code)")
    final_output: str = _option(
        "sample", "return the last sample or the last x0 prediction (the released code)", FINAL_OUTPUTS)
    weight_resolution: int = _option(
        0, "the image side the loss weights were chosen for: the cycle and range weights are scaled by "
        "(model side / this)^2 for the same per-pixel gradient (0 = as given)")
    region: str = _option(
        "inferred", "inferred: edit only where the model's predictions under the query and the reference "
        "attributes differ; elsewhere keep the input's inversion trajectory exactly", REGIONS)
    region_threshold: float = _option(0.3, "region: fraction of the difference map's maximum that is inside")
    region_attribute_thresholds: str = _option(
        "Male=0.15,Young=0.15", "region: thresholds for single attributes, 'Name=value,...' ('' = none): "
        "attributes that change the whole face spread their difference map")
    region_levels: str = _option("0.3,0.5", "region: noise levels (fractions of the chain) the map is averaged over")
    region_blur: float = _option(1.0, "region: Gaussian smoothing of the map and of its boundary, in pixels")

    def __post_init__(self):
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}")
        for name, value in asdict(self.weights).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if self.inversion == "input" and self.cycle_schema == "step_by_step" and self.cycle_target == "inversion":
            raise ValueError("cycle_target 'inversion' needs an inversion; with inversion 'input' use 'noised_origin'")
        if int(self.weight_resolution) != self.weight_resolution or self.weight_resolution < 0:
            raise ValueError(f"weight_resolution must be a side in pixels (0 = weights as given); "
                             f"got {self.weight_resolution!r}")
        if self.region == "inferred":
            parse_levels(self.region_levels)
            parse_attribute_thresholds(self.region_attribute_thresholds)
            if self.inversion == "input":
                raise ValueError("region 'inferred' keeps the input's inversion trajectory outside the region: "
                                 "it needs an inversion (not 'input')")
            if not (0 <= self.region_threshold < 1 and self.region_blur >= 0):
                raise ValueError(f"region_threshold must be in [0, 1) and region_blur >= 0; got "
                                 f"{self.region_threshold}, {self.region_blur}")
        if self.inversion == "ddpm_noise" and self.sampler != "ddpm":
            raise ValueError("inversion 'ddpm_noise' stores DDPM noise: it needs sampler 'ddpm'")
        if self.skip_timesteps is None and not 0 < self.edit_strength <= 1:
            raise ValueError(f"edit_strength must be in (0, 1]; got {self.edit_strength}")
        if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise ValueError(f"cfg_scale must be a finite number >= 0 (1 = the plain conditional model); "
                             f"got {self.cfg_scale}")
        if not (math.isfinite(self.guidance_max_step) and self.guidance_max_step >= 0):
            raise ValueError(f"guidance_max_step must be a finite number >= 0 (0 = no cap); got {self.guidance_max_step}")
        self.guidance_config()

    def guidance_config(self, image_size=None):
        """The guidance settings; with `image_size`, the weights translated from `weight_resolution`
        (see `translate_weights`)."""
        weights = self.weights
        if image_size is not None:
            weights = translate_weights(weights, self.weight_resolution, image_size)
        return GuidanceConfig(weights=weights, cycle_schema=self.cycle_schema, cycle_target=self.cycle_target,
                              sampler=self.sampler, blend_x0=self.blend_x0, max_step=self.guidance_max_step,
                              cycle_noise=self.cycle_noise, step_by_step_renoise=self.step_by_step_renoise,
                              guide_reconstructions=self.guide_reconstructions,
                              guidance_gradient=self.guidance_gradient)

    @classmethod
    def flag_names(cls):
        """Every option as one flat name: the fields (but `weights`) and the weights' names."""
        return [f.name for f in fields(cls) if f.name != "weights"] + [f.name for f in fields(GuidanceWeights)]

    @classmethod
    def from_values(cls, values):
        """EditOptions from a flat dict of option names (`flag_names`); missing ones keep the defaults."""
        unknown = sorted(set(values) - set(cls.flag_names()))
        if unknown:
            raise ValueError(f"unknown editor option {', '.join(map(repr, unknown))}")
        weight_names = {f.name for f in fields(GuidanceWeights)}
        default_weights = asdict(cls().weights) if any(k in weight_names for k in values) else None
        weights = {**(default_weights or {}), **{k: float(v) for k, v in values.items() if k in weight_names}}
        rest = {k: v for k, v in values.items() if k not in weight_names}
        return cls(**rest, **({"weights": GuidanceWeights(**weights)} if weights else {}))

    def values(self):
        """The flat dict of every option (inverse of `from_values`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "weights"}
        out.update(asdict(self.weights))
        return out

    @classmethod
    def from_args(cls, args):
        """EditOptions from parsed flags (every option name an attribute of `args`)."""
        return cls.from_values({name: getattr(args, name) for name in cls.flag_names()})

    @classmethod
    def from_preset(cls, preset, **overrides):
        """The options of a preset of `optimization.presets.PRESETS`, with `overrides` (any option) applied."""
        from .presets import PRESETS

        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        return cls.from_values({**PRESETS[preset], **overrides})

    def num_steps(self, total):
        """How many steps of a `total`-step (respaced) chain the edit inverts and re-samples."""
        if self.skip_timesteps is not None:
            if not 0 <= self.skip_timesteps < total:
                raise ValueError(f"skip_timesteps must be in [0, {total - 1}] for a {total}-step chain")
            return total - self.skip_timesteps
        return max(1, int(round(self.edit_strength * total)))


# Terms whose loss is a mean over pixels: at side S their gradient per pixel is (S_w / S)^2 times
# the one at side S_w for the same weight (the mean has (S / S_w)^2 times fewer pixels).
PIXEL_MEAN_TERMS = ("cycle_reconstruct_lambda", "range_lambda")


def translate_weights(weights, weight_resolution, image_size):
    """Weights chosen for images of side `weight_resolution` (0: none) -> the weights that give the
    same per-pixel gradient at side `image_size`: the pixel-mean terms (cycle, range) scale by
    (image_size / weight_resolution)^2; the classifier, LPIPS and identity terms are functions of
    whole images read by networks at their own input size, and stay as given."""
    if not weight_resolution or weight_resolution == image_size:
        return weights
    factor = (image_size / weight_resolution) ** 2
    return replace(weights, **{name: getattr(weights, name) * factor for name in PIXEL_MEAN_TERMS})


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
