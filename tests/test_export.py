import os
import subprocess
import sys

import torch

from guided_diffusion.script_util import load_diffusion_model
from preprocess.classifier import load_classifier
from tests.test_editor import save_tiny_classifier, save_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_writes_half_precision_files_that_load_and_match(tmp_path):
    src = save_tiny_model(str(tmp_path), scale=0.05)
    clf = save_tiny_classifier(str(tmp_path / "clf.pt"))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export_checkpoints.py"), "--diffusion", src,
                        "--classifier", clf, "--out_dir", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["classifier.pt", "diffusion.json", "diffusion.pt"]
    assert all(v.dtype == torch.float16 for v in torch.load(out / "diffusion.pt").values() if v.is_floating_point())
    original, _, _ = load_diffusion_model(src)
    exported, _, _ = load_diffusion_model(str(out / "diffusion.pt"))
    x, t, y = torch.randn(1, 3, 16, 16), torch.tensor([3]), torch.ones(1, 20)
    with torch.no_grad():
        assert (original(x, t, y=y) - exported(x, t, y=y)).abs().max() < 1e-2
        assert (original(x, t, y=y)).abs().max() > 1e-3  # perturbed model: the comparison is not vacuous
    assert load_classifier(str(out / "classifier.pt")).num_attributes == 20


def test_export_sets_the_guidance_classifier_temperature(tmp_path):
    clf = save_tiny_classifier(str(tmp_path / "clf.pt"))
    out = tmp_path / "out"
    script = os.path.join(ROOT, "scripts", "export_checkpoints.py")
    r = subprocess.run([sys.executable, script, "--classifier", clf, "--classifier_temperature", "4",
                        "--out_dir", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    exported, original = load_classifier(str(out / "classifier.pt")), load_classifier(clf)
    assert exported.logit_temperature == 4.0 and original.logit_temperature == 1.0
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert (exported.logits(x) - original.logits(x) / 4).abs().max() < 1e-2
    r = subprocess.run([sys.executable, script, "--classifier", clf, "--classifier_temperature", "0",
                        "--out_dir", str(tmp_path / "out2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "must be > 0" in r.stderr and not (tmp_path / "out2" / "classifier.pt").exists()


def test_export_missing_input_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export_checkpoints.py"), "--classifier",
                        str(tmp_path / "nope.pt"), "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
