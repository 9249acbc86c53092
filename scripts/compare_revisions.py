"""Check that a refactor left the edits bit-identical: the same edits run with the code of another git
revision and with the working tree, on the same checkpoints, compared exactly.

    python scripts/compare_revisions.py --base 5db8799 --model_path checkpoints/diffusion_eps.pt

Edits: synthetic held-out face --image_index, attribute --attribute_index, under the fast preset
(step-by-step and step-to-origin) and the paper's weights from a full DDIM inversion (called
`paper` before the released procedure took that name, `paper_inversion` since), respaced to 20
steps. Each revision runs in its own process with one thread. Prints one line per edit and exits 1
when any differs.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN_EDITS = r'''
import sys, torch
torch.set_num_threads(1)
from optimization import attribute_editor as ae
from optimization.arguments import PRESETS
model_path, classifier_path, index, attribute, out = sys.argv[1:6]
editor = ae.AttributeEditor(model_path, classifier_path, device="cpu")
x, a = ae.load_dataset_item("synthetic:1000", int(index), editor.image_size)
q = ae.query_from_indices(a, [int(attribute)])
inversion_preset = "paper_inversion" if "paper_inversion" in PRESETS else "paper"
edits = {"fast": ("fast", {}), "fast_step_to_origin": ("fast", dict(cycle_schema="step_to_origin")),
         "paper_inversion_20_steps": (inversion_preset, dict(timestep_respacing="20"))}
results = {}
for name, (preset, over) in edits.items():
    results[name] = editor.edit(x, a[None], q[None], ae.EditOptions.from_preset(preset, **over), seeds=[0]).images
torch.save(results, out)
'''


def run(tree, args, out):
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", RUN_EDITS, os.path.abspath(args.model_path),
                    os.path.abspath(args.classifier_path), str(args.image_index), str(args.attribute_index), out],
                   cwd=tree, env=env, check=True)


def main(argv=None):
    from guided_diffusion.safe_paths import OneLineParser, report_input_error

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision to compare the working tree with")
    p.add_argument("--model_path", default=os.path.join(ROOT, "checkpoints", "diffusion.pt"))
    p.add_argument("--classifier_path", default=os.path.join(ROOT, "checkpoints", "classifier.pt"))
    p.add_argument("--image_index", type=int, default=3)
    p.add_argument("--attribute_index", type=int, default=15)
    args = p.parse_args(argv)
    for flag, path in (("--model_path", args.model_path), ("--classifier_path", args.classifier_path)):
        if not os.path.isfile(path):
            return report_input_error(f"{flag}: checkpoint not found: {path}")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        base_tree = os.path.join(tmp, "base")
        os.makedirs(base_tree)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.base], capture_output=True)
        if archive.returncode:
            return report_input_error(archive.stderr.decode().strip())
        subprocess.run(["tar", "-x", "-C", base_tree], input=archive.stdout, check=True)
        run(base_tree, args, os.path.join(tmp, "base.pt"))
        run(ROOT, args, os.path.join(tmp, "head.pt"))
        base, head = torch.load(os.path.join(tmp, "base.pt")), torch.load(os.path.join(tmp, "head.pt"))
    differ = 0
    for name in base:
        same = torch.equal(base[name], head[name])
        differ += not same
        print(f"{name}: {'bit-identical' if same else 'DIFFERS'} "
              f"(max |diff| {float((base[name] - head[name]).abs().max()):.3g})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
