"""The paper's released procedure (`--preset paper`) and the translation of its weights, on tiny models."""
import pytest
import torch

from optimization import attribute_editor as ae
from optimization.arguments import PRESETS, get_arguments
from optimization.guidance import EditProblem, GuidanceConfig, GuidanceWeights, _back_to_level_t, make_cond_fn
from test_editor import NO_GUIDANCE, assets, attrs, smooth_image  # noqa: F401 (assets is a fixture)


def test_weight_translation_scales_the_pixel_mean_terms_only():
    w = GuidanceWeights(attribute_guidance_lambda=50, cycle_reconstruct_lambda=1000, range_lambda=50,
                        lpips_sim_lambda=750, id_lambda=500, preserve_lambda=3)
    t = ae.translate_weights(w, 256, 64)
    assert (t.cycle_reconstruct_lambda, t.range_lambda) == (62.5, 3.125)
    assert (t.attribute_guidance_lambda, t.lpips_sim_lambda, t.id_lambda, t.preserve_lambda) == (50, 750, 500, 3)
    assert ae.translate_weights(w, 0, 64) is w and ae.translate_weights(w, 256, 256) is w
    with pytest.raises(ValueError, match="weight_resolution"):
        ae.EditOptions(weight_resolution=-1)


def test_translated_cycle_weight_gives_the_same_per_pixel_gradient_at_any_resolution():
    """The reason for the translation: d/dx of lambda * mean((x - y)^2) per pixel is 2 lambda (x - y) / P."""
    from optimization.losses import mse_per_sample
    grads = {}
    for side in (16, 64):
        x = torch.full((1, 3, side, side), 0.5, dtype=torch.float64, requires_grad=True)
        weight = ae.translate_weights(GuidanceWeights(cycle_reconstruct_lambda=1000.0), 64, side)
        loss = weight.cycle_reconstruct_lambda * mse_per_sample(x, torch.zeros_like(x)).sum()
        grads[side] = torch.autograd.grad(loss, x)[0]
    assert torch.allclose(grads[16], grads[64][:, :, :16, :16])


def test_paper_preset_is_the_released_procedure_and_paper_inversion_keeps_the_inversion():
    args = get_arguments(["--preset", "paper"])
    opts = ae.EditOptions.from_args(args)
    assert (opts.inversion, opts.sampler, opts.timestep_respacing, opts.edit_strength) == ("input", "ddpm", "", 1.0)
    assert (opts.cycle_noise, opts.step_by_step_renoise, opts.final_output) == ("fresh", "q_sample_prev", "pred_xstart")
    assert opts.guide_reconstructions and opts.weight_resolution == 0  # the weights as the paper gives them
    assert (opts.weights.attribute_guidance_lambda, opts.weights.cycle_reconstruct_lambda,
            opts.weights.range_lambda) == (50, 1000, 50)
    inv = ae.EditOptions.from_preset("paper_inversion")
    assert (inv.inversion, inv.cycle_noise, inv.final_output, inv.weight_resolution) == ("ddim", "fixed", "sample", 0)
    # The fast preset keeps its own options (none of the released code's particulars).
    fast = ae.EditOptions.from_preset("fast")
    assert (fast.cycle_noise, fast.step_by_step_renoise, fast.guide_reconstructions, fast.final_output) == (
        "fixed", "forward_step", False, "sample")
    assert set(PRESETS) >= {"fast", "paper", "paper_inversion"}
    with pytest.raises(ValueError, match="needs an inversion"):
        ae.EditOptions.from_preset("paper", cycle_schema="step_by_step", cycle_target="inversion")


def test_input_start_places_the_clean_input_at_the_noisiest_level(assets):  # noqa: F811
    editor = ae.AttributeEditor(assets["rough"], None, device="cpu", dtype=torch.float64)
    seen = []
    inner = editor.model.model

    class Spy(torch.nn.Module):
        def forward(self, x, t, **kw):
            seen.append((x.detach().clone(), t.clone()))
            return inner(x, t, **kw)

    editor.model.model = Spy()
    x, a = smooth_image(), attrs()
    opts = ae.EditOptions(sampler="ddpm", timestep_respacing="8", edit_strength=1.0, inversion="input",
                          cycle_schema="none", weights=NO_GUIDANCE, region="none")
    res = editor.edit(x, a, a, opts)
    assert res.unet_evals == 8  # no inversion
    first_x, first_t = seen[0]
    assert torch.equal(first_x, x.double()) and int(first_t[0]) == max(int(t[0]) for _, t in seen)


def test_fresh_cycle_noise_differs_per_use_and_is_reproducible_per_image():
    x = torch.zeros(2, 3, 4, 4)
    make = lambda seeds: EditProblem(x_origin=x, a_ref=x[:, 0, 0, :1], a_q=x[:, 0, 0, :1],  # noqa: E731
                                     noise_generators=[torch.Generator().manual_seed(s) for s in seeds])
    cfg = GuidanceConfig(cycle_noise="fresh")
    p = make([1, 2])
    first, second = p.renoise(cfg, x), p.renoise(cfg, x)
    assert not torch.equal(first, second) and not torch.equal(first[0], first[1])
    single = make([2])
    assert torch.equal(single.renoise(cfg, x[:1])[0], first[1])  # image 1 of the batch == alone
    fixed = EditProblem(x_origin=x, a_ref=x[:, 0, 0, :1], a_q=x[:, 0, 0, :1], cycle_noise=first)
    assert fixed.renoise(GuidanceConfig(), x) is first


def test_released_step_by_step_renoises_x_prev_as_if_clean():
    from guided_diffusion.script_util import create_gaussian_diffusion
    diffusion = create_gaussian_diffusion(steps=100)
    x_prev = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    z = torch.randn_like(x_prev)
    t = torch.tensor([40, 40])
    released = _back_to_level_t(diffusion, x_prev, t, GuidanceConfig(step_by_step_renoise="q_sample_prev"), z)
    torch.testing.assert_close(released, diffusion.q_sample(x_prev, t - 1, noise=z))
    forward = _back_to_level_t(diffusion, x_prev, t, GuidanceConfig(), z)
    a = 1 - diffusion.betas[40]
    torch.testing.assert_close(forward, a ** 0.5 * x_prev + (1 - a) ** 0.5 * z)
    # At t = 0 the released code indexes level -1 (which wraps to the last level); here x_prev stays.
    zero = torch.tensor([0, 0])
    assert torch.equal(_back_to_level_t(diffusion, x_prev, zero, GuidanceConfig(step_by_step_renoise="q_sample_prev"),
                                        z), x_prev)


def test_reconstructions_are_guided_only_when_asked(assets):  # noqa: F811
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    diffusion = editor.diffusion("6")
    x, a = smooth_image().double(), attrs().double()
    problem = EditProblem(x_origin=x, a_ref=a, a_q=a.clone(), cycle_noise=torch.zeros_like(x))
    assert make_cond_fn(diffusion, editor.model, editor.classifier, problem, GuidanceConfig()) is None
    cond_fn = make_cond_fn(diffusion, editor.model, editor.classifier, problem,
                           GuidanceConfig(guide_reconstructions=True))
    grad = cond_fn(x * 0.9, torch.tensor([3]))
    assert grad.abs().sum() > 0  # the cycle and range terms pull a reconstruction too


@pytest.mark.parametrize("schema", ["step_to_origin", "step_by_step"])
def test_paper_preset_edits_end_to_end_and_returns_the_last_x0(assets, schema):  # noqa: F811
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu")
    x, a = smooth_image(), attrs()
    q = ae.query_from_indices(a, [9])
    opts = ae.EditOptions.from_preset("paper", timestep_respacing="6", cycle_schema=schema)
    res = editor.edit(x, a, q, opts, seeds=[3], record_frames=True)
    assert torch.isfinite(res.images).all()
    assert res.unet_evals == 6 * 2  # x0_hat + the cycle pass per step, no inversion
    assert torch.allclose(res.images, res.frames[-1].to(res.images))  # the last step's pred_xstart
    again = editor.edit(x, a, q, opts, seeds=[3])
    assert torch.equal(again.images, res.images)  # fresh noise, but drawn from the seed
