"""The editor's fast path (batched UNet passes, channels_last, token-layout attention) computes the
same edits as the one-call-per-pass way, up to float rounding; perturbed tiny models (an untrained
UNet outputs exactly zero)."""
import pytest
import torch

from guided_diffusion.script_util import load_diffusion_model
from optimization import attribute_editor as ae
from optimization.guidance import AttributeContrastModel
from optimization.region import infer_edit_region

from test_editor import assets, attrs, save_tiny_model, smooth_image  # noqa: F401  (assets: a fixture)


def _model(path, dtype=torch.float32):
    model, diffusion, _ = load_diffusion_model(path, device="cpu")
    return model.to(dtype), diffusion


def test_stacked_ddpm_inversion_equals_one_call_per_step(assets):
    model, diffusion = _model(assets["rough"])
    x, a = smooth_image(3, seed=1), attrs(3, seed=1)
    noise = [torch.randn(x.shape, generator=torch.Generator().manual_seed(j)) for j in range(7)]
    calls = []
    counting = lambda x, t, y=None: calls.append(x.shape[0]) or model(x, t, y=y)  # noqa: E731
    with torch.no_grad():
        plain = diffusion.ddpm_inversion(counting, x, False, {"y": a}, num_steps=7, noise=noise)
        n_plain = list(calls)
        calls.clear()
        stacked = diffusion.ddpm_inversion(counting, x, False, {"y": a}, num_steps=7, noise=noise, max_batch=8)
    assert n_plain == [3] * 7 and calls == [6, 6, 6, 3]  # at most 8 images, whole steps per call
    for key in ("noise_sequence", "eps", "trajectory"):
        for p, s in zip(plain[key], stacked[key]):
            torch.testing.assert_close(s, p, rtol=1e-5, atol=1e-5)
    assert (torch.stack(plain["eps"]).abs().max()) > 1e-3  # the model is not trivial


def test_stacked_region_equals_one_call_per_level_and_attribute(assets):
    model, diffusion = _model(assets["rough"])
    x, a = smooth_image(3, seed=2), attrs(3, seed=2)
    q = ae.query_from_indices(a, [9, 15])
    q[2] = a[2]  # a reconstruction row
    q[1] = ae.query_from_indices(a[1:2], [11])[0]
    latents = [(20, diffusion.q_sample(x, torch.full((3,), 20), noise=torch.randn_like(x))),
               (50, diffusion.q_sample(x, torch.full((3,), 50), noise=torch.randn_like(x)))]
    with torch.no_grad():
        known = diffusion.p_mean_variance(model, latents[0][1], torch.full((3,), 20), clip_denoised=False,
                                          model_kwargs={"y": a})["eps"]
        for eps_ref in (None, [known, None]):
            plain = infer_edit_region(diffusion, model, latents, a, q, 0.3, 1.0, eps_ref)
            for max_batch in (2, 64):
                stacked = infer_edit_region(diffusion, model, latents, a, q, 0.3, 1.0, eps_ref, max_batch=max_batch)
                torch.testing.assert_close(stacked[1], plain[1], rtol=1e-4, atol=1e-4)
                assert (stacked[0] - plain[0]).abs().max() < 1e-3  # thresholded: equal but at ties
    assert plain[0][:2].sum() > 0 and plain[0][2].sum() == 0


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_batched_contrast_equals_two_calls(assets, learn_sigma):
    folder = assets["root"] / f"contrast_sigma{int(learn_sigma)}"
    folder.mkdir(exist_ok=True)
    model, _ = _model(save_tiny_model(str(folder), scale=0.05, seed=4, learn_sigma=learn_sigma), torch.float64)
    x, a = smooth_image(3, seed=5).double(), attrs(3, seed=5).double()
    q = a.clone()
    q[:2] = ae.query_from_indices(a[:2], [9])  # row 2: y == a_ref
    t = torch.tensor([40, 40, 40])
    x.requires_grad_(True)
    outs, grads = [], []
    for batched in (False, True):
        out = AttributeContrastModel(model, a, 2.5, batched=batched)(x, t, y=q)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-10)
    assert (outs[0] - model(x, t, y=q)).abs().max() > 1e-4  # the contrast did act


@pytest.mark.parametrize("preset, over", [
    ("fast", {}),
    ("fast", dict(guidance_gradient="through_unet", cycle_schema="step_to_origin")),
    ("paper_inversion", dict(lpips_sim_lambda=0.0, id_lambda=0.0, cfg_scale=2.0)),
])
def test_editor_fast_path_gives_the_same_edits(assets, preset, over):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu")
    assert editor.fast_path
    x, a = smooth_image(2, seed=6), attrs(2, seed=6)
    q = ae.query_from_indices(a, [9, 15])
    opts = ae.EditOptions.from_preset(preset, timestep_respacing="10", **over)
    new = editor.edit(x, a, q, opts, seeds=[3, 4])
    editor.set_fast_path(False)
    old = editor.edit(x, a, q, opts, seeds=[3, 4])
    editor.set_fast_path(True)
    again = editor.edit(x, a, q, opts, seeds=[3, 4])
    assert new.unet_evals == old.unet_evals
    assert torch.equal(again.images, new.images)
    assert (old.images - x).abs().max() > 1e-3  # the edit did something
    torch.testing.assert_close(new.images, old.images, rtol=0, atol=1e-4)
    if old.region is not None:
        assert (new.region - old.region).abs().mean() < 1e-3
