"""CycleDiff: edit a face's attributes. `python main.py --help` lists the flags.

With no flags it edits image IMAGE_INDEX of the embedded default (synthetic faces rendered from a
held-out seed) by attribute ATTRIBUTE_INDEX, both set at the top of optimization/attribute_editor.py.

Exit status 0 with the report below; 2 with one `error: ...` line on stderr for any input error
(bad flag, missing or unreadable file, a device this machine lacks), detected before a model loads.
"""
import sys


def _verdict(edit):
    if edit["kind"] == "reconstruction":
        return "reconstruction"
    parts = []
    for who, name in (("guidance", "guidance classifier (biased: the edit optimised it)"),
                      ("evaluation", "evaluation classifier")):
        judged = edit.get(who)
        if judged:
            readings = ", ".join(f"{k} p={'nan' if v is None else f'{v:.2f}'}"
                                 for k, v in judged["flipped_readings"].items())
            kept = judged.get("preserved")
            preserved = "" if kept is None else f", preservation {kept:.3f}"
            unasked = judged.get("changed_unasked")
            also = f", also changed unasked: {', '.join(unasked)}" if unasked else ""
            parts.append(f"{name}: {'success' if judged['success'] else 'no success'} ({readings}){preserved}{also}")
    verdict = "success" if edit["edit_success"] else ("not judged" if edit["edit_success"] is None else "NOT a success")
    return f"{verdict}; " + "; ".join(parts) if parts else verdict


def report(summaries):
    for s in summaries:
        print(f"{s['input']}: edit {s['edit']}")
        for e in s["edits"]:
            psnr = "not finite" if e["psnr_to_input"] is None else f"{e['psnr_to_input']:.1f} dB"
            region = ("" if e.get("region_fraction") is None or e["kind"] != "edit"
                      else f"; edit region {100 * e['region_fraction']:.1f}% of the image")
            print(f"  {e['query']}: {_verdict(e)}; PSNR to input {psnr}{region}")
        for note in s["notes"]:
            print(f"  note: {note}")
        for w in s["warnings"]:
            print(f"  warning: {w}")
        print(f"  grid: {s['grid']}")
        print(f"  report: {s['json']}")
    if summaries:
        print(f"success: {summaries[0]['success_rule']}")


INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def preflight(argv):
    """Every flag checked before torch is imported (a fraction of a second on a small CPU): the input,
    model and output flags (optimization.cli_checks), then the whole parser (--help prints here, an
    unknown flag or malformed value is refused) and the method options' values (EditOptions, which
    is torch-free). The checks that need torch or a file's contents run in
    optimization.attribute_editor.validate, still before any model loads."""
    from optimization.arguments import get_arguments, light_parser
    from optimization.cli_checks import preflight as check
    from optimization.options import EditOptions

    if not {"-h", "--help"} & set(argv):
        args, _ = light_parser().parse_known_args(argv)
        check(args)
    EditOptions.from_args(get_arguments(argv))


def run(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        preflight(argv)
        from optimization.attribute_editor import main

        summaries = main(argv)
    except INPUT_ERRORS as e:
        from guided_diffusion.safe_paths import report_input_error

        return report_input_error(e)  # one line, said by rank 0 only under mpiexec
    report(summaries)
    return 0


if __name__ == "__main__":
    sys.exit(run())
