"""The CycleDiff attribute editor.

`python main.py` edits image IMAGE_INDEX of the default dataset by attribute ATTRIBUTE_INDEX
(set them here, as the paper's README says; flags override them). Attribute indices: see
`preprocess.attributes.ATTRIBUTE_NAMES`; 20 means reconstruction.
"""
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from guided_diffusion.script_util import diffusion_from_config, load_diffusion_model
from preprocess.attributes import ATTRIBUTE_NAMES, EDITABLE_ATTRIBUTES, RECONSTRUCTION_INDEX
from preprocess.classifier import load_classifier

from . import metrics
from .guidance import (AttributeContrastModel, EditProblem, GuidanceConfig, GuidanceWeights, ReuseGuidancePass,
                       make_cond_fn)
from .losses import load_lpips
from .visualization import labelled_grid, save_gif, save_image_atomic

IMAGE_INDEX = 0
ATTRIBUTE_INDEX = 9  # Eyeglasses

NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)


# --------------------------------------------------------------------------- attribute vectors

def attribute_label(indices):
    """File-name / caption label of an edit: '9', '9+15', or '20' for reconstruction."""
    return "+".join(str(i) for i in indices) if indices else str(RECONSTRUCTION_INDEX)


def check_attribute_index(v):
    """ValueError unless v is 0-19 (flip one attribute) or 20 (reconstruction)."""
    if not 0 <= v <= RECONSTRUCTION_INDEX:
        raise ValueError(f"attribute index {v} out of range 0-{RECONSTRUCTION_INDEX} "
                         f"(0-{RECONSTRUCTION_INDEX - 1} flip one attribute, {RECONSTRUCTION_INDEX} reconstructs)")


def parse_attribute_indices(text):
    """'9' -> [9]; '9,15' -> [9, 15]; '20' -> [] (reconstruction); 'all' -> the seven editable ones."""
    text = str(text).strip()
    if text == "all":
        return list(EDITABLE_ATTRIBUTES)
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"attribute index must be integers 0-{RECONSTRUCTION_INDEX} or 'all'; got {text!r}")
    if not values:
        raise ValueError("no attribute index given")
    for v in values:
        check_attribute_index(v)
    if RECONSTRUCTION_INDEX in values and len(values) > 1:
        raise ValueError(f"index {RECONSTRUCTION_INDEX} (reconstruction) cannot be combined with edits")
    return [v for v in values if v != RECONSTRUCTION_INDEX]


def parse_attribute_vector(text, name="attribute"):
    """'0, 1, ...' (20 values of 0/1) -> float tensor [20]."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if len(parts) != NUM_ATTRIBUTES:
        raise ValueError(f"--{name} needs {NUM_ATTRIBUTES} comma-separated values; got {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--{name} values must be 0 or 1; got {text!r}")
    if any(v not in (0.0, 1.0) for v in values):
        raise ValueError(f"--{name} values must be 0 or 1; got {text!r}")
    return torch.tensor(values)


def query_from_indices(a_ref, indices):
    """Flip `indices` of the reference vector(s) a_ref [..., 20]; [] leaves it as is."""
    a_q = a_ref.clone()
    for i in indices:
        a_q[..., i] = 1 - a_q[..., i]
    return a_q


def parse_index_list(text):
    """'7' -> [7]; '0-3' -> [0, 1, 2, 3]; '1,5,9' -> [1, 5, 9]."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if not out or min(out) < 0:
        raise ValueError(f"image index must be non-negative integers, a range 'a-b' or a list; got {text!r}")
    return out


# --------------------------------------------------------------------------- images

def load_image_file(path, image_size):
    """Any image file -> [1, 3, S, S] float in [-1, 1] (centre crop, antialiased resize)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            im = im.convert("RGB")
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.LANCZOS)
    return to_tensor(np.array(im))


def to_tensor(array):
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(x):
    """float [N, 3, H, W] in [-1, 1] -> uint8 numpy [N, H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_png(array, path):
    """Write a uint8 [H, W, 3] image atomically."""
    save_image_atomic(Image.fromarray(array), path)


# --------------------------------------------------------------------------- the editor

# ddim: deterministic DDIM inversion; ddpm_noise: edit-friendly DDPM inversion (exact);
# sdedit: no inversion, the input noised to the start level with fresh noise (SDEdit, a baseline);
# input: no inversion, the clean input itself is the start latent at the noisiest level sampled
# (what the paper's released code does: it overwrites its q_sample of the input with the input).
INVERSIONS = ("ddim", "ddpm_noise", "sdedit", "input")
# What an edit returns: the sampler's last sample, or its last x0 prediction (the released code).
FINAL_OUTPUTS = ("sample", "pred_xstart")


@dataclass
class EditOptions:
    """How to edit (see `optimization.arguments.PRESETS` for the presets' values)."""

    sampler: str = "ddpm"
    timestep_respacing: str = "25"
    edit_strength: float = 0.6
    skip_timesteps: Optional[int] = None
    inversion: str = "ddpm_noise"
    inversion_fixed_point: int = 0
    cycle_schema: str = "step_to_origin"
    cycle_target: str = "inversion"
    blend_x0: bool = True
    guidance_max_step: float = 0.0
    cfg_scale: float = 1.0
    weights: GuidanceWeights = field(default_factory=GuidanceWeights)
    cycle_noise: str = "fixed"
    step_by_step_renoise: str = "forward_step"
    guide_reconstructions: bool = False
    final_output: str = "sample"
    weight_resolution: int = 0

    def __post_init__(self):
        if self.inversion not in INVERSIONS:
            raise ValueError(f"inversion must be one of {', '.join(INVERSIONS)}; got {self.inversion!r}")
        if self.final_output not in FINAL_OUTPUTS:
            raise ValueError(f"final_output must be one of {', '.join(FINAL_OUTPUTS)}; got {self.final_output!r}")
        if self.inversion == "input" and self.cycle_schema == "step_by_step" and self.cycle_target == "inversion":
            raise ValueError("cycle_target 'inversion' needs an inversion; with inversion 'input' use 'noised_origin'")
        if int(self.weight_resolution) != self.weight_resolution or self.weight_resolution < 0:
            raise ValueError(f"weight_resolution must be a side in pixels (0 = weights as given); "
                             f"got {self.weight_resolution!r}")
        if self.inversion == "ddpm_noise" and self.sampler != "ddpm":
            raise ValueError("inversion 'ddpm_noise' stores DDPM noise: it needs sampler 'ddpm'")
        if self.skip_timesteps is None and not 0 < self.edit_strength <= 1:
            raise ValueError(f"edit_strength must be in (0, 1]; got {self.edit_strength}")
        if not self.cfg_scale >= 0:
            raise ValueError(f"cfg_scale must be >= 0 (1 = the plain conditional model); got {self.cfg_scale}")
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
                              guide_reconstructions=self.guide_reconstructions)

    @classmethod
    def from_args(cls, args):
        weights = GuidanceWeights(**{k: getattr(args, k) for k in asdict(GuidanceWeights())})
        return cls(sampler=args.sampler, timestep_respacing=args.timestep_respacing,
                   edit_strength=args.edit_strength, skip_timesteps=args.skip_timesteps,
                   inversion=args.inversion, inversion_fixed_point=args.inversion_fixed_point,
                   cycle_schema=args.cycle_schema,
                   cycle_target=args.cycle_target, blend_x0=args.blend_x0,
                   guidance_max_step=args.guidance_max_step, cfg_scale=args.cfg_scale, weights=weights,
                   cycle_noise=args.cycle_noise, step_by_step_renoise=args.step_by_step_renoise,
                   guide_reconstructions=args.guide_reconstructions, final_output=args.final_output,
                   weight_resolution=args.weight_resolution)

    @classmethod
    def from_preset(cls, preset, **overrides):
        """The options of `preset` ('fast' or 'paper'), with `overrides` (any editor flag) applied."""
        from .arguments import PRESETS, build_parser

        args = build_parser().parse_args(["--preset", preset])
        for key, value in {**PRESETS[preset], **overrides}.items():
            if not hasattr(args, key):
                raise ValueError(f"unknown editor option {key!r}")
            setattr(args, key, value)
        return cls.from_args(args)

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
    unet_evals: int                 # forward passes of the UNet, inversion included
    seconds: float
    frames: List[torch.Tensor]      # x0_hat per step (with record_frames)
    guidance_log: List[Dict]


class _CountingModel(torch.nn.Module):
    """Wraps the UNet to count its forward passes (batched calls count once)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def _per_sample_noise(seeds, shape, device, dtype):
    """Noise [len(seeds), *shape] with sample i drawn from its own seed (batch == one by one)."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(shape, generator=g, dtype=torch.float64))
    return torch.stack(out).to(device=device, dtype=dtype)


class AttributeEditor:
    """Loads the diffusion model, the classifier and optional LPIPS / identity models once.

    :param model_path: diffusion checkpoint with its JSON beside it.
    :param classifier_path: attribute classifier checkpoint, or None for no attribute guidance.
    :param lpips: load LPIPS (when its weights are on disk).
    :param ir_se50_weights: ArcFace weights for the identity loss, or None.
    """

    def __init__(self, model_path, classifier_path=None, device=None, lpips=False, ir_se50_weights=None,
                 dtype=torch.float32):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        model, _, self.config = load_diffusion_model(model_path, device=self.device)
        model.requires_grad_(False).to(dtype)
        self.model = _CountingModel(model)
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
        if ir_se50_weights:
            from .id_loss import load_id_loss
            self.id_fn = load_id_loss(ir_se50_weights, self.device)
        self._diffusions = {}

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
        self.model.calls = 0
        start = time.time()
        shape = tuple(x.shape[1:])

        problem = EditProblem(x_origin=x, a_ref=a_ref, a_q=a_q, conditional=self.conditional,
                              cycle_noise=_per_sample_noise(seeds, shape, self.device, self.dtype),
                              noise_generators=[torch.Generator().manual_seed(int(s) + 15485863) for s in seeds])

        # Inversion under the reference attributes.
        noise_sequence = None
        if opts.inversion == "ddim":
            trajectory = {}
            for out in diffusion.ddim_reverse_sample_loop_progressive(
                    self.model, x, clip_denoised=False, model_kwargs=problem.model_kwargs(a_ref),
                    device=self.device, progress=progress, num_steps=k,
                    fixed_point_iterations=opts.inversion_fixed_point):
                trajectory[int(out["t"][0])] = out["sample"]
            x_t = trajectory[k - 1]
        elif opts.inversion == "input":
            trajectory, x_t = {}, x.clone()
        elif opts.inversion == "sdedit":
            noise = _per_sample_noise([s + 7919 for s in seeds], shape, self.device, self.dtype)
            trajectory = {t: diffusion.q_sample(x, torch.full((n,), t, device=self.device), noise=noise)
                          for t in range(k)}
            x_t = trajectory[k - 1]
        else:
            noises = [_per_sample_noise([s + 7919 * (j + 1) for s in seeds], shape, self.device, self.dtype)
                      for j in range(k)]
            inv = diffusion.ddpm_inversion(self.model, x, clip_denoised=False, model_kwargs=problem.model_kwargs(a_ref),
                                           num_steps=k, progress=progress, noise=noises)
            trajectory = dict(enumerate(inv["trajectory"]))
            x_t, noise_sequence = inv["x_T"], inv["noise_sequence"]

        # Guided sampling under the query attributes.
        problem.origin_trajectory = trajectory
        cfg = opts.guidance_config(self.image_size)
        model = self.model
        if opts.cfg_scale != 1.0 and self.conditional:
            model = AttributeContrastModel(self.model, a_ref, opts.cfg_scale)
        model = ReuseGuidancePass(model)  # the sampler's call at x_t reuses cond_fn's
        log = []
        cond_fn = make_cond_fn(diffusion, model, self.classifier, problem, cfg,
                               lpips_fn=self.lpips_fn, id_fn=self.id_fn, log=log)
        common = dict(noise=x_t, clip_denoised=False, cond_fn=cond_fn, model_kwargs=problem.model_kwargs(a_q),
                      device=self.device, progress=progress, num_steps=k)
        if opts.sampler == "ddim":
            loop = diffusion.ddim_sample_loop_progressive(model, x.shape, eta=0.0, **common)
        else:
            if noise_sequence is None:  # plain DDPM: fresh noise per step, none at the last one
                noise_sequence = [torch.zeros_like(x)] + [
                    _per_sample_noise([s + 104729 * j for s in seeds], shape, self.device, self.dtype)
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
        return EditResult(images=final.detach().clamp(-1, 1), unet_evals=self.model.calls,
                          seconds=time.time() - start, frames=frames, guidance_log=log)


# --------------------------------------------------------------------------- inputs

def load_dataset_item(dataset_dir, index, image_size):
    """(image [1, 3, S, S] in [-1, 1], attributes [20] or None) for `index` of a dataset.

    `dataset_dir` is a directory (DESIGN §4 layout) or 'synthetic:SEED' (rendered on the fly).
    """
    if dataset_dir.startswith("synthetic"):
        from preprocess.synthetic_faces import example_face, render
        seed = int(dataset_dir.split(":", 1)[1]) if ":" in dataset_dir else 1000
        identity, attributes = example_face(seed, index)
        return to_tensor(render(identity, attributes, image_size)), torch.as_tensor(attributes, dtype=torch.float32)
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset directory not found: {dataset_dir}")
    path = None
    for ext in (".png", ".jpg", ".jpeg"):
        candidate = os.path.join(dataset_dir, f"{index:05d}{ext}")
        if os.path.isfile(candidate):
            path = candidate
            break
    attributes = None
    attr_path = os.path.join(dataset_dir, "attributes.pt")
    if os.path.isfile(attr_path):
        table = torch.load(attr_path, map_location="cpu")
        if index >= len(table):
            raise ValueError(f"image index {index} out of range: {attr_path} has {len(table)} rows")
        attributes = table[index].float()
    if path is None:
        raise FileNotFoundError(f"no image {index:05d}.png/.jpg in {dataset_dir}")
    return load_image_file(path, image_size), attributes


# --------------------------------------------------------------------------- the command line

def short_name(index):
    return "reconstruction" if index == RECONSTRUCTION_INDEX else ATTRIBUTE_NAMES[index]


def _named(vector):
    return {name: round(float(v), 4) for name, v in zip(ATTRIBUTE_NAMES, vector)}


def _flip_caption(a_ref, indices):
    if not indices:
        return "reconstruction"
    return "\n".join(f"{'+' if a_ref[i] < 0.5 else '-'}{ATTRIBUTE_NAMES[i]}" for i in indices)


class EditJob:
    """One input image and the edits asked of it."""

    def __init__(self, name, x, a_ref, queries):
        self.name = name              # output stem: '00007' for dataset index 7, or the file's stem
        self.x = x                    # [1, 3, S, S]
        self.a_ref = a_ref            # [20]
        self.queries = queries        # list of (label, flipped indices, a_q [20])


def build_jobs(args, editor, indices, attribute_indices):
    """EditJobs for dataset `indices` (or --init_image), each with reconstruction + the edits."""
    fixed_ref = parse_attribute_vector(args.attribute, "attribute") if args.attribute else None
    fixed_query = parse_attribute_vector(args.query_attribute, "query_attribute") if args.query_attribute else None
    if args.init_image:
        sources = [(os.path.splitext(os.path.basename(args.init_image))[0],
                    load_image_file(args.init_image, editor.image_size), None)]
    else:
        sources = [(f"{i:05d}", *load_dataset_item(args.dataset_dir, i, editor.image_size)) for i in indices]
    jobs = []
    for name, x, a_ref in sources:
        if fixed_ref is not None:
            a_ref = fixed_ref
        if a_ref is None:
            if editor.classifier is None:
                raise ValueError("no reference attributes: give --attribute or a classifier")
            probs = editor.classify(x)[0].cpu()
            a_ref = (probs > 0.5).float()
            believed = ", ".join(ATTRIBUTE_NAMES[i] for i in range(NUM_ATTRIBUTES) if a_ref[i] > 0)
            print(f"{name}: no labels, the classifier reads: {believed or '(none of the 20)'}")
        queries = [("20", [], a_ref.clone())]
        if fixed_query is not None:
            flipped = [i for i in range(NUM_ATTRIBUTES) if fixed_query[i] != a_ref[i]]
            queries.append((attribute_label(flipped), flipped, fixed_query))
        else:
            groups = [[i] for i in attribute_indices] if args.attribute_index == "all" else [attribute_indices]
            for group in groups:
                if group:
                    queries.append((attribute_label(group), group, query_from_indices(a_ref, group)))
        jobs.append(EditJob(name, x, a_ref, queries))
    return jobs


def run_jobs(args, editor, jobs, opts):
    """Edit every job (batches of --batch_size edits), write images, grids and JSON. Returns summaries."""
    os.makedirs(args.output_path, exist_ok=True)
    items = [(job, q, it) for job in jobs for q in job.queries for it in range(args.iterations_num)]
    results = {}
    for start in range(0, len(items), max(1, args.batch_size)):
        chunk = items[start:start + args.batch_size]
        x = torch.cat([job.x for job, _, _ in chunk])
        a_ref = torch.stack([job.a_ref for job, _, _ in chunk])
        a_q = torch.stack([q[2] for _, q, _ in chunk])
        seeds = [args.seed + it for _, _, it in chunk]
        res = editor.edit(x, a_ref, a_q, opts, seeds=seeds, progress=args.progress, record_frames=args.vid)
        per_image_seconds = res.seconds / len(chunk)
        for k, (job, q, it) in enumerate(chunk):
            results[(job.name, q[0], it)] = dict(
                image=res.images[k:k + 1].cpu(), seconds=per_image_seconds,
                unet_evals=res.unet_evals / len(chunk),
                frames=[f[k:k + 1] for f in res.frames])
    return [_write_job(args, editor, job, results, opts,
                       args.output_file if len(jobs) == 1 else f"{job.name}_grid.png") for job in jobs]


def _write_job(args, editor, job, results, opts, grid_name):
    x = job.x
    row, captions, records = [to_uint8(x)[0]], ["input"], []
    probs_in = editor.classify(x)[0].cpu() if editor.classifier is not None else None
    for label, flipped, a_q in job.queries:
        for it in range(args.iterations_num):
            r = results[(job.name, label, it)]
            img = r["image"]
            suffix = label if args.iterations_num == 1 else f"{label}_{it}"
            path = os.path.join(args.output_path, f"{job.name}_{suffix}.png")
            save_png(to_uint8(img)[0], path)
            if args.vid and r["frames"]:
                save_gif([to_uint8(f)[0] for f in r["frames"]], os.path.join(args.output_path, f"{job.name}_{suffix}.gif"))
            if args.export_assets:
                tmp = os.path.join(args.output_path, f"{job.name}_{suffix}.pt")
                torch.save({"input": x, "edited": img, "a_ref": job.a_ref, "a_q": a_q}, tmp + ".tmp")
                os.replace(tmp + ".tmp", tmp)
            rec = dict(query=label, flipped=[ATTRIBUTE_NAMES[i] for i in flipped], iteration=it, file=path,
                       l1_to_input=float(metrics.l1(img, x)[0]), psnr_to_input=float(metrics.psnr(img, x)[0]),
                       seconds=round(r["seconds"], 3), unet_evals=r["unet_evals"])
            if probs_in is not None:
                probs = editor.classify(img)[0].cpu()
                mask = (a_q != job.a_ref)[None]
                rec["classifier_after"] = _named(probs)
                rec["edit_success"] = bool(metrics.edit_success(probs[None], a_q[None], mask)[0]) if flipped else None
                rec["preserved"] = float(metrics.preservation(probs[None], probs_in[None], mask)[0])
            records.append(rec)
            row.append(to_uint8(img)[0])
            cap = _flip_caption(job.a_ref, flipped)
            if probs_in is not None and flipped:
                cap += "\n" + ", ".join(f"p={float(probs[i]):.2f}" for i in flipped)
            captions.append(cap)
    grid_path = os.path.join(args.output_path, grid_name)
    save_image_atomic(labelled_grid([row], [captions]), grid_path)
    summary = dict(
        input=job.name, grid=grid_path, reference_attributes=_named(job.a_ref),
        classifier_before=_named(probs_in) if probs_in is not None else None,
        edits=records, options=_jsonable(vars(opts) | {"weights": asdict(opts.weights)}),
        flags=vars(args))
    json_path = os.path.join(args.output_path, f"{job.name}_edit.json")
    with open(json_path + ".tmp", "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(json_path + ".tmp", json_path)
    return summary


def _jsonable(d):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), dict, list)) else str(v)) for k, v in d.items()}


def main(argv=None):
    """Entry point of `python main.py`: returns the list of per-image summaries."""
    from .arguments import get_arguments

    args = get_arguments(argv)
    if not os.path.isfile(args.model_path):
        raise FileNotFoundError(
            f"diffusion checkpoint not found: {args.model_path}. The embedded default ships in checkpoints/ "
            "(see checkpoints/README.md to re-train it), or pass --model_path.")
    classifier_path = args.attribute_cpk_path
    if classifier_path and not os.path.isfile(classifier_path):
        raise FileNotFoundError(f"classifier checkpoint not found: {classifier_path} (--attribute_cpk_path)")
    opts = EditOptions.from_args(args)
    attribute_indices = parse_attribute_indices(args.attribute_index if args.attribute_index is not None
                                                else ATTRIBUTE_INDEX)
    indices = parse_index_list(args.image_index if args.image_index is not None else IMAGE_INDEX)
    torch.manual_seed(args.seed)
    editor = AttributeEditor(args.model_path, classifier_path or None, device=args.device,
                             lpips=bool(args.lpips_sim_lambda), ir_se50_weights=args.ir_se50_weights)
    if args.model_output_size is not None and args.model_output_size != editor.image_size:
        raise ValueError(f"--model_output_size {args.model_output_size} but {args.model_path} is a "
                         f"{editor.image_size}x{editor.image_size} model")
    if editor.lpips_fn is None:
        opts.weights.lpips_sim_lambda = 0.0
    if editor.id_fn is None and opts.weights.id_lambda:
        print("id_lambda set to 0: no --ir_se50_weights given.")
        opts.weights.id_lambda = 0.0
    rank, world = _mpi_rank_and_size()
    indices = indices[rank::world]
    jobs = build_jobs(args, editor, indices, attribute_indices)
    return run_jobs(args, editor, jobs, opts)


def _mpi_rank_and_size():
    """(rank, size) when launched by mpiexec, else (0, 1). MPI only shards the inputs here."""
    if not any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")):
        return 0, 1
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
