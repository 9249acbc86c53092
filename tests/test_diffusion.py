"""
Numerical tests of the diffusion math: schedules, forward process, posterior,
samplers with guidance, DDIM / DDPM inversion, respacing, losses, samplers.

Models are tiny conv nets with random (non-zero) weights, or analytic
oracles: the exact eps-predictor of Gaussian data, or predictors that know
the x_0 / noise a test used.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guided_diffusion.gaussian_diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
)
from guided_diffusion.losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl
from guided_diffusion.resample import (
    LossSecondMomentResampler,
    UniformSampler,
    create_named_schedule_sampler,
)
from guided_diffusion.respace import SpacedDiffusion, space_timesteps
from guided_diffusion.unet import UNetModel


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The models here are tiny: thread hand-offs cost more than they save, above all on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def diffusion_kwargs(
    steps=1000,
    schedule="linear",
    mean_type=ModelMeanType.EPSILON,
    var_type=ModelVarType.FIXED_SMALL,
    loss_type=LossType.MSE,
    **extra,
):
    return dict(
        betas=get_named_beta_schedule(schedule, steps),
        model_mean_type=mean_type,
        model_var_type=var_type,
        loss_type=loss_type,
        **extra,
    )


def spaced(respacing, steps=1000, **kwargs):
    return SpacedDiffusion(space_timesteps(steps, respacing), **diffusion_kwargs(steps, **kwargs))


class TinyNet(nn.Module):
    """conv -> SiLU -> conv, with timestep and optional attribute embeddings added in between."""

    def __init__(self, channels=3, hidden=8, out_channels=None, num_attributes=None):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv_out = nn.Conv2d(hidden, out_channels or channels, 3, padding=1)
        self.time_emb = nn.Linear(2, hidden)
        self.attribute_emb = nn.Linear(num_attributes, hidden) if num_attributes else None

    def forward(self, x, timesteps, y=None):
        phase = 3.0 * timesteps.to(x.dtype)[:, None] / 1000.0
        emb = self.time_emb(torch.cat([torch.sin(phase), torch.cos(phase)], dim=1))
        if y is not None:
            emb = emb + self.attribute_emb(y)
        return self.conv_out(F.silu(self.conv_in(x) + emb[:, :, None, None]))


def tiny_net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TinyNet(**kwargs).double()


def gaussian_eps_oracle(alphas_cumprod, mu, std):
    """
    The exact eps-predictor for data x_0 ~ N(mu, std^2) per pixel:
    E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a std^2 + 1 - a),
    a = alphas_cumprod[timestep] of the process the model was trained on.
    """
    table = torch.from_numpy(alphas_cumprod)

    def model(x, timesteps, y=None):
        a = table.to(x)[timesteps].reshape(-1, 1, 1, 1)
        return torch.sqrt(1 - a) * (x - torch.sqrt(a) * mu) / (a * std**2 + 1 - a)

    return model


def velocity(diffusion, x0, t, noise):
    """v = sqrt(alphabar_t) noise - sqrt(1 - alphabar_t) x0, computed here from the schedule."""
    a = torch.from_numpy(diffusion.alphas_cumprod).to(x0)[t].reshape(-1, 1, 1, 1)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def batch_t(value, n):
    return torch.full((n,), value, dtype=torch.long)


# ----------------------------------------------------------------------
# Schedules


def test_linear_schedule_endpoints_and_rescaling():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(betas) > 0)
    # Fewer steps cover the same noise range: betas scale by 1000 / T, their sum stays.
    short = get_named_beta_schedule("linear", 250)
    np.testing.assert_allclose(short[[0, -1]], [4e-4, 0.08])
    assert short.sum() == pytest.approx(betas.sum(), rel=1e-12)


def test_cosine_schedule_follows_alpha_bar():
    steps = 100
    betas = get_named_beta_schedule("cosine", steps)
    alphas_cumprod = np.cumprod(1 - betas)
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([f((i + 1) / steps) / f(0) for i in range(steps)])
    unclipped = betas < 0.999
    assert unclipped[:-1].all() and betas.max() <= 0.999
    np.testing.assert_allclose(alphas_cumprod[:-1], expected[:-1], rtol=1e-10)


@pytest.mark.parametrize("name, steps", [("quadratic", 100), ("linear", 0), ("linear", 20), ("cosine", 2.5)])
def test_bad_schedule_raises(name, steps):
    with pytest.raises(ValueError):
        get_named_beta_schedule(name, steps)


def test_bad_betas_raise():
    with pytest.raises(ValueError, match="beta"):
        GaussianDiffusion(**{**diffusion_kwargs(), "betas": np.array([0.1, 1.0])})
    with pytest.raises(ValueError, match="ModelMeanType"):
        GaussianDiffusion(**{**diffusion_kwargs(), "model_mean_type": "eps"})


# ----------------------------------------------------------------------
# Forward process and posterior


@pytest.mark.parametrize("step", [0, 100, 500, 999])
def test_q_sample_moments(step):
    diffusion = GaussianDiffusion(**diffusion_kwargs())
    x0 = torch.tensor([-0.8, 0.3, 1.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    n = 40000
    torch.manual_seed(step)
    samples = diffusion.q_sample(x0.repeat(n, 1, 1, 1), batch_t(step, n))
    a = diffusion.alphas_cumprod[step]
    mean = samples.mean(0).flatten()
    var = samples.var(0).flatten()
    std_of_mean = math.sqrt((1 - a) / n)
    std_of_var = (1 - a) * math.sqrt(2 / n)
    assert torch.all((mean - math.sqrt(a) * x0.flatten()).abs() < 5 * std_of_mean)
    assert torch.all((var - (1 - a)).abs() < 5 * std_of_var)
    q_mean, q_var, q_log_var = diffusion.q_mean_variance(x0, batch_t(step, 1))
    torch.testing.assert_close(q_mean, math.sqrt(a) * x0)
    assert q_var.item() == pytest.approx(1 - a) and q_log_var.item() == pytest.approx(math.log(1 - a))


def test_q_posterior_matches_bayes_rule():
    """q(x_{t-1} | x_t, x_0) ~ q(x_t | x_{t-1}) q(x_{t-1} | x_0): a product of Gaussians."""
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=50, schedule="cosine"))
    x0 = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    x_t = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    t = torch.tensor([1, 7, 30, 49])
    mean, var, log_var = diffusion.q_posterior_mean_variance(x0, x_t, t)
    for i, step in enumerate(t.tolist()):
        beta = diffusion.betas[step]
        a_prev = diffusion.alphas_cumprod[step - 1]
        precision = (1 - beta) / beta + 1 / (1 - a_prev)
        expected_mean = (math.sqrt(1 - beta) / beta * x_t[i] + math.sqrt(a_prev) / (1 - a_prev) * x0[i]) / precision
        torch.testing.assert_close(mean[i], expected_mean)
        assert var[i].item() == pytest.approx(1 / precision, rel=1e-10)
        assert log_var[i].item() == pytest.approx(math.log(1 / precision), rel=1e-10)
    # At t == 0 the posterior is the point x_0; its clipped log-variance stays finite.
    mean0, var0, log_var0 = diffusion.q_posterior_mean_variance(x0, x_t, batch_t(0, 4))
    torch.testing.assert_close(mean0, x0)
    assert torch.all(var0 == 0) and torch.isfinite(log_var0).all()


def test_p_mean_variance_oracles_recover_x0():
    x0 = torch.rand(3, 3, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 40, 99])
    for mean_type in ModelMeanType:
        diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100, mean_type=mean_type))
        x_t = diffusion.q_sample(x0, t, noise=noise)
        posterior_mean = diffusion.q_posterior_mean_variance(x0, x_t, t)[0]
        truth = {
            ModelMeanType.EPSILON: noise,
            ModelMeanType.START_X: x0,
            ModelMeanType.PREVIOUS_X: posterior_mean,
            ModelMeanType.VELOCITY: velocity(diffusion, x0, t, noise),
        }[mean_type]
        out = diffusion.p_mean_variance(lambda x, ts: truth, x_t, t, clip_denoised=False)
        torch.testing.assert_close(out["pred_xstart"], x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(out["mean"], posterior_mean, rtol=0, atol=1e-9)
        torch.testing.assert_close(out["eps"], noise, rtol=0, atol=1e-7)


@pytest.mark.parametrize("rescale", [False, True])
def test_spaced_model_sees_original_timesteps(rescale):
    """An oracle that reads the original schedule at the timesteps it is given is exact only if they are mapped."""
    base = GaussianDiffusion(**diffusion_kwargs())
    diffusion = spaced("10,5", rescale_timesteps=rescale)
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)

    def oracle(x, timesteps):
        index = (timesteps * base.num_timesteps / 1000).round().long() if rescale else timesteps
        a = torch.from_numpy(base.alphas_cumprod)[index].reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    for step in range(diffusion.num_timesteps):
        t = batch_t(step, 2)
        x_t = diffusion.q_sample(x0, t, noise=noise)
        out = diffusion.p_mean_variance(oracle, x_t, t, clip_denoised=False)
        torch.testing.assert_close(out["pred_xstart"], x0, rtol=0, atol=1e-8)


def test_variance_types():
    diffusion_kw = diffusion_kwargs(steps=100)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 80])
    for value, expected in [(-1.0, "posterior"), (1.0, "beta")]:
        diffusion = GaussianDiffusion(**{**diffusion_kw, "model_var_type": ModelVarType.LEARNED_RANGE})
        out = diffusion.p_mean_variance(
            lambda x_, ts: torch.cat([torch.zeros_like(x_), torch.full_like(x_, value)], 1), x, t
        )
        table = diffusion.posterior_log_variance_clipped if expected == "posterior" else np.log(diffusion.betas)
        np.testing.assert_allclose(out["log_variance"][:, 0, 0, 0].numpy(), table[t.numpy()], rtol=1e-12)
    diffusion = GaussianDiffusion(**{**diffusion_kw, "model_var_type": ModelVarType.LEARNED})
    log_var = torch.randn_like(x)
    out = diffusion.p_mean_variance(lambda x_, ts: torch.cat([torch.zeros_like(x_), log_var], 1), x, t)
    torch.testing.assert_close(out["variance"], log_var.exp())
    for var_type, table in [
        (ModelVarType.FIXED_SMALL, diffusion.posterior_variance),
        (ModelVarType.FIXED_LARGE, np.append(diffusion.posterior_variance[1], diffusion.betas[1:])),
    ]:
        fixed = GaussianDiffusion(**{**diffusion_kw, "model_var_type": var_type})
        out = fixed.p_mean_variance(lambda x_, ts: torch.zeros_like(x_), x, t)
        np.testing.assert_allclose(out["variance"][:, 0, 0, 0].numpy(), table[t.numpy()], rtol=1e-12)
        assert out["variance"].shape == x.shape and torch.isfinite(out["log_variance"]).all()


def test_q_sample_and_p_mean_variance_are_differentiable():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100))
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([10, 70])
    diffusion.q_sample(x0, t, noise=torch.zeros_like(x0)).sum().backward()
    expected = torch.from_numpy(diffusion.sqrt_alphas_cumprod[t.numpy()]).reshape(-1, 1, 1, 1).expand_as(x0)
    torch.testing.assert_close(x0.grad, expected)

    net = tiny_net(hidden=4)
    x_t = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: diffusion.p_mean_variance(net, x, t, clip_denoised=False)["pred_xstart"], (x_t,), fast_mode=True
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_keep_input_dtype(dtype):
    diffusion = spaced("10", var_type=ModelVarType.LEARNED_RANGE)
    net = tiny_net(out_channels=6).to(dtype)
    x0 = torch.rand(2, 3, 8, 8, dtype=dtype) * 2 - 1
    t = torch.tensor([0, 9])
    assert diffusion.q_sample(x0, t).dtype == dtype
    out = diffusion.p_mean_variance(net, x0, t)
    assert all(value.dtype == dtype for value in out.values())
    inverted = diffusion.ddpm_inversion(net, x0)
    back = diffusion.p_sample_loop(
        net, x0.shape, noise=inverted["x_T"], noise_sequence=inverted["noise_sequence"], clip_denoised=False
    )
    assert back.dtype == dtype
    assert (back - x0).abs().max() < (1e-4 if dtype == torch.float32 else 1e-12)


def test_sampling_without_noise_starts_from_standard_normal():
    diffusion = spaced("50")
    model = gaussian_eps_oracle(GaussianDiffusion(**diffusion_kwargs()).alphas_cumprod, 0.0, 0.5)
    torch.manual_seed(0)
    samples = diffusion.ddim_sample_loop(model, (64, 1, 4, 4))
    # The oracle's data distribution is N(0, 0.25) per pixel.
    assert samples.dtype == torch.float32 and abs(samples.std().item() - 0.5) < 0.05


# ----------------------------------------------------------------------
# Guidance


def test_p_sample_guidance_shifts_mean_by_variance():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100))
    net = tiny_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    direction = torch.randn_like(x)
    noise = torch.randn_like(x)
    for step in (50, 3):
        t = batch_t(step, 2)
        plain = diffusion.p_sample(net, x, t, clip_denoised=False, noise=noise)["sample"]
        for scale in (1.0, 3.0):
            guided = diffusion.p_sample(
                net, x, t, clip_denoised=False, noise=noise, cond_fn=lambda x_, t_: scale * direction
            )["sample"]
            shift = guided - plain
            assert (shift * direction).sum() > 0
            torch.testing.assert_close(shift, diffusion.posterior_variance[step] * scale * direction)


def test_ddim_guidance_follows_score_rule():
    """eps -= sqrt(1 - a_t) g moves x_{t-1} by (sqrt(a_prev / a_t)(1 - a_t) - sqrt((1 - a_prev)(1 - a_t))) g."""
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100))
    net = tiny_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    direction = torch.randn_like(x)
    for step in (99, 50, 1):
        t = batch_t(step, 2)
        plain = diffusion.ddim_sample(net, x, t, clip_denoised=False)["sample"]
        guided = diffusion.ddim_sample(net, x, t, clip_denoised=False, cond_fn=lambda x_, t_: direction)["sample"]
        a, a_prev = diffusion.alphas_cumprod[step], diffusion.alphas_cumprod_prev[step]
        coefficient = math.sqrt(a_prev / a) * (1 - a) - math.sqrt((1 - a_prev) * (1 - a))
        assert coefficient > 0 and ((guided - plain) * direction).sum() > 0
        torch.testing.assert_close(guided - plain, coefficient * direction)


def test_ddim_with_eta_one_is_ddpm():
    """sigma(eta=1)^2 is the posterior variance, and the DDIM mean then equals the DDPM posterior mean."""
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100))
    net = tiny_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    noise = torch.randn_like(x)
    for step in (99, 40, 1):
        t = batch_t(step, 2)
        ddim = diffusion.ddim_sample(net, x, t, clip_denoised=False, eta=1.0, noise=noise)["sample"]
        ddpm = diffusion.p_sample(net, x, t, clip_denoised=False, noise=noise)["sample"]
        torch.testing.assert_close(ddim, ddpm)


def test_autograd_guidance_pulls_samples_to_target():
    """A cond_fn differentiating log N(x; target, 1/scale) inside the no_grad loops moves samples toward target."""
    diffusion = spaced("20")
    model = gaussian_eps_oracle(GaussianDiffusion(**diffusion_kwargs()).alphas_cumprod, 0.0, 0.5)
    target = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    x_T = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    noise_sequence = [torch.randn_like(x_T) for _ in range(diffusion.num_timesteps)]

    def cond_fn(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_density = -0.5 * 2.0 * ((x - target) ** 2).sum()
            return torch.autograd.grad(log_density, x)[0]

    results = {}
    for guidance in (None, cond_fn):
        common = dict(noise=x_T, cond_fn=guidance)
        results[guidance] = (
            diffusion.ddim_sample_loop(model, x_T.shape, progress=True, **common),
            diffusion.p_sample_loop(model, x_T.shape, noise_sequence=noise_sequence, **common),
        )
    for guided, plain in zip(results[cond_fn], results[None]):
        assert (guided - target).norm() < 0.8 * (plain - target).norm()
        assert guided.mean() > plain.mean() + 0.1


def test_cond_fn_receives_respaced_index_and_model_original_timestep():
    diffusion = spaced("ddim10")
    net = tiny_net()
    model_steps, guidance_steps = [], []

    def model(x, timesteps):
        model_steps.append(timesteps[0].item())
        return net(x, timesteps)

    def cond_fn(x, t):
        guidance_steps.append(t[0].item())
        return torch.zeros_like(x)

    x_T = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    diffusion.ddim_sample_loop(model, x_T.shape, noise=x_T, cond_fn=cond_fn)
    diffusion.p_sample_loop(model, x_T.shape, noise=x_T, cond_fn=cond_fn)
    assert guidance_steps == list(range(9, -1, -1)) * 2
    assert model_steps == list(range(900, -1, -100)) * 2


# ----------------------------------------------------------------------
# Inversions


def test_ddim_inversion_round_trip():
    base = GaussianDiffusion(**diffusion_kwargs())
    mu, std = 0.3, 0.5
    model = gaussian_eps_oracle(base.alphas_cumprod, mu, std)
    x0 = mu + std * torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def round_trip(diffusion, num_steps=None, iterations=0):
        latent = diffusion.ddim_reverse_sample_loop(
            model, x0, num_steps=num_steps, fixed_point_iterations=iterations
        )
        back = diffusion.ddim_sample_loop(model, x0.shape, noise=latent, clip_denoised=False, num_steps=num_steps)
        return latent, rel_err(back, x0)

    diffusion_50 = spaced("50")
    latent, err_50 = round_trip(diffusion_50)
    _, err_100 = round_trip(spaced("100"))
    # The plain inversion is first order: halving the step halves the error.
    assert err_50 < 0.1 and 0.4 < err_100 / err_50 < 0.6
    # It follows the probability-flow map of Gaussian data, which keeps (x - sqrt(a) mu) / sd_t fixed.
    a_T = diffusion_50.alphas_cumprod[-1]
    flow_latent = math.sqrt(a_T) * mu + math.sqrt(a_T * std**2 + 1 - a_T) * (x0 - mu) / std
    assert rel_err(latent, flow_latent) < 0.05
    # Fixed-point refinement makes the step an exact inverse of the DDIM step.
    assert round_trip(diffusion_50, iterations=3)[1] < 1e-3
    assert round_trip(diffusion_50, iterations=10)[1] < 1e-9
    assert round_trip(diffusion_50, num_steps=20, iterations=10)[1] < 1e-9


def perturbed_unet(seed=0, scale=0.05, num_attributes=4):
    """A tiny attribute-conditional ADM UNet in float64 with every weight drawn at random: an untrained
    UNet outputs exactly zero (its last convolution is zero-initialised), which would test nothing."""
    torch.manual_seed(seed)
    model = UNetModel(image_size=8, in_channels=3, model_channels=16, out_channels=3, num_res_blocks=1,
                      attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=8,
                      use_scale_shift_norm=True, num_attributes=num_attributes).double().eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return model


@pytest.mark.parametrize("respacing", [None, "10"])
@pytest.mark.parametrize("clip_denoised", [True, False])
def test_ddim_reverse_sample_is_guided_diffusions_step_from_t_to_t_plus_1(respacing, clip_denoised):
    # openai/guided-diffusion's ddim_reverse_sample: model at (x, t), then eq. 12 reversed onto
    # alphabar_{t+1} (alphas_cumprod_next, 0 after the last level). Recomputed here by hand in numpy.
    betas = get_named_beta_schedule("linear", 1000)
    kwargs = dict(betas=betas, model_mean_type=ModelMeanType.EPSILON, model_var_type=ModelVarType.FIXED_SMALL,
                  loss_type=LossType.MSE)
    if respacing is None:
        diffusion, timestep_map = GaussianDiffusion(**kwargs), np.arange(1000)
    else:
        kept = sorted(space_timesteps(1000, respacing))
        diffusion, timestep_map = SpacedDiffusion(set(kept), **kwargs), np.array(kept)
    alphabar = np.cumprod(1.0 - betas)[timestep_map]  # the (respaced) chain's alphabar_t
    model = perturbed_unet()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1.5
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    num_steps = diffusion.num_timesteps
    for level in (0, num_steps // 2, num_steps - 2, num_steps - 1):
        out = diffusion.ddim_reverse_sample(model, x, batch_t(level, 2), clip_denoised=clip_denoised,
                                            model_kwargs={"y": y})
        with torch.no_grad():
            eps = model(x, torch.full((2,), int(timestep_map[level]), dtype=torch.long), y=y).numpy()
        a, xn = alphabar[level], x.numpy()
        x0 = np.sqrt(1 / a) * xn - np.sqrt(1 / a - 1) * eps
        if clip_denoised:
            x0 = np.clip(x0, -1, 1)
        eps = (np.sqrt(1 / a) * xn - x0) / np.sqrt(1 / a - 1)  # re-derived from the processed x0, as there
        a_next = alphabar[level + 1] if level + 1 < num_steps else 0.0
        expected = np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps
        np.testing.assert_allclose(out["pred_xstart"].numpy(), x0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out["sample"].numpy(), expected, rtol=1e-9, atol=1e-9)
        assert np.abs(eps).max() > 0.1  # the perturbed UNet is far from the all-zero untrained one
    # Its default clips x0_hat, as guided-diffusion's does.
    default = diffusion.ddim_reverse_sample(model, x, batch_t(1, 2), model_kwargs={"y": y})["sample"]
    assert torch.equal(default, diffusion.ddim_reverse_sample(model, x, batch_t(1, 2), clip_denoised=True,
                                                              model_kwargs={"y": y})["sample"])


def test_ddim_invert_step_round_trips_with_ddim_sample():
    # The project's inversion step maps level t-1 to level t; with fixed-point refinement ddim_sample at t
    # brings it back to the same x at level t-1.
    diffusion = spaced("20")
    model = perturbed_unet(seed=1, scale=0.02)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    for level in (0, 19):
        x_prev = x0 if level == 0 else diffusion.q_sample(x0, batch_t(level - 1, 2))
        errors = []
        for iterations in (0, 12):
            out = diffusion.ddim_invert_step(model, x_prev, batch_t(level, 2), model_kwargs={"y": y},
                                             fixed_point_iterations=iterations)
            back = diffusion.ddim_sample(model, out["sample"], batch_t(level, 2), clip_denoised=False,
                                         model_kwargs={"y": y})["sample"]
            errors.append(rel_err(back, x_prev))
        assert errors[1] < 1e-9 and errors[1] < errors[0]
    # With 0 iterations it equals guided-diffusion's step from level t-1 for a model that ignores t (the two
    # evaluate the model at the same x, at timesteps t and t-1).
    net = gaussian_eps_oracle(np.full(1000, 0.5), 0.1, 0.7)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for level in (1, 10, 19):
        torch.testing.assert_close(
            diffusion.ddim_invert_step(net, x, batch_t(level, 2))["sample"],
            diffusion.ddim_reverse_sample(net, x, batch_t(level - 1, 2), clip_denoised=False)["sample"],
            rtol=1e-12, atol=1e-12)


def test_ddim_partial_inversion_stops_at_requested_level():
    diffusion = spaced("20")
    net = tiny_net()
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    steps = list(diffusion.ddim_reverse_sample_loop_progressive(net, x0, num_steps=7))
    assert [s["t"][0].item() for s in steps] == list(range(7))
    # Level 0 is almost x0 (alphabar_0 = 1 - 1e-4); later levels move away.
    assert rel_err(steps[0]["sample"], x0) < 0.03 < rel_err(steps[-1]["sample"], x0)


@pytest.mark.parametrize(
    "var_type, respacing, num_steps",
    [
        (ModelVarType.FIXED_SMALL, "50", None),
        (ModelVarType.FIXED_LARGE, "50", 20),
        (ModelVarType.LEARNED_RANGE, "ddim25", 10),
    ],
)
def test_ddpm_inversion_reproduces_x0_for_any_model(var_type, respacing, num_steps):
    diffusion = spaced(respacing, var_type=var_type)
    learned = var_type == ModelVarType.LEARNED_RANGE
    net = tiny_net(seed=1, num_attributes=4, out_channels=6 if learned else 3)
    x0 = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    inverted = diffusion.ddpm_inversion(
        net, x0, model_kwargs={"y": y}, num_steps=num_steps, generator=generator
    )
    k = num_steps or diffusion.num_timesteps
    assert len(inverted["noise_sequence"]) == len(inverted["trajectory"]) == k
    assert inverted["x_T"] is inverted["trajectory"][-1]

    def sample(model_kwargs):
        return diffusion.p_sample_loop(
            net,
            x0.shape,
            noise=inverted["x_T"],
            clip_denoised=False,
            model_kwargs=model_kwargs,
            num_steps=num_steps,
            noise_sequence=inverted["noise_sequence"],
        )

    assert (sample({"y": y}) - x0).abs().max() < 1e-10
    # The same noise under other attributes edits the image.
    assert (sample({"y": 1 - y}) - x0).abs().max() > 1e-3
    # Intermediate steps land on the drawn trajectory too.
    steps = list(
        diffusion.p_sample_loop_progressive(
            net,
            x0.shape,
            noise=inverted["x_T"],
            clip_denoised=False,
            model_kwargs={"y": y},
            num_steps=num_steps,
            noise_sequence=inverted["noise_sequence"],
        )
    )
    for out in steps[:-1]:
        step = out["t"][0].item()
        assert (out["sample"] - inverted["trajectory"][step - 1]).abs().max() < 1e-10


def test_ddpm_inversion_draws_follow_q_and_generator():
    diffusion = spaced("10")
    x0 = torch.zeros(64, 1, 4, 4, dtype=torch.float64)
    net = tiny_net(channels=1)
    first = diffusion.ddpm_inversion(net, x0, generator=torch.Generator().manual_seed(5))
    again = diffusion.ddpm_inversion(net, x0, generator=torch.Generator().manual_seed(5))
    for a, b in zip(first["noise_sequence"], again["noise_sequence"]):
        assert torch.equal(a, b)
    # x0 = 0: each drawn x_t is N(0, 1 - alphabar_t).
    for step, x_t in enumerate(first["trajectory"]):
        assert x_t.var().item() == pytest.approx(1 - diffusion.alphas_cumprod[step], rel=0.2)
    # Given draws are used as q_sample's noise, level by level.
    draws = [torch.randn_like(x0) for _ in range(4)]
    given = diffusion.ddpm_inversion(net, x0 + 0.5, num_steps=4, noise=draws)
    for step, x_t in enumerate(given["trajectory"]):
        torch.testing.assert_close(x_t, diffusion.q_sample(x0 + 0.5, batch_t(step, 64), noise=draws[step]))
    with pytest.raises(ValueError, match="noise has 4 entries"):
        diffusion.ddpm_inversion(net, x0, num_steps=5, noise=draws)


def test_p_sample_adds_no_fresh_noise_at_last_step():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=10, schedule="cosine"))
    net = tiny_net()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = batch_t(0, 2)
    out = diffusion.p_sample(net, x, t)
    mean = diffusion.p_mean_variance(net, x, t)["mean"]
    torch.testing.assert_close(out["sample"], mean)
    noisy = diffusion.p_sample(net, x, batch_t(5, 2))["sample"]
    assert (noisy - diffusion.p_mean_variance(net, x, batch_t(5, 2))["mean"]).abs().max() > 1e-3


# ----------------------------------------------------------------------
# Respacing


def test_respacing_keeps_alphas_cumprod():
    base = GaussianDiffusion(**diffusion_kwargs())
    for respacing in ("50", "ddim25", "10,10,5", [3, 7]):
        diffusion = spaced(respacing)
        assert diffusion.timestep_map == sorted(diffusion.timestep_map)
        np.testing.assert_allclose(
            diffusion.alphas_cumprod, base.alphas_cumprod[diffusion.timestep_map], rtol=1e-12
        )
    assert sorted(space_timesteps(1000, "ddim25")) == list(range(0, 1000, 40))
    sections = np.array(sorted(space_timesteps(300, "10,10,5")))
    assert [((sections >= lo) & (sections < lo + 100)).sum() for lo in (0, 100, 200)] == [10, 10, 5]
    assert sections[0] == 0 and 99 in sections and 299 in sections
    assert len(space_timesteps(1000, "50")) == 50
    assert space_timesteps(100, "") == set(range(100)) == space_timesteps(100, 100)


@pytest.mark.parametrize("bad", ["abc", "ddimx", "ddim", "ddim999", "0", "10,,5", "-5", "2000", "5.5", [0], None])
def test_bad_respacing_raises(bad):
    with pytest.raises(ValueError, match="respacing"):
        space_timesteps(1000, bad)


# ----------------------------------------------------------------------
# Training losses


@pytest.mark.parametrize("mean_type", list(ModelMeanType))
def test_mse_loss_of_oracle_is_zero(mean_type):
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100, mean_type=mean_type))
    x0 = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 50, 99])
    x_t = diffusion.q_sample(x0, t, noise=noise)
    truth = {
        ModelMeanType.EPSILON: noise,
        ModelMeanType.START_X: x0,
        ModelMeanType.PREVIOUS_X: diffusion.q_posterior_mean_variance(x0, x_t, t)[0],
        ModelMeanType.VELOCITY: velocity(diffusion, x0, t, noise),
    }[mean_type]
    terms = diffusion.training_losses(lambda x, ts: truth, x0, t, noise=noise)
    assert terms["loss"].shape == (4,) and terms["loss"].max() < 1e-20
    wrong = diffusion.training_losses(lambda x, ts: truth + 0.1, x0, t, noise=noise)
    torch.testing.assert_close(wrong["mse"], torch.full((4,), 0.01, dtype=torch.float64))


def test_training_lowers_loss():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100))
    torch.manual_seed(2)
    net = TinyNet(hidden=16)
    generator = torch.Generator().manual_seed(0)
    grid = torch.linspace(-1, 1, 16)
    x0 = (0.8 * torch.sin(3 * grid[None, :] + grid[:, None])).expand(8, 3, 16, 16)
    eval_t = torch.randint(0, 100, (8,), generator=generator)
    eval_noise = torch.randn(x0.shape, generator=generator)

    def eval_loss():
        with torch.no_grad():
            return diffusion.training_losses(net, x0, eval_t, noise=eval_noise)["loss"].mean().item()

    before = eval_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        t = torch.randint(0, 100, (8,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        loss = diffusion.training_losses(net, x0, t, noise=noise)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < 0.7 * before


@pytest.mark.parametrize("mean_type", list(ModelMeanType))
def test_min_snr_weighting(mean_type):
    gamma = 5.0
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100, mean_type=mean_type, snr_gamma=gamma))
    snr = diffusion.alphas_cumprod / (1 - diffusion.alphas_cumprod)
    scale = {
        ModelMeanType.EPSILON: snr,
        ModelMeanType.START_X: np.ones_like(snr),
        ModelMeanType.PREVIOUS_X: diffusion.posterior_mean_coef1**2,
        ModelMeanType.VELOCITY: snr + 1,
    }[mean_type]
    np.testing.assert_allclose(diffusion.mse_loss_weights, np.minimum(snr, gamma) / scale)
    assert (snr > gamma).any() and (snr < gamma).any()
    # The weighted loss is min(SNR, gamma) * |x0 - x0_hat|^2 for any model output.
    net = tiny_net()
    x0 = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 60, 99])
    terms = diffusion.training_losses(net, x0, t, noise=noise)
    pred_xstart = diffusion.p_mean_variance(net, diffusion.q_sample(x0, t, noise), t, clip_denoised=False)[
        "pred_xstart"
    ]
    x0_error = ((pred_xstart - x0) ** 2).mean(dim=(1, 2, 3))
    expected = torch.from_numpy(np.minimum(snr, gamma)[t.numpy()]) * x0_error
    torch.testing.assert_close(terms["loss"], expected)
    assert not torch.allclose(terms["loss"], terms["mse"])
    with pytest.raises(ValueError, match="snr_gamma"):
        GaussianDiffusion(**diffusion_kwargs(snr_gamma=0))


def test_learned_sigma_vb_terms():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=100, var_type=ModelVarType.LEARNED_RANGE))
    x0 = (torch.randint(0, 256, (4, 3, 8, 8)).double() / 127.5) - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 50, 99])
    net = tiny_net(out_channels=6)
    terms = diffusion.training_losses(net, x0, t, noise=noise)
    assert torch.isfinite(terms["vb"]).all() and (terms["vb"] >= 0).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])

    # A model with the true noise and the true posterior variance has zero KL for t > 0.
    output = torch.cat([noise, -torch.ones_like(noise)], 1).requires_grad_(True)
    exact = diffusion.training_losses(lambda x, ts: output, x0, t, noise=noise)
    assert exact["vb"][1:].abs().max() < 1e-10 and exact["vb"][0] > 0
    # The VB term trains the variance channels only.
    exact["vb"].sum().backward()
    assert output.grad[:, :3].abs().max() == 0 and output.grad[:, 3:].abs().max() > 0

    kl = GaussianDiffusion(**diffusion_kwargs(steps=100, var_type=ModelVarType.LEARNED_RANGE, loss_type=LossType.KL))
    rescaled = GaussianDiffusion(
        **diffusion_kwargs(steps=100, var_type=ModelVarType.LEARNED_RANGE, loss_type=LossType.RESCALED_KL)
    )
    kl_loss = kl.training_losses(net, x0, t, noise=noise)["loss"]
    assert torch.isfinite(kl_loss).all()
    torch.testing.assert_close(kl_loss, terms["vb"])
    torch.testing.assert_close(rescaled.training_losses(net, x0, t, noise=noise)["loss"], 100 * kl_loss)


def test_likelihood_helpers():
    mean1, logvar1 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert normal_kl(mean1, logvar1, mean1, logvar1).abs().max() < 1e-12
    p = torch.distributions.Normal(mean1, (0.5 * logvar1).exp())
    q = torch.distributions.Normal(torch.zeros(5, dtype=torch.float64), 1.0)
    torch.testing.assert_close(normal_kl(mean1, logvar1, 0.0, 0.0), torch.distributions.kl_divergence(p, q))
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    assert (approx_standard_normal_cdf(x) - torch.distributions.Normal(0.0, 1.0).cdf(x)).abs().max() < 2e-4
    # The 256 bins partition the line: probabilities sum to 1.
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    means = torch.full_like(levels, 0.1)
    probs = discretized_gaussian_log_likelihood(levels, means=means, log_scales=torch.full_like(levels, -2.0)).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------
# Timestep samplers


def test_uniform_sampler_is_uniform_with_unit_weights():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=10, schedule="cosine"))
    sampler = create_named_schedule_sampler("uniform", diffusion)
    assert isinstance(sampler, UniformSampler)
    torch.manual_seed(0)
    t, weights = sampler.sample(5000, "cpu")
    assert t.min() >= 0 and t.max() <= 9 and torch.all(weights == 1)
    assert (torch.bincount(t, minlength=10).double() / 5000 - 0.1).abs().max() < 0.03
    with pytest.raises(ValueError, match="schedule sampler"):
        create_named_schedule_sampler("beta", diffusion)


def test_loss_second_moment_resampler_prefers_high_loss_steps():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=10, schedule="cosine"))
    sampler = create_named_schedule_sampler("loss-second-moment", diffusion)
    assert isinstance(sampler, LossSecondMomentResampler)
    high = {7, 8, 9}
    for _ in range(sampler.history_per_term):
        np.testing.assert_array_equal(sampler.weights(), np.ones(10))  # not warmed up yet
        ts = torch.arange(10)
        losses = torch.tensor([10.0 if t in high else 0.1 for t in range(10)])
        sampler.update_with_local_losses(ts, losses)
    weights = sampler.weights()
    assert min(weights[list(high)]) > 50 * max(np.delete(weights, list(high)))
    torch.manual_seed(0)
    t, importance = sampler.sample(20000, "cpu")
    assert np.isin(t.numpy(), list(high)).mean() > 0.95
    probs = weights / weights.sum()
    torch.testing.assert_close(importance, torch.from_numpy(1 / (10 * probs[t.numpy()])).float())
    # Importance weighting keeps the mean of any per-step quantity unbiased.
    f = torch.arange(10, dtype=torch.float64) ** 2
    assert (importance.double() * f[t]).mean().item() == pytest.approx(f.mean().item(), rel=0.1)


# ----------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_clear_errors():
    diffusion = GaussianDiffusion(**diffusion_kwargs(steps=10, schedule="cosine"))
    net = tiny_net()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        diffusion.p_mean_variance(net, x, torch.tensor([1]))
    with pytest.raises(ValueError, match="out of range"):
        diffusion.q_sample(x, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="integer"):
        diffusion.q_sample(x, torch.tensor([0.0, 1.0]))
    learned = GaussianDiffusion(**diffusion_kwargs(steps=10, schedule="cosine", var_type=ModelVarType.LEARNED_RANGE))
    with pytest.raises(ValueError, match="model output"):
        learned.p_mean_variance(net, x, batch_t(1, 2))
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.ddim_sample_loop(net, x.shape, noise=x, num_steps=11)
    with pytest.raises(ValueError, match="needs `noise`"):
        diffusion.p_sample_loop(net, x.shape, num_steps=5)
    with pytest.raises(ValueError, match="noise_sequence"):
        diffusion.p_sample_loop(net, x.shape, noise=x, noise_sequence=[x] * 3)
    with pytest.raises(ValueError, match="eta"):
        diffusion.ddim_reverse_sample(net, x, batch_t(1, 2), eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        diffusion.ddim_invert_step(net, x, batch_t(1, 2), eta=0.5)
    with pytest.raises(ValueError, match="cond_fn"):
        diffusion.p_sample(net, x, batch_t(1, 2), cond_fn=lambda x_, t_: x_[:1])


_GATHER_WORKER = """
import os, sys, torch, torch.distributed as dist
from guided_diffusion.gaussian_diffusion import GaussianDiffusion, LossType, ModelMeanType, ModelVarType
from guided_diffusion.gaussian_diffusion import get_named_beta_schedule
from guided_diffusion.resample import LossSecondMomentResampler
dist.init_process_group("gloo")
rank = dist.get_rank()
diffusion = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 4), model_mean_type=ModelMeanType.EPSILON,
                              model_var_type=ModelVarType.FIXED_SMALL, loss_type=LossType.MSE)
sampler = LossSecondMomentResampler(diffusion, history_per_term=2)
# Rank 0 only sees steps 0, 1 and rank 1 only steps 2, 3, with different batch sizes.
ts = torch.tensor([0, 1, 0, 1]) if rank == 0 else torch.tensor([2, 3, 2, 3, 3, 3])
losses = torch.ones(len(ts)) if rank == 0 else torch.full((len(ts),), 3.0)
sampler.update_with_local_losses(ts, losses)
print(" ".join(f"{w:.6f}" for w in sampler.weights()))
dist.destroy_process_group()
"""


def test_loss_aware_sampler_gathers_losses_across_ranks(repo_root):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": repo_root, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env["WORLD_SIZE"] = "2"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _GATHER_WORKER],
            env={**env, "RANK": str(rank), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr
    weights = [np.array(stdout.split(), dtype=float) for stdout, _ in outputs]
    # Both ranks saw every step (warmed up) and agree; steps 2, 3 had 3x the loss.
    np.testing.assert_allclose(weights[0], weights[1])
    expected = 0.999 * np.array([1, 1, 3, 3]) / 8 + 0.001 / 4
    np.testing.assert_allclose(weights[0], expected, rtol=1e-5)


def test_v_prediction_passes_the_noise_mean_without_amplification():
    """A v model's error in x0 is its error in v times sqrt(1 - alphabar) (at most 1), where an eps
    model's is its error in eps times sqrt(1 / alphabar - 1) (158 at t = 999 of the linear schedule):
    a model that misses the noise's per-channel mean by delta shifts x0 by that much more."""
    eps_diffusion = GaussianDiffusion(**diffusion_kwargs(steps=1000))
    v_diffusion = GaussianDiffusion(**diffusion_kwargs(steps=1000, mean_type=ModelMeanType.VELOCITY))
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([999, 999])
    x_t = eps_diffusion.q_sample(x0, t, noise=noise)
    delta = 0.01
    eps_out = eps_diffusion.p_mean_variance(lambda x, ts: noise + delta, x_t, t, clip_denoised=False)
    v_out = v_diffusion.p_mean_variance(
        lambda x, ts: velocity(v_diffusion, x0, t, noise) + delta, x_t, t, clip_denoised=False
    )
    eps_shift = (eps_out["pred_xstart"] - x0).mean().item()
    v_shift = (v_out["pred_xstart"] - x0).mean().item()
    assert eps_shift == pytest.approx(-delta * math.sqrt(1 / eps_diffusion.alphas_cumprod[999] - 1), rel=1e-6)
    assert abs(eps_shift) > 1.5
    assert v_shift == pytest.approx(-delta * math.sqrt(1 - v_diffusion.alphas_cumprod[999]), rel=1e-6)
    # eps of a v model is exact: x_t = sqrt(a) x0_hat + sqrt(1 - a) eps_hat.
    a = v_diffusion.alphas_cumprod[999]
    torch.testing.assert_close(math.sqrt(a) * v_out["pred_xstart"] + math.sqrt(1 - a) * v_out["eps"], x_t)


def test_v_prediction_samplers_and_inversions_round_trip():
    """DDIM inversion and edit-friendly DDPM inversion work unchanged on a v model."""
    diffusion = spaced([20], steps=1000, mean_type=ModelMeanType.VELOCITY)
    net = tiny_net(seed=3)
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    inverted = diffusion.ddpm_inversion(net, x0, clip_denoised=False)
    back = diffusion.p_sample_loop(
        net, x0.shape, noise=inverted["x_T"], noise_sequence=inverted["noise_sequence"], clip_denoised=False
    )
    torch.testing.assert_close(back, x0, rtol=0, atol=1e-9)
    latent = diffusion.ddim_reverse_sample_loop(net, x0, clip_denoised=False, fixed_point_iterations=8)
    back = diffusion.ddim_sample_loop(net, x0.shape, noise=latent, clip_denoised=False)
    assert (back - x0).abs().max() < 1e-4
