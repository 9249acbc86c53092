"""The benchmark's reports: result rows and CSV files that survive a killed run, aggregation, bootstrap
intervals and paired differences, the Markdown tables, the summary plot and the sample grids.

Rows are dicts: key columns (method, identity or image, attribute, direction) and float measures.
"""
import csv
import io
import json
import math
import os

import numpy as np

from guided_diffusion.atomic import atomic_write
from preprocess.attributes import ATTRIBUTE_NAMES, RECONSTRUCTION_INDEX

from .visualization import labelled_grid


# Not a method: the renderer's counterfactual of each synthetic input, scored like an edit. It is
# the ceiling the evaluation classifier allows: a perfect edit scores exactly this.
GROUND_TRUTH = "ground_truth"


# --------------------------------------------------------------------------- rows and CSV files

SYNTHETIC_COLUMNS = ("method", "identity", "attribute", "direction", "success", "preservation", "preservation_gt",
                     "psnr_gt", "l1_gt", "l1_outside_mask", "region_iou", "identity_input", "identity_gt", "seconds",
                     "unet_evals")
REAL_COLUMNS = ("method", "image", "attribute", "direction", "success", "preservation", "l1_input",
                "psnr_input", "lpips", "seconds", "unet_evals")
KEY_COLUMNS = 3      # method, identity/image, attribute identify an edit
MEASURE_START = 4    # columns after `direction` are float measures


def _typed(column, text):
    if column in ("identity", "image", "attribute"):
        return int(text)
    if column in ("method", "direction", "pair"):
        if not text:
            raise ValueError("empty field")
        return text
    return float(text)


def format_row(row, columns):
    """Row dict -> list of CSV fields (floats with 7 significant digits, NaN as 'nan')."""
    return [f"{row[c]:.7g}" if isinstance(row[c], float) else str(row[c]) for c in columns]


def read_rows(path, columns):
    """Rows of a results CSV. Lines that do not parse (a run killed mid-line) are dropped."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or tuple(lines[0]) != tuple(columns):
        raise ValueError(f"{path}: header is not {','.join(columns)} (a results file of another mode or version)")
    rows = []
    for fields in lines[1:]:
        if len(fields) != len(columns):
            continue
        try:
            rows.append({c: _typed(c, v) for c, v in zip(columns, fields)})
        except ValueError:
            continue
    return rows


def row_key(row, columns):
    return tuple(row[c] for c in columns[:KEY_COLUMNS])


def write_rows_atomic(path, rows, columns):
    """Write a CSV (header + rows) via a temporary file in the same directory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(format_row(r, columns) for r in rows)
    write_text_atomic(path, buffer.getvalue())


def write_text_atomic(path, text):
    atomic_write(path, text)


# --------------------------------------------------------------------------- aggregation

def aggregate(rows, by, measures):
    """Mean of each measure per group of `by` columns (NaNs left out), groups in first-seen order.

    :return: list of dicts: the `by` values, n (rows in the group) and one mean per measure
        (NaN when the group has no finite value).
    """
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, members in groups.items():
        summary = dict(zip(by, key), n=len(members))
        for m in measures:
            values = [r[m] for r in members if m in r and math.isfinite(r[m])]
            summary[m] = sum(values) / len(values) if values else float("nan")
        out.append(summary)
    return out


def attribute_label(index):
    return "reconstruction" if index == RECONSTRUCTION_INDEX else f"{index} {ATTRIBUTE_NAMES[index]}"


_PERCENT = ("success", "preservation", "preservation_gt")


def _cell(name, value):
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "–"
    if name in _PERCENT:
        return f"{100 * value:.1f}%"
    if name.startswith("psnr") or name in ("seconds", "fid"):
        return f"{value:.2f}"
    if name == "unet_evals":
        return f"{value:.0f}"
    return f"{value:.4f}"


def markdown_table(summaries, columns):
    """GitHub Markdown table of dicts over `columns` (attribute indices shown with their names)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if c in ("method", "attribute") else "---:"
                                                            for c in columns) + "|"]
    for s in summaries:
        cells = [attribute_label(s[c]) if c == "attribute" else _cell(c, s[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bootstrap_interval(values, num_resamples=2000, level=0.95, seed=0):
    """Percentile bootstrap interval (low, high) of the mean of `values` (NaNs left out); (nan, nan)
    with fewer than two finite values."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(num_resamples, len(v)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_differences(rows, measure, method, reference, keys=("identity", "attribute")):
    """Per-edit differences measure(method) - measure(reference) over the edits both have (matched on
    `keys`), NaNs left out: a list of floats."""
    ref = {tuple(r[k] for k in keys): r[measure] for r in rows if r["method"] == reference}
    out = []
    for r in rows:
        if r["method"] != method:
            continue
        other = ref.get(tuple(r[k] for k in keys))
        if other is not None and math.isfinite(r[measure]) and math.isfinite(other):
            out.append(r[measure] - other)
    return out


def refuse_to_replace(path, looks_ours, what):
    """None when `path` is absent or `looks_ours(path)` says a tool of this project wrote it; else
    the one-line refusal (a summary replaces only its own files)."""
    if not os.path.exists(path):
        return None
    try:
        ours = looks_ours(path)
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        ours = False
    return None if ours else f"{path} exists and is not {what}"


def refuse_rows_folder(folder, allowed):
    """None when `folder` is absent or holds only files named in `allowed`; else the refusal."""
    if os.path.exists(folder) and (not os.path.isdir(folder) or set(os.listdir(folder)) - set(allowed)):
        return (f"{folder} exists and holds other files than {', '.join(sorted(allowed))}, which this tool did not "
                f"write (the rows go there)")
    return None


def json_with_key(key):
    """looks_ours for refuse_to_replace: a JSON object with `key`."""
    def looks_ours(path):
        with open(path, encoding="utf-8") as f:
            return key in json.load(f)
    return looks_ours


def read_run_rows(folder, columns=SYNTHETIC_COLUMNS):
    """Rows of an evaluate_edits output folder: its results.csv, else its partial_rank*.csv files
    (a run still going or killed)."""
    final = os.path.join(folder, "results.csv")
    paths = [final] if os.path.isfile(final) else sorted(
        os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("partial_rank") and n.endswith(".csv"))
    rows = []
    for path in paths:
        rows += read_rows(path, columns)
    return rows


def method_intervals(rows, measures, reference=None, keys=("identity", "attribute")):
    """Per method (first-seen order): {"n", measure: {"mean", "low", "high"}, and, when `reference`
    is another method of the rows, f"{measure}_vs_{reference}": the paired difference's
    {"mean", "low", "high", "n"}}. Measures with no finite value are left out."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = {}
    for method in methods:
        members = [r for r in rows if r["method"] == method]
        entry = {"n": len(members)}
        for name in measures:
            values = [r[name] for r in members if name in r and math.isfinite(r[name])]
            if not values:
                continue
            low, high = bootstrap_interval(values)
            entry[name] = {"mean": sum(values) / len(values), "low": low, "high": high}
            if reference in methods and method != reference:
                diffs = paired_differences(rows, name, method, reference, keys)
                if diffs:
                    low, high = bootstrap_interval(diffs)
                    entry[f"{name}_vs_{reference}"] = {"mean": sum(diffs) / len(diffs), "low": low, "high": high,
                                                       "n": len(diffs)}
        out[method] = entry
    return out


def interval_tables(rows, measures, reference=None, keys=("identity", "attribute")):
    """Markdown: each method's mean and 95 % bootstrap interval per measure, then (when `reference`
    is one of the methods) each other method's paired difference to it with its interval."""
    def cell(name, mean, low, high):
        if not math.isfinite(mean):
            return "–"
        scale = 100 if name in _PERCENT else 1
        digits = 1 if name in _PERCENT or name.startswith("psnr") else 4
        return f"{scale * mean:.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"

    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["## Per method, with 95 % bootstrap intervals", "",
             "| method | n | " + " | ".join(measures) + " |", "|---|---:|" + "---:|" * len(measures)]
    for m in methods:
        members = [r for r in rows if r["method"] == m]
        cells = []
        for name in measures:
            values = [r[name] for r in members if math.isfinite(r[name])]
            mean = sum(values) / len(values) if values else float("nan")
            cells.append(cell(name, mean, *bootstrap_interval(values)))
        lines.append(f"| {m} | {len(members)} | " + " | ".join(cells) + " |")
    if reference in methods and len(methods) > 1:
        lines += ["", f"## Paired differences against {reference} (same edits; 95 % bootstrap intervals)", "",
                  "| method | " + " | ".join(measures) + " |", "|---|" + "---:|" * len(measures)]
        for m in methods:
            if m == reference:
                continue
            cells = []
            for name in measures:
                diffs = paired_differences(rows, name, m, reference, keys)
                mean = sum(diffs) / len(diffs) if diffs else float("nan")
                cells.append(cell(name, mean, *bootstrap_interval(diffs)))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(title, notes, per_attribute, overall, measures, per_direction=None, intervals=None):
    """The report: title, notes (list of lines), the method x attribute table, the overall table,
    (when given) the intervals tables (`interval_tables`) and the method x attribute x direction
    table."""
    parts = [f"# {title}", "", *[f"- {n}" for n in notes], "",
             "## Per method and attribute", "", markdown_table(per_attribute, ["method", "attribute", "n", *measures]),
             "", "## Per method", ""]
    overall_columns = ["method", "n", *measures] + (["fid"] if any("fid" in s for s in overall) else [])
    parts += [markdown_table([{"fid": float("nan"), **s} for s in overall], overall_columns), ""]
    if intervals:
        parts += [intervals, ""]
    if per_direction:
        parts += ["## Per method, attribute and direction", "",
                  markdown_table(per_direction, ["method", "attribute", "direction", "n", *measures]), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- figures

def plot_summary(overall, per_attribute, path, fidelity, fidelity_label):
    """Left: fidelity against success, one point per method. Right: success per method x attribute.

    Written with matplotlib's Agg canvas (no display) via a temporary file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = [s["method"] for s in overall]
    attributes = sorted({s["attribute"] for s in per_attribute if s["attribute"] != RECONSTRUCTION_INDEX})
    fig = Figure(figsize=(6 + 0.45 * max(len(attributes), 4), 4.8), constrained_layout=True)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.3, 1]))
    # The ground truth's fidelity is exact by definition: it would only squash the axis.
    points = [s for s in overall if s["method"] != GROUND_TRUTH]
    successes = [100 * s["success"] for s in points if np.isfinite(s["success"])]
    left.set_xlim(max(-5, min(successes, default=0) - 15), 105)
    # Labels stacked at least `gap` apart in height (variants of one method often land on nearly
    # the same point), each tied to its point by a thin line when moved.
    ys = [float(s[fidelity]) for s in points]
    order = sorted((i for i, y in enumerate(ys) if np.isfinite(y)), key=ys.__getitem__)
    span = ys[order[-1]] - ys[order[0]] if order else 0.0
    gap = 0.06 * span if span > 0 else 0.06
    label_y, last = {}, -np.inf
    for i in order:
        label_y[i] = last = max(ys[i], last + gap)
    dx = 0.02 * (105 - left.get_xlim()[0])
    for i, s in enumerate(points):
        x = 100 * s["success"]
        left.scatter(x, ys[i], s=36)
        if i in label_y:
            left.annotate(s["method"], (x, ys[i]), xytext=(x + dx, label_y[i]), textcoords="data", fontsize=7,
                          va="center",
                          arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5") if label_y[i] != ys[i] else None)
    left.set_xlabel("edit success (%)")
    left.set_ylabel(fidelity_label)
    left.set_title("fidelity against success, per method", fontsize=10)
    left.grid(alpha=0.3)

    table = np.full((len(methods), len(attributes)), np.nan)
    for s in per_attribute:
        if s["attribute"] in attributes:
            table[methods.index(s["method"]), attributes.index(s["attribute"])] = 100 * s["success"]
    image = right.imshow(table, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(len(methods)):
        for j in range(len(attributes)):
            if np.isfinite(table[i, j]):
                right.text(j, i, f"{table[i, j]:.0f}", ha="center", va="center", fontsize=6,
                           color="white" if table[i, j] < 60 else "black")
    right.set_xticks(range(len(attributes)), [ATTRIBUTE_NAMES[a] for a in attributes], rotation=60, ha="right",
                     fontsize=7)
    right.set_yticks(range(len(methods)), methods, fontsize=7)
    right.set_title("success (%) per attribute", fontsize=10)
    fig.colorbar(image, ax=right, shrink=0.8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def sample_grid(rows_of_images, row_titles, column_titles):
    """labelled_grid with one caption per column: rows_of_images are lists of uint8 [H, W, 3] or None."""
    captions = [list(column_titles) for _ in rows_of_images]
    return labelled_grid(rows_of_images, captions, row_titles=row_titles, cell=96)
