"""The CycleDiff editor on tiny models (16 px UNet, 32 px ResNet classifier)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults, save_model_config
from optimization import attribute_editor as ae
from optimization.guidance import (AttributeContrastModel, EditProblem, GuidanceConfig, GuidanceWeights,
                                   ReuseGuidancePass, guidance_losses, make_cond_fn)
from preprocess.classifier import AttributeClassifier

SIZE = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**over):
    c = model_and_diffusion_defaults()
    c.update(image_size=SIZE, num_channels=16, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
             num_heads=2, diffusion_steps=100)
    c.update(over)
    return c


def save_tiny_model(folder, scale, seed=0, **over):
    """A perturbed tiny UNet (an untrained one outputs exactly zero) + its JSON."""
    config = tiny_config(**over)
    model, _ = create_model_and_diffusion(**config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    path = os.path.join(folder, "diffusion.pt")
    torch.save(model.state_dict(), path)
    save_model_config(config, os.path.join(folder, "diffusion.json"))
    return path


def save_tiny_classifier(path, num_attributes=20):
    torch.manual_seed(0)
    clf = AttributeClassifier(arch="resnet18", num_attributes=num_attributes, input_size=32)
    torch.save({"state_dict": clf.state_dict(), "opts": clf.opts}, path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("editor")
    smooth = root / "smooth"
    rough = root / "rough"
    uncond = root / "uncond"
    for d in (smooth, rough, uncond):
        d.mkdir()
    return dict(
        smooth=save_tiny_model(str(smooth), scale=1e-4),
        rough=save_tiny_model(str(rough), scale=0.05, seed=1),
        uncond=save_tiny_model(str(uncond), scale=0.02, num_attributes=0),
        classifier=save_tiny_classifier(str(root / "classifier.pt")),
        classifier7=save_tiny_classifier(str(root / "classifier7.pt"), num_attributes=7),
        root=root,
    )


def smooth_image(n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 1.6 - 0.8
    return torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def attrs(n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 20, generator=g) > 0.5).float()


NO_GUIDANCE = GuidanceWeights(attribute_guidance_lambda=0, cycle_reconstruct_lambda=0, range_lambda=0)


def test_ddim_inversion_round_trip_float64(assets):
    editor = ae.AttributeEditor(assets["smooth"], None, device="cpu", dtype=torch.float64)
    x, a = smooth_image(), attrs()
    opts = ae.EditOptions(sampler="ddim", timestep_respacing="20", edit_strength=1.0, inversion="ddim",
                          cycle_schema="none", weights=NO_GUIDANCE, region="none")
    res = editor.edit(x, a, a, opts)
    assert res.unet_evals == 40  # 20 inversion + 20 sampling steps, no guidance
    assert float(ae.metrics.psnr(res.images, x.double())[0]) >= 40
    opts.inversion_fixed_point = 2  # two refinements per inversion step: near exact
    res = editor.edit(x, a, a, opts)
    assert res.unet_evals == 20 * 3 + 20
    assert float(ae.metrics.psnr(res.images, x.double())[0]) >= 60


def test_ddpm_noise_inversion_is_exact_for_any_model(assets):
    editor = ae.AttributeEditor(assets["rough"], None, device="cpu", dtype=torch.float64)
    x, a = smooth_image(2), attrs(2)
    opts = ae.EditOptions(sampler="ddpm", timestep_respacing="20", edit_strength=1.0, inversion="ddpm_noise",
                          cycle_schema="none", weights=NO_GUIDANCE, region="none")
    res = editor.edit(x, a, a, opts, seeds=[3, 4])
    assert float(ae.metrics.psnr(res.images, x.double()).min()) >= 60
    # Without the stored noise the same rough model does not reconstruct: the test can fail.
    plain = ae.EditOptions(sampler="ddim", timestep_respacing="20", edit_strength=1.0, inversion="ddim",
                           cycle_schema="none", weights=NO_GUIDANCE, region="none")
    assert float(ae.metrics.psnr(editor.edit(x, a, a, plain).images, x.double()).min()) < 40


@pytest.mark.parametrize("term,cfg", [
    ("attribute", dict()),
    ("preserve", dict()),
    ("range", dict()),
    ("cycle", dict(cycle_schema="step_to_origin")),
    ("cycle", dict(cycle_schema="step_by_step", cycle_target="noised_origin", sampler="ddim")),
    ("cycle", dict(cycle_schema="step_by_step", cycle_target="inversion", sampler="ddpm")),
])
def test_each_loss_term_descends_along_its_gradient(assets, term, cfg):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    diffusion = editor.diffusion("10")
    x0, a_ref = smooth_image(2, seed=5), attrs(2, seed=5)
    a_q = ae.query_from_indices(a_ref, [9, 15])
    t = torch.tensor([6, 6])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    traj = {k: diffusion.q_sample(x0.double(), torch.tensor([k, k]), noise=noise) for k in range(10)}
    problem = EditProblem(x_origin=x0.double(), a_ref=a_ref.double(), a_q=a_q.double(), origin_trajectory=traj,
                          cycle_noise=noise)
    weights = {n: 0.0 for n in ("attribute_guidance_lambda", "cycle_reconstruct_lambda", "range_lambda")}
    key = {"attribute": "attribute_guidance_lambda", "preserve": "preserve_lambda", "range": "range_lambda",
           "cycle": "cycle_reconstruct_lambda"}[term]
    weights[key] = 1.0
    config = GuidanceConfig(weights=GuidanceWeights(**weights), **cfg)
    x = traj[6].clone()
    if term == "range":
        x = x * 3  # push x0_hat out of [-1, 1]

    def loss_at(z):
        terms = guidance_losses(diffusion, editor.model, editor.classifier, problem, config, z, t)
        assert set(terms) == {term}
        return terms[term].sum()

    z = x.clone().requires_grad_(True)
    loss = loss_at(z)
    grad = torch.autograd.grad(loss, z)[0]
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        step = 1e-3 * float(loss) / float(grad.pow(2).sum())
        assert float(loss_at(x - step * grad)) < float(loss)


class _Recorder(torch.nn.Module):
    """Records the model's outputs (first pass), then replays them in call order as constants."""

    def __init__(self, model):
        super().__init__()
        self.model, self.outputs, self.replay = model, [], False

    def forward(self, x, t, y=None):
        if self.replay:
            return self.outputs.pop(0)
        with torch.no_grad():
            out = self.model(x, t, y=y)
        self.outputs.append(out)
        return out


@pytest.mark.parametrize("schema", ["step_by_step", "step_to_origin"])
def test_skip_unet_gradient_is_the_loss_gradient_with_the_unet_outputs_held_fixed(assets, schema):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    diffusion = editor.diffusion("10")
    x0, a_ref = smooth_image(2, seed=5), attrs(2, seed=5)
    a_q = ae.query_from_indices(a_ref, [9, 15])
    t = torch.tensor([6, 6])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    traj = {k: diffusion.q_sample(x0.double(), torch.tensor([k, k]), noise=noise) for k in range(10)}
    problem = EditProblem(x_origin=x0.double(), a_ref=a_ref.double(), a_q=a_q.double(), origin_trajectory=traj,
                          cycle_noise=noise)
    weights = GuidanceWeights(attribute_guidance_lambda=10, cycle_reconstruct_lambda=1000, range_lambda=50,
                              preserve_lambda=10)
    x = traj[6] * 1.5  # some of x0_hat out of range: every term active

    def grad(model, mode):
        config = GuidanceConfig(weights=weights, cycle_schema=schema, cycle_target="inversion", sampler="ddpm",
                                guidance_gradient=mode)
        z = x.clone().requires_grad_(True)
        terms = guidance_losses(diffusion, model, editor.classifier, problem, config, z, t)
        assert set(terms) == {"attribute", "preserve", "cycle", "range"}
        return torch.autograd.grad(sum(v.sum() for v in terms.values()), z)[0]

    recorder = _Recorder(editor.model)
    skip = grad(recorder, "skip_unet")
    recorder.replay = True  # the same outputs as constants, differentiated the paper's way
    replayed = grad(recorder, "through_unet")
    assert not recorder.outputs and torch.isfinite(skip).all() and skip.abs().sum() > 0
    assert torch.allclose(skip, replayed, rtol=1e-10, atol=1e-12)
    through = grad(editor.model, "through_unet")  # the UNet's Jacobian does matter for this model
    assert (through - skip).abs().max() > 1e-3 * skip.abs().max()


def test_skip_unet_costs_the_same_unet_evaluations_and_still_edits(assets):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu")
    x, a = smooth_image(), attrs()
    q = ae.query_from_indices(a, [9])
    results = {}
    for mode in ("through_unet", "skip_unet"):
        opts = ae.EditOptions(timestep_respacing="6", edit_strength=0.5, guidance_gradient=mode, region="none",
                              guidance_max_step=0.05)
        results[mode] = editor.edit(x, a, q, opts)
    plain = editor.edit(x, a, q, ae.EditOptions(timestep_respacing="6", edit_strength=0.5, region="none",
                                                cycle_schema="none", weights=NO_GUIDANCE))
    assert results["skip_unet"].unet_evals == results["through_unet"].unet_evals
    for res in results.values():  # guidance moved the image in both modes, differently
        assert (res.images - plain.images).abs().max() > 1e-3
    assert (results["skip_unet"].images - results["through_unet"].images).abs().max() > 1e-4


@pytest.mark.parametrize("sampler,inversion,schema,target", [
    ("ddim", "ddim", "step_to_origin", "noised_origin"),
    ("ddim", "ddim", "step_by_step", "inversion"),
    ("ddpm", "ddim", "step_by_step", "noised_origin"),
    ("ddpm", "ddpm_noise", "step_to_origin", "inversion"),
    ("ddpm", "ddpm_noise", "step_by_step", "inversion"),
])
def test_schemas_and_targets_run_under_both_samplers(assets, sampler, inversion, schema, target):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu")
    x, a = smooth_image(), attrs()
    opts = ae.EditOptions(sampler=sampler, timestep_respacing="6", edit_strength=0.5, inversion=inversion,
                          cycle_schema=schema, cycle_target=target, cfg_scale=1.0, region="none")
    res = editor.edit(x, a, ae.query_from_indices(a, [9]), opts)
    assert torch.isfinite(res.images).all()
    assert len(res.guidance_log) == 3 and "cycle" in res.guidance_log[0] and "attribute" in res.guidance_log[0]
    # 3 inversion + 3 x (x0_hat + cycle) guidance evaluations; sampling reuses the x0_hat pass.
    assert res.unet_evals == 3 + 3 * 2


def test_sampler_reuses_the_guidance_forward_pass_exactly(assets, monkeypatch):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    x, a = smooth_image(2, seed=8), attrs(2, seed=8)
    q = ae.query_from_indices(a, [9, 15])
    runs = {}
    for sampler, inversion in (("ddpm", "ddpm_noise"), ("ddim", "ddim")):
        opts = ae.EditOptions(sampler=sampler, timestep_respacing="6", edit_strength=0.5, inversion=inversion,
                              cycle_schema="step_by_step", cfg_scale=2.0, guidance_max_step=0.05)
        reused = editor.edit(x, a, q, opts, seeds=[1, 2])
        with monkeypatch.context() as m:  # every call runs the model
            m.setattr(ReuseGuidancePass, "forward", lambda self, x, t, y=None: self.model(x, t, y=y))
            recomputed = editor.edit(x, a, q, opts, seeds=[1, 2])
        assert torch.equal(reused.images, recomputed.images), sampler
        # 3 steps: the sampler's query pass (two calls with cfg) is served from the guidance's
        assert recomputed.unet_evals - reused.unet_evals == 3 * 2, sampler
        runs[sampler] = reused
    assert (runs["ddpm"].images - x).abs().max() > 1e-3  # guidance did move the images


def test_reuse_guidance_pass_only_serves_equal_inputs():
    calls = []

    def model(x, t, y=None):
        calls.append(1)
        return x * 2 + t.view(-1, 1, 1, 1) + (0 if y is None else y.sum(dim=1).view(-1, 1, 1, 1))

    class Wrap(torch.nn.Module):
        def forward(self, x, t, y=None):
            return model(x, t, y)

    reuse = ReuseGuidancePass(Wrap())
    x, t, y = torch.randn(2, 3, 4, 4), torch.tensor([3, 3]), torch.ones(2, 5)
    with torch.enable_grad():
        out = reuse(x.clone().requires_grad_(True), t, y=y)
    assert out.requires_grad and len(calls) == 1
    assert torch.equal(reuse(x, t, y=y), out.detach()) and len(calls) == 1  # served
    assert torch.equal(reuse(x, t, y=y), model(x, t, y)) and len(calls) == 3  # kept outputs are used once
    with torch.enable_grad():
        reuse(x.clone().requires_grad_(True), t, y=y)
    for other in ((x + 1, t, y), (x, t + 1, y), (x, t, y * 0)):
        calls.clear()
        with torch.enable_grad():
            reuse(x.clone().requires_grad_(True), t, y=y)
        assert torch.equal(reuse(*other[:2], y=other[2]), model(*other[:2], other[2]))
        assert len(calls) == 3  # grad pass, the unserved call, the reference


def test_guidance_changes_the_result_and_seed_fixes_it(assets):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu")
    x, a = smooth_image(), attrs()
    q = ae.query_from_indices(a, [9])
    opts = ae.EditOptions(timestep_respacing="6", edit_strength=0.5)
    first = editor.edit(x, a, q, opts, seeds=[1]).images
    again = editor.edit(x, a, q, opts, seeds=[1]).images
    assert torch.equal(first, again)
    unguided = ae.EditOptions(timestep_respacing="6", edit_strength=0.5, cycle_schema="none", weights=NO_GUIDANCE)
    assert (editor.edit(x, a, q, unguided, seeds=[1]).images - first).abs().max() > 1e-4
    plain_ddpm = ae.EditOptions(timestep_respacing="6", edit_strength=0.5, inversion="ddim")
    assert (editor.edit(x, a, q, plain_ddpm, seeds=[1]).images
            - editor.edit(x, a, q, plain_ddpm, seeds=[2]).images).abs().max() > 1e-4


def test_batch_equals_one_by_one(assets):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    x, a = smooth_image(3, seed=2), attrs(3, seed=2)
    q = ae.query_from_indices(a, [15])
    for opts in (ae.EditOptions(timestep_respacing="6", edit_strength=0.5),
                 ae.EditOptions(sampler="ddim", inversion="ddim", timestep_respacing="6", edit_strength=0.5,
                                cycle_schema="step_by_step")):
        batch = editor.edit(x, a, q, opts, seeds=[7, 8, 9]).images
        singles = torch.cat([editor.edit(x[i:i + 1], a[i:i + 1], q[i:i + 1], opts, seeds=[7 + i]).images
                             for i in range(3)])
        assert torch.allclose(batch, singles, atol=1e-8)


def test_reconstruction_in_a_guided_batch_stays_exact(assets):
    # A query equal to its reference gets no guidance: the edit-friendly path reconstructs exactly,
    # while the edited image of the same batch is guided.
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    x, a = smooth_image(2, seed=3), attrs(2, seed=3)
    q = a.clone()
    q[1] = ae.query_from_indices(a[1], [9])
    opts = ae.EditOptions(timestep_respacing="10", edit_strength=0.6)
    res = editor.edit(x, a, q, opts, seeds=[1, 2])
    assert float(ae.metrics.psnr(res.images[:1], x[:1].double())[0]) >= 60
    unguided = ae.EditOptions(timestep_respacing="10", edit_strength=0.6, cycle_schema="none", weights=NO_GUIDANCE)
    plain = editor.edit(x, a, q, unguided, seeds=[1, 2]).images
    assert (plain[1] - res.images[1]).abs().max() > 1e-3
    # A batch of reconstructions only skips the guidance evaluations altogether.
    assert editor.edit(x, a, a, opts, seeds=[1, 2]).unet_evals == 6 + 6


@pytest.mark.parametrize("sampler,inversion", [("ddpm", "ddpm_noise"), ("ddim", "ddim")])
def test_guidance_max_step_caps_each_move(assets, sampler, inversion):
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    diffusion = editor.diffusion("10")
    x, a = smooth_image(2, seed=4), attrs(2, seed=4)
    q = ae.query_from_indices(a, [9])
    strong = GuidanceWeights(attribute_guidance_lambda=1e4, cycle_reconstruct_lambda=1e5, range_lambda=1e3)
    with torch.no_grad():
        x_t = diffusion.q_sample(x.double(), torch.tensor([9, 9]), noise=torch.randn(x.shape, dtype=torch.float64))
    problem = EditProblem(x_origin=x.double(), a_ref=a.double(), a_q=q.double(),
                          cycle_noise=torch.zeros(x.shape, dtype=torch.float64))
    t = torch.tensor([9, 9])
    kwargs = problem.model_kwargs(problem.a_q)

    def step(cap):
        cfg = GuidanceConfig(weights=strong, sampler=sampler, max_step=cap)
        cond_fn = make_cond_fn(diffusion, editor.model, editor.classifier, problem, cfg)
        out = diffusion.p_mean_variance(editor.model, x_t, t, clip_denoised=False, model_kwargs=kwargs)
        if sampler == "ddpm":
            return out["mean"], diffusion.condition_mean(cond_fn, out, x_t, t, model_kwargs=kwargs)
        guided = diffusion.condition_score(cond_fn, out, x_t, t, model_kwargs=kwargs)
        abar_prev = float(diffusion.alphas_cumprod_prev[9])

        def ddim_next(o):
            return abar_prev ** 0.5 * o["pred_xstart"] + (1 - abar_prev) ** 0.5 * o["eps"]
        return ddim_next(out), ddim_next(guided)

    def rms_move(cap):
        base, guided = step(cap)
        return (guided - base).pow(2).mean(dim=(1, 2, 3)).sqrt()

    free = rms_move(0.0)
    assert float(free.min()) > 0.2  # the uncapped move is large: the cap has work to do
    capped = rms_move(0.05)
    assert torch.allclose(capped, torch.full_like(capped, 0.05), rtol=1e-6)


def test_attribute_contrast_model_is_classifier_free_guidance_between_two_vectors(assets):
    from guided_diffusion.script_util import load_diffusion_model
    for name in ("rough", "learned_sigma"):
        if name == "learned_sigma":
            folder = assets["root"] / "learned_sigma"
            folder.mkdir(exist_ok=True)
            path = save_tiny_model(str(folder), scale=0.05, seed=3, learn_sigma=True)
        else:
            path = assets[name]
        model, _, _ = load_diffusion_model(path, device="cpu")
        model = model.double()
        x, a = smooth_image(3, seed=5).double(), attrs(3, seed=5).double()
        q = a.clone()
        q[:2] = ae.query_from_indices(a[:2], [9])  # row 2 is a reconstruction
        t = torch.tensor([40, 40, 40])
        with torch.no_grad():
            plain_q, plain_ref = model(x, t, y=q), model(x, t, y=a)
            assert (plain_q[:2, :3] - plain_ref[:2, :3]).abs().max() > 1e-4  # the condition matters
            assert torch.equal(AttributeContrastModel(model, a, 1.0)(x, t, y=q), plain_q)
            out = AttributeContrastModel(model, a, 3.0)(x, t, y=q)
            assert torch.allclose(out[:2, :3], plain_ref[:2, :3] + 3 * (plain_q[:2, :3] - plain_ref[:2, :3]))
            assert torch.equal(out[2], plain_q[2])            # y == a_ref: the plain model
            assert torch.equal(out[:, 3:], plain_q[:, 3:])    # a learned variance from the query pass
            # Called under the reference attributes (inversion, cycle term) it is the plain model.
            assert torch.equal(AttributeContrastModel(model, a, 3.0)(x, t, y=a), plain_ref)


def test_cfg_scale_moves_the_edit_along_the_conditional_direction(assets):
    editor = ae.AttributeEditor(assets["rough"], None, device="cpu", dtype=torch.float64)
    x, a = smooth_image(2, seed=6), attrs(2, seed=6)
    q = a.clone()
    q[1] = ae.query_from_indices(a[1], [9])

    def run(scale):
        opts = ae.EditOptions(timestep_respacing="8", edit_strength=0.75, cycle_schema="none",
                              weights=NO_GUIDANCE, cfg_scale=scale)
        return editor.edit(x, a, q, opts, seeds=[3, 4])

    plain, twice = run(1.0), run(2.0)
    # The reconstruction stays exact; the edit moves further from the input with a larger scale,
    # at one more UNet call per sampling step.
    assert float(ae.metrics.psnr(twice.images[:1], x[:1].double())[0]) >= 60
    d_plain = (plain.images[1] - x[1]).abs().mean()
    d_twice = (twice.images[1] - x[1]).abs().mean()
    assert d_twice > d_plain > 1e-4
    # The contrast's reference pass at each of the 6 steps (no cond_fn here: nothing to reuse) runs on
    # the edited row only, the reconstruction has nothing to contrast: 6 images over a batch of 2.
    assert twice.unet_evals == plain.unet_evals + 6 / 2
    with pytest.raises(ValueError, match="cfg_scale"):
        ae.EditOptions(cfg_scale=-1)


def test_unconditional_model_runs_with_guidance(assets):
    editor = ae.AttributeEditor(assets["uncond"], assets["classifier"], device="cpu")
    assert not editor.conditional
    x, a = smooth_image(), attrs()
    res = editor.edit(x, a, ae.query_from_indices(a, [9]), ae.EditOptions(timestep_respacing="6", edit_strength=0.5))
    assert torch.isfinite(res.images).all()


def test_nan_gradient_step_is_skipped_with_warning(assets):
    class NaNClassifier(torch.nn.Module):
        num_attributes = 20

        def forward(self, x):
            return x.mean() * torch.full((x.shape[0], 20), float("nan"))

    editor = ae.AttributeEditor(assets["rough"], None, device="cpu")
    editor.classifier = NaNClassifier()
    x, a = smooth_image(), attrs()
    with pytest.warns(UserWarning, match="not finite") as caught:
        res = editor.edit(x, a, ae.query_from_indices(a, [9]), ae.EditOptions(timestep_respacing="6",
                                                                              edit_strength=0.5))
    assert torch.isfinite(res.images).all()
    # One warning per edit, counting the skipped steps (all 3 here) and saying what to do.
    messages = [str(w.message) for w in caught if "not finite" in str(w.message)]
    assert len(messages) == 1 and "at 3 of 3 steps" in messages[0] and "--preset fast" in messages[0]


def test_diverged_images_are_reported_not_returned_silently(assets):
    editor = ae.AttributeEditor(assets["rough"], None, device="cpu")
    unet = editor.model.model

    class SecondRowDiverges(torch.nn.Module):
        def forward(self, x, t, y=None):
            out = unet(x, t, y=y).clone()
            out[1] = float("inf")
            return out

    editor.model.model = SecondRowDiverges()
    x, a = smooth_image(2), attrs(2)
    opts = ae.EditOptions(timestep_respacing="6", edit_strength=0.5, region="none", weights=NO_GUIDANCE)
    with pytest.warns(UserWarning, match=r"1 of 2 edited images have non-finite pixels .*rows \[1\]"):
        res = editor.edit(x, a, ae.query_from_indices(a, [9]), opts, seeds=[1, 2])
    assert torch.isfinite(res.images[0]).all() and not torch.isfinite(res.images[1]).all()


def test_query_parsing_and_multi_attribute_vectors():
    a = torch.zeros(20)
    a[9] = 1
    assert ae.parse_attribute_indices("9,15") == [9, 15]
    assert ae.parse_attribute_indices("20") == []
    assert ae.parse_attribute_indices("all") == [2, 9, 11, 12, 15, 18, 19]
    q = ae.query_from_indices(a, [9, 15])
    assert q[9] == 0 and q[15] == 1 and (q != a).sum() == 2
    assert torch.equal(ae.parse_attribute_vector(",".join(["1"] * 20)), torch.ones(20))
    for bad in ("21", "-1", "x", "9,20"):
        with pytest.raises(ValueError):
            ae.parse_attribute_indices(bad)
    with pytest.raises(ValueError, match="20 comma-separated"):
        ae.parse_attribute_vector("1,0,1")
    with pytest.raises(ValueError, match="0 or 1"):
        ae.parse_attribute_vector(",".join(["2"] * 20))
    assert ae.parse_index_list("0-3,7") == [0, 1, 2, 3, 7]


def test_image_files_any_mode_and_bad_files(tmp_path):
    from PIL import Image

    for mode in ("RGB", "RGBA", "L"):
        p = tmp_path / f"img_{mode}.png"
        Image.new(mode, (40, 30)).save(p)
        x = ae.load_image_file(str(p), SIZE)
        assert x.shape == (1, 3, SIZE, SIZE) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(FileNotFoundError, match="not found"):
        ae.load_image_file(str(tmp_path / "missing.png"), SIZE)
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read image"):
        ae.load_image_file(str(bad), SIZE)


def test_classifier_with_other_attribute_count_is_refused(assets):
    with pytest.raises(ValueError, match="7 attributes"):
        ae.AttributeEditor(assets["rough"], assets["classifier7"], device="cpu")


def test_checkpoint_not_matching_its_json_is_refused(assets, tmp_path):
    path = save_tiny_model(str(tmp_path), scale=0.01)
    save_model_config(tiny_config(num_channels=32), str(tmp_path / "diffusion.json"))
    with pytest.raises(ValueError, match="does not match"):
        ae.AttributeEditor(path, None, device="cpu")


def _run_main(args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_synthetic_default_inputs_render_with_their_labels():
    from preprocess.synthetic_faces import example_face

    x, a = ae.load_dataset_item("synthetic:1000", 3, 32)
    assert x.shape == (1, 3, 32, 32) and -1 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(a, torch.as_tensor(example_face(1000, 3)[1], dtype=torch.float32))


def make_dataset(folder, n=5):
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.fromarray(ae.to_uint8(smooth_image(seed=i))[0]).save(folder / f"{i:05d}.png")
    torch.save(attrs(n), folder / "attributes.pt")
    return folder


def test_main_end_to_end_and_bad_input(assets, tmp_path):
    out = tmp_path / "out"
    data = make_dataset(tmp_path / "data")
    common = ["--model_path", assets["smooth"], "--attribute_cpk_path", assets["classifier"],
              "--output_path", str(out), "--timestep_respacing", "4", "--no_progress", "--dataset_dir", str(data),
              "--eval_classifier_path", "", "--domain_reference", "none"]
    r = _run_main(common + ["--image_index", "3", "--attribute_index", "9,15", "--vid"], tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(out))
    assert {"00003_9+15_20.png", "00003_9+15_9+15.png", "00003_9+15_9+15.gif", "00003_9+15_edit.json",
            "00003_9+15_grid.png"} <= set(files)
    summary = json.loads((out / "00003_9+15_edit.json").read_text())
    assert [e["query"] for e in summary["edits"]] == ["20", "9+15"]
    assert summary["edits"][1]["flipped"] == ["Eyeglasses", "Smiling"]
    assert summary["edits"][1]["unet_evals"] > 0

    bad_out = tmp_path / "bad"
    for bad in (["--attribute_index", "21"], ["--query_attribute", "1,0"], ["--init_image", "nope.png"],
                ["--dataset_dir", str(tmp_path / "missing")], ["--image_index", "9"]):
        r = _run_main(["--model_path", assets["smooth"], "--attribute_cpk_path", assets["classifier"],
                       "--output_path", str(bad_out), "--dataset_dir", str(data)] + bad, tmp_path)
        assert r.returncode == 2 and r.stderr.startswith("error:"), (bad, r.stderr)
        assert "Traceback" not in r.stderr
    assert not bad_out.exists() or not os.listdir(bad_out)


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH (pip install mpich)")
def test_main_batch_is_sharded_across_mpi_ranks(assets, tmp_path, mpi_env):
    data = make_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out"
    r = subprocess.run(["mpiexec", "-n", "2", sys.executable, os.path.join(ROOT, "main.py"),
                        "--model_path", assets["smooth"], "--attribute_cpk_path", assets["classifier"],
                        "--dataset_dir", str(data), "--output_path", str(out), "--image_index", "0-3",
                        "--attribute_index", "15", "--timestep_respacing", "4", "--no_progress",
                        "--eval_classifier_path", "", "--domain_reference", "none"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=mpi_env)
    assert r.returncode == 0, r.stderr
    grids = sorted(f for f in os.listdir(out) if f.endswith("_grid.png"))
    assert grids == [f"{i:05d}_15_grid.png" for i in range(4)]
    # Each index was edited once: rank 0 took 0 and 2, rank 1 took 1 and 3.
    assert r.stdout.count("00000:") == 1 and r.stdout.count("00003:") == 1
