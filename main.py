"""CycleDiff: edit a face's attributes. `python main.py --help` lists the flags.

With no flags it edits image IMAGE_INDEX of the embedded default (synthetic faces rendered from a
held-out seed) by attribute ATTRIBUTE_INDEX, both set at the top of optimization/attribute_editor.py.
"""
import sys


def run():
    from optimization.attribute_editor import main

    try:
        summaries = main()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in summaries:
        edits = ", ".join(
            f"{e['query']}: success={e.get('edit_success')} PSNR-to-input={e['psnr_to_input']:.1f} dB"
            for e in s["edits"])
        print(f"{s['input']}: {edits}")
        print(f"  grid: {s['grid']}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
