"""
Gaussian diffusion: the forward process, DDPM and DDIM samplers with
guidance, DDIM and edit-friendly DDPM inversion, and the training losses.

The API follows openai/guided-diffusion. Conventions used throughout:

- Levels. "x at level t" (t in [0, T-1], T = num_timesteps) means
  x_t = sqrt(alphas_cumprod[t]) * x_0 + sqrt(1 - alphas_cumprod[t]) * eps.
  A sampler step at t maps level t to level t-1 (to x_0 when t == 0); a
  DDIM inversion step at t (ddim_invert_step) maps level t-1 (x_0 when
  t == 0) to level t. ddim_reverse_sample keeps guided-diffusion's meaning:
  x at level t to level t+1, the model evaluated at (x, t).
- Timesteps. Every method takes t as a long tensor [N] of indices into this
  object's schedule. The model is called with self._model_timesteps(t),
  which a SpacedDiffusion maps to the original process's timesteps.
- Guidance. cond_fn(x, t, **model_kwargs) returns a gradient shaped like x
  (of a log-probability, or minus a loss). It receives the same index t the
  sampler uses, never the mapped one, so it can call this object's own
  q_sample / p_mean_variance with it. The sampling loops run under
  torch.no_grad(): a cond_fn that differentiates must enable grad itself.
  The single-step samplers call cond_fn before their own model call at the
  same (x, t), so a model wrapper can serve that call from the guidance's
  forward pass (optimization.guidance.ReuseGuidancePass).
- Tensors. Schedule coefficients are stored as float64 numpy arrays and are
  cast to the dtype and device of the tensor they multiply.
"""

import enum
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .losses import discretized_gaussian_log_likelihood, normal_kl
from .nn import mean_flat


def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
    """
    A named beta schedule, stable as num_diffusion_timesteps changes.

    :param schedule_name: "linear" (Ho et al. 2020, rescaled so that any
        number of steps covers the same noise range) or "cosine" (Nichol &
        Dhariwal 2021).
    :param num_diffusion_timesteps: T, a positive int.
    :return: float64 numpy array [T] of betas.
    """
    if int(num_diffusion_timesteps) != num_diffusion_timesteps or num_diffusion_timesteps < 1:
        raise ValueError(f"num_diffusion_timesteps must be a positive integer, got {num_diffusion_timesteps!r}")
    if schedule_name == "linear":
        if num_diffusion_timesteps <= 20:
            raise ValueError(
                f"the linear schedule needs more than 20 steps (its last beta is 20 / T), got {num_diffusion_timesteps}"
            )
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "cosine":
        return betas_for_alpha_bar(
            num_diffusion_timesteps,
            lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2,
        )
    raise ValueError(f"unknown beta schedule {schedule_name!r}; expected 'linear' or 'cosine'")


def betas_for_alpha_bar(num_diffusion_timesteps, alpha_bar, max_beta=0.999):
    """
    Discretise a continuous alphabar(s), s in [0, 1], into T betas.

    beta_i = 1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), capped at
    max_beta so that no step destroys the signal completely.

    :return: float64 numpy array [T].
    """
    steps = np.arange(num_diffusion_timesteps, dtype=np.float64) / num_diffusion_timesteps
    ratios = np.array([alpha_bar(s + 1 / num_diffusion_timesteps) / alpha_bar(s) for s in steps])
    return np.minimum(1 - ratios, max_beta)


class ModelMeanType(enum.Enum):
    """What the model's (first C) output channels predict."""

    PREVIOUS_X = enum.auto()  # the posterior mean of x_{t-1}
    START_X = enum.auto()  # x_0
    EPSILON = enum.auto()  # the noise eps
    VELOCITY = enum.auto()  # v = sqrt(alphabar_t) eps - sqrt(1 - alphabar_t) x_0 (Salimans & Ho 2022)


class ModelVarType(enum.Enum):
    """
    The variance of p(x_{t-1} | x_t). The LEARNED kinds read C extra output
    channels: LEARNED as a log-variance, LEARNED_RANGE as v in [-1, 1]
    interpolating log-variance between FIXED_SMALL (-1) and FIXED_LARGE (1).
    """

    LEARNED = enum.auto()
    FIXED_SMALL = enum.auto()  # the posterior variance beta~_t
    FIXED_LARGE = enum.auto()  # beta_t
    LEARNED_RANGE = enum.auto()


class LossType(enum.Enum):
    MSE = enum.auto()  # MSE on the prediction (plus the VB term when the variance is learned)
    RESCALED_MSE = enum.auto()  # as MSE, with the VB term scaled by T / 1000
    KL = enum.auto()  # the variational bound term of the sampled step
    RESCALED_KL = enum.auto()  # as KL, times T: an estimate of the whole bound

    def is_vb(self):
        return self in (LossType.KL, LossType.RESCALED_KL)


def _last(iterator):
    """The last item a (non-empty) generator yields."""
    item = None
    for item in iterator:
        pass
    return item


def _extract(values, t, x):
    """
    values[t] for a batch of indices, shaped [N, 1, ..., 1] to broadcast
    against x, in x's dtype and on x's device.

    :param values: 1-D numpy array (one entry per timestep).
    :param t: long tensor [N].
    :param x: tensor [N, ...].
    """
    out = torch.from_numpy(values).to(device=x.device, dtype=x.dtype)[t.to(x.device)]
    return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))


class GaussianDiffusion:
    """
    Training and sampling utilities for a Gaussian diffusion model.

    :param betas: 1-D array [T] of betas, each in (0, 1).
    :param model_mean_type: a ModelMeanType.
    :param model_var_type: a ModelVarType.
    :param loss_type: a LossType.
    :param rescale_timesteps: if True, the model sees float timesteps scaled
        to [0, 1000) whatever T is.
    :param snr_gamma: if set, weight the MSE term per timestep so that it
        equals min(SNR_t, snr_gamma) * |x_0 - x_0_hat|^2 (Min-SNR-gamma,
        Hang et al. 2023), SNR_t = alphabar_t / (1 - alphabar_t). The
        weights are in self.mse_loss_weights: min(SNR_t, gamma) / SNR_t for
        eps prediction, min(SNR_t, gamma) for x_0 prediction,
        min(SNR_t, gamma) / (SNR_t + 1) for v prediction, and
        min(SNR_t, gamma) / posterior_mean_coef1_t^2 for previous-x
        prediction. None means weight 1.
    """

    def __init__(
        self,
        *,
        betas,
        model_mean_type,
        model_var_type,
        loss_type,
        rescale_timesteps=False,
        snr_gamma=None,
    ):
        for value, kind in ((model_mean_type, ModelMeanType), (model_var_type, ModelVarType), (loss_type, LossType)):
            if not isinstance(value, kind):
                raise ValueError(f"expected a {kind.__name__}, got {value!r}")
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.rescale_timesteps = rescale_timesteps
        self.snr_gamma = snr_gamma

        betas = np.array(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not ((betas > 0).all() and (betas < 1).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.betas = betas
        self.num_timesteps = len(betas)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        # q(x_t | x_0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t == 0; its log is clipped to the
        # next step's value, which then serves as the decoder's variance.
        decoder_variance = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(decoder_variance, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

        large_variance = np.append(decoder_variance, betas[1:])
        self._fixed_variances = {
            ModelVarType.FIXED_SMALL: (self.posterior_variance, self.posterior_log_variance_clipped),
            ModelVarType.FIXED_LARGE: (large_variance, np.log(large_variance)),
        }
        self.mse_loss_weights = self._min_snr_weights(snr_gamma)

    def sampling_variance(self):
        """[T] variance of each DDPM step: the fixed one, or for a learned variance its lower end
        (the posterior variance)."""
        return self._fixed_variances.get(self.model_var_type, (self.posterior_variance, None))[0]

    def _min_snr_weights(self, snr_gamma):
        """Per-timestep MSE weights [T] (see the class docstring)."""
        if snr_gamma is None:
            return np.ones(self.num_timesteps)
        if not snr_gamma > 0:
            raise ValueError(f"snr_gamma must be positive, got {snr_gamma!r}")
        snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        # |target error|^2 = scale * |x_0 error|^2 for each kind of target.
        target_scale = {
            ModelMeanType.EPSILON: snr,
            ModelMeanType.START_X: np.ones_like(snr),
            ModelMeanType.VELOCITY: snr + 1.0,
            ModelMeanType.PREVIOUS_X: self.posterior_mean_coef1**2,
        }[self.model_mean_type]
        return np.minimum(snr, snr_gamma) / target_scale

    # ------------------------------------------------------------------
    # Forward process and posterior

    def _check_timesteps(self, t, x):
        if not (torch.is_tensor(t) and t.shape == (x.shape[0],)):
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"t must be a tensor of shape ({x.shape[0]},) (one index per sample), got {shape}")
        if t.is_floating_point():
            raise ValueError(f"t must hold integer timestep indices, got dtype {t.dtype}")
        if t.numel() and (t.min() < 0 or t.max() >= self.num_timesteps):
            raise ValueError(
                f"timestep index out of range [0, {self.num_timesteps - 1}]: got {t.min().item()}..{t.max().item()}"
            )

    def q_mean_variance(self, x_start, t):
        """
        The distribution q(x_t | x_0).

        :param x_start: x_0, tensor [N, ...].
        :param t: long tensor [N] of levels.
        :return: (mean, variance, log_variance); mean has x_start's shape, the
            others broadcast against it.
        """
        self._check_timesteps(t, x_start)
        mean = _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = _extract(1.0 - self.alphas_cumprod, t, x_start)
        log_variance = _extract(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start, t, noise=None):
        """
        Sample x_t ~ q(x_t | x_0): sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) noise.
        Differentiable in x_start and noise.

        :param x_start: x_0, tensor [N, ...].
        :param t: long tensor [N] of levels.
        :param noise: standard normal noise shaped like x_start (drawn if None).
        :return: x_t, shaped like x_start.
        """
        self._check_timesteps(t, x_start)
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from x_start shape {tuple(x_start.shape)}")
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """
        The posterior q(x_{t-1} | x_t, x_0) (its x_{t-1} is x_0 when t == 0).

        :return: (mean shaped like x_t, variance, log_variance_clipped), the
            last two broadcasting against x_t.
        """
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start shape {tuple(x_start.shape)} differs from x_t shape {tuple(x_t.shape)}")
        self._check_timesteps(t, x_t)
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x_start + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        variance = _extract(self.posterior_variance, t, x_t)
        log_variance = _extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------
    # The model's reverse step

    def _model_timesteps(self, t):
        """The timestep values the model is called with for indices t."""
        if self.rescale_timesteps:
            return t.float() * (1000.0 / self.num_timesteps)
        return t

    def p_mean_variance(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None):
        """
        Apply the model to get p(x_{t-1} | x_t) and its prediction of x_0.
        Differentiable in x and the model's parameters.

        :param model: callable model(x, timesteps, **model_kwargs) -> [N, C, ...]
            ([N, 2C, ...] when the variance is learned).
        :param x: x_t, tensor [N, C, ...].
        :param t: long tensor [N] of levels.
        :param clip_denoised: clamp the x_0 prediction to [-1, 1].
        :param denoised_fn: optional function applied to the x_0 prediction
            (before clipping).
        :param model_kwargs: extra keyword arguments for the model, e.g. y.
        :return: dict of tensors shaped like x:
            - mean: the mean of x_{t-1};
            - variance, log_variance: of x_{t-1} (log_variance is finite at
              t == 0 too: the decoder's, see posterior_log_variance_clipped);
            - pred_xstart: the (processed) prediction of x_0;
            - eps: the noise prediction consistent with pred_xstart, i.e.
              x = sqrt(alphabar_t) pred_xstart + sqrt(1 - alphabar_t) eps.
        """
        model_kwargs = model_kwargs or {}
        self._check_timesteps(t, x)
        channels = x.shape[1]
        model_output = model(x, self._model_timesteps(t), **model_kwargs)
        learned_variance = self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)
        expected = (x.shape[0], 2 * channels if learned_variance else channels, *x.shape[2:])
        if tuple(model_output.shape) != expected:
            raise ValueError(
                f"model output has shape {tuple(model_output.shape)}, expected {expected} "
                f"for {self.model_var_type.name} variance"
            )

        if learned_variance:
            model_output, var_values = torch.split(model_output, channels, dim=1)
            if self.model_var_type == ModelVarType.LEARNED:
                log_variance = var_values
            else:
                min_log = _extract(self.posterior_log_variance_clipped, t, x)
                max_log = _extract(np.log(self.betas), t, x)
                frac = (var_values + 1) / 2
                log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            fixed_variance, fixed_log_variance = self._fixed_variances[self.model_var_type]
            variance = _extract(fixed_variance, t, x).expand(x.shape)
            log_variance = _extract(fixed_log_variance, t, x).expand(x.shape)

        processed = clip_denoised or denoised_fn is not None

        def process_xstart(x_start):
            if denoised_fn is not None:
                x_start = denoised_fn(x_start)
            return x_start.clamp(-1, 1) if clip_denoised else x_start

        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            pred_xstart = process_xstart(self._predict_xstart_from_xprev(x, t, model_output))
            mean = model_output
        else:
            if self.model_mean_type == ModelMeanType.START_X:
                pred_xstart = process_xstart(model_output)
            elif self.model_mean_type == ModelMeanType.VELOCITY:
                pred_xstart = process_xstart(self._predict_xstart_from_v(x, t, model_output))
            else:
                pred_xstart = process_xstart(self._predict_xstart_from_eps(x, t, model_output))
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        if self.model_mean_type == ModelMeanType.EPSILON and not processed:
            eps = model_output  # exact; re-deriving it would only add rounding
        elif self.model_mean_type == ModelMeanType.VELOCITY and not processed:
            eps = self._predict_eps_from_v(x, t, model_output)  # no 1/sqrt(alphabar) amplification
        else:
            eps = self._predict_eps_from_xstart(x, t, pred_xstart)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def _predict_xstart_from_eps(self, x_t, t, eps):
        return _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def _predict_xstart_from_v(self, x_t, t, v):
        return _extract(self.sqrt_alphas_cumprod, t, x_t) * x_t - _extract(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        ) * v

    def _predict_eps_from_v(self, x_t, t, v):
        return _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t + _extract(
            self.sqrt_alphas_cumprod, t, x_t
        ) * v

    def velocity(self, x_start, t, noise):
        """The v-prediction target at level t: sqrt(alphabar_t) noise - sqrt(1 - alphabar_t) x_start."""
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_start) * noise
            - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start
        )

    def _predict_xstart_from_xprev(self, x_t, t, xprev):
        # Invert the posterior mean: xprev = coef1 x_0 + coef2 x_t.
        return (xprev - _extract(self.posterior_mean_coef2, t, x_t) * x_t) / _extract(
            self.posterior_mean_coef1, t, x_t
        )

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    # ------------------------------------------------------------------
    # Guidance

    def _guidance(self, cond_fn, x, t, model_kwargs):
        gradient = cond_fn(x, t, **(model_kwargs or {}))
        if gradient.shape != x.shape:
            raise ValueError(f"cond_fn returned shape {tuple(gradient.shape)}, expected x's {tuple(x.shape)}")
        return gradient.to(x.dtype)

    def condition_mean(self, cond_fn, p_mean_var, x, t, model_kwargs=None, gradient=None):
        """
        DDPM guidance (Sohl-Dickstein et al. 2015; Dhariwal & Nichol 2021):
        the mean of x_{t-1} moves by variance_t * cond_fn(x, t).

        :param gradient: cond_fn(x, t) when already computed (cond_fn is then not called).
        :return: the guided mean, shaped like x.
        """
        if gradient is None:
            gradient = self._guidance(cond_fn, x, t, model_kwargs)
        return p_mean_var["mean"] + p_mean_var["variance"] * gradient

    def condition_score(self, cond_fn, p_mean_var, x, t, model_kwargs=None, gradient=None):
        """
        Score guidance for DDIM (Song et al. 2021):
        eps <- eps - sqrt(1 - alphabar_t) * cond_fn(x, t); pred_xstart and
        mean follow from the new eps.

        :param gradient: cond_fn(x, t) when already computed (cond_fn is then not called).
        :return: a copy of p_mean_var with mean, pred_xstart and eps updated.
        """
        if gradient is None:
            gradient = self._guidance(cond_fn, x, t, model_kwargs)
        out = dict(p_mean_var)
        out["eps"] = p_mean_var["eps"] - _extract(self.sqrt_one_minus_alphas_cumprod, t, x) * gradient
        out["pred_xstart"] = self._predict_xstart_from_eps(x, t, out["eps"])
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out

    # ------------------------------------------------------------------
    # Single steps

    def p_sample(
        self,
        model,
        x,
        t,
        clip_denoised=True,
        denoised_fn=None,
        cond_fn=None,
        model_kwargs=None,
        noise=None,
    ):
        """
        One DDPM step: sample x_{t-1} ~ p(x_{t-1} | x_t) (x_0 when t == 0).

        sample = mean + exp(0.5 * log_variance) * noise. When noise is None a
        fresh standard normal draw is used for t > 0 and none at t == 0, where
        the sample is the mean (the usual last DDPM step). An explicit noise
        is used at every t, at t == 0 as a draw from the decoder Gaussian
        (whose log-variance is posterior_log_variance_clipped[0]); this is how
        ddpm_inversion's noise lands exactly on x_0.

        :param noise: optional tensor shaped like x.
        :return: dict(sample, pred_xstart).
        """
        # Guidance first, so that the model call below can reuse its forward pass (module docstring).
        gradient = None if cond_fn is None else self._guidance(cond_fn, x, t, model_kwargs)
        out = self.p_mean_variance(
            model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
        )
        if gradient is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t, model_kwargs=model_kwargs, gradient=gradient)
        if noise is None:
            noise = torch.randn_like(x) * (t != 0).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        elif noise.shape != x.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from x shape {tuple(x.shape)}")
        sample = out["mean"] + torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(
        self,
        model,
        x,
        t,
        clip_denoised=True,
        denoised_fn=None,
        cond_fn=None,
        model_kwargs=None,
        eta=0.0,
        noise=None,
    ):
        """
        One DDIM step (Song et al. 2021, eq. 12) from level t to level t-1
        (x_0 when t == 0):
        x_{t-1} = sqrt(alphabar_{t-1}) x0_hat + sqrt(1 - alphabar_{t-1} - sigma^2) eps + sigma noise,
        sigma = eta sqrt((1 - alphabar_{t-1}) / (1 - alphabar_t)) sqrt(1 - alphabar_t / alphabar_{t-1}).

        :param eta: >= 0; 0 is deterministic, 1 matches DDPM's variance.
        :param noise: optional tensor shaped like x (used only when eta > 0).
        :return: dict(sample, pred_xstart).
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        gradient = None if cond_fn is None else self._guidance(cond_fn, x, t, model_kwargs)
        out = self.p_mean_variance(
            model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
        )
        if gradient is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs=model_kwargs, gradient=gradient)
        alpha_bar = _extract(self.alphas_cumprod, t, x)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        sample = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(
            (1 - alpha_bar_prev - sigma**2).clamp(min=0)
        ) * out["eps"]
        if eta > 0:
            if noise is None:
                noise = torch.randn_like(x)
            elif noise.shape != x.shape:
                raise ValueError(f"noise shape {tuple(noise.shape)} differs from x shape {tuple(x.shape)}")
            sample = sample + sigma * noise  # sigma is 0 at t == 0
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(
        self,
        model,
        x,
        t,
        clip_denoised=True,
        denoised_fn=None,
        model_kwargs=None,
        eta=0.0,
    ):
        """
        openai/guided-diffusion's reverse DDIM step: x at level t to level t+1,
        with the model evaluated at (x, t):
        x_{t+1} = sqrt(alphabar_{t+1}) x0_hat + sqrt(1 - alphabar_{t+1}) eps,
        x0_hat and eps predicted at (x, t) (eps consistent with the processed
        x0_hat). At t == T-1, alphabar_{t+1} is taken as 0 (alphas_cumprod_next)
        and the result is eps. Same signature and defaults as guided-diffusion;
        this project's own inversion (level t-1 to t, with fixed-point
        refinement) is ddim_invert_step.

        :param eta: must be 0 (the reverse ODE is deterministic).
        :return: dict(sample=x at level t+1, pred_xstart=x0_hat).
        """
        if eta != 0:
            raise ValueError(f"the reverse DDIM step is deterministic: eta must be 0, got {eta}")
        out = self.p_mean_variance(
            model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
        )
        alpha_bar_next = _extract(self.alphas_cumprod_next, t, x)
        sample = out["pred_xstart"] * torch.sqrt(alpha_bar_next) + torch.sqrt(1 - alpha_bar_next) * out["eps"]
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_invert_step(
        self,
        model,
        x,
        t,
        clip_denoised=False,
        denoised_fn=None,
        model_kwargs=None,
        eta=0.0,
        fixed_point_iterations=0,
    ):
        """
        One deterministic DDIM inversion step from level t-1 (x_0 when
        t == 0) to level t: the inverse of ddim_sample at t (the step
        ddim_reverse_sample_loop_progressive takes).

        The exact inverse of ddim_sample at t needs eps at the unknown x_t.
        The usual approximation evaluates the model at (x, t) instead:
        eps = eps(x, t), x0_hat = (x - sqrt(1 - alphabar_{t-1}) eps) / sqrt(alphabar_{t-1}),
        x_t = sqrt(alphabar_t) x0_hat + sqrt(1 - alphabar_t) eps;
        its round-trip error shrinks linearly with the step size.
        fixed_point_iterations > 0 then re-evaluates eps at the current x_t
        guess and repeats (fixed-point inversion, Pan et al. 2023): where it
        converges, ddim_sample(x_t, t) returns x exactly (same
        clip_denoised / denoised_fn). The map contracts when eps's Lipschitz
        constant in x is below 1 / |sqrt(1 - alphabar_t) -
        sqrt(alphabar_t / alphabar_{t-1}) sqrt(1 - alphabar_{t-1})|, as for
        score models in practice; an arbitrary (e.g. untrained) network may
        not converge. Each iteration costs one model call.

        :param eta: must be 0 (the inversion is only defined for the ODE).
        :param fixed_point_iterations: extra model calls refining x_t (>= 0).
        :return: dict(sample=x at level t, pred_xstart=x0_hat).
        """
        if eta != 0:
            raise ValueError(f"DDIM inversion is deterministic: eta must be 0, got {eta}")
        if int(fixed_point_iterations) != fixed_point_iterations or fixed_point_iterations < 0:
            raise ValueError(f"fixed_point_iterations must be an integer >= 0, got {fixed_point_iterations!r}")
        alpha_bar = _extract(self.alphas_cumprod, t, x)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x)
        sample = x
        for _ in range(int(fixed_point_iterations) + 1):
            eps = self.p_mean_variance(
                model, sample, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
            )["eps"]
            pred_xstart = (x - torch.sqrt(1 - alpha_bar_prev) * eps) / torch.sqrt(alpha_bar_prev)
            sample = torch.sqrt(alpha_bar) * pred_xstart + torch.sqrt(1 - alpha_bar) * eps
        return {"sample": sample, "pred_xstart": pred_xstart}

    # ------------------------------------------------------------------
    # Loops

    def _resolve_num_steps(self, num_steps):
        if num_steps is None:
            return self.num_timesteps
        if int(num_steps) != num_steps or not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be an integer in [1, {self.num_timesteps}], got {num_steps!r}")
        return int(num_steps)

    def _initial_sample(self, model, shape, noise, device, num_steps):
        """The x at level num_steps-1 a sampling loop starts from."""
        if not isinstance(shape, (tuple, list)):
            raise ValueError(f"shape must be a tuple or list, got {type(shape).__name__}")
        if noise is not None:
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(f"noise shape {tuple(noise.shape)} differs from the requested shape {tuple(shape)}")
            return noise if device is None else noise.to(device)
        if num_steps < self.num_timesteps:
            raise ValueError(
                f"starting at step {num_steps - 1} of {self.num_timesteps} needs `noise`: the x at that level"
            )
        if device is None:
            parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
            device = parameter.device if parameter is not None else "cpu"
        return torch.randn(*shape, device=device)

    @staticmethod
    def _steps(start, stop, step, progress, desc):
        return tqdm(range(start, stop, step), disable=not progress, desc=desc, leave=False)

    def p_sample_loop(self, model, shape, **kwargs):
        """
        DDPM sampling; returns the final x_0 (no gradient). Arguments as
        p_sample_loop_progressive.
        """
        return _last(self.p_sample_loop_progressive(model, shape, **kwargs))["sample"]

    def p_sample_loop_progressive(
        self,
        model,
        shape,
        noise=None,
        clip_denoised=True,
        denoised_fn=None,
        cond_fn=None,
        model_kwargs=None,
        device=None,
        progress=False,
        num_steps=None,
        noise_sequence=None,
        postprocess_fn=None,
    ):
        """
        DDPM sampling for t = num_steps-1, ..., 0, yielding every step.

        :param shape: (N, C, ...) of the samples.
        :param noise: x at level num_steps-1 (required when num_steps < T;
            standard normal drawn if None).
        :param device: where to sample; default noise's device, else the
            model's.
        :param num_steps: k in [1, T] (default T): start at level k-1.
        :param noise_sequence: optional list of k tensors, noise_sequence[t]
            the noise of the step at t (see p_sample); ddpm_inversion
            returns one.
        :param postprocess_fn: optional f(out, t) -> out applied to each
            step's output before it is yielded; its "sample" is where the
            next step starts (e.g. blending with a stored trajectory).
        :return: generator of dict(sample, pred_xstart, t) per step, sample
            being x at level t-1 (x_0 at the last step).
        """
        num_steps = self._resolve_num_steps(num_steps)
        if noise_sequence is not None and len(noise_sequence) != num_steps:
            raise ValueError(f"noise_sequence has {len(noise_sequence)} entries, expected num_steps = {num_steps}")
        sample = self._initial_sample(model, shape, noise, device, num_steps)
        for step in self._steps(num_steps - 1, -1, -1, progress, "DDPM sampling"):
            t = torch.full((shape[0],), step, device=sample.device, dtype=torch.long)
            with torch.no_grad():
                out = self.p_sample(
                    model,
                    sample,
                    t,
                    clip_denoised=clip_denoised,
                    denoised_fn=denoised_fn,
                    cond_fn=cond_fn,
                    model_kwargs=model_kwargs,
                    noise=None if noise_sequence is None else noise_sequence[step],
                )
            if postprocess_fn is not None:
                out = postprocess_fn(out, t)
            yield {**out, "t": t}
            sample = out["sample"]

    def ddim_sample_loop(self, model, shape, **kwargs):
        """
        DDIM sampling; returns the final x_0 (no gradient). Arguments as
        ddim_sample_loop_progressive.
        """
        return _last(self.ddim_sample_loop_progressive(model, shape, **kwargs))["sample"]

    def ddim_sample_loop_progressive(
        self,
        model,
        shape,
        noise=None,
        clip_denoised=True,
        denoised_fn=None,
        cond_fn=None,
        model_kwargs=None,
        device=None,
        progress=False,
        eta=0.0,
        num_steps=None,
        postprocess_fn=None,
    ):
        """
        DDIM sampling for t = num_steps-1, ..., 0, yielding every step.
        Arguments as p_sample_loop_progressive, plus eta (see ddim_sample).

        :return: generator of dict(sample, pred_xstart, t) per step.
        """
        num_steps = self._resolve_num_steps(num_steps)
        sample = self._initial_sample(model, shape, noise, device, num_steps)
        for step in self._steps(num_steps - 1, -1, -1, progress, "DDIM sampling"):
            t = torch.full((shape[0],), step, device=sample.device, dtype=torch.long)
            with torch.no_grad():
                out = self.ddim_sample(
                    model,
                    sample,
                    t,
                    clip_denoised=clip_denoised,
                    denoised_fn=denoised_fn,
                    cond_fn=cond_fn,
                    model_kwargs=model_kwargs,
                    eta=eta,
                )
            if postprocess_fn is not None:
                out = postprocess_fn(out, t)
            yield {**out, "t": t}
            sample = out["sample"]

    def ddim_reverse_sample_loop(self, model, x0, **kwargs):
        """
        DDIM inversion of x0 to level num_steps-1 (no gradient). Running
        ddim_sample_loop(noise=result, num_steps=same, same model_kwargs and
        clip_denoised) returns x0 up to the discretisation error, or, with
        fixed_point_iterations where they converge, up to rounding. Arguments
        as ddim_reverse_sample_loop_progressive.
        """
        return _last(self.ddim_reverse_sample_loop_progressive(model, x0, **kwargs))["sample"]

    def ddim_reverse_sample_loop_progressive(
        self,
        model,
        x0,
        clip_denoised=False,
        model_kwargs=None,
        device=None,
        progress=False,
        num_steps=None,
        fixed_point_iterations=0,
    ):
        """
        DDIM inversion for t = 0, ..., num_steps-1, yielding every step.

        :param x0: tensor [N, C, ...], the data to invert.
        :param num_steps: k in [1, T] (default T): stop at level k-1.
        :param fixed_point_iterations: per step, see ddim_invert_step.
        :return: generator of dict(sample=x at level t, pred_xstart, t).
        """
        num_steps = self._resolve_num_steps(num_steps)
        sample = x0 if device is None else x0.to(device)
        for step in self._steps(0, num_steps, 1, progress, "DDIM inversion"):
            t = torch.full((x0.shape[0],), step, device=sample.device, dtype=torch.long)
            with torch.no_grad():
                out = self.ddim_invert_step(
                    model,
                    sample,
                    t,
                    clip_denoised=clip_denoised,
                    model_kwargs=model_kwargs,
                    fixed_point_iterations=fixed_point_iterations,
                )
            yield {**out, "t": t}
            sample = out["sample"]

    def ddpm_inversion(
        self,
        model,
        x0,
        clip_denoised=False,
        model_kwargs=None,
        num_steps=None,
        progress=False,
        generator=None,
        noise=None,
        max_batch=None,
    ):
        """
        Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2023; the
        DPM-Encoder of CycleDiffusion, Wu & De la Torre 2023).

        Each x_t, t = 0..k-1, is drawn independently from q(x_t | x_0); then
        for each step t the noise z_t = (x_{t-1} - mean_t(x_t)) / std_t is
        stored that makes p_sample land exactly on x_{t-1}, and at t == 0 on
        x0 itself (std_0 is the decoder's, see p_sample). Hence
        p_sample_loop(model, x0.shape, noise=x_T, num_steps=k,
        noise_sequence=noise_sequence, clip_denoised=<same>) reproduces x0
        up to rounding under the same model_kwargs and no cond_fn; with other
        model_kwargs or a cond_fn the same noise produces an edit.

        :param x0: tensor [N, C, ...].
        :param num_steps: k in [1, T] (default T).
        :param generator: optional torch.Generator (on x0's device) for the
            draws of x_t.
        :param noise: optional list of k standard normal tensors shaped like
            x0, noise[t] giving x_t = q_sample(x0, t, noise[t]); replaces the
            draws (e.g. for per-sample seeds).
        :param max_batch: None: one model call per step; else the k steps'
            calls, which are independent, are stacked into calls of at most
            this many images (fewer, larger calls; same results up to float
            rounding). Tensors in model_kwargs must have one row per image.
        :return: dict with
            - x_T: x at level k-1;
            - noise_sequence: list of k tensors, noise_sequence[t] for the
              step at t (the order p_sample_loop reads them in);
            - trajectory: list of the k drawn x_t, trajectory[t] at level t;
            - eps: list of the k model noise predictions, eps[t] at (trajectory[t], t).
        """
        num_steps = self._resolve_num_steps(num_steps)
        if noise is None:
            noise = [
                torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
                for _ in range(num_steps)
            ]
        elif len(noise) != num_steps:
            raise ValueError(f"noise has {len(noise)} entries, expected num_steps = {num_steps}")
        timesteps = [torch.full((x0.shape[0],), step, device=x0.device, dtype=torch.long) for step in range(num_steps)]
        trajectory = [self.q_sample(x0, t, noise=z) for t, z in zip(timesteps, noise)]
        noise_sequence, eps = [None] * num_steps, [None] * num_steps
        outs = {}
        if max_batch is not None:
            outs = self._stacked_p_mean_variance(
                model, trajectory, timesteps, model_kwargs, max_batch, clip_denoised=clip_denoised
            )
        for step in tqdm(range(num_steps - 1, -1, -1), disable=not progress, desc="DDPM inversion", leave=False):
            target = trajectory[step - 1] if step > 0 else x0
            out = outs.get(step)
            if out is None:
                with torch.no_grad():
                    out = self.p_mean_variance(
                        model, trajectory[step], timesteps[step], clip_denoised=clip_denoised, model_kwargs=model_kwargs
                    )
            noise_sequence[step] = (target - out["mean"]) / torch.exp(0.5 * out["log_variance"])
            eps[step] = out["eps"]
        return {"x_T": trajectory[-1], "noise_sequence": noise_sequence, "trajectory": trajectory, "eps": eps}

    @torch.no_grad()
    def _stacked_p_mean_variance(self, model, xs, ts, model_kwargs, max_batch, **kwargs):
        """p_mean_variance of independent calls (xs[i], ts[i], same model_kwargs), stacked along the
        batch into calls of at most max(max_batch, len(xs[0])) images; returns {i: out}."""
        n = xs[0].shape[0]
        per_call = max(1, int(max_batch) // n)
        kwargs_rows = model_kwargs or {}
        outs = {}
        for start in range(0, len(xs), per_call):
            group = range(start, min(start + per_call, len(xs)))
            repeat = len(group)
            stacked_kwargs = {
                k: torch.cat([v] * repeat) if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
                for k, v in kwargs_rows.items()
            }
            out = self.p_mean_variance(
                model, torch.cat([xs[i] for i in group]), torch.cat([ts[i] for i in group]),
                model_kwargs=stacked_kwargs, **kwargs
            )
            for j, i in enumerate(group):
                outs[i] = {key: value[j * n:(j + 1) * n] for key, value in out.items()}
        return outs

    # ------------------------------------------------------------------
    # Training

    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None):
        """
        One term of the variational bound, in bits per dimension:
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, and the
        discretised decoder NLL -log p(x_0 | x_1) for t == 0.

        :return: dict(output=[N] tensor, pred_xstart).
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None):
        """
        Training losses for one batch at levels t.

        :param model: callable model(x, timesteps, **model_kwargs).
        :param x_start: x_0, tensor [N, C, ...].
        :param t: long tensor [N] of levels.
        :param noise: optional standard normal noise shaped like x_start.
        :return: dict of [N] tensors: "loss" (to minimise) and its parts:
            "mse" (plain MSE on the model's target; "loss" applies the
            min-SNR weight to it) and "vb" (the bound term training a learned
            variance), or, for a KL loss type, "loss" alone.
        """
        model_kwargs = model_kwargs or {}
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)

        terms = {}
        if self.loss_type.is_vb():
            terms["loss"] = self._vb_terms_bpd(
                model, x_start, x_t, t, clip_denoised=False, model_kwargs=model_kwargs
            )["output"]
            if self.loss_type == LossType.RESCALED_KL:
                terms["loss"] = terms["loss"] * self.num_timesteps
            return terms

        model_output = model(x_t, self._model_timesteps(t), **model_kwargs)
        channels = x_t.shape[1]
        if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            expected = (x_t.shape[0], 2 * channels, *x_t.shape[2:])
            if tuple(model_output.shape) != expected:
                raise ValueError(f"model output has shape {tuple(model_output.shape)}, expected {expected}")
            model_output, var_values = torch.split(model_output, channels, dim=1)
            # The bound trains the variance only; the mean is left to the MSE.
            frozen_output = torch.cat([model_output.detach(), var_values], dim=1)
            terms["vb"] = self._vb_terms_bpd(
                lambda *args, **kwargs: frozen_output, x_start, x_t, t, clip_denoised=False
            )["output"]
            if self.loss_type == LossType.RESCALED_MSE:
                # The MSE stands for the whole bound; the VB term for one of its T terms.
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)

        target = {
            ModelMeanType.PREVIOUS_X: lambda: self.q_posterior_mean_variance(x_start, x_t, t)[0],
            ModelMeanType.START_X: lambda: x_start,
            ModelMeanType.EPSILON: lambda: noise,
            ModelMeanType.VELOCITY: lambda: self.velocity(x_start, t, noise),
        }[self.model_mean_type]()
        if model_output.shape != target.shape:
            raise ValueError(f"model output has shape {tuple(model_output.shape)}, expected {tuple(target.shape)}")
        terms["mse"] = mean_flat((target - model_output) ** 2)
        terms["loss"] = _extract(self.mse_loss_weights, t, terms["mse"]) * terms["mse"]
        if "vb" in terms:
            terms["loss"] = terms["loss"] + terms["vb"]
        return terms
