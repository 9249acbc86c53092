"""The edit-evaluation benchmark: metrics on hand-made cases, the Fréchet distance on Gaussians, and
scripts/evaluate_edits.py end to end on tiny models (32 px UNet, 32 px classifiers)."""
import csv
import json
import importlib.util
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults, save_model_config
from optimization import evaluation as ev
from optimization.arguments import PRESETS
from optimization.attribute_editor import to_tensor
from preprocess.classifier import AttributeClassifier
from preprocess.synthetic_faces import example_face, render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
STEPS = 4
ATTRIBUTES = "9,15"


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_edits", os.path.join(ROOT, "scripts", "evaluate_edits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_edits = load_script()


# --------------------------------------------------------------------------- per-edit metrics

def test_identical_images_and_a_correct_flip_score_perfectly():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    a_ref = torch.zeros(2, 20)
    a_q = a_ref.clone()
    a_q[:, 9] = 1
    allowed = torch.zeros(2, 8, 8, dtype=torch.bool)
    m = ev.synthetic_edit_metrics(x, x, x, allowed, probs_edited=a_q, probs_input=a_ref, a_ref=a_ref, a_q=a_q)
    assert m["success"].tolist() == [1.0, 1.0]
    assert m["preservation"].tolist() == [1.0, 1.0] and m["preservation_gt"].tolist() == [1.0, 1.0]
    assert m["l1_gt"].tolist() == [0.0, 0.0] and m["l1_outside_mask"].tolist() == [0.0, 0.0]
    assert m["psnr_gt"].tolist() == [100.0, 100.0]


def test_classifier_measures_on_flipped_attributes():
    a_ref = torch.zeros(1, 20)
    a_q = a_ref.clone()
    a_q[0, 9] = 1
    x = torch.zeros(1, 3, 8, 8)
    allowed = torch.zeros(1, 8, 8, dtype=torch.bool)
    # The edit did nothing: the classifier still reads a_ref.
    m = ev.synthetic_edit_metrics(x, x, x, allowed, a_ref.clone(), a_ref, a_ref, a_q)
    assert float(m["success"]) == 0.0 and float(m["preservation"]) == 1.0
    # Edited attribute flipped, and one of the 19 others flipped too.
    probs = a_q.clone()
    probs[0, 3] = 0.9
    m = ev.synthetic_edit_metrics(x, x, x, allowed, probs, a_ref, a_ref, a_q)
    assert float(m["success"]) == 1.0
    assert float(m["preservation"]) == pytest.approx(18 / 19)
    # The classifier misreads attribute 5 on the input; the edit keeps that reading: preserved
    # against the input's reading, not against the labels.
    probs_input = a_ref.clone()
    probs_input[0, 5] = 0.8
    probs = a_q.clone()
    probs[0, 5] = 0.7
    m = ev.synthetic_edit_metrics(x, x, x, allowed, probs, probs_input, a_ref, a_q)
    assert float(m["preservation"]) == 1.0 and float(m["preservation_gt"]) == pytest.approx(18 / 19)
    # A reconstruction has no edited attribute: success is undefined.
    m = ev.synthetic_edit_metrics(x, x, x, allowed, a_ref, a_ref, a_ref, a_ref)
    assert math.isnan(float(m["success"])) and float(m["preservation"]) == 1.0


def test_pixel_measures_on_a_shifted_patch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    edited = x.clone()
    edited[:, :, 4:8, 4:8] = torch.roll(x[:, :, 4:8, 4:8], shifts=1, dims=3)  # move a patch sideways
    allowed = torch.zeros(1, 16, 16, dtype=torch.bool)
    allowed[:, 4:8, 4:8] = True
    a = torch.zeros(1, 20)
    m = ev.synthetic_edit_metrics(edited, x, x, allowed, a, a, a, a)
    expected_l1 = float(((edited - x).abs() / 2).mean())
    assert expected_l1 > 0
    assert float(m["l1_gt"]) == pytest.approx(expected_l1)
    assert float(m["l1_outside_mask"]) == 0.0  # only masked pixels changed
    mse = float(((edited - x) / 2).pow(2).mean())
    assert float(m["psnr_gt"]) == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    # A mask missing half the patch sees the change: mean error over the pixels outside it.
    allowed[:, 4:8, 6:8] = False
    outside = ~allowed[0]
    expected = float(((edited - x).abs() / 2).mean(dim=1)[0][outside].mean())
    m = ev.synthetic_edit_metrics(edited, x, x, allowed, a, a, a, a)
    assert float(m["l1_outside_mask"]) == pytest.approx(expected) and expected > 0


def test_one_changed_pixel_has_known_l1_and_psnr():
    x = torch.zeros(1, 3, 10, 10)
    edited = x.clone()
    edited[:, :, 2, 3] = 0.5  # 0.25 on the [0, 1] scale
    a = torch.zeros(1, 20)
    m = ev.real_edit_metrics(edited, x, a, a, a, a, lpips_fn=lambda p, q: (p - q).abs().flatten(1).sum(1))
    assert float(m["l1_input"]) == pytest.approx(0.25 / 100)
    assert float(m["psnr_input"]) == pytest.approx(10 * math.log10(100 / 0.0625), rel=1e-5)
    assert float(m["lpips"]) == pytest.approx(1.5)
    assert "lpips" not in ev.real_edit_metrics(edited, x, a, a, a, a)


def test_direction_follows_the_reference_label():
    a = torch.zeros(20)
    a[11] = 1
    assert ev.direction(a, 9) == "add" and ev.direction(a, 11) == "remove" and ev.direction(a, 20) == "none"


def test_aggregate_means_per_group_leaving_out_nan():
    rows = [dict(method="a", attribute=9, success=1.0, psnr_gt=10.0),
            dict(method="a", attribute=9, success=0.0, psnr_gt=20.0),
            dict(method="a", attribute=20, success=float("nan"), psnr_gt=30.0),
            dict(method="b", attribute=9, success=1.0, psnr_gt=40.0)]
    per = ev.aggregate(rows, ("method", "attribute"), ["success", "psnr_gt"])
    assert [(s["method"], s["attribute"], s["n"]) for s in per] == [("a", 9, 2), ("a", 20, 1), ("b", 9, 1)]
    assert per[0]["success"] == 0.5 and per[0]["psnr_gt"] == 15.0 and math.isnan(per[1]["success"])
    overall = ev.aggregate(rows, ("method",), ["success", "psnr_gt"])
    assert overall[0]["success"] == 0.5 and overall[0]["psnr_gt"] == 20.0 and overall[0]["n"] == 3
    table = ev.markdown_table(overall, ["method", "n", "success", "psnr_gt"])
    assert "| a | 3 | 50.0% | 20.00 |" in table


def test_csv_rows_survive_a_cut_line_and_refuse_another_header(tmp_path):
    columns = ev.SYNTHETIC_COLUMNS
    row = dict(method="m", identity=3, attribute=9, direction="add", success=1.0, preservation=0.25,
               preservation_gt=float("nan"), psnr_gt=21.123456789, l1_gt=0.1, l1_outside_mask=0.0,
               region_iou=float("nan"), identity_input=0.97, identity_gt=float("nan"), seconds=1.5,
               unet_evals=12.0)
    path = tmp_path / "rows.csv"
    ev.write_rows_atomic(str(path), [row], columns)
    with open(path, "a") as f:
        f.write("m,4,9,add,1,0.5")  # a run killed mid-line
    rows = ev.read_rows(str(path), columns)
    assert len(rows) == 1 and rows[0]["identity"] == 3 and math.isnan(rows[0]["preservation_gt"])
    assert rows[0]["psnr_gt"] == pytest.approx(21.12346, abs=1e-9)  # 7 significant digits
    assert ev.format_row(rows[0], columns) == ev.format_row(ev.read_rows(str(path), columns)[0], columns)
    with pytest.raises(ValueError, match="header"):
        ev.read_rows(str(path), ev.REAL_COLUMNS)


# --------------------------------------------------------------------------- Fréchet distance

def test_frechet_distance_of_gaussians_with_known_answers():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    # Diagonal: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2 = 5 + (1 + 1 + 0).
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(7.0)
    # Rotating both covariances by one orthogonal matrix keeps the distance.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    assert ev.frechet_distance(mu1, q @ s1 @ q.T, mu2, q @ s2 @ q.T) == pytest.approx(7.0)
    # Non-commuting 2-D case, against tr((s1 s2)^(1/2)) from the 2x2 formula
    # tr(sqrt(M)) = sqrt(tr M + 2 sqrt(det M)).
    a, b = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = a @ b
    cross = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    assert ev.frechet_distance(np.zeros(2), a, np.zeros(2), b) == pytest.approx(np.trace(a) + np.trace(b) - 2 * cross)
    assert ev.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ev.frechet_distance(mu2, s2, mu1, s1))


def test_frechet_distance_of_samples_approaches_the_exact_value():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 2)) * [1.0, 2.0]
    y = rng.normal(size=(20000, 2)) * [3.0, 2.0] + [1.0, 0.0]
    estimate = ev.frechet_distance(*ev.gaussian_statistics(x), *ev.gaussian_statistics(y))
    assert estimate == pytest.approx(1.0 + 4.0, rel=0.03)
    with pytest.raises(ValueError, match="N >= 2"):
        ev.gaussian_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="one D"):
        ev.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_frechet_distance_of_features_low_rank_path_equals_the_covariance_path():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 40)) @ rng.normal(size=(40, 40))
    y = rng.normal(size=(5, 40)) * 2 + 1  # N M <= D^2: the K K^T path
    # Rank-deficient covariances: the eigen path takes square roots of round-off, hence rel=1e-6.
    exact = ev.frechet_distance(*ev.gaussian_statistics(x), *ev.gaussian_statistics(y))
    assert ev.frechet_distance_of_features(x, y) == pytest.approx(exact, rel=1e-6)
    assert ev.frechet_distance_of_features(y, x) == pytest.approx(exact, rel=1e-6)
    assert ev.frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-6 * exact)
    many = rng.normal(size=(30, 4))  # N M > D^2: through the covariances
    assert ev.frechet_distance_of_features(many, many + [3, 0, 0, 0]) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="one D"):
        ev.frechet_distance_of_features(x, y[:, :3])


# --------------------------------------------------------------------------- the method table

def test_method_table_builds_the_presets_and_baselines():
    assert {"cyclediff_s2o_fast", "cyclediff_sbs_noised_fast", "cyclediff_sbs_inversion_fast", "cyclediff_s2o_paper",
            "cyclediff_sbs_paper", "cyclediff_s2o_paper_inversion", "cyclediff_sbs_noised_paper_inversion",
            "cyclediff_sbs_inversion_paper_inversion", "guidance_no_cycle_fast",
            "conditional_only_fast", "ddim_conditional_fast", "sdedit_fast", "cyclediff_sbs_inversion_region_fast",
            "cyclediff_s2o_region_fast", "guidance_no_cycle_region_fast", "conditional_only_region_fast",
            "ddim_conditional_region_fast", "sdedit_region_fast"} == set(ev.METHODS)
    assert {m: ev.method_options(m).region for m in ev.METHODS if "region" in m} == dict.fromkeys(
        [m for m in ev.METHODS if "region" in m], "inferred")
    assert all(ev.method_options(m).region == "none" for m in ev.METHODS if "region" not in m)
    opts = {m: ev.method_options(m) for m in ev.METHODS}
    assert opts["cyclediff_sbs_paper"].cycle_schema == "step_by_step"
    assert opts["cyclediff_sbs_paper"].cycle_target == "noised_origin"
    assert opts["cyclediff_sbs_paper"].step_by_step_renoise == "q_sample_prev"
    assert opts["cyclediff_sbs_inversion_fast"].cycle_target == "inversion"
    assert opts["cyclediff_s2o_paper"].timestep_respacing == "" and opts["cyclediff_s2o_paper"].inversion == "input"
    assert opts["cyclediff_s2o_paper_inversion"].inversion == "ddim"
    assert ev.method_options("cyclediff_s2o_paper_inversion", paper_steps=50).timestep_respacing == "50"
    assert opts["cyclediff_s2o_fast"].timestep_respacing == "25"
    assert opts["guidance_no_cycle_fast"].cycle_schema == "none"
    assert opts["guidance_no_cycle_fast"].weights.attribute_guidance_lambda > 0
    ddim = opts["ddim_conditional_fast"]
    assert (ddim.sampler, ddim.inversion) == ("ddim", "ddim") and not any(vars(ddim.weights).values())
    assert opts["sdedit_fast"].inversion == "sdedit" and not any(vars(opts["sdedit_fast"].weights).values())
    only = opts["conditional_only_fast"]
    assert (only.inversion, only.cycle_schema) == ("ddpm_noise", "none") and not any(vars(only.weights).values())
    assert ev.method_options("cyclediff_s2o_paper", paper_steps=50).timestep_respacing == "50"
    assert ev.method_options("cyclediff_s2o_fast", paper_steps=50).timestep_respacing == "25"
    assert ev.method_options("cyclediff_s2o_fast", steps=4).timestep_respacing == "4"
    with pytest.raises(ValueError, match="unknown method nope"):
        ev.parse_methods("sdedit_fast,nope")
    assert ev.parse_methods("all") == list(ev.METHODS) + [ev.GROUND_TRUTH]
    assert ev.parse_methods("all", synthetic=False) == list(ev.METHODS)
    with pytest.raises(ValueError, match="needs synthetic inputs"):
        ev.parse_methods("sdedit_fast,ground_truth", synthetic=False)


# --------------------------------------------------------------------------- the script on tiny models

def tiny_unet(folder):
    config = model_and_diffusion_defaults()
    config.update(image_size=SIZE, num_channels=16, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                  num_heads=2, diffusion_steps=40)
    torch.manual_seed(0)
    model, _ = create_model_and_diffusion(**config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an untrained ADM UNet outputs exactly zero
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.03)
    path = os.path.join(folder, "diffusion.pt")
    torch.save(model.state_dict(), path)
    save_model_config(config, os.path.join(folder, "diffusion.json"))
    return path


def tiny_classifier(path, seed, decisive=False):
    """A random 3-stage ResNet classifier; `decisive` pushes its readings far from 0.5 so that
    float round-off between batch layouts cannot flip a thresholded reading."""
    torch.manual_seed(seed)
    clf = AttributeClassifier(arch="resnet18_3stage", input_size=32, feature_dim=16, head_hidden_dim=8)
    if decisive:
        with torch.no_grad():
            for i, head in enumerate(clf.classify_headers.classify_headers):
                head[3].weight.mul_(0.1)
                head[3].bias.fill_(4.0 if i % 2 else -4.0)
    torch.save({"state_dict": clf.state_dict(), "opts": clf.opts}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_models")
    return dict(model=tiny_unet(str(root)), classifier=tiny_classifier(str(root / "classifier.pt"), 0),
                eval_classifier=tiny_classifier(str(root / "eval_classifier.pt"), 1, decisive=True))


def common_flags(models, out, **extra):
    flags = dict(model_path=models["model"], classifier_path=models["classifier"],
                 eval_classifier_path=models["eval_classifier"], num_identities=2, attributes=ATTRIBUTES,
                 steps=STEPS, batch_size=3, output_dir=str(out), device="cpu", methods="all")
    flags.update(extra)
    return [f"--{k}={v}" for k, v in flags.items()]


def read_results(out):
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))


def same_table(rows_a, rows_b):
    """Equal up to float32 round-off (batch layouts differ); seconds are wall time and may differ."""
    key = lambda r: (r["method"], int(r["identity"]), int(r["attribute"]))  # noqa: E731
    a, b = sorted(rows_a, key=key), sorted(rows_b, key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    for ra, rb in zip(a, b):
        for c in ev.SYNTHETIC_COLUMNS:
            if c in ("seconds",):
                continue
            if c == "unet_evals" and "region" in ra["method"]:
                continue  # the region's passes depend on which attributes share a batch
            if c in ("method", "identity", "attribute", "direction", "success", "preservation", "preservation_gt",
                     "unet_evals"):
                assert ra[c] == rb[c], (key(ra), c)
            elif math.isnan(float(ra[c])) or math.isnan(float(rb[c])):
                assert math.isnan(float(ra[c])) and math.isnan(float(rb[c])), (key(ra), c)
            else:
                assert float(ra[c]) == pytest.approx(float(rb[c]), rel=1e-3, abs=1e-4), (key(ra), c)


@pytest.fixture(scope="module")
def reference_run(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert evaluate_edits.main(common_flags(models, out)) == 0
    return out


def test_every_method_runs_end_to_end(reference_run):
    out = reference_run
    rows = read_results(out)
    assert len(rows) == (len(ev.METHODS) + 1) * 2 * 2
    # The ground-truth pseudo-method is the counterfactual itself: exact fidelity, no model calls.
    truth_rows = [r for r in rows if r["method"] == ev.GROUND_TRUTH]
    assert len(truth_rows) == 4
    for r in truth_rows:
        assert float(r["l1_gt"]) == 0 and float(r["psnr_gt"]) >= 99 and float(r["unet_evals"]) == 0
        assert float(r["l1_outside_mask"]) == 0
    rows = [r for r in rows if r["method"] != ev.GROUND_TRUTH]
    assert [tuple(r) for r in csv.reader(open(out / "results.csv"))][0] == ev.SYNTHETIC_COLUMNS
    # UNet evaluations per image from the step counts: k = round(strength * STEPS) steps inverted and
    # re-sampled; a guided step costs x0_hat (+ the cycle pass) and its sampling call reuses x0_hat's;
    # with cfg_scale != 1 every pass under the query attributes (sampling, x0_hat) is two.
    k_fast, k_paper = round(0.6 * STEPS), STEPS
    c = 2 if PRESETS["fast"]["cfg_scale"] != 1 else 1
    expected = {"cyclediff_s2o_fast": (2 + c) * k_fast, "cyclediff_sbs_noised_fast": (2 + c) * k_fast,
                "cyclediff_sbs_inversion_fast": (2 + c) * k_fast,
                # the released procedure does not invert: x0_hat and the cycle pass per step
                "cyclediff_s2o_paper": 2 * k_paper, "cyclediff_sbs_paper": 2 * k_paper,
                "cyclediff_s2o_paper_inversion": 3 * k_paper, "cyclediff_sbs_noised_paper_inversion": 3 * k_paper,
                "cyclediff_sbs_inversion_paper_inversion": 3 * k_paper,
                "guidance_no_cycle_fast": (1 + c) * k_fast, "conditional_only_fast": (1 + c) * k_fast,
                "ddim_conditional_fast": (1 + c) * k_fast, "sdedit_fast": c * k_fast}
    expected.update({f"{base[:-len('_fast')]}_region_fast": expected[base] for base in (
        "cyclediff_sbs_inversion_fast", "cyclediff_s2o_fast", "guidance_no_cycle_fast", "conditional_only_fast",
        "ddim_conditional_fast", "sdedit_fast")})
    for r in rows:
        # The region costs one pass per level (2) for the edit's attribute (the reference passes are
        # the edit-friendly inversion's), whatever else shares the batch; after a DDIM inversion or
        # SDEdit's noising no reference prediction is stored, so two passes per level.
        extra = ((4,) if r["method"] in ("ddim_conditional_region_fast", "sdedit_region_fast")
                 else (2,) if "region" in r["method"] else (0,))
        assert float(r["unet_evals"]) - expected[r["method"]] in extra, r["method"]
        assert math.isnan(float(r["region_iou"])) != ("region" in r["method"]), r["method"]
        assert r["success"] in ("0", "1") and 0 <= float(r["preservation"]) <= 1
        assert 0 <= float(r["l1_outside_mask"]) <= float(r["l1_gt"]) + 0.5 and float(r["seconds"]) > 0
        identity, a_ref = example_face(1000, int(r["identity"]))
        assert r["direction"] == ("add" if a_ref[int(r["attribute"])] == 0 else "remove")
    # The CSV's fidelity is measured against the counterfactual render(identity, a_q): recompute one
    # from the saved edit, the one closest to its input (where the two differ most).
    r = max(rows, key=lambda r: float(r["psnr_gt"]))
    identity, a_ref = example_face(1000, int(r["identity"]))
    a_q = a_ref.copy()
    a_q[int(r["attribute"])] ^= 1
    edited = to_tensor(evaluate_edits._read_png(
        evaluate_edits.edit_image_path(str(out), r["method"], int(r["identity"]), int(r["attribute"]))))
    truth, original = to_tensor(render(identity, a_q, SIZE)), to_tensor(render(identity, a_ref, SIZE))
    assert float(ev.metrics.psnr(edited, truth)) == pytest.approx(float(r["psnr_gt"]), abs=0.1)
    assert abs(float(ev.metrics.psnr(edited, original)) - float(r["psnr_gt"])) > 0.3  # not the input
    md = (out / "results.md").read_text()
    assert "## Per method and attribute" in md and "9 Eyeglasses" in md and "respaced 4-step chain" in md
    assert all(f"| {m} |" in md for m in list(ev.METHODS) + [ev.GROUND_TRUTH]) and "renderer's counterfactual" in md
    assert all((out / f"grid_{m}.png").is_file() for m in ev.METHODS) and (out / "summary.png").is_file()
    assert not [p for p in os.listdir(out) if ".tmp" in p]


def test_default_methods_are_the_fast_group_and_the_estimate_of_their_cost_holds(models, reference_run):
    fast = [m for m, (preset, _) in ev.METHODS.items() if preset == "fast"]
    assert evaluate_edits.build_parser().parse_args([]).methods == "fast"
    assert ev.parse_methods(evaluate_edits.expand_methods("fast", real=False)) == fast + [ev.GROUND_TRUTH]
    assert ev.parse_methods(evaluate_edits.expand_methods("fast", real=True), synthetic=False) == fast
    paper = ev.parse_methods(evaluate_edits.expand_methods("paper,sdedit_fast", real=False))
    assert paper[-1] == "sdedit_fast" and paper[:-1] and all("_paper" in m for m in paper[:-1])
    assert "cyclediff_sbs_inversion_fast" in fast and not any("_paper" in m for m in fast)
    help_text = evaluate_edits.build_parser().format_help()
    assert all(m.replace("_", "") in help_text.replace("\n", "").replace(" ", "").replace("_", "")
               for m in list(ev.METHODS) + [ev.GROUND_TRUTH])
    # The progress bar's first estimate of each method's cost is what the run measured.
    from optimization.attribute_editor import AttributeEditor

    editor = AttributeEditor(models["model"], models["classifier"], device="cpu")
    measured = {}  # a batch that mixes attributes costs an inferred region more: the least per method
    for r in read_results(reference_run):
        measured[r["method"]] = min(measured.get(r["method"], math.inf), float(r["unet_evals"]))
    for method in ev.METHODS:
        estimate = evaluate_edits.estimated_unet_evals(editor, ev.method_options(method, STEPS))
        assert estimate == measured[method], method


def test_progress_moves_with_every_unet_call_and_ctrl_c_prints_one_line(models, tmp_path, monkeypatch, capsys):
    seen, closed = [], []
    on_call, close = evaluate_edits._EditProgress._on_call, evaluate_edits._EditProgress.close

    def spy_call(self, *args):
        on_call(self, *args)
        seen.append(self.bar.n)

    def spy_close(self):
        closed.append((self.bar.n, self.bar.total, self.edits))
        close(self)

    monkeypatch.setattr(evaluate_edits._EditProgress, "_on_call", spy_call)
    monkeypatch.setattr(evaluate_edits._EditProgress, "close", spy_close)
    out = tmp_path / "progress"
    assert evaluate_edits.main(common_flags(models, out, methods="sdedit_fast,ground_truth")) == 0
    calls = PRESETS["fast"]["cfg_scale"] != 1 and 2 * round(0.6 * STEPS) or round(0.6 * STEPS)  # per image
    # 4 sdedit edits in batches of 3 and 1: the bar moves at every UNet call, not once per batch (the
    # contrast's two passes share one call: one call per step and batch)
    assert len(seen) == 2 * round(0.6 * STEPS) and seen == sorted(seen) and len(set(seen)) == len(seen)
    assert closed == [(4 * calls + 4, 4 * calls + 4, 8)]  # the ground truth's edits count one each

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_edits.AttributeEditor, "edit", interrupted)
    capsys.readouterr()
    assert evaluate_edits.main(common_flags(models, tmp_path / "stopped", methods="sdedit_fast")) == 130
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "interrupt" in line.lower()]
    assert len(lines) == 1 and "rerun the same command" in lines[0] and "Traceback" not in err, err


def test_per_direction_edits_k_identities_each_way(models, tmp_path):
    faces = evaluate_edits.SyntheticFaces(1000, None, SIZE, per_direction=3)
    for k in (9, 15):
        chosen = faces.inputs_for(k)
        labels = [int(example_face(1000, i)[1][k]) for i in chosen]
        assert sorted(labels) == [0, 0, 0, 1, 1, 1]
        # The first three of each kind: no identity before the last one chosen is skipped wrongly.
        for value in (0, 1):
            first = [i for i in range(max(chosen) + 1) if example_face(1000, i)[1][k] == value][:3]
            assert [i for i, v in zip(chosen, labels) if v == value] == first
    assert faces.inputs_for(20) == list(range(6))
    out = tmp_path / "balanced"
    flags = [f for f in common_flags(models, out, methods="sdedit_fast") if not f.startswith("--num_identities")]
    assert evaluate_edits.main(flags + ["--per_direction=2"]) == 0
    rows = read_results(out)
    for k in ("9", "15"):
        assert sorted(r["direction"] for r in rows if r["attribute"] == k) == ["add", "add", "remove", "remove"]
    md = (out / "results.md").read_text()
    assert "## Per method, attribute and direction" in md and "| sdedit_fast | 9 Eyeglasses | add | 2 |" in md


def test_mpi_sharded_run_gives_the_same_table(models, reference_run, tmp_path, mpi_env):
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not found: the sharded run needs MPI (apt install mpich)")
    out = tmp_path / "mpi"
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, os.path.join(ROOT, "scripts", "evaluate_edits.py"),
                        *common_flags(models, out), "--threads=1"], capture_output=True, text=True, timeout=300, env=mpi_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"partial_rank0.csv", "partial_rank1.csv"} <= set(os.listdir(out))
    same_table(read_results(out), read_results(reference_run))


def test_a_killed_run_resumes_without_redoing_finished_edits(models, reference_run, tmp_path):
    out = tmp_path / "resume"
    assert evaluate_edits.main(common_flags(models, out, max_edits=5)) == 0
    assert not (out / "results.csv").exists()
    first = ev.read_rows(str(out / "partial_rank0.csv"), ev.SYNTHETIC_COLUMNS)
    assert len(first) == 5
    # Mark the finished rows (a redone edit would overwrite the mark) and cut the file mid-line.
    for row in first:
        row["seconds"] = 1234.5
    ev.write_rows_atomic(str(out / "partial_rank0.csv"), first, ev.SYNTHETIC_COLUMNS)
    with open(out / "partial_rank0.csv", "a") as f:
        f.write("sdedit_fast,1,15,add,0,0.9")
    assert evaluate_edits.main(common_flags(models, out)) == 0
    rows = read_results(out)
    assert sum(float(r["seconds"]) == 1234.5 for r in rows) == 5
    same_table(rows, read_results(reference_run))
    # Another setting in the same directory is refused rather than mixed in.
    assert evaluate_edits.main(common_flags(models, out, seed=1)) == 2


def test_a_run_grows_with_per_direction_and_refuses_changed_method_options(models, tmp_path, monkeypatch):
    out = tmp_path / "grow"
    flags = [f for f in common_flags(models, out, methods="sdedit_fast", attributes="9")
             if not f.startswith("--num_identities")]
    assert evaluate_edits.main(flags + ["--per_direction=1"]) == 0
    small = read_results(out)
    rows = ev.read_rows(str(out / "partial_rank0.csv"), ev.SYNTHETIC_COLUMNS)
    for row in rows:  # a redone edit would lose the mark
        row["seconds"] = 1234.5
    ev.write_rows_atomic(str(out / "partial_rank0.csv"), rows, ev.SYNTHETIC_COLUMNS)
    assert evaluate_edits.main(flags + ["--per_direction=2"]) == 0
    grown = read_results(out)
    assert len(small) == 2 and len(grown) == 4
    assert sum(float(r["seconds"]) == 1234.5 for r in grown) == 2
    # The same method under other options would mix two methods under one name: refused.
    preset, overrides = ev.METHODS["sdedit_fast"]
    monkeypatch.setitem(ev.METHODS, "sdedit_fast", (preset, dict(overrides, cfg_scale=3.0)))
    assert evaluate_edits.main(flags + ["--per_direction=2"]) == 2
    # A run.json without the methods' options (an older version's) cannot vouch for its rows.
    monkeypatch.setitem(ev.METHODS, "sdedit_fast", (preset, overrides))
    recorded = json.loads((out / "run.json").read_text())
    del recorded["method_options"]
    (out / "run.json").write_text(json.dumps(recorded))
    assert evaluate_edits.main(flags + ["--per_direction=2"]) == 2


def test_labelled_dataset_gives_accuracy_reconstruction_error_and_fid(models, tmp_path):
    from PIL import Image
    import torchvision

    data = tmp_path / "data"
    data.mkdir()
    labels = []
    for i in range(3):
        identity, a = example_face(7, i)
        Image.fromarray(render(identity, a, SIZE)).save(data / f"{i:05d}.png")
        labels.append(torch.as_tensor(a, dtype=torch.float32))
    torch.save(torch.stack(labels), data / "attributes.pt")
    torch.manual_seed(0)  # random weights: features large enough that FID is far from zero
    inception = torchvision.models.Inception3(aux_logits=False, init_weights=True)
    torch.save(inception.state_dict(), tmp_path / "inception.pt")
    out = tmp_path / "real"
    flags = [f"--model_path={models['model']}", f"--classifier_path={models['classifier']}",
             f"--dataset_dir={data}", "--attributes=9,20", "--methods=sdedit_fast,cyclediff_s2o_fast",
             f"--steps={STEPS}", f"--output_dir={out}", "--device=cpu",
             f"--inception_weights={tmp_path / 'inception.pt'}",
             f"--eval_classifier_path={models['eval_classifier']}"]
    assert evaluate_edits.main(flags) == 0
    rows = read_results(out)
    assert len(rows) == 2 * 3 * 2 and "lpips" not in rows[0]  # no lpips package here: column omitted
    recon = [r for r in rows if r["attribute"] == "20"]
    assert all(r["direction"] == "none" and r["success"] == "nan" for r in recon)
    # The reconstruction error is L1 between the reconstruction and the input image on disk.
    r = recon[0]
    x = to_tensor(np.array(Image.open(data / f"{int(r['image']):05d}.png").convert("RGB")))
    edited = to_tensor(evaluate_edits._read_png(
        evaluate_edits.edit_image_path(str(out), r["method"], int(r["image"]), 20)))
    assert float(ev.metrics.l1(edited, x)) == pytest.approx(float(r["l1_input"]), abs=3e-3)
    # FID: each method's attribute edits (no reconstructions) against the three inputs.
    inception_net = ev.load_inception(str(tmp_path / "inception.pt"))
    inputs = inception_net(torch.cat([to_tensor(np.array(Image.open(data / f"{i:05d}.png").convert("RGB")))
                                      for i in range(3)])).numpy()
    overall = (out / "results.md").read_text().split("## Per method\n")[1]
    assert overall.splitlines()[1].endswith("| fid |")
    for method in ("sdedit_fast", "cyclediff_s2o_fast"):
        edits = inception_net(torch.cat([to_tensor(evaluate_edits._read_png(
            evaluate_edits.edit_image_path(str(out), method, i, 9))) for i in range(3)])).numpy()
        cell = next(line for line in overall.splitlines() if line.startswith(f"| {method} |")).split("|")[-2]
        assert float(cell) == pytest.approx(ev.frechet_distance_of_features(edits, inputs), rel=1e-6)
        assert float(cell) > 0


@pytest.mark.parametrize("flag,message", [
    ("--methods=cyclediff_s2o_fast,nope", "unknown method nope"),
    ("--attributes=9,21", "attribute index 21 out of range"),
    ("--model_path=/nonexistent/diffusion.pt", "diffusion checkpoint (--model_path) not found"),
    ("--eval_classifier_path=/nonexistent/eval.pt", "evaluation classifier"),
    ("--per_direction=2", "not with --dataset_dir or --num_identities"),
])
def test_bad_input_is_one_clear_error(models, tmp_path, capsys, flag, message):
    out = tmp_path / "bad"
    assert evaluate_edits.main(common_flags(models, out) + [flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists() or not os.listdir(out)


def test_bad_input_exits_2_from_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate_edits.py"),
                        "--model_path", str(tmp_path / "missing.pt"), "--output_dir", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the joint and non-editable splits

def test_split_specs_edit_codes_and_renderer_rules():
    assert ev.parse_joint_pairs(None) == [] and ev.parse_joint_pairs("none") == []
    assert ev.parse_joint_pairs("default") == [ev.joint_code(a, b) for a, b in ev.DEFAULT_JOINT_PAIRS]
    assert ev.parse_joint_pairs(" 15+9, 2+12") == [915, 212]  # either order names one pair
    for code, flipped, label in ((915, [9, 15], "09+15"), (9, [9], "09"), (20, [], "20"), (1118, [11, 18], "11+18")):
        assert ev.edit_attributes(code) == flipped and ev.edit_label(code) == label
    assert ev.edit_name(915) == "9+15 Eyeglasses+Smiling" and ev.edit_name(3) == "3 Bald"
    a_ref = torch.zeros(20)
    a_ref[15] = 1
    assert ev.edit_direction(a_ref, 915) == "add+remove" and ev.edit_direction(a_ref, 20) == "none"
    assert ev.edit_seed(0, 2, 915) == ev.edit_seed(0, 2, 9) == 2009 and ev.edit_seed(5, 1, 20) == 1025
    assert ev.parse_noneditable("all") == list(ev.NON_EDITABLE_ATTRIBUTES) and len(ev.NON_EDITABLE_ATTRIBUTES) == 13
    assert not set(ev.NON_EDITABLE_ATTRIBUTES) & set(evaluate_edits.EDITABLE_ATTRIBUTES)
    assert ev.parse_noneditable("3, 16") == [3, 16] and ev.parse_noneditable("none") == []
    # The sampler's hard rules, which the renderer would draw otherwise than labelled.
    a = torch.zeros(20)
    assert ev.renderer_rule_broken(a) is None
    a[[5, 6]] = 1
    assert ev.renderer_rule_broken(a) == "two hair colours"
    a = torch.zeros(20)
    a[[3, 4]] = 1
    assert ev.renderer_rule_broken(a) == "bangs on a bald head"
    a = torch.zeros(20)
    a[[16, 17]] = 1
    assert ev.renderer_rule_broken(a) == "straight and wavy hair"


def test_flips_the_renderer_cannot_draw_are_passed_over():
    faces = evaluate_edits.SyntheticFaces(1000, 40, SIZE)  # identities 17, 24 and 37 are bald
    bald = [i for i in range(40) if example_face(1000, i)[1][3]]
    plain_bald = next(i for i in bald if not example_face(1000, i)[1][16] and not example_face(1000, i)[1][17])
    assert faces.flip_problem(plain_bald, 4) == "bangs on a bald head"
    assert faces.flip_problem(plain_bald, 16) == "no visible change"  # no hair on top to straighten
    assert faces.flip_problem(plain_bald, 3) is None  # growing the hair back is drawn
    kept = faces.inputs_for(4, drawable_only=True)
    assert not set(bald) & set(kept) and faces.left_out[4] == {"bangs on a bald head": len(bald)}
    assert faces.inputs_for(4) == list(range(40))  # the single split keeps every identity
    for i in kept:
        assert faces.flip_problem(i, 4) is None
    # A pair with per_direction K: the first K identities of each of the four combinations.
    faces = evaluate_edits.SyntheticFaces(1000, None, SIZE, per_direction=2)
    chosen = faces.inputs_for(ev.joint_code(9, 19), drawable_only=True)
    combos = [tuple(int(example_face(1000, i)[1][k]) for k in (9, 19)) for i in chosen]
    assert sorted(combos) == sorted([(0, 0), (0, 1), (1, 0), (1, 1)] * 2)
    mask = faces.allowed_mask(chosen[0], 915)
    assert torch.equal(mask, faces.allowed_mask(chosen[0], 9) | faces.allowed_mask(chosen[0], 15))


def _readings(eval_classifier_path, image_path):
    from preprocess.classifier import load_classifier

    clf = load_classifier(eval_classifier_path, device="cpu")
    with torch.no_grad():
        return clf(to_tensor(evaluate_edits._read_png(image_path)).float())[0] > 0.5


def test_joint_split_needs_both_attributes_and_resumes(models, tmp_path):
    out = tmp_path / "joint"
    flags = [f for f in common_flags(models, out, methods=f"{ev.DEFAULT_METHOD},{ev.GROUND_TRUTH}", attributes="9",
                                     joint_pairs="15+9") if not f.startswith("--num_identities")]
    flags.append("--per_direction=1")
    # A killed run: the 4 single edits and the first joint one; mark them (a redone edit loses the mark).
    assert evaluate_edits.main(flags + ["--max_edits=5"]) == 0
    first = ev.read_rows(str(out / "partial_rank0.csv"), ev.SYNTHETIC_COLUMNS)
    assert [r["attribute"] for r in first] == [9, 9, 9, 9, 915]
    for row in first:
        row["seconds"] = 1234.5
    ev.write_rows_atomic(str(out / "partial_rank0.csv"), first, ev.SYNTHETIC_COLUMNS)
    assert evaluate_edits.main(flags) == 0
    single = read_results(out)
    with open(out / "results_joint.csv", newline="") as f:
        joint = list(csv.DictReader(f))
    assert {r["attribute"] for r in single} == {"9"} and len(single) == 4  # no joint edit among the single ones
    assert len(joint) == 2 * 4 and {r["pair"] for r in joint} == {"9+15"}
    assert sum(float(r["seconds"]) == 1234.5 for r in single) == 4
    assert sum(float(r["seconds"]) == 1234.5 for r in joint) == 1
    for method in (ev.DEFAULT_METHOD, ev.GROUND_TRUTH):
        rows = [r for r in joint if r["method"] == method]
        assert sorted(r["direction"] for r in rows) == ["add+add", "add+remove", "remove+add", "remove+remove"]
        # One file per edit: a pair's name cannot collide with the single edit of the same identity.
        names = set(os.listdir(out / "images" / method))
        assert len(names) == 2 + 4 and sum("_09+15.png" in n for n in names) == 4
        shared = {int(r["identity"]) for r in rows} & {int(r["identity"]) for r in single}
        assert shared and all({f"{i:05d}_09.png", f"{i:05d}_09+15.png"} <= names for i in shared)
    # success: both flipped attributes read as the query by the evaluation classifier.
    either_only = 0
    for r in joint:
        identity = int(r["identity"])
        a_q = np.array(example_face(1000, identity)[1])
        a_q[[9, 15]] ^= 1
        read = _readings(models["eval_classifier"],
                         evaluate_edits.edit_image_path(str(out), r["method"], identity, 915)).numpy()
        hits = [bool(read[k]) == bool(a_q[k]) for k in (9, 15)]
        assert float(r["success"]) == float(all(hits)), r
        either_only += any(hits) and not all(hits)
        if r["method"] == ev.GROUND_TRUTH:
            # The counterfactual changes pixels only inside the union of the two masks.
            assert float(r["psnr_gt"]) >= 99 and float(r["l1_outside_mask"]) == 0
        else:
            assert 0 <= float(r["region_iou"]) <= 1
    assert either_only > 0  # some edits read one attribute right and not the other: success 0
    md = (out / "results.md").read_text()
    assert "## Per method and attribute" in md and "## Joint edits" in md
    section = md.split("## Joint edits")[1]
    assert "| 9+15 Eyeglasses+Smiling |" in section and "### Per method, with 95 % bootstrap intervals" in section
    assert f"### Paired differences against {ev.DEFAULT_METHOD}" in section and "add+remove" in section
    assert (out / f"grid_joint_{ev.GROUND_TRUTH}.png").is_file() and (out / f"grid_{ev.GROUND_TRUTH}.png").is_file()


def test_noneditable_split_gets_its_own_table(models, tmp_path):
    out = tmp_path / "noneditable"
    flags = [f for f in common_flags(models, out, methods=ev.GROUND_TRUTH, attributes="none", noneditable="4,5")
             if not f.startswith("--num_identities")]
    assert evaluate_edits.main(flags + ["--per_direction=2"]) == 0
    assert not (out / "results.csv").exists()  # no single split
    with open(out / "results_noneditable.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for k in ("4", "5"):
        assert sorted(r["direction"] for r in rows if r["attribute"] == k) == ["add", "add", "remove", "remove"]
    for r in rows:
        a_q = np.array(example_face(1000, int(r["identity"]))[1])
        a_q[int(r["attribute"])] ^= 1
        assert ev.renderer_rule_broken(a_q) is None and float(r["psnr_gt"]) >= 99
    md = (out / "results.md").read_text()
    assert "## Per method and attribute" not in md and "--attributes none" in md
    section = md.split("## Non-editable attributes")[1]
    assert "| ground_truth | 4 Bangs | 4 |" in section and "| ground_truth | 5 Black_Hair |" in section
    assert "### Per method, with 95 % bootstrap intervals" in section and "Identities passed over" in section
    assert "two hair colours" in section  # adding black hair to a blond identity is left out
    assert (out / f"grid_noneditable_{ev.GROUND_TRUTH}.png").is_file()


@pytest.mark.parametrize("flag,message", [
    ("--joint_pairs=9+21", "attribute index 21 out of range"),
    ("--joint_pairs=9+9", "pairs attribute 9 with itself"),
    ("--joint_pairs=9+3", "3 (Bald) is not editable"),
    ("--joint_pairs=9+15,15+9", "listed twice"),
    ("--joint_pairs=9,15", "is not a pair"),
    ("--noneditable=9", "is editable"),
    ("--noneditable=3,x", "'x' is not an attribute index"),
])
def test_bad_split_specs_are_one_error_before_models_load(models, tmp_path, capsys, monkeypatch, flag, message):
    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(evaluate_edits, "AttributeEditor", no_models)
    out = tmp_path / "bad"
    assert evaluate_edits.main(common_flags(models, out) + [flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists() or not os.listdir(out)
    assert evaluate_edits.main(common_flags(models, out, attributes="none")) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert evaluate_edits.main(common_flags(models, out, dataset_dir=str(tmp_path), joint_pairs="default")) == 2
    assert "need synthetic faces" in capsys.readouterr().err


def test_diverged_edits_are_named_in_the_report_not_hidden_by_the_means():
    nan = float("nan")
    rows = [dict(method="a", psnr_gt=30.0), dict(method="a", psnr_gt=nan), dict(method="b", psnr_gt=nan),
            dict(method="b", psnr_gt=nan), dict(method="c", psnr_gt=25.0), dict(method=ev.GROUND_TRUTH, psnr_gt=nan)]
    notes = evaluate_edits.diverged_notes(rows, synthetic=True)
    assert notes == [f"**{m}: {c} edit(s) diverged** (non-finite image): counted as failures, left out of the "
                     f"pixel measures' means" for m, c in (("a", 1), ("b", 2))]
    assert evaluate_edits.diverged_notes([dict(method="a", l1_input=0.1)], synthetic=False) == []


def test_identity_measures_are_cosines_of_the_identity_embeddings():
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    edited = x.clone()
    edited[1] = -x[1]
    truth = x.clone()
    truth[2] = torch.rand(3, 8, 8)
    a_ref = torch.zeros(3, 20)
    allowed = torch.zeros(3, 8, 8, dtype=torch.bool)

    def embed(images):  # a stand-in identity network: the normalised mean colour and its square
        mean = images.mean(dim=(2, 3))
        return torch.nn.functional.normalize(torch.cat([mean, mean ** 2 + 0.1], dim=1), dim=1)

    m = ev.synthetic_edit_metrics(edited, x, truth, allowed, a_ref, a_ref, a_ref, a_ref, identity_fn=embed)
    expected_input = (embed(edited) * embed(x)).sum(1).double()
    expected_gt = (embed(edited) * embed(truth)).sum(1).double()
    torch.testing.assert_close(m["identity_input"], expected_input)
    torch.testing.assert_close(m["identity_gt"], expected_gt)
    assert m["identity_input"][0] == pytest.approx(1.0) and m["identity_input"][1] < 1.0
    assert m["identity_gt"][2] < 1.0
    without = ev.synthetic_edit_metrics(edited, x, truth, allowed, a_ref, a_ref, a_ref, a_ref)
    assert torch.isnan(without["identity_input"]).all() and torch.isnan(without["identity_gt"]).all()


def test_variants_add_methods_with_parsed_options():
    names = ev.register_variants("v_test_w=cyclediff_s2o_paper:cycle_reconstruct_lambda=4000,weight_resolution=0,"
                                 "guide_reconstructions=False; v_test_nocycle=cyclediff_s2o_paper:cycle_schema=none")
    try:
        assert names == ["v_test_w", "v_test_nocycle"]
        # The same definition again (the flags are checked twice under mpiexec) is accepted.
        assert ev.register_variants("v_test_nocycle=cyclediff_s2o_paper:cycle_schema=none") == ["v_test_nocycle"]
        opts = ev.method_options("v_test_w", paper_steps=100)
        base = ev.method_options("cyclediff_s2o_paper", paper_steps=100)
        assert opts.weights.cycle_reconstruct_lambda == 4000.0 and opts.weight_resolution == 0
        assert opts.guide_reconstructions is False and opts.timestep_respacing == "100"
        assert opts.weights.attribute_guidance_lambda == base.weights.attribute_guidance_lambda
        assert ev.method_options("v_test_nocycle").cycle_schema == "none"
        for bad, message in (("x=nope:cfg_scale=2", "unknown base"), ("y=cyclediff_s2o_paper:colour=2", "unknown option"),
                             ("z=cyclediff_s2o_paper:cfg_scale=abc", "z"), ("v_test_w=cyclediff_s2o_paper:", "already"),
                             ("ground_truth=cyclediff_s2o_paper:", "already")):
            with pytest.raises(ValueError, match=message):
                ev.register_variants(bad)
    finally:
        for name in ("v_test_w", "v_test_nocycle"):
            ev.METHODS.pop(name, None)
