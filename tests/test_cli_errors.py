"""`python main.py` never gives a silent wrong result: every bad input is one `error:` line
with exit status 2, found before any model loads and before anything is written; every edit's report
says what was edited, judges it with a margin by both classifiers, and warns when the result cannot be
trusted (a destroyed image, a diverged guidance, an input unlike the training faces).

In-process (`main.run`), with the tiny models of test_editor.py, so that each case costs no import.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import main as main_script
from optimization import attribute_editor as ae
from optimization import domain
from optimization.image_io import load_dataset_item, synthetic_seed
from test_editor import SIZE, attrs, make_dataset, save_tiny_classifier, save_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "model").mkdir()
    data = make_dataset(root / "data")
    return dict(model=save_tiny_model(str(root / "model"), scale=1e-4),
                classifier=save_tiny_classifier(str(root / "classifier.pt")), data=str(data), root=root)


def base_args(models, out):
    return ["--model_path", models["model"], "--attribute_cpk_path", models["classifier"],
            "--eval_classifier_path", "", "--domain_reference", "none", "--dataset_dir", models["data"],
            "--output_path", str(out), "--timestep_respacing", "4", "--no_progress"]


def run_cli(capsys, argv):
    start = time.time()
    rc = main_script.run(argv)
    took = time.time() - start
    out, err = capsys.readouterr()
    return rc, out, err, took


def _text_checkpoint(tmp, models):
    path = tmp / "model.pt"
    path.write_text("checkpoint goes here\n")  # torch's refusal of this file advises weights_only=False
    (tmp / "model.json").write_text(open(models["model"][:-3] + ".json").read())
    return ["--model_path", str(path)]


def _lfs_pointer(tmp, models):
    path = tmp / "model.pt"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 3\n")
    (tmp / "model.json").write_text(open(models["model"][:-3] + ".json").read())
    return ["--model_path", str(path)]


def _no_json(tmp, models):
    path = tmp / "model.pt"
    path.write_bytes(open(models["model"], "rb").read())
    return ["--model_path", str(path)]


def _table(values):
    def setup(tmp, models):
        data = make_dataset(tmp / "labelled")
        torch.save(values() if callable(values) else values, data / "attributes.pt")
        return ["--dataset_dir", str(data), "--image_index", "1"]
    return setup


def _celeba_signs():
    return attrs(5) * 2 - 1


def _existing_file(tmp, models):
    (tmp / "taken").write_text("")
    return ["--output_path", str(tmp / "taken")]


def _missing_image(tmp, models):
    data = make_dataset(tmp / "gappy")
    os.remove(data / "00002.png")
    return ["--dataset_dir", str(data), "--image_index", "1"]


def _photo(tmp, models):
    from PIL import Image
    Image.new("RGB", (20, 20)).save(tmp / "me.png")
    return ["--init_image", str(tmp / "me.png"), "--image_index", "0"]


# (case id, flags or a setup(tmp, models) returning flags, what the one line must say)
BAD_INPUTS = [
    ("duplicate attribute", ["--attribute_index", "9,9"], "attribute index 9 given twice"),
    ("attribute out of range", ["--attribute_index", "21"], "out of range"),
    ("attribute not a number", ["--attribute_index", "glasses"], "integers 0-20"),
    ("reconstruction with edits", ["--attribute_index", "9,20"], "cannot be combined"),
    ("duplicate image", ["--image_index", "3,3"], "image index 3 given twice"),
    ("overlapping ranges", ["--image_index", "0-3,2-4"], "image index 2 given twice"),
    ("negative image", ["--image_index", "-1"], "image index must be >= 0"),
    ("image not a number", ["--image_index", "abc"], "non-negative integer"),
    ("reversed range", ["--image_index", "4-2"], "ends before it starts"),
    ("image beyond the dataset", ["--image_index", "9"], "out of range"),
    ("batch size 0", ["--batch_size", "0"], "--batch_size must be at least 1"),
    ("iterations 0", ["--iterations_num", "0"], "--iterations_num must be at least 1"),
    ("batch size not a number", ["--batch_size", "x"], "invalid int value"),
    ("negative seed", ["--seed", "-1"], "--seed must be >= 0"),
    ("unknown flag", ["--attribute_indx", "9"], "unrecognized arguments"),
    ("bad preset", ["--preset", "slow"], "invalid choice"),
    ("nan weight", ["--attribute_guidance_lambda", "nan"], "attribute_guidance_lambda must be a finite number"),
    ("inf weight", ["--cycle_reconstruct_lambda", "inf"], "cycle_reconstruct_lambda must be a finite number"),
    ("negative weight", ["--range_lambda", "-1"], "range_lambda must be a finite number >= 0"),
    ("unknown region attribute", ["--region_attribute_thresholds", "Mustache=0.1"], "region_attribute_thresholds must"),
    ("output path is a file", _existing_file, "is an existing file, not a folder"),
    ("output file with a folder", ["-o", "sub/grid.png"], "must be a file name"),
    ("output file not an image", ["-o", "grid.txt"], "the grid is an image"),
    ("unknown device", ["--device", "tpu9"], "is not a device"),
    ("text file as checkpoint", _text_checkpoint, "is not a PyTorch checkpoint (it is a text file)"),
    ("git lfs pointer", _lfs_pointer, "Git LFS pointer"),
    ("checkpoint without its json", _no_json, "no hyper-parameter file"),
    ("missing checkpoint", ["--model_path", "/nonexistent/model.pt"], "checkpoint not found"),
    ("missing classifier", ["--attribute_cpk_path", "/nonexistent/c.pt"], "checkpoint not found"),
    ("missing evaluation classifier", ["--eval_classifier_path", "/nonexistent/e.pt"], "checkpoint not found"),
    ("missing identity weights", ["--ir_se50_weights", "/nonexistent/ir.pth"], "checkpoint not found"),
    ("model size mismatch", ["--model_output_size", "64"], "is a 16x16 model"),
    ("missing dataset", ["--dataset_dir", "/nonexistent/data"], "dataset directory not found"),
    ("bad synthetic seed", ["--dataset_dir", "synthetic:abc"], "non-negative integer seed"),
    ("missing image file", _missing_image, "image 2 is missing"),
    ("missing init image", ["--init_image", "/nonexistent/me.jpg"], "image not found"),
    ("init image and index", _photo, "--init_image or --image_index, not both"),
    ("query and index", ["-qa", ",".join(["0"] * 20), "--attribute_index", "9"], "not both"),
    ("short query vector", ["-qa", "1,0"], "20 comma-separated"),
    ("non-binary reference", ["-a", ",".join(["2"] * 20)], "0 or 1"),
    ("celeba -1/+1 labels", _table(_celeba_signs), "-1/+1 labels (CelebA's convention)"),
    ("19 label columns", _table(lambda: attrs(5)[:, :19]), "19 attributes per image, the editor has 20"),
    ("labels not a tensor", _table({"labels": [1, 0]}), "must hold a 2-D tensor"),
    ("labels 0.5", _table(lambda: attrs(5) * 0.5), "must be 0 or 1; found 0.5"),
    ("label rows mismatch", _table(lambda: attrs(4)), "has 4 rows but"),
    ("bad domain reference", ["--domain_reference", "/nonexistent/faces"], "--domain_reference"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("cuda without a GPU", ["--device", "cuda"], "no CUDA GPU is available"))


@pytest.mark.parametrize("flags,expected", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_before_any_model_and_leaves_nothing(models, tmp_path, capsys, monkeypatch,
                                                                          flags, expected):
    # Any model load would be a failure of "checked before any model loads".
    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the input was validated")
    monkeypatch.setattr(ae, "AttributeEditor", no_model)
    if callable(flags):
        flags = flags(tmp_path, models)
    out = tmp_path / "out"
    rc, stdout, err, took = run_cli(capsys, base_args(models, out) + flags)
    assert rc == 2, (stdout, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err and "weights_only" not in err
    assert not out.exists()  # no folder, no file before validation passed
    assert took < 2.0, f"{took:.2f} s to refuse the input"


def test_argument_errors_are_found_before_torch_is_imported(tmp_path):
    # `python main.py` checks the input, model and output flags with the standard library only: an
    # argument error costs the interpreter's start, not torch's import (seconds on a small CPU).
    for flags in (["--attribute_index", "9,9"], ["--image_index", "-1"], ["--batch_size", "0"],
                  ["--range_lambda", "nan"], ["--device", "tpu"], ["--model_path", str(tmp_path / "none.pt")]):
        code = ("import sys, main; rc = main.run(sys.argv[1:]); "
                "print(rc, 'torch' in sys.modules, 'PIL' in sys.modules)")
        r = subprocess.run([sys.executable, "-c", code, "--output_path", str(tmp_path / "out"), *flags], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.stdout.split() == ["2", "False", "False"], (flags, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_light_checks_match_the_full_definitions():
    from dataclasses import fields

    from optimization.arguments import WEIGHT_NAMES
    from optimization.guidance import GuidanceWeights
    from optimization.queries import NUM_ATTRIBUTES, RECONSTRUCTION_INDEX
    from preprocess import attributes

    assert NUM_ATTRIBUTES == len(attributes.ATTRIBUTE_NAMES) and RECONSTRUCTION_INDEX == attributes.RECONSTRUCTION_INDEX
    assert set(WEIGHT_NAMES) == {f.name for f in fields(GuidanceWeights)}


def test_checkpoint_of_other_python_objects_is_refused_in_one_line(models, tmp_path, capsys):
    # A real torch.save file, but of objects torch will not unpickle safely: caught where it is read.
    path = tmp_path / "model.pt"
    torch.save({"args": argparse.Namespace(lr=1)}, path)
    (tmp_path / "model.json").write_text(open(models["model"][:-3] + ".json").read())
    out = tmp_path / "out"
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--model_path", str(path)])
    assert rc == 2 and err.count("\n") == 1, err
    assert "is not a PyTorch checkpoint of tensors" in err and "weights_only" not in err
    assert not out.exists()


# --------------------------------------------------------------------------- parsing

def test_index_parsing_refuses_duplicates_and_malformed_lists():
    assert ae.parse_index_list("0-3,7") == [0, 1, 2, 3, 7]
    assert ae.parse_index_list(" 5 ") == [5]
    for bad in ("3,3", "0-5,3", "-1", "abc", "1-", "5-3", "", "1,,2", "1.5"):
        with pytest.raises(ValueError):
            ae.parse_index_list(bad)
    assert ae.parse_attribute_indices("9,15") == [9, 15]
    for bad in ("9,9", "15,9,15", "20,20", "9,", "1e1"):
        with pytest.raises(ValueError):
            ae.parse_attribute_indices(bad)


def test_synthetic_spec_is_exact():
    assert synthetic_seed("synthetic") == 1000 and synthetic_seed("synthetic:7") == 7
    assert synthetic_seed("synthetic64") is None and synthetic_seed("data/synthetic:1") is None
    with pytest.raises(ValueError, match="seed"):
        synthetic_seed("synthetic:-1")


def test_attribute_table_problems_name_the_file(tmp_path):
    data = make_dataset(tmp_path / "d")
    for table, message in ((attrs(5) * 2 - 1, "CelebA's convention"), (attrs(5)[:, :19], "19 attributes"),
                           ([1, 0], "2-D tensor"), (attrs(6), "6 rows")):
        torch.save(table, data / "attributes.pt")
        with pytest.raises(ValueError, match=message) as caught:
            load_dataset_item(str(data), 0, SIZE)
        assert str(data / "attributes.pt") in str(caught.value) and "\n" not in str(caught.value)
    torch.save(attrs(5), data / "attributes.pt")
    x, a = load_dataset_item(str(data), 4, SIZE)
    assert torch.equal(a, attrs(5)[4])


# --------------------------------------------------------------------------- judging

def test_success_needs_a_margin_and_nan_never_succeeds():
    a_ref = torch.zeros(20)
    a_q = a_ref.clone()
    a_q[9] = 1  # add eyeglasses
    probs = torch.full((20,), 0.5)
    for p, ok in ((0.5001, False), (0.59, False), (0.6, True), (0.97, True), (float("nan"), False)):
        probs[9] = p
        assert ae.margin_success(probs, a_q, [9]) is ok, p
    a_ref[15] = 1  # remove a smile
    a_q = a_ref.clone()
    a_q[15] = 0
    for p, ok in ((0.4999, False), (0.41, False), (0.4, True), (0.02, True)):
        probs[15] = p
        assert ae.margin_success(probs, a_q, [15]) is ok, p
    assert ae.margin_success(probs, a_q, []) is None  # a reconstruction is never a success


def test_what_was_flipped_comes_from_the_vectors():
    a = attrs()[0]
    fake = lambda x: torch.full((1, 20), 0.99)  # noqa: E731  (a classifier reading every attribute as present)

    class Judge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return fake(x)

    x = torch.zeros(1, 3, SIZE, SIZE)
    rec, found = ae.judge_edit(x, x, a, a.clone(), {"guidance": Judge()}, {"guidance": torch.full((20,), 0.99)})
    assert rec["kind"] == "reconstruction" and rec["edit_success"] is None and rec["flipped"] == [] and not found


def _edit_json(out, name):
    return json.loads((out / name).read_text())


def test_query_equal_to_reference_is_reported_as_a_reconstruction(models, tmp_path, capsys):
    out = tmp_path / "out"
    vector = ",".join(str(int(v)) for v in attrs(5)[2])
    rc, stdout, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "2", "-a", vector, "-qa", vector])
    assert rc == 0, err
    summary = _edit_json(out, "00002_20_edit.json")
    assert [e["query"] for e in summary["edits"]] == ["20"]
    assert all(e["kind"] == "reconstruction" and e["edit_success"] is None for e in summary["edits"])
    assert "equal the reference" in summary["notes"][0] and "note:" in stdout
    assert "success_rule" in summary and "margin 0.1" in summary["success_rule"]


def test_outputs_are_named_by_the_edit_and_kept_across_runs(models, tmp_path, capsys):
    out = tmp_path / "out"
    for index in ("9", "15", "9,15"):
        rc, stdout, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1", "--attribute_index", index])
        assert rc == 0, err
    for label in ("9", "15", "9+15"):
        assert (out / f"00001_{label}_grid.png").is_file()
        summary = _edit_json(out, f"00001_{label}_edit.json")
        assert summary["edit"] == label and summary["grid"].endswith(f"00001_{label}_grid.png")
    assert "report: " in stdout and "00001_9+15_edit.json" in stdout
    # -o names the whole set of one input (grid, edit images, report); with several inputs {index}_{name}.
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "0", "-o", "mine.png"])
    assert rc == 0, err
    assert {"mine.png", "mine_9.png", "mine_20.png", "mine_edit.json"} <= set(os.listdir(out))
    assert not (out / "00000_9_edit.json").exists()
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "3-4", "-o", "mine.png"])
    assert rc == 0, err
    assert (out / "00003_mine.png").is_file() and (out / "00004_mine_edit.json").is_file()


def test_rerun_with_other_settings_keeps_the_earlier_edit(models, tmp_path, capsys):
    """Another model or preset on the same face and attribute must not replace the earlier set."""
    out = tmp_path / "out"
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1"])
    assert rc == 0, err
    assert {"00001_9_9.png", "00001_9_20.png", "00001_9_grid.png", "00001_9_edit.json"} <= set(os.listdir(out))
    # the same settings again: the same set, replaced by an identical run
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1"])
    assert rc == 0 and not any(n.startswith("00001_9_run2") for n in os.listdir(out)), err
    first = {n: (out / n).read_bytes() for n in os.listdir(out)}
    # other settings: a new set beside the first, which survives byte for byte
    rc, stdout, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1", "--seed", "5"])
    assert rc == 0, err
    assert {"00001_9_run2_9.png", "00001_9_run2_grid.png", "00001_9_run2_edit.json"} <= set(os.listdir(out))
    assert "00001_9_run2_edit.json" in stdout
    assert {n: (out / n).read_bytes() for n in first} == first
    assert _edit_json(out, "00001_9_run2_edit.json")["flags"]["seed"] == 5
    # -o naming a set another run wrote: refused before any model loads, nothing replaced
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1", "-o", "mine.png"])
    assert rc == 0, err
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1", "-o", "mine.png", "--seed", "7"])
    assert rc == 2 and err.count("\n") == 1 and "other settings" in err and "--overwrite" not in err, err
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    (out / "photo.png").write_bytes(b"the user's own picture")
    rc, _, err, _ = run_cli(capsys, base_args(models, out) + ["--image_index", "1", "-o", "photo.png"])
    assert rc == 2 and "is not from this edit" in err, err
    assert (out / "photo.png").read_bytes() == b"the user's own picture"


def test_console_shows_preservation_and_unasked_changes():
    edit = dict(kind="edit", edit_success=True, evaluation=None, guidance=dict(
        success=True, flipped_readings={"Eyeglasses": 0.93}, preserved=0.947, changed_unasked=["Narrow_Eyes"]))
    verdict = main_script._verdict(edit)
    assert "preservation 0.947" in verdict and "also changed unasked: Narrow_Eyes" in verdict


def test_progress_bar_over_edits(models, tmp_path, capsys):
    args = [a for a in base_args(models, tmp_path / "out") if a != "--no_progress"]
    rc, _, err, _ = run_cli(capsys, args + ["--image_index", "0-1", "--attribute_index", "9", "--batch_size", "2"])
    assert rc == 0
    assert "edits: 100%" in err and "4/4" in err


def test_huge_weight_is_reported_not_a_success(models, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err, _ = run_cli(capsys, base_args(models, out) + [
        "--image_index", "1", "--attribute_guidance_lambda", "1e30", "--guidance_max_step", "0"])
    assert rc == 0, err
    summary = _edit_json(out, "00001_9_edit.json")
    edit = summary["edits"][1]
    assert edit["edit_success"] is False and edit["warnings"], edit
    assert summary["warnings"] and "warning: edit 9:" in stdout


def test_low_psnr_edit_is_a_warning_and_no_success():
    x = -torch.ones(1, 3, SIZE, SIZE)  # black; uniform noise is about 5 dB from it
    noise = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = torch.zeros(20)
    q = a.clone()
    q[9] = 1

    class Fooled(torch.nn.Module):  # reads eyeglasses on anything
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.full((x.shape[0], 20), 0.99)

    rec, found = ae.judge_edit(noise, x, a, q, {"guidance": Fooled()}, {"guidance": torch.full((20,), 0.99)})
    assert rec["guidance"]["success"] is True  # the classifier is fooled ...
    assert rec["edit_success"] is False and "dB from its input" in found[0]  # ... the report is not


def test_evaluation_classifier_is_reported_beside_the_guidance_one(models, tmp_path, capsys):
    other = tmp_path / "eval.pt"
    save_tiny_classifier(str(other))
    out = tmp_path / "out"
    args = base_args(models, out)
    args[args.index("--eval_classifier_path") + 1] = str(other)
    rc, stdout, err, _ = run_cli(capsys, args + ["--image_index", "1", "--attribute_index", "15"])
    assert rc == 0, err
    summary = _edit_json(out, "00001_15_edit.json")
    edit = summary["edits"][1]
    assert set(edit["guidance"]) >= {"after", "success", "flipped_readings", "preserved"}
    assert set(edit["evaluation"]) >= {"after", "success", "flipped_readings", "preserved"}
    assert edit["judged_by"] == "evaluation" and edit["edit_success"] == edit["evaluation"]["success"]
    assert "biased" in summary["judges"]["guidance"]["note"] and summary["judges"]["evaluation"]["path"] == str(other)
    assert "evaluation classifier" in stdout and "biased" in stdout


# --------------------------------------------------------------------------- out of domain

def test_out_of_domain_input_is_said_plainly(models, tmp_path, capsys, monkeypatch):
    # The plumbing, with the tiny classifier: a threshold of 0 flags everything, a huge one nothing.
    monkeypatch.setattr(domain, "NUM_FIT", 8)
    monkeypatch.setattr(domain, "NUM_HELDOUT", 8)
    for margin, flagged in ((0.0, True), (1e9, False)):
        monkeypatch.setattr(domain, "THRESHOLD_MARGIN", margin)
        monkeypatch.setenv("CYCLEDIFF_CACHE_DIR", str(tmp_path / f"cache{margin}"))
        out = tmp_path / f"out{margin}"
        args = base_args(models, out)
        args[args.index("--domain_reference") + 1] = "synthetic:0"
        rc, stdout, err, _ = run_cli(capsys, args + ["--image_index", "1"])
        assert rc == 0, err
        summary = _edit_json(out, "00001_9_edit.json")
        assert summary["out_of_domain"] is flagged
        check = summary["domain_check"]
        assert set(check) >= {"score", "threshold", "reference"} and check["reference"] == "synthetic:0"
        assert ("does not look like the models' training faces" in stdout) is flagged
        if flagged:
            assert summary["edits"][1]["edit_success"] is None  # no verdict on readings that mean little
        assert os.listdir(tmp_path / f"cache{margin}")  # the statistics were cached


def _sample_photo():
    try:
        import matplotlib.cbook as cbook
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except Exception:
        return None
    return path if os.path.isfile(path) else None


@pytest.mark.skipif(_sample_photo() is None, reason="matplotlib's sample photo grace_hopper.jpg is not installed")
@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "checkpoints", "classifier.pt")),
                    reason="the shipped guidance classifier is not in checkpoints/")
def test_domain_check_separates_a_real_photo_from_held_out_synthetic_faces():
    # Small version of scripts/measure_domain_check.py (full size: all 128 real images flagged,
    # 2 of 800 further held-out faces): 64 training faces, 64 held-out ones, 32 px.
    from preprocess.classifier import load_classifier
    from preprocess.synthetic_faces import example_face, render
    from optimization.image_io import load_image_file, to_tensor

    classifier = load_classifier(os.path.join(ROOT, "checkpoints", "classifier.pt"))
    ref = domain.fit_reference(classifier, 32, num_fit=64, num_heldout=64)
    photo = float(ref.score(classifier, load_image_file(_sample_photo(), 32))[0])
    unseen = torch.cat([to_tensor(render(*example_face(2000, i), 32)) for i in range(32)])
    scores = ref.score(classifier, unseen)
    print(f"threshold {ref.threshold:.2f}, photo {photo:.2f}, unseen faces median {float(scores.median()):.2f} "
          f"max {float(scores.max()):.2f}")
    assert photo > 3 * ref.threshold
    assert int((scores > ref.threshold).sum()) <= 2
    assert ref.check(classifier, load_image_file(_sample_photo(), 32))[0]["out_of_domain"] is True
