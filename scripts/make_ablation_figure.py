"""
One figure of an ablation: the same held-out edits through each configuration, side by side.

    python scripts/make_ablation_figure.py RUN_DIR/edits --methods s2o_w1000,s2o_w1000_no_id,no_cycle \
        --output images/paper_ablation_250.png

RUN_DIR/edits is an evaluate_edits.py output folder of synthetic faces (its run.json names the seed
and image side; its images/<method>/ hold the edits). Rows: one edit per editable attribute (the
first the run made, or --edits), columns: the input, the ground truth (the renderer's
counterfactual), then each method's edit with its PSNR to the ground truth.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guided_diffusion.safe_paths import OneLineParser, check_output_file, parse_checked  # noqa: E402
from preprocess.attributes import RECONSTRUCTION_INDEX  # noqa: E402


def build_parser():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("edits_dir", help="an evaluate_edits.py output folder (synthetic faces)")
    p.add_argument("--methods", default="", help="comma list, in column order (default: the run's methods)")
    p.add_argument("--labels", default="", help="comma list of column titles, one per method (default: the names)")
    p.add_argument("--edits", default="", help="comma list of IDENTITY_ATTRIBUTE rows, e.g. 0_9,4_12 "
                                               "(default: the first edit of each attribute)")
    p.add_argument("--output", required=True, help="PNG to write")
    return p


def check_flags(args):
    run_json = os.path.join(args.edits_dir, "run.json")
    if not os.path.isfile(run_json):
        raise ValueError(f"{args.edits_dir} has no run.json: not an evaluate_edits.py output folder")
    with open(run_json) as f:
        run = json.load(f)
    methods = [m for m in args.methods.split(",") if m] or list(run.get("method_options", {}))
    for m in methods:
        if not os.path.isdir(os.path.join(args.edits_dir, "images", m)):
            raise ValueError(f"no images of method {m!r} in {args.edits_dir}/images")
    labels = [s for s in args.labels.split(",") if s] or methods
    if len(labels) != len(methods):
        raise ValueError(f"--labels has {len(labels)} entries for {len(methods)} methods")
    check_output_file(args.output, "--output")
    args.run, args.method_list, args.label_list = run, methods, labels


def edit_rows(edits_dir, method, wanted):
    """[(identity, attribute code)] of the edits to show: `wanted`, or the first per attribute."""
    if wanted:
        return [tuple(int(v) for v in item.split("_")) for item in wanted.split(",")]
    names = sorted(n for n in os.listdir(os.path.join(edits_dir, "images", method)) if n.endswith(".png"))
    firsts = {}
    for name in names:
        index, code = name[:-4].split("_", 1)
        if "+" not in code:
            firsts.setdefault(int(code), int(index))
    return [(index, code) for code, index in sorted(firsts.items()) if code != RECONSTRUCTION_INDEX]


def main(argv=None):
    args = parse_checked(build_parser(), check_flags, argv)
    # Imported after the flags are checked, so that refusals stay fast (these pull in torch).
    from optimization import evaluation as ev
    from optimization.image_io import to_tensor, to_uint8
    from optimization.metrics import psnr
    from optimization.queries import query_from_indices
    from optimization.reports import sample_grid
    from optimization.visualization import save_image_atomic
    from scripts.evaluate_edits import SyntheticFaces, _read_png, edit_image_path, edit_title

    if args.run.get("mode") != "synthetic":
        raise SystemExit(f"error: {args.edits_dir} is not a run on synthetic faces (no ground truth to show)")
    rows = edit_rows(args.edits_dir, args.method_list[0], args.edits)
    first = _read_png(edit_image_path(args.edits_dir, args.method_list[0], *rows[0]))
    source = SyntheticFaces(int(args.run["inputs"]), 0, first.shape[0])
    images, titles = [], []
    for index, code in rows:
        a_ref = source.labels(index)
        a_q = query_from_indices(a_ref, ev.edit_attributes(code))
        truth = source.ground_truth(index, a_q)
        row, scores = [to_uint8(source.image(index))[0], to_uint8(truth)[0]], []
        for method in args.method_list:
            path = edit_image_path(args.edits_dir, method, index, code)
            if not os.path.isfile(path):
                row.append(None)
                scores.append("–")
                continue
            edited = to_tensor(_read_png(path))
            row.append(to_uint8(edited)[0])
            scores.append(f"{float(psnr(edited, truth)):.1f}")
        images.append(row)
        titles.append(f"{edit_title(index, a_ref, code)}\nPSNR to truth (dB): {' / '.join(scores)}")
    save_image_atomic(sample_grid(images, titles, ["input", "ground truth"] + args.label_list), args.output)
    print(f"wrote {args.output} ({len(images)} edits x {len(args.method_list)} configurations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
