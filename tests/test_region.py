"""The edit's inferred region (optimization/region.py) and region-aware editing."""
import pytest
import torch

from guided_diffusion.script_util import create_gaussian_diffusion
from optimization import attribute_editor as ae
from optimization.region import (gaussian_blur, infer_edit_region, keep_outside_region, parse_attribute_thresholds,
                                 parse_levels)
from test_editor import assets, attrs, smooth_image  # noqa: F401 (assets is a fixture)

SIZE = 16


def oracle_model(masks):
    """eps(x, t, y) = sum_k y_k * masks[k]: attribute k changes exactly the pixels of masks[k]."""
    def model(x, t, y=None):
        out = torch.zeros_like(x)
        for k, m in masks.items():
            out = out + y[:, k].view(-1, 1, 1, 1) * m
        return out
    return model


def one_image_edit(flipped, t=49):
    """(diffusion, latents [(t, x_t)], a_ref, a_q) for one blank image with `flipped` attributes turned on."""
    diffusion = create_gaussian_diffusion(steps=100)
    x = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float64)
    a_ref = torch.zeros(1, 20, dtype=torch.float64)
    a_q = a_ref.clone()
    a_q[0, flipped] = 1
    return diffusion, [(t, diffusion.q_sample(x, torch.full((1,), t), noise=torch.randn_like(x)))], a_ref, a_q


def square(top, left, size=4):
    m = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float64)
    m[..., top:top + size, left:left + size] = 1
    return m


def test_region_of_an_oracle_is_the_changed_pixels_and_joint_edits_take_the_union():
    diffusion = create_gaussian_diffusion(steps=100)
    masks = {9: square(2, 2), 15: square(10, 9)}
    x = torch.zeros(3, 3, SIZE, SIZE, dtype=torch.float64)
    a_ref = torch.zeros(3, 20, dtype=torch.float64)
    a_q = a_ref.clone()
    a_q[0, 9] = 1
    a_q[1, [9, 15]] = 1  # joint edit; row 2 is a reconstruction
    latents = [(t, diffusion.q_sample(x, torch.full((3,), t), noise=torch.randn_like(x))) for t in (29, 49)]
    region, raw = infer_edit_region(diffusion, oracle_model(masks), latents, a_ref, a_q, 0.5, 0.0)
    assert torch.equal(region[0, 0] > 0.5, masks[9][0, 0] > 0)
    assert torch.equal(region[1, 0] > 0.5, (masks[9][0, 0] + masks[15][0, 0]) > 0)
    assert region[2].abs().max() == 0 and raw[2].abs().max() == 0  # nothing to edit: empty


def test_region_is_empty_for_a_reconstruction_and_not_for_an_edit_on_a_perturbed_unet(assets):  # noqa: F811
    editor = ae.AttributeEditor(assets["rough"], None, device="cpu", dtype=torch.float64)
    diffusion = editor.diffusion("20")
    x, a = smooth_image(2).double(), attrs(2).double()
    q = a.clone()
    q[1] = ae.query_from_indices(a[1], [9])
    latents = [(t, diffusion.q_sample(x, torch.full((2,), t), noise=torch.randn_like(x))) for t in (5, 9)]
    region, _ = infer_edit_region(diffusion, editor.model, latents, a, q, 0.3, 1.0)
    assert region[0].max() == 0
    inside = float(region[1].mean())
    assert 0 < inside < 1 and region[1].max() == 1  # some pixels, not all


def test_pixels_outside_the_region_follow_the_inversion_trajectory_exactly(assets):  # noqa: F811
    editor = ae.AttributeEditor(assets["rough"], assets["classifier"], device="cpu", dtype=torch.float64)
    x, a = smooth_image().double(), attrs().double()
    q = ae.query_from_indices(a, [9])
    opts = ae.EditOptions(timestep_respacing="10", edit_strength=0.6, region="inferred", region_threshold=0.5)
    res = editor.edit(x, a, q, opts, seeds=[2], record_frames=True)
    outside = (res.region == 0).expand_as(x)
    inside = res.region == 1
    assert outside.any() and inside.any()
    assert torch.equal(res.images[outside], x[outside])  # the edit-friendly trajectory ends on x exactly
    whole = editor.edit(x, a, q, ae.EditOptions(timestep_respacing="10", edit_strength=0.6), seeds=[2])
    assert (whole.images - x)[outside].abs().max() > 1e-4  # without the region those pixels move
    # Each step lands on the stored latent outside the region.
    trajectory = {t: torch.full((1, 3, SIZE, SIZE), float(t), dtype=torch.float64) for t in range(3)}
    region = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)
    region[..., :4, :4] = 1
    blend = keep_outside_region(region, trajectory, x)
    out = blend({"sample": torch.full_like(x, -7.0)}, torch.tensor([2]))["sample"]
    assert (out[..., :4, :4] == -7).all() and (out[..., 4:, :] == 1).all()
    last = blend({"sample": torch.full_like(x, -7.0)}, torch.tensor([0]))["sample"]
    assert torch.equal(last[..., 8:, 8:], x[..., 8:, 8:])


def test_blur_is_truncated_and_levels_are_checked():
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert blurred[0, 0, 7, 10] == 0 and blurred[0, 0, 7, 9] > 0  # radius 2 sigma
    assert parse_levels("0.3, 0.5") == (0.3, 0.5)
    for bad in ("", "0", "1.5", "a"):
        with pytest.raises(ValueError, match="region_levels"):
            parse_levels(bad)
    with pytest.raises(ValueError, match="needs an inversion"):
        ae.EditOptions(inversion="input", sampler="ddpm", region="inferred")


def test_region_reuses_the_inversions_reference_predictions(assets):  # noqa: F811
    editor = ae.AttributeEditor(assets["rough"], None, device="cpu", dtype=torch.float64)
    x, a = smooth_image().double(), attrs().double()
    q = ae.query_from_indices(a, [9])

    def evals(**region):
        opts = ae.EditOptions(timestep_respacing="10", edit_strength=0.6, cycle_schema="none", **region)
        return editor.edit(x, a, q, opts, seeds=[3]).unet_evals

    whole = evals(region="none")
    # Levels 0.3 and 0.5 are chain indices 2 and 4, inside the 6 inverted steps: the edit-friendly
    # inversion already has eps under a_ref there, so only the flipped attribute's pass is new.
    assert evals(region="inferred", region_levels="0.3,0.5") == whole + 2
    # Level 0.9 (index 8) is above the edit's start: the input is noised there, both passes are new.
    assert evals(region="inferred", region_levels="0.9") == whole + 2
    assert evals(region="inferred", region_levels="0.3,0.9") == whole + 3

    # Given reference predictions give the same region as computing them.
    diffusion = editor.diffusion("10")
    latents = [(t, diffusion.q_sample(x, torch.full((1,), t), noise=torch.randn_like(x))) for t in (2, 4)]
    eps_ref = [diffusion.p_mean_variance(editor.model, x_t, torch.full((1,), t), clip_denoised=False,
                                         model_kwargs={"y": a})["eps"] for t, x_t in latents]
    computed, _ = infer_edit_region(diffusion, editor.model, latents, a, q, 0.3, 1.0)
    given, _ = infer_edit_region(diffusion, editor.model, latents, a, q, 0.3, 1.0, eps_ref=eps_ref)
    assert torch.equal(computed, given) and computed.max() == 1


def test_a_joint_edit_keeps_the_weaker_attributes_region():
    # Attribute 15 changes its pixels ten times more than 9 changes its own: normalising the union
    # by one maximum would drop 9's region below any threshold above 0.1.
    masks = {9: square(2, 2), 15: 10 * square(10, 9)}
    diffusion, latents, a_ref, a_q = one_image_edit([9, 15])
    region, raw = infer_edit_region(diffusion, oracle_model(masks), latents, a_ref, a_q, 0.3, 0.0)
    assert torch.equal(region[0, 0] > 0.5, (masks[9][0, 0] + masks[15][0, 0]) > 0)
    assert raw[0, 0][masks[9][0, 0] > 0].min() == 1 and raw[0, 0][masks[15][0, 0] > 0].min() == 1


def graded_square(top, left, size=6):
    """A square whose pixels change by 1 at its centre and by 0.2 on its rim (a spread map)."""
    m = 0.2 * square(top, left, size)
    m[..., top + 2:top + size - 2, left + 2:left + size - 2] = 1
    return m


def test_an_attribute_threshold_widens_only_that_attributes_region():
    masks = {11: graded_square(1, 1), 9: graded_square(9, 9)}
    diffusion, latents, a_ref, a_q = one_image_edit([9, 11])
    cores = {k: (m[0, 0] == 1) for k, m in masks.items()}
    whole = {k: (m[0, 0] > 0) for k, m in masks.items()}
    plain, raw_plain = infer_edit_region(diffusion, oracle_model(masks), latents, a_ref, a_q, 0.3, 0.0)
    assert torch.equal(plain[0, 0] > 0.5, cores[9] | cores[11])  # the rims (0.2) are below 0.3
    wide, raw = infer_edit_region(diffusion, oracle_model(masks), latents, a_ref, a_q, 0.3, 0.0,
                                  attribute_thresholds={11: 0.1})
    assert torch.equal(wide[0, 0] > 0.5, cores[9] | whole[11])  # Male's rim in, Eyeglasses' rim still out
    assert torch.equal(raw, raw_plain)  # the map itself does not depend on the thresholds


def test_attribute_thresholds_parse_names_and_indices_and_refuse_bad_ones():
    assert parse_attribute_thresholds("Male=0.15, 19=0.2") == {11: 0.15, 19: 0.2}
    assert parse_attribute_thresholds("") == {}
    for bad in ("Male", "Male=1.5", "Mustache=0.1", "20=0.1", "Male=x"):
        with pytest.raises(ValueError, match="region_attribute_thresholds"):
            parse_attribute_thresholds(bad)
    with pytest.raises(ValueError, match="region_attribute_thresholds"):
        ae.EditOptions(region_attribute_thresholds="Young=-0.1")
