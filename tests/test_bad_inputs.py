"""Bad inputs across the command-line tools: each is refused with one `error: ...` line on
stderr and exit status 2, and the folder it ran in is unchanged byte for byte afterwards (nothing lost,
nothing half-written, no log or temporary left behind).

CASES is the table; docs/bad_inputs.md is generated from it (`python tests/test_bad_inputs.py
--write-doc`) and test_doc_matches_the_table keeps the two equal. Every case runs the real script in a
subprocess, in a workspace of real files (`W`), with `W` as the current folder.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import namedtuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "bad_inputs.md")

Case = namedtuple("Case", "script args expect what")

MAIN = "main.py"
SYNTH = "preprocess/make_synthetic_dataset.py"
PREP = "preprocess/prepare_images.py"
TRAIN = "scripts/image_train.py"
ENC = "preprocess/encoder_train.py"
SAMPLE = "scripts/image_sample.py"
EVAL = "scripts/evaluate_edits.py"
EVALS = "scripts/evaluate_samples.py"
EXPORT = "scripts/export_checkpoints.py"
IDENT = "preprocess/identity_train.py"
# Every other script with a command line: --help and a bad flag answered before torch, too.
OTHER_CLIS = ("scripts/bench_edit.py", "scripts/bench_train.py", "scripts/make_figures.py",
              "scripts/measure_domain_check.py", "scripts/make_data_figures.py", "scripts/compare_revisions.py",
              "scripts/diagnose_channel_mean.py", "scripts/render_docs.py", "scripts/summarise_ablation.py",
              "scripts/summarise_edits.py",
              "scripts/gpu_run_summary.py", "scripts/make_ablation_figure.py", "preprocess/attributes.py")

# The workspace (see `workspace`): photos/ (3 PNG photos, 40x50), proj/photos/ + proj/notes.txt (a project
# folder holding its photos), notes.txt, text.pt (a text file named .pt), empty.pt, zip.pt (a zip file),
# emptydir/, corrupt/ (a dataset whose 00001.png is text), badsize/ (16 px dataset, one 24 px image),
# ds16/ (a 16 px dataset), dup_attr.txt (CelebA file listing a name twice), binary.txt (not text),
# prepared/ (prepare_images.py's output), synth/ (make_synthetic_dataset.py's, one face per person),
# people/ (make_synthetic_dataset.py's with two views per person), results/ (a user's own results.csv
# and summary.png), samples/ (a user's own samples.json and grid.png), dst/ (classifier.pt that is a
# text file).
CASES = [
    # main.py: found before torch or any model loads
    Case(MAIN, "-i photos", "is a folder, not an image", "input image is a folder"),
    Case(MAIN, "-i missing.png", "image not found", "input image missing"),
    Case(MAIN, "--model_path text.pt", "is not a PyTorch checkpoint (it is a text file)", "checkpoint is a text file"),
    Case(MAIN, "--model_path empty.pt", "is empty", "checkpoint is empty"),
    Case(MAIN, "--model_path emptydir", "is a directory, not a checkpoint file", "checkpoint is a folder"),
    Case(MAIN, "--output_path notes.txt/results", "notes.txt is a file, not a folder", "output folder below a file"),
    Case(MAIN, "--output_path notes.txt", "is an existing file, not a folder", "output folder is a file"),
    Case(MAIN, "--dataset_dir notes.txt", "is a file, not a dataset directory", "dataset is a file"),
    Case(MAIN, "--batch_size 0", "--batch_size must be at least 1", "out-of-range value"),
    Case(MAIN, "--seed -1", "--seed must be >= 0", "negative seed"),
    Case(MAIN, "-o sub/grid.png", "must be a file name", "-o with a folder in it"),
    Case(MAIN, "--no_such_flag", "unrecognized arguments", "unknown flag"),
    Case(MAIN, "--sampler ddpn", "invalid choice", "misspelt method option"),
    Case(MAIN, "--edit_strength 5", "edit_strength must be in (0, 1]", "method option out of range"),
    # make_synthetic_dataset.py
    Case(SYNTH, "--out . --overwrite --num_images 2", "is the current folder or one above it", "--out is the current folder"),
    Case(SYNTH, "--out .. --overwrite --num_images 2", "is the current folder or one above it", "--out is a parent of the current folder"),
    Case(SYNTH, "--out notes.txt --overwrite --num_images 2", "is a file, not a folder", "--out is a regular file"),
    Case(SYNTH, "--out photos --overwrite --num_images 2", "holds files make_synthetic_dataset.py did not write", "--out holds other files"),
    Case(SYNTH, "--out prepared --overwrite --num_images 2", "was written by prepare_images.py", "--out is another tool's output"),
    Case(SYNTH, "--out synth --num_images 2", "pass --overwrite to replace it", "--out exists (its own output)"),
    Case(SYNTH, "--out notes.txt/faces --num_images 2", "notes.txt is a file, not a folder", "--out below a file"),
    Case(SYNTH, "--out faces --image_size 100000 --num_images 2", "image_size must be an integer in [32, 256]", "absurd image size"),
    Case(SYNTH, "--out faces --num_images 0", "--num_images must be positive", "no images"),
    Case(SYNTH, "--out faces --num_images many", "invalid int value", "malformed number"),
    Case(SYNTH, "--out faces --num_images 4 --views_per_person 3", "is not a multiple of --views_per_person", "views do not divide"),
    Case(SYNTH, "--out faces --attributes bogus", "invalid choice", "unknown attribute statistics"),
    # prepare_images.py
    Case(PREP, "--input photos --out photos --overwrite", "is the input (--input)", "--out is --input"),
    Case(PREP, "--input proj/photos --out proj --overwrite", "contains the input proj/photos", "--out contains --input"),
    Case(PREP, "--input photos --out . --overwrite", "is the current folder or one above it", "--out is the current folder"),
    Case(PREP, "--input photos --out notes.txt --overwrite", "is a file, not a folder", "--out is a regular file"),
    Case(PREP, "--input photos --out emptydir/../proj --overwrite", "holds files prepare_images.py did not write", "--out holds other files"),
    Case(PREP, "--input photos --out prepared", "pass --overwrite to replace it", "--out exists (its own output)"),
    Case(PREP, "--input notes.txt --out out", "is a file, not a folder of images", "--input is a file"),
    Case(PREP, "--input missing --out out", "input folder not found", "--input missing"),
    Case(PREP, "--input emptydir --out out", "no images", "--input has no images"),
    Case(PREP, "--input corrupt --out out --image_size 16", "cannot read image", "a corrupt image (found mid-run: nothing kept)"),
    Case(PREP, "--input photos --out out --celeba_attr proj", "is a folder, not a file", "--celeba_attr is a folder"),
    Case(PREP, "--input photos --out out --celeba_attr dup_attr.txt", "is listed twice", "--celeba_attr lists a file twice"),
    Case(PREP, "--input photos --out out --celeba_attr notes.txt", "expected a count line and a names line", "--celeba_attr malformed"),
    Case(PREP, "--input photos --out out --celeba_attr binary.txt", "is not a text file", "--celeba_attr is binary"),
    Case(PREP, "--input photos --out out --image_size 100000", "--image_size must be in [8, 4096]", "absurd image size"),
    Case(PREP, "--input photos --out out --hq_mapping notes.txt", "--hq_mapping needs --celeba_attr", "mapping without annotations"),
    Case(PREP, "--input photos --out out --workers 0", "--workers must be at least 1", "no workers"),
    # image_train.py: every image and --log_dir checked before torch; no log left behind
    Case(TRAIN, "--data_dir badsize --image_size 16 --log_dir run", "is 24x24 but --image_size is 16", "one image of another size"),
    Case(TRAIN, "--data_dir corrupt --image_size 16 --log_dir run", "cannot read image", "a corrupt image"),
    Case(TRAIN, "--data_dir missing --image_size 16 --log_dir run", "data directory not found", "dataset missing"),
    Case(TRAIN, "--data_dir ds16 --image_size 16 --log_dir notes.txt/run", "notes.txt is a file, not a folder", "--log_dir below a file"),
    Case(TRAIN, "--data_dir ds16 --image_size 16 --log_dir notes.txt", "is a file, not a folder", "--log_dir is a file"),
    Case(TRAIN, "--data_dir ds16 --image_size 100000 --log_dir run", "larger than the model supports", "absurd image size"),
    Case(TRAIN, "--data_dir ds16 --batch_size 0 --log_dir run", "--batch_size must be at least 1", "out-of-range value"),
    Case(TRAIN, "--data_dir ds16 --lr fast", "invalid float value", "malformed number"),
    # encoder_train.py
    Case(ENC, "--data_dir ds16 --exp_dir notes.txt", "is a file, not a folder", "--exp_dir is a file"),
    Case(ENC, "--data_dir missing --exp_dir run", "dataset directory not found", "dataset missing"),
    Case(ENC, "--data_dir ds16 --exp_dir run --batch_size 0", "--batch_size must be at least 1", "out-of-range value"),
    Case(ENC, "--data_dir ds16 --exp_dir notes.txt/run", "notes.txt is a file, not a folder", "--exp_dir below a file"),
    Case(ENC, "--data_dir ds16 --evaluate missing.pt", "checkpoint not found", "checkpoint to evaluate missing"),
    # identity_train.py: flags, --exp_dir and the dataset's views checked before torch
    Case(IDENT, "--data_dir missing --exp_dir run", "dataset directory not found", "dataset missing"),
    Case(IDENT, "--data_dir synth --exp_dir run", "needs several views of each", "a dataset without views_per_person"),
    Case(IDENT, "--data_dir people --exp_dir notes.txt", "is a file, not a folder", "--exp_dir is a file"),
    Case(IDENT, "--data_dir people --exp_dir notes.txt/run", "notes.txt is a file, not a folder", "--exp_dir below a file"),
    Case(IDENT, "--data_dir people --exp_dir run --batch_size 0", "--batch_size must be at least 1", "out-of-range value"),
    Case(IDENT, "--data_dir people --exp_dir run --widths 8,x,16,16", "bad model options", "malformed --widths"),
    Case(IDENT, "--data_dir people --evaluate missing.pt", "checkpoint not found", "checkpoint to evaluate missing"),
    # image_sample.py: outputs checked before the model loads
    Case(SAMPLE, "--output notes.txt/x.png", "notes.txt is a file, not a folder", "--output below a file"),
    Case(SAMPLE, "--output photos", "is a folder; give a file name", "--output is a folder"),
    Case(SAMPLE, "--num_samples 0 --output x.png", "must be positive", "no samples"),
    Case(SAMPLE, "--checkpoint missing.pt --output x.png", "checkpoint not found", "checkpoint missing"),
    Case(SAMPLE, "--attributes_file emptydir --checkpoint text.pt --output x.png", None, "attributes file is a folder"),
    # evaluate_edits.py
    Case(EVAL, "--output_dir results", "holds files evaluate_edits.py did not write", "--output_dir holds a user's results.csv"),
    Case(EVAL, "--output_dir notes.txt", "is a file, not a folder", "--output_dir is a file"),
    Case(EVAL, "--output_dir out --batch_size 0", "--batch_size must be positive", "out-of-range value"),
    Case(EVAL, "--output_dir out --model_path missing.pt", "not found: missing.pt", "checkpoint missing"),
    Case(EVAL, "--output_dir out --methods cyclediff_fast", "unknown method cyclediff_fast", "unknown method"),
    # evaluate_samples.py
    Case(EVALS, "--output_dir samples", "holds files evaluate_samples.py did not write", "--output_dir holds a user's samples.json"),
    Case(EVALS, "--output_dir notes.txt/x", "notes.txt is a file, not a folder", "--output_dir below a file"),
    Case(EVALS, "--num_samples 1", "at least 2", "too few samples"),
    Case(EVALS, "--model_path missing.pt", "no such file", "checkpoint missing"),
    # export_checkpoints.py
    Case(EXPORT, "--classifier text.pt --out_dir out", "is not a PyTorch checkpoint", "source is a text file"),
    Case(EXPORT, "--classifier missing.pt --out_dir out", "checkpoint not found", "source missing"),
    Case(EXPORT, "--out_dir out", "nothing to export", "nothing asked"),
    Case(EXPORT, "--classifier zip.pt --out_dir notes.txt", "is a file, not a folder", "--out_dir is a file"),
    Case(EXPORT, "--classifier zip.pt --out_dir dst", "exists and is not a checkpoint", "destination is not a checkpoint"),
    Case(EXPORT, "--classifier classifier.pt --out_dir .", "is the file the export would replace", "source is the destination"),
]
# A case with expect None: the message depends on the check that comes first; only the form is tested.


def _png(path, size, colour=(90, 60, 30)):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    import torch

    w = tmp_path_factory.mktemp("w")
    for i in range(3):
        _png(str(w / "photos" / f"{i}.png"), (40, 50), (40 * i, 80, 120))
        _png(str(w / "proj" / "photos" / f"{i}.png"), (40, 50), (40 * i, 80, 120))
    (w / "proj" / "notes.txt").write_text("the user's notes\n")
    (w / "notes.txt").write_text("a regular file\n")
    (w / "text.pt").write_text("101\n")
    (w / "empty.pt").write_bytes(b"")
    with zipfile.ZipFile(w / "zip.pt", "w") as z:
        z.writestr("x/data.pkl", b"not really a checkpoint")
    (w / "classifier.pt").write_bytes((w / "zip.pt").read_bytes())  # export --out_dir . would replace it
    (w / "emptydir").mkdir()
    for name, sizes in (("ds16", [16] * 4), ("badsize", [16, 16, 24, 16]), ("corrupt", [16] * 4)):
        for i, s in enumerate(sizes):
            _png(str(w / name / f"{i:05d}.png"), (s, s))
        torch.save(torch.zeros(4, 20), w / name / "attributes.pt")
    (w / "corrupt" / "00001.png").write_text("not an image")
    from preprocess.attributes import CELEBA_ATTRIBUTE_NAMES

    names = " ".join(CELEBA_ATTRIBUTE_NAMES)
    (w / "dup_attr.txt").write_text(f"3\n{names}\n0.png {' '.join(['1'] * 40)}\n0.png {' '.join(['-1'] * 40)}\n"
                                    f"2.png {' '.join(['1'] * 40)}\n")
    (w / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 8)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for command in ([PREP, "--input", "photos", "--out", "prepared", "--image_size", "16", "--workers", "1"],
                    [SYNTH, "--out", "synth", "--num_images", "2", "--image_size", "32", "--workers", "1"],
                    [SYNTH, "--out", "people", "--num_images", "4", "--views_per_person", "2", "--image_size", "32",
                     "--workers", "1"]):
        r = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]], cwd=w, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    (w / "results").mkdir()
    (w / "results" / "results.csv").write_text("my,own\n1,2\n")
    (w / "results" / "summary.png").write_bytes(b"my picture")
    (w / "samples").mkdir()
    (w / "samples" / "samples.json").write_text('{"mine": 1}\n')
    (w / "samples" / "grid.png").write_bytes(b"my grid")
    (w / "dst").mkdir()
    (w / "dst" / "classifier.pt").write_text("my notes, not a checkpoint\n")
    return w


def snapshot(folder):
    """Every path below `folder` (hidden ones too) with its content's hash."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder) + "/"] = None
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def run_script(script, args, cwd, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args.split()], cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case", CASES, ids=[f"{os.path.basename(c.script)}:{c.args}" for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_touched(workspace, case):
    before = snapshot(workspace)
    r = run_script(case.script, case.args, workspace)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    if case.expect is not None:
        assert case.expect in lines[0], lines[0]
    if case.expect is None or "--overwrite" not in case.expect:
        assert "--overwrite" not in lines[0]  # never suggested where it would be refused too
    assert snapshot(workspace) == before


def test_at_least_40_cases_over_every_tool():
    assert len(CASES) >= 40
    assert {c.script for c in CASES} >= {MAIN, SYNTH, PREP, TRAIN, ENC, SAMPLE, EVAL, EVALS, EXPORT, IDENT}


# (script, arguments): --help answers 0, the others one `error:` line and 2; none imports torch.
BEFORE_TORCH = [(script, args) for script in (MAIN, SYNTH, PREP, TRAIN, ENC, SAMPLE, EVAL, EVALS, EXPORT, IDENT)
                + OTHER_CLIS for args in ("--help", "--bogus_flag")] + [
    (MAIN, "--batch_size nine"), (MAIN, "--sampler ddpn"), (MAIN, "--edit_strength 5"), (MAIN, "--cfg_scale -1"),
    (MAIN, "--region_attribute_thresholds Moustache=0.2"), (TRAIN, "--batch_size nine"), (SAMPLE, "--batch_size nine"),
    (EVALS, "--batch_size nine"), (EXPORT, "--out_dir"), (ENC, "--data_dir ds16 --batch_size 0"),
    (ENC, "--data_dir missing"), (EVAL, "--model_path missing.pt"), (EVAL, "--methods cyclediff_fast"),
    (IDENT, "--data_dir synth"), (IDENT, "--data_dir people --exp_dir notes.txt"),
    ("scripts/bench_edit.py", "--presets fast,papre"), ("scripts/bench_train.py", "--steps 0"),
    ("scripts/make_figures.py", "--only regoins"), ("scripts/diagnose_channel_mean.py", "--levels 999,x"),
]


@pytest.mark.parametrize("script,args", BEFORE_TORCH, ids=[f"{os.path.basename(s)}:{a}" for s, a in BEFORE_TORCH])
def test_help_and_bad_values_answer_before_torch_is_imported(workspace, script, args):
    r = subprocess.run([sys.executable, "-X", "importtime", os.path.join(ROOT, script), *args.split()],
                       cwd=workspace, capture_output=True, text=True, timeout=120)
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert "torch" not in imported, f"{script} {args} imports torch"
    if args == "--help":
        assert r.returncode == 0 and "usage:" in r.stdout and not said, r.stderr[-2000:]
    else:
        assert r.returncode == 2 and len(said) == 1 and said[0].startswith("error: "), said


def test_input_error_is_said_once_under_mpiexec(workspace):
    """Every rank finds the error; rank 0 says it, every rank exits 2 (a launcher's rank variable decides)."""
    silent = run_script(SYNTH, "--out notes.txt --num_images 2", workspace, env={"PMI_RANK": "1"})
    said = run_script(SYNTH, "--out notes.txt --num_images 2", workspace, env={"PMI_RANK": "0"})
    assert silent.returncode == said.returncode == 2
    assert silent.stderr == "" and said.stderr.count("error: ") == 1


# A bad input found by every rank of a real `mpiexec -n 2`: rank 0 says it, once; both ranks exit 2.
MPI_CASES = [(EVAL, "--output_dir out --model_path missing.pt", "not found: missing.pt"),
             (MAIN, "--seed -1", "--seed must be >= 0"),
             (IDENT, "--data_dir people --exp_dir run --bogus_flag", "unrecognized arguments: --bogus_flag")]


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (pip install mpich)")
@pytest.mark.parametrize("script,args,expect", MPI_CASES, ids=[os.path.basename(c[0]) for c in MPI_CASES])
def test_input_error_is_said_once_by_a_real_mpiexec(workspace, mpi_env, script, args, expect):
    before = snapshot(workspace)
    # Each rank runs the script as a child (the launcher's variables pass on) and reports its exit status.
    rank = ("import os, subprocess, sys; r = subprocess.run([sys.executable, *sys.argv[1:]]); "
            "print(f'rank {os.environ.get(\"PMI_RANK\", os.environ.get(\"OMPI_COMM_WORLD_RANK\"))} exit "
            "{r.returncode}', flush=True); sys.exit(r.returncode)")
    r = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-c", rank, os.path.join(ROOT, script), *args.split()],
                       cwd=workspace, env=dict(mpi_env, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                       timeout=300)
    # The launcher forwards the ranks' lines as they come: two may arrive on one line.
    assert sorted(re.findall(r"rank (\d+) exit (\d+)", r.stdout)) == [("0", "2"), ("1", "2")], r.stdout
    assert r.stderr.count("error: ") == 1 and expect in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2 and snapshot(workspace) == before


def test_killed_prepare_run_is_cleaned_by_the_next_and_said(workspace, tmp_path):
    out = tmp_path / "data"
    stale = tmp_path / ".data.building-999999999-x"  # no such process: a killed run's folder
    stale.mkdir()
    (stale / "00000.png").write_bytes(b"half")
    r = run_script(PREP, f"--input {workspace / 'photos'} --out {out} --image_size 16 --workers 1", tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"removed {stale}, left by an interrupted run" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_overwrite_replaces_only_what_the_tool_wrote(workspace, tmp_path):
    """A dataset from before the marker is recognised by its identities.json; a file added to a marked
    dataset makes --overwrite refuse, and the file survives."""
    from guided_diffusion.safe_paths import MARKER

    out = tmp_path / "faces"
    assert run_script(SYNTH, f"--out {out} --num_images 2 --image_size 32 --workers 1", tmp_path).returncode == 0
    os.remove(out / MARKER)  # as an older version wrote it
    r = run_script(SYNTH, f"--out {out} --num_images 3 --image_size 32 --workers 1 --overwrite", tmp_path)
    assert r.returncode == 0 and len([n for n in os.listdir(out) if n.endswith(".png")]) == 3, r.stderr
    assert json.loads((out / MARKER).read_text())["tool"] == "make_synthetic_dataset.py"
    (out / "my_notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    r = run_script(SYNTH, f"--out {out} --num_images 2 --image_size 32 --workers 1 --overwrite", tmp_path)
    assert r.returncode == 2 and "my_notes.txt" in r.stderr and snapshot(tmp_path) == before


def test_benchmark_grids_show_only_edited_pairs():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from evaluate_edits import grid_items

    # identities 0-2 edited by attribute 9, identities 3-5 by 15 (as --per_direction picks them)
    items = [("fast", i, 9) for i in range(3)] + [("fast", i, 15) for i in range(3, 6)]
    shown = grid_items(items, 6)
    assert len(shown) == 6 and set(shown) <= set(items)


def test_bench_edit_times_fast_unless_asked_and_says_how_long():
    import argparse

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import bench_edit

    with pytest.raises(SystemExit):
        bench_edit.main(["--help"])
    default = bench_edit.announce(argparse.Namespace(presets="fast", repeats=3, paper_steps=0), [None])
    both = bench_edit.announce(argparse.Namespace(presets="fast,paper", repeats=3, paper_steps=0), [None])
    assert default.startswith("timing preset(s) fast,") and " s on " in default
    assert "fast,paper" in both and " min on " in both


# --------------------------------------------------------------------------- the doc

def render_doc():
    lines = ["# Bad inputs: what each tool refuses", "",
             "Every case below is refused with one `error: ...` line on stderr and exit status 2, before any "
             "model loads or any step runs, and leaves the folder it ran in unchanged byte for byte (no file "
             "replaced or removed, no log, no temporary). `tests/test_bad_inputs.py` runs each one in a "
             "folder of real files; this page is generated from its table (`python tests/test_bad_inputs.py "
             "--write-doc`).", "",
             "What the output checks rely on (`guided_diffusion/safe_paths.py`): a tool that creates an output "
             "folder marks it with `.cyclediff-output.json` (the tool's name and the files it wrote). "
             "`--overwrite` replaces only a folder carrying the same tool's marker and nothing the marker does "
             "not list; the input, a folder containing the input, a regular file, a folder with other "
             "contents, the current folder and its parents are never replaced. Folders from before the marker: "
             "a synthetic dataset is recognised by its `identities.json` (format `cyclediff-synthetic-faces`) "
             "beside nothing but the dataset's own files, an `evaluate_edits.py` folder by its `run.json`, an "
             "`evaluate_samples.py` folder by its own three files; an older `prepare_images.py` output is not "
             "recognised (numbered PNGs could be anyone's photos): remove it by hand to rebuild it.", "",
             "`W` is the folder the command runs in: `photos/` (three photos), `proj/` (a project folder "
             "holding `photos/` and `notes.txt`), `notes.txt` (a regular file), `text.pt` (a text file named "
             ".pt), `empty.pt`, `zip.pt` (a zip file), `emptydir/`, `corrupt/` (a dataset with a text file "
             "named 00001.png), `badsize/` (a 16 px dataset with one 24 px image), `ds16/` (a 16 px dataset), "
             "`dup_attr.txt` (CelebA attributes naming a file twice), `binary.txt` (not text), `prepared/` and "
             "`synth/` (outputs of prepare_images.py and make_synthetic_dataset.py, one face per person), "
             "`people/` (make_synthetic_dataset.py with two views per person), `results/` and `samples/` "
             "(a user's own results.csv, summary.png, samples.json, grid.png), `dst/classifier.pt` (a text "
             "file).", "",
             "| tool | arguments | what is wrong | the error line contains |",
             "| --- | --- | --- | --- |"]
    for c in CASES:
        expect = f"`{c.expect}`" if c.expect else "(the first check that fails)"
        lines.append(f"| `{c.script}` | `{c.args}` | {c.what} | {expect} |")
    return "\n".join(lines) + "\n"


def test_doc_matches_the_table():
    with open(DOC) as f:
        assert f.read() == render_doc(), "docs/bad_inputs.md is stale: python tests/test_bad_inputs.py --write-doc"


if __name__ == "__main__" and sys.argv[1:] == ["--write-doc"]:
    with open(DOC, "w") as f:
        f.write(render_doc())
    print(f"wrote {DOC}")
