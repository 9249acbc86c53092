"""
Summarise an edit benchmark run (scripts/evaluate_edits.py on synthetic faces) into one results file.

    python scripts/summarise_edits.py evaluation/synthetic --output docs/results/evaluation_synthetic_448.json \
        --report docs/evaluation_synthetic_448.md --split single --command "mpiexec -n 2 python ..." \
        --wall_time "1 h 16 min"

For every method: the mean of each measure, its 95 % bootstrap interval, and its paired difference
(same edits) against the default method, in the layout scripts/render_docs.py reads (success and
preservation in percent). The run's results.md is copied to --report and its results.csv beside the
JSON (a folder of the same name), so every number can be recomputed from the rows.
"""
import argparse
import datetime
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURES = ("success", "preservation", "preservation_gt", "psnr_gt", "l1_gt", "l1_outside_mask", "region_iou",
            "identity_input", "identity_gt", "seconds", "unet_evals")
PERCENT = ("success", "preservation", "preservation_gt")
DIGITS = {"psnr_gt": 2, "seconds": 2, "unet_evals": 0}  # the rest: 1 for percentages, 4 otherwise
SPLITS = {"single": "held-out synthetic seed {seed}; per editable attribute the first {k} people with it and the "
                    "first {k} without it",
          "joint": "held-out synthetic seed {seed}; pairs of attributes edited together",
          "noneditable": "held-out synthetic seed {seed}; the non-editable attributes"}


def _scaled(name, value):
    value = 100 * value if name in PERCENT else value
    digits = DIGITS.get(name, 1 if name in PERCENT else 4)
    return int(round(value)) if digits == 0 else round(value, digits)


def _cell(name, stats):
    return {"value": _scaled(name, stats["mean"]), "low": _scaled(name, stats["low"]),
            "high": _scaled(name, stats["high"])}


def repo_relative(text):
    """`text` with this checkout's absolute path taken out of every path in it."""
    return str(text).replace(ROOT + os.sep, "")


def refuse_foreign(output, raw, report):
    """An error line when writing would replace something this script did not write, else None."""
    from optimization import reports

    def an_edit_report(path):
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith("# Edit evaluation")

    refusals = [(reports.refuse_to_replace(output, reports.json_with_key("per_method"), "an edit results file"),
                 "--output"),
                (reports.refuse_rows_folder(raw, {"results.csv"}), "--output")]
    if report:
        refusals.append((reports.refuse_to_replace(report, an_edit_report, "an edit evaluation report"), "--report"))
    return next((f"{refusal}; choose another {flag}" for refusal, flag in refusals if refusal), None)


def summarise(rows, default_method):
    """(per_method, per_method_ci, paired_vs_default) in render_docs' layout."""
    from optimization import reports


    stats = reports.method_intervals(rows, MEASURES, reference=default_method)
    per_method, per_method_ci, paired = {}, {}, {}
    for method, entry in stats.items():
        per_method[method] = {"n": entry["n"], **{m: (_scaled(m, entry[m]["mean"]) if m in entry else None)
                                                  for m in MEASURES}}
        per_method_ci[method] = {"n": entry["n"], **{m: _cell(m, entry[m]) for m in MEASURES
                                                     if m in entry and m not in ("seconds", "unet_evals")}}
        if method != default_method:
            paired[method] = {m: (_cell(m, entry[f"{m}_vs_{default_method}"])
                                  if f"{m}_vs_{default_method}" in entry else None)
                              for m in MEASURES if m not in ("seconds", "unet_evals")}
    return per_method, per_method_ci, paired


def main(argv=None):
    from guided_diffusion.atomic import atomic_write
    from guided_diffusion.safe_paths import OneLineParser  # refusals: one `error:` line, exit 2

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="an evaluate_edits.py output folder (results.csv, results.md, run.json)")
    p.add_argument("--output", required=True, help="JSON file to write; the rows go to a folder beside it")
    p.add_argument("--report", default="", help="where to copy the run's results.md (e.g. docs/evaluation_X.md)")
    p.add_argument("--split", choices=sorted(SPLITS), default="single")
    p.add_argument("--data", default="", help="what the inputs were (default: a line for --split)")
    p.add_argument("--command", required=True, help="the command the run was made with")
    p.add_argument("--wall_time", default="", help="how long the run took, e.g. '1 h 16 min'")
    p.add_argument("--hardware", default=f"{os.cpu_count()} CPU cores, no GPU")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    args = p.parse_args(argv)
    from optimization import reports  # after parsing: --help and a bad flag answer before torch loads
    from optimization.evaluation import DEFAULT_METHOD

    # evaluate_edits writes the single edits to results.csv, the other splits to results_<split>.csv
    csv_name = "results.csv" if args.split == "single" else f"results_{args.split}.csv"
    results = os.path.join(args.run_dir, csv_name)
    if not os.path.isfile(results):
        p.error(f"no {csv_name} in {args.run_dir} (a run that has not finished, or not of the {args.split} split)")
    if not os.path.isfile(os.path.join(args.run_dir, "run.json")):
        p.error(f"no run.json in {args.run_dir} (not an evaluate_edits.py output folder)")
    refusal = refuse_foreign(args.output, os.path.splitext(args.output)[0], args.report)
    if refusal:
        p.error(refusal)
    with open(os.path.join(args.run_dir, "run.json"), encoding="utf-8") as f:
        run = json.load(f)
    if run.get("mode") not in (None, "synthetic"):
        p.error(f"{args.run_dir} is a {run['mode']} run; this summary is for synthetic faces")
    columns = reports.SYNTHETIC_COLUMNS
    if args.split == "joint":  # its CSV names the pair ('9+15') in place of the attribute
        columns = ("method", "identity", "pair") + columns[reports.KEY_COLUMNS:]
    rows = reports.read_rows(results, columns)
    for r in rows:
        r.setdefault("attribute", r.pop("pair", None))  # the pair identifies a joint edit
    methods = list(dict.fromkeys(r["method"] for r in rows))
    default = DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0]
    per_method, per_method_ci, paired = summarise(rows, default)
    per_direction = max(per_method[default]["n"] // 14, 1)
    models = ", ".join(f"{k}: {repo_relative(run[k])}" for k in ("model_path", "classifier_path", "eval_classifier_path",
                                                     "eval_identity_net") if run.get(k))
    doc = dict(
        split=args.split, command=args.command, date=args.date, hardware=args.hardware, wall_time=args.wall_time,
        models=models, data=args.data or SPLITS[args.split].format(seed=run.get("inputs", "1000"), k=per_direction),
        default_method=default, methods=methods,
        note="Success, preservation and preservation_gt in percent; intervals are 95 % bootstrap intervals; "
             "paired differences are this method minus the default on the same edits.",
        per_method=per_method, per_method_ci=per_method_ci, paired_vs_default=paired,
    )
    if "$M" in args.command:  # the command names its methods by a shell variable: say which
        doc["methods_variable_M"] = methods
    if args.report:
        doc["source_report"] = args.report
    atomic_write(args.output, json.dumps(doc, indent=1) + "\n")
    raw = os.path.splitext(args.output)[0]
    os.makedirs(raw, exist_ok=True)
    shutil.copyfile(results, os.path.join(raw, "results.csv"))
    if args.report:
        with open(os.path.join(args.run_dir, "results.md"), encoding="utf-8") as f:
            title, _, body = f.read().partition("\n")
        made = (f"Made on {args.date} on {args.hardware}" + (f" ({args.wall_time})" if args.wall_time else "")
                + f" with `{args.command}`; summary: `{os.path.relpath(args.output, ROOT)}`.")
        atomic_write(args.report, f"{title}\n\n{made}\n{repo_relative(body)}")
    print(f"wrote {args.output}, {raw}/results.csv" + (f" and {args.report}" if args.report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
