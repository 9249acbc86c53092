"""CycleDiff guidance: one loss built from the method's parts (docs/design.md, "The method"), and the
`cond_fn` the samplers take.

At sampler step t (an index of the diffusion the sampler runs, respaced or not) with current x_t:

    x0_hat = pred_xstart(x_t, t, a_q)
    x_in   = fac * x0_hat + (1 - fac) * x_t,  fac = sqrt(1 - alphabar_t)   (the paper's blend; `blend_x0`)

and the loss is a weighted sum of
    attribute  BCE(C(x_in), a_q) on the edited attributes (+ `preserve_lambda` on the others vs a_ref)
    cycle      step_to_origin: pred_xstart(q_sample(x_in, t), t, a_ref) should be the input x
               step_by_step:   x_{t-1} (the next sample under a_q), re-noised to t and denoised one
                               step under a_ref, should be the origin at t-1: q_sample(x, t-1)
                               (`noised_origin`, the paper's) or the stored inversion latent
                               (`inversion`)
    range      pixels of x0_hat outside [-1, 1]
    lpips / id distances of x_in to x (only when their models are loaded)

`make_cond_fn` returns -d(loss)/d(x_t), the guided-diffusion convention (ascend log p = descend loss).
Two safeguards act on that gradient:
    - an image whose query equals its reference (a reconstruction) gets none: there is nothing to
      edit, and the cycle / range terms would only pull an exact inversion off its path (unless
      `guide_reconstructions`, as in the paper's released code, whose start is not an inversion);
    - `max_step` (when > 0) caps how far one sampler step may move an image (RMS over pixels, in
      [-1, 1] units). Through x0_hat the gradient grows like 1/sqrt(alphabar_t) (~160 at t = 999):
      on a respaced chain one noisy step would otherwise throw the image out of range.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from . import losses

# The settings' choices and the two option dataclasses live in the torch-free optimization.options
# (the command line validates them before importing torch); exported here under their old names.
from .options import (CYCLE_NOISES, CYCLE_SCHEMAS, CYCLE_TARGETS, GUIDANCE_GRADIENTS, SAMPLERS,  # noqa: E402,F401
                      STEP_BY_STEP_RENOISES, GuidanceConfig, GuidanceWeights)


@dataclass
class EditProblem:
    """What one (batched) edit is about.

    x_origin: [N, 3, H, W] input images in [-1, 1].
    a_ref, a_q: [N, A] reference and query attributes (0/1 floats).
    origin_trajectory: level t -> [N, 3, H, W] latent of x_origin at t, from the inversion that
        started the edit (used by the `inversion` cycle target).
    cycle_noise: [N, 3, H, W] fixed noise for re-noising in the cycle term (drawn once per edit so
        a seed fixes the result and batch and single edits agree).
    noise_generators: one torch.Generator per image (CPU), for `cycle_noise="fresh"`: every
        re-noising draws anew from image i's own generator, so a batch still equals single edits.
    region: [N, 1, H, W] in [0, 1], or None: where the edit may act (the guidance gradient is
        masked by it; see optimization.region).
    """

    x_origin: torch.Tensor
    a_ref: torch.Tensor
    a_q: torch.Tensor
    origin_trajectory: Optional[Dict[int, torch.Tensor]] = None
    cycle_noise: Optional[torch.Tensor] = None
    conditional: bool = True
    noise_generators: Optional[List[torch.Generator]] = None
    region: Optional[torch.Tensor] = None

    def model_kwargs(self, attributes):
        """The UNet's kwargs under `attributes` (none for an unconditional model)."""
        return {"y": attributes} if self.conditional else {}

    def renoise(self, cfg, like):
        """Noise [N, 3, H, W] for one re-noising in the cycle term (see CYCLE_NOISES)."""
        if cfg.cycle_noise == "fresh":
            if self.noise_generators is None:
                raise ValueError("cycle_noise='fresh' needs one noise generator per image")
            draws = [torch.randn(like.shape[1:], generator=g, dtype=torch.float64) for g in self.noise_generators]
            return torch.stack(draws).to(like.device, like.dtype)
        return self.cycle_noise if self.cycle_noise is not None else torch.zeros_like(like)

    @property
    def edit_mask(self):
        """[N, A] 1 for each attribute the query changes."""
        return (self.a_q != self.a_ref).to(self.a_q.dtype)


class AttributeContrastModel(torch.nn.Module):
    """Classifier-free guidance from the reference attributes towards the query ones.

    eps = eps(x, a_ref) + scale * (eps(x, y) - eps(x, a_ref)): the conditional model's own notion
    of the edit, amplified for scale > 1 (1 is the plain model). No null label is needed, since
    the contrast is between two attribute vectors the model was trained on. Rows called with
    y == a_ref (the inversion, the cycle term's reference pass, reconstructions) get the plain
    model's output. A learned variance is taken from the query pass. Costs a second UNet pass,
    on the rows with y != a_ref only, whenever there are some.

    :param a_ref: [N, A] the reference attributes of the N images the model is called on.
    :param batched: make both passes in one model call (one larger batch; same result up to
        float rounding) instead of two calls.
    """

    def __init__(self, model, a_ref, scale, batched=False):
        super().__init__()
        self.model, self.a_ref, self.scale, self.batched = model, a_ref, float(scale), batched

    def forward(self, x, t, y=None):
        if y is None or self.scale == 1.0:
            return self.model(x, t, y=y)
        differs = (y != self.a_ref).any(dim=1)
        if not bool(differs.any()):
            return self.model(x, t, y=y)
        c = x.shape[1]
        if self.batched:
            both = self.model(torch.cat([x, x[differs]]), torch.cat([t, t[differs]]),
                              y=torch.cat([y, self.a_ref[differs]]))
            out, ref = both[:x.shape[0]], both[x.shape[0]:, :c]
        else:
            out = self.model(x, t, y=y)
            ref = self.model(x[differs], t[differs], y=self.a_ref[differs])[:, :c]
        eps = out[:, :c].clone()
        eps[differs] = ref + self.scale * (eps[differs] - ref)
        return torch.cat([eps, out[:, c:]], dim=1)


class ReuseGuidancePass(torch.nn.Module):
    """Serves the sampler's model call at (x_t, t, y) from the guidance's call at the same inputs.

    At each guided step cond_fn evaluates the model at x_t with grad (for x0_hat), then the sampler
    evaluates it again at x_t without grad for its own mean (the samplers call cond_fn first).
    Outputs of grad-enabled calls are kept until the next call without grad, which returns the one
    whose inputs are equal instead of running the model again; every other call runs the model.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self._kept = []

    def forward(self, x, t, y=None):
        if x.requires_grad:
            out = self.model(x, t, y=y)
            self._kept.append((x.detach(), t, y, out.detach()))
            return out
        kept, self._kept = self._kept, []
        for kx, kt, ky, out in kept:
            if (kx.shape == x.shape and torch.equal(kt, t) and torch.equal(kx, x)
                    and (ky is y or (ky is not None and y is not None and torch.equal(ky, y)))):
                return out
        return self.model(x, t, y=y)


class HeldFixed(torch.nn.Module):
    """The model with its output held fixed for differentiation (`guidance_gradient="skip_unet"`).

    Runs under no_grad, so no graph is built through the UNet; the input keeps its requires_grad
    flag, so ReuseGuidancePass still serves the sampler's call at the same x_t from this one.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, y=None):
        with torch.no_grad():
            return self.model(x, t, y=y)


def _at(array, t, like):
    """Gather numpy `array` at integer timesteps t [N] into a [N, 1, 1, 1] tensor like `like`."""
    values = torch.as_tensor(array, device=like.device, dtype=like.dtype)[t]
    return values.view(-1, *([1] * (like.dim() - 1)))


def _origin_at(diffusion, problem, cfg, t):
    """The step-by-step target: the origin at level t - 1 (x itself below level 0)."""
    prev = t - 1
    if int(prev.max()) < 0:
        return problem.x_origin
    if cfg.cycle_target == "inversion":
        if not problem.origin_trajectory:
            raise ValueError("cycle_target='inversion' needs the inversion trajectory of the input")
        return problem.origin_trajectory[int(prev[0])]
    return diffusion.q_sample(problem.x_origin, prev.clamp(min=0), noise=problem.renoise(cfg, problem.x_origin))


def _back_to_level_t(diffusion, x_prev, t, cfg, noise):
    """x_{t-1} taken back to level t for the step-by-step reference step (STEP_BY_STEP_RENOISES)."""
    if cfg.step_by_step_renoise == "q_sample_prev":
        prev = t - 1
        if int(prev.max()) < 0:  # at t = 0 x_{t-1} is clean: nothing to add (the released code wraps to T-1)
            return x_prev
        return diffusion.q_sample(x_prev, prev, noise=noise)
    alpha_t = _at(1.0 - diffusion.betas, t, x_prev)
    return alpha_t.sqrt() * x_prev + (1 - alpha_t).sqrt() * noise


def _one_step(diffusion, x, t, out, cfg, noise):
    """x at level t -> level t-1 from the model's p_mean_variance `out` at x, differentiably.

    DDIM (eta=0) uses alphabar_{t-1}; DDPM takes the mean plus sigma_t * `noise` (none at t == 0).
    """
    if cfg.sampler == "ddim":
        abar_prev = _at(diffusion.alphas_cumprod_prev, t, x)
        return abar_prev.sqrt() * out["pred_xstart"] + (1 - abar_prev).sqrt() * out["eps"]
    nonzero = (t > 0).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise


def guidance_losses(diffusion, model, classifier, problem, cfg, x, t, lpips_fn=None, id_fn=None):
    """The weighted loss terms at (x_t, t): dict name -> [N]. `x` must require grad.

    Costs one UNet evaluation for x0_hat plus one for the cycle term.
    """
    w = cfg.weights
    if cfg.guidance_gradient == "skip_unet":
        model = HeldFixed(model)
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=False, model_kwargs=problem.model_kwargs(problem.a_q))
    x0_hat = out["pred_xstart"]
    if cfg.blend_x0:
        fac = _at(diffusion.sqrt_one_minus_alphas_cumprod, t, x)
        x_in = fac * x0_hat + (1 - fac) * x
    else:
        x_in = x0_hat

    terms = {}
    if classifier is not None and (w.attribute_guidance_lambda or w.preserve_lambda):
        probs = classifier(x_in)
        mask = problem.edit_mask
        if w.attribute_guidance_lambda:
            terms["attribute"] = w.attribute_guidance_lambda * losses.attribute_loss(probs, problem.a_q, mask)
        if w.preserve_lambda:
            terms["preserve"] = w.preserve_lambda * losses.attribute_loss(probs, problem.a_ref, 1 - mask)

    if w.cycle_reconstruct_lambda and cfg.cycle_schema != "none":
        ref_kwargs = problem.model_kwargs(problem.a_ref)
        if cfg.cycle_schema == "step_to_origin":
            x_t_back = diffusion.q_sample(x_in, t, noise=problem.renoise(cfg, x))
            back = diffusion.p_mean_variance(model, x_t_back, t, clip_denoised=False, model_kwargs=ref_kwargs)
            cycle = losses.mse_per_sample(back["pred_xstart"], problem.x_origin)
        else:
            x_prev = _one_step(diffusion, x, t, out, cfg, problem.renoise(cfg, x))
            x_t_back = _back_to_level_t(diffusion, x_prev, t, cfg, problem.renoise(cfg, x))
            back = diffusion.p_mean_variance(model, x_t_back, t, clip_denoised=False, model_kwargs=ref_kwargs)
            x_prev_back = _one_step(diffusion, x_t_back, t, back, cfg, problem.renoise(cfg, x))
            cycle = losses.mse_per_sample(x_prev_back, _origin_at(diffusion, problem, cfg, t))
        terms["cycle"] = w.cycle_reconstruct_lambda * cycle

    if w.range_lambda:
        terms["range"] = w.range_lambda * losses.range_loss(x0_hat)
    if lpips_fn is not None and w.lpips_sim_lambda:
        terms["lpips"] = w.lpips_sim_lambda * lpips_fn(x_in, problem.x_origin)
    if id_fn is not None and w.id_lambda:
        terms["id"] = w.id_lambda * id_fn(x_in, problem.x_origin)
    return terms


def guidance_step_scale(diffusion, t, sampler, like):
    """s [N, 1, 1, 1] such that the sampler moves x_{t-1} by s * cond_fn(x_t, t).

    DDPM (`condition_mean`): the step's variance (a learned one taken at its lower end, so the
    cap errs on the loose side). DDIM with eta = 0 (`condition_score`): eps moves by
    -sqrt(1 - abar_t) * g, hence x_{t-1} by
    sqrt(1 - abar_t) * (sqrt(abar_{t-1}) sqrt(1 - abar_t) / sqrt(abar_t) - sqrt(1 - abar_{t-1})) * g.
    """
    if sampler == "ddpm":
        return _at(diffusion.sampling_variance(), t, like)
    abar = _at(diffusion.alphas_cumprod, t, like)
    abar_prev = _at(diffusion.alphas_cumprod_prev, t, like)
    return ((1 - abar).sqrt() * (abar_prev.sqrt() * (1 - abar).sqrt() / abar.sqrt() - (1 - abar_prev).sqrt())).abs()


def has_active_terms(cfg, classifier=None, lpips_fn=None, id_fn=None):
    """Whether `guidance_losses` would return any term (else no cond_fn is needed at all)."""
    w = cfg.weights
    return bool(
        (classifier is not None and (w.attribute_guidance_lambda or w.preserve_lambda))
        or (w.cycle_reconstruct_lambda and cfg.cycle_schema != "none")
        or w.range_lambda
        or (lpips_fn is not None and w.lpips_sim_lambda)
        or (id_fn is not None and w.id_lambda)
    )


def make_cond_fn(diffusion, model, classifier, problem, cfg, lpips_fn=None, id_fn=None, log=None):
    """Build cond_fn(x, t, **model_kwargs) -> -d(loss)/dx for `diffusion`'s samplers, or None
    when no loss term is active or no image has anything to edit.

    A step whose gradient is not finite is skipped (zero gradient) and its t appended to
    `cond_fn.unguided_steps`, for the caller to report once per edit. Images with
    nothing to edit get no gradient, and `cfg.max_step` caps each step's move (module docstring).
    When `log` (a list) is given, each step appends {"t": int, term: mean value, ...}.
    """

    if not has_active_terms(cfg, classifier, lpips_fn, id_fn):
        return None
    edited = problem.edit_mask.amax(dim=1).view(-1, *([1] * (problem.x_origin.dim() - 1)))
    if cfg.guide_reconstructions:  # the released code guides reconstructions too (cycle, range terms)
        edited = torch.ones_like(edited)
    if not bool(edited.any()):
        return None  # only reconstructions: no guidance to compute

    def cond_fn(x, t, **_):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            terms = guidance_losses(diffusion, model, classifier, problem, cfg, x, t, lpips_fn, id_fn)
            total = sum(v.sum() for v in terms.values())
            grad = torch.autograd.grad(total, x)[0]
        if not torch.isfinite(grad).all():
            cond_fn.unguided_steps.append(int(t[0]))
            grad = torch.zeros_like(grad)
        grad = grad * edited
        if problem.region is not None:
            grad = grad * problem.region
        if cfg.max_step:
            move = guidance_step_scale(diffusion, t, cfg.sampler, grad) * grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            grad = grad * (cfg.max_step / move.clamp(min=1e-12)).clamp(max=1.0)
        if log is not None:
            entry = {"t": int(t[0])}
            entry.update({k: float(v.detach().mean()) for k, v in terms.items()})
            log.append(entry)
        return -grad

    cond_fn.unguided_steps = []
    return cond_fn
