"""
Summarise a paper-procedure ablation (scripts/paper_procedure_ablation.sh) into one results file.

    python scripts/summarise_ablation.py RUN_DIR --output docs/results/paper_ablation_100.json

RUN_DIR holds `edits/` and `reconstructions/` (evaluate_edits.py output folders; the finished
results.csv or, for a run still going, its partial_rank*.csv files). For every method: the mean
and 95 % bootstrap interval of success, preservation, PSNR to the ground truth, identity
similarity to the input (when scored) over the edits, and of PSNR to the input over the
reconstructions; then each method's paired differences (same edits) against --reference, the
procedure without the cycle term. The raw rows are copied beside the JSON (a folder of the same
name) so the numbers can be recomputed. scripts/render_docs.py renders the README's table from it.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import sys

EDIT_MEASURES = ("success", "preservation", "psnr_gt", "identity_input")


RAW_FILES = {f"{name}_{source}" for name in ("edits", "reconstructions") for source in ("results.csv", "results.md")}


def refuse_foreign(output):
    """An error when writing would replace something this script did not write, else None."""
    from optimization import reports

    refusal = (reports.refuse_to_replace(output, reports.json_with_key("edits"), "an ablation results file")
               or reports.refuse_rows_folder(os.path.splitext(output)[0], RAW_FILES))
    return refusal and f"{refusal}; choose another --output"


def main(argv=None):
    from guided_diffusion.safe_paths import OneLineParser  # refusals: one `error:` line, exit 2

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--output", required=True, help="JSON file to write; the raw rows go to a folder beside it")
    p.add_argument("--reference", default="no_cycle", help="method the paired differences are taken against")
    p.add_argument("--steps", type=int, required=True, help="the chain length the ablation ran on")
    p.add_argument("--command", default="bash scripts/paper_procedure_ablation.sh RUN_DIR STEPS 2")
    p.add_argument("--hardware", default=f"{os.cpu_count()} CPU cores, no GPU")
    args = p.parse_args(argv)
    from optimization import reports
    edits_dir, recon_dir = (os.path.join(args.run_dir, n) for n in ("edits", "reconstructions"))
    if not os.path.isdir(edits_dir):
        print(f"error: no edits/ folder in {args.run_dir}", file=sys.stderr)
        return 2
    refusal = refuse_foreign(args.output)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    edits = reports.read_run_rows(edits_dir)
    reconstructions = reports.read_run_rows(recon_dir) if os.path.isdir(recon_dir) else []
    with open(os.path.join(edits_dir, "run.json")) as f:
        run = json.load(f)
    options = run.get("method_options", {})
    result = dict(
        description="The paper's procedure on the shipped models: held-out edits and reconstructions per "
                    "configuration.",
        steps=args.steps, seed=run.get("inputs"), command=args.command, hardware=args.hardware,
        date=datetime.date.today().isoformat(), python=platform.python_version(), reference=args.reference,
        edits=reports.method_intervals(edits, EDIT_MEASURES, args.reference),
        reconstructions=reports.method_intervals(reconstructions, ("psnr_gt",), args.reference),
        options={m: {k: options[m][k] for k in ("cycle_schema", "cycle_reconstruct_lambda", "attribute_guidance_lambda",
                                                 "id_lambda", "range_lambda", "weight_resolution", "inversion")
                     if k in options[m]}
                 for m in options},
        # Which optional terms had their networks loaded (a configured weight without one does nothing).
        identity_guidance=bool(run.get("identity_guidance")), lpips_guidance=bool(run.get("lpips_guidance")),
        identity_scored=bool(run.get("eval_identity_net")),
        complete=os.path.isfile(os.path.join(edits_dir, "results.csv"))
        and (not os.path.isdir(recon_dir) or os.path.isfile(os.path.join(recon_dir, "results.csv"))),
    )
    from guided_diffusion.atomic import atomic_write

    atomic_write(args.output, json.dumps(result, indent=1) + "\n")
    raw = os.path.splitext(args.output)[0]
    os.makedirs(raw, exist_ok=True)
    for name, folder in (("edits", edits_dir), ("reconstructions", recon_dir)):
        for source in ("results.csv", "results.md"):
            if os.path.isfile(os.path.join(folder, source)):
                shutil.copyfile(os.path.join(folder, source), os.path.join(raw, f"{name}_{source}"))
    print(f"wrote {args.output} and {raw}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
