"""The editor's options without torch: `EditOptions`, the loss weights (`GuidanceWeights`), the
guidance settings (`GuidanceConfig`), their choices and the region's option parsers.

`python main.py` builds its flags from these dataclasses and validates their values before it
imports torch, so that `--help`, an unknown flag or a bad value answers in a fraction of a second.
`optimization.editor`, `optimization.guidance` and `optimization.region` import them from here (and
export them under their old names). Nothing here may import torch.
"""
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

CYCLE_SCHEMAS = ("step_to_origin", "step_by_step", "none")
CYCLE_TARGETS = ("noised_origin", "inversion")
SAMPLERS = ("ddim", "ddpm")
# fixed: one noise per edit for every re-noising in the cycle term (a seed fixes the edit, low
# variance); fresh: independent draws at every use, as the paper's released code does.
CYCLE_NOISES = ("fixed", "fresh")
# How step-by-step takes x_{t-1} back to level t before the reference step: forward_step is one
# forward diffusion step, sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) z; q_sample_prev is the released
# code's q_sample(x_{t-1}, t-1) (x_{t-1} noised as if it were clean), then denoised from level t.
STEP_BY_STEP_RENOISES = ("forward_step", "q_sample_prev")
# How the loss's gradient reaches x_t: through_unet differentiates the UNet too (the paper; one
# backward pass through the UNet per model call in the loss); skip_unet holds the UNet's outputs
# fixed, so the gradient flows only through the explicit x_t terms of x0_hat and of the sampler
# steps (the classifier's and the cycle target's pixel-space gradient, no UNet backward pass).
GUIDANCE_GRADIENTS = ("through_unet", "skip_unet")


@dataclass
class GuidanceWeights:
    """The loss weights (lambdas). Defaults: the paper's attribute, cycle and range weights, with
    LPIPS, identity and the project's `preserve_lambda` off; the presets set all six."""

    attribute_guidance_lambda: float = 50.0
    cycle_reconstruct_lambda: float = 1000.0
    range_lambda: float = 50.0
    lpips_sim_lambda: float = 0.0
    id_lambda: float = 0.0
    preserve_lambda: float = 0.0


@dataclass
class GuidanceConfig:
    weights: GuidanceWeights = field(default_factory=GuidanceWeights)
    cycle_schema: str = "step_to_origin"
    cycle_target: str = "noised_origin"
    sampler: str = "ddim"
    blend_x0: bool = True
    max_step: float = 0.0
    cycle_noise: str = "fixed"
    step_by_step_renoise: str = "forward_step"
    guide_reconstructions: bool = False
    guidance_gradient: str = "through_unet"

    def __post_init__(self):
        for name, value, allowed in (
            ("cycle_schema", self.cycle_schema, CYCLE_SCHEMAS),
            ("cycle_target", self.cycle_target, CYCLE_TARGETS),
            ("sampler", self.sampler, SAMPLERS),
            ("cycle_noise", self.cycle_noise, CYCLE_NOISES),
            ("step_by_step_renoise", self.step_by_step_renoise, STEP_BY_STEP_RENOISES),
            ("guidance_gradient", self.guidance_gradient, GUIDANCE_GRADIENTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if not self.max_step >= 0:
            raise ValueError(f"max_step must be >= 0 (0 = no cap); got {self.max_step}")


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


def parse_levels(text):
    """'0.3,0.5' -> (0.3, 0.5): noise levels as fractions of the model's chain, each in (0, 1]."""
    try:
        levels = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"region_levels must be comma-separated numbers in (0, 1]; got {text!r}") from None
    if not levels or any(not 0 < v <= 1 for v in levels):
        raise ValueError(f"region_levels must be comma-separated numbers in (0, 1]; got {text!r}")
    return levels


def parse_attribute_thresholds(text):
    """'Male=0.15,Young=0.15' -> {11: 0.15, 19: 0.15}: region thresholds for single attributes (by
    name or index 0-19), each in [0, 1); '' -> {}."""
    from preprocess.attributes import ATTRIBUTE_NAMES

    out = {}
    for item in (v.strip() for v in str(text or "").split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        index = int(name) if name.isdigit() else (ATTRIBUTE_NAMES.index(name) if name in ATTRIBUTE_NAMES else -1)
        try:
            threshold = float(value)
        except ValueError:
            threshold = float("nan")
        if not sep or not 0 <= index < len(ATTRIBUTE_NAMES) or not 0 <= threshold < 1:
            raise ValueError(f"region_attribute_thresholds must be 'Name=value,...' with attribute names (or "
                             f"indices 0-{len(ATTRIBUTE_NAMES) - 1}) and values in [0, 1); got {item!r} in {text!r}")
        out[index] = threshold
    return out


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
