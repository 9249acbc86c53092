"""The edit-evaluation benchmark's reusable parts (what "works" means: README, "Evaluation").

- `METHODS`: the compared methods, each a preset of `optimization.arguments.PRESETS` plus
  `EditOptions` overrides; `method_options` builds them.
- Per-edit metrics: `synthetic_edit_metrics` (against the ground-truth counterfactual of a synthetic
  face) and `real_edit_metrics` (a labelled dataset: classifier accuracy, L1 to the input, LPIPS).
- `aggregate` (means per group), CSV rows that survive a killed run, the Markdown tables, the
  summary plot and the sample grids.
- FID: `load_inception` (pool3 features of torchvision's inception_v3, from a weights file on disk),
  `frechet_distance` (of two Gaussians) and `frechet_distance_of_features`.

Rows are dicts: key columns (method, identity or image, attribute, direction) and float measures.
Images are [N, 3, H, W] in [-1, 1]; attribute vectors [N, 20] of 0/1.
"""
import csv
import io
import math
import os
from dataclasses import asdict

import numpy as np
import torch

from guided_diffusion.atomic import atomic_write
from preprocess.attributes import ATTRIBUTE_NAMES, RECONSTRUCTION_INDEX

from . import metrics
from .editor import EditOptions
from .guidance import GuidanceWeights
from .visualization import labelled_grid

# --------------------------------------------------------------------------- the methods

# Every lambda at zero: the editor then runs its sampler without a cond_fn.
NO_GUIDANCE = {name: 0.0 for name in asdict(GuidanceWeights())}

# name -> (preset, overrides of that preset). Baselines take the fast preset's chain (25 respaced
# steps, edit strength 0.6) so that they differ from CycleDiff only in what their name says.
_NO_REGION = dict(region="none")
METHODS = {
    # CycleDiff on the whole image (as before the region existed) ...
    "cyclediff_s2o_fast": ("fast", dict(cycle_schema="step_to_origin", **_NO_REGION)),
    "cyclediff_sbs_noised_fast": ("fast", dict(cycle_schema="step_by_step", cycle_target="noised_origin",
                                               **_NO_REGION)),
    "cyclediff_sbs_inversion_fast": ("fast", dict(cycle_schema="step_by_step", cycle_target="inversion",
                                                  **_NO_REGION)),
    # ... and inside the region the model infers (optimization.region): the default is the sbs one.
    "cyclediff_sbs_inversion_region_fast": ("fast", dict(region="inferred")),
    "cyclediff_s2o_region_fast": ("fast", dict(cycle_schema="step_to_origin", region="inferred")),
    # The paper's released procedure (no inversion: the input is the start latent).
    "cyclediff_s2o_paper": ("paper", dict(cycle_schema="step_to_origin")),
    "cyclediff_sbs_paper": ("paper", dict(cycle_schema="step_by_step", cycle_target="noised_origin")),
    # The paper's weights and 1000 steps from a full DDIM inversion.
    "cyclediff_s2o_paper_inversion": ("paper_inversion", dict(cycle_schema="step_to_origin")),
    "cyclediff_sbs_noised_paper_inversion": ("paper_inversion", dict(cycle_schema="step_by_step",
                                                                     cycle_target="noised_origin")),
    "cyclediff_sbs_inversion_paper_inversion": ("paper_inversion", dict(cycle_schema="step_by_step",
                                                                        cycle_target="inversion")),
    # Classifier guidance (attribute + range terms) without the cycle term, whole image / region.
    "guidance_no_cycle_fast": ("fast", dict(cycle_schema="none", cycle_reconstruct_lambda=0.0, **_NO_REGION)),
    "guidance_no_cycle_region_fast": ("fast", dict(cycle_schema="none", cycle_reconstruct_lambda=0.0,
                                                   region="inferred")),
    # The conditional model alone (with the preset's cfg_scale) on the edit-friendly inversion.
    "conditional_only_fast": ("fast", dict(cycle_schema="none", **NO_GUIDANCE, **_NO_REGION)),
    "conditional_only_region_fast": ("fast", dict(cycle_schema="none", region="inferred", **NO_GUIDANCE)),
    # DDIM inversion under a_ref, plain conditional DDIM sampling under a_q.
    "ddim_conditional_fast": ("fast", dict(sampler="ddim", inversion="ddim", cycle_schema="none", **NO_GUIDANCE,
                                           **_NO_REGION)),
    # SDEdit: the input noised to the start level, conditional DDPM denoising under a_q.
    "sdedit_fast": ("fast", dict(inversion="sdedit", cycle_schema="none", **NO_GUIDANCE, **_NO_REGION)),
}


# The method `python main.py` runs by default (the fast preset as it is): the reference of the
# paired differences in the report.
DEFAULT_METHOD = "cyclediff_sbs_inversion_region_fast"

# Not a method: the renderer's counterfactual of each synthetic input, scored like an edit. It is
# the ceiling the evaluation classifier allows: a perfect edit scores exactly this.
GROUND_TRUTH = "ground_truth"


def parse_methods(text, synthetic=True):
    """'all' or a comma list of METHODS names (or GROUND_TRUTH on synthetic inputs) -> list of names
    (in the given order; 'all' adds GROUND_TRUTH last on synthetic inputs)."""
    if text is None or str(text).strip() == "all":
        return list(METHODS) + ([GROUND_TRUTH] if synthetic else [])
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if GROUND_TRUTH in names and not synthetic:
        raise ValueError(f"method {GROUND_TRUTH} needs synthetic inputs (real images have no counterfactual)")
    known = list(METHODS) + [GROUND_TRUTH]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown method {', '.join(unknown) or repr(text)}; choose from: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"method listed twice in {text!r}")
    return names


def method_options(name, steps=None, paper_steps=None):
    """EditOptions of method `name`.

    :param steps: run every method on a respaced chain of this many steps (tests, smoke runs).
    :param paper_steps: run the paper preset's methods on a respaced chain of this many steps
        instead of all the model's steps (1000 for the paper) — ignored when `steps` is given.
    """
    preset, overrides = METHODS[name]
    overrides = dict(overrides)
    if steps:
        overrides["timestep_respacing"] = str(int(steps))
    elif preset.startswith("paper") and paper_steps:
        overrides["timestep_respacing"] = str(int(paper_steps))
    return EditOptions.from_preset(preset, **overrides)


def describe_options(opts, total_steps):
    """One-line summary of EditOptions for the report; `total_steps` is the model's chain length."""
    w = opts.weights
    lambdas = ", ".join(f"{k.replace('_lambda', '')}={v:g}" for k, v in asdict(w).items() if v)
    cycle = "none" if opts.cycle_schema == "none" or not w.cycle_reconstruct_lambda else (
        opts.cycle_schema + (f"/{opts.cycle_target}" if opts.cycle_schema == "step_by_step" else ""))
    return (f"{opts.sampler} on {opts.timestep_respacing or total_steps} steps, strength {opts.edit_strength:g}, "
            f"inversion {opts.inversion}, cycle {cycle}, lambdas: {lambdas or 'none'}"
            + (f", cap {opts.guidance_max_step:g}" if opts.guidance_max_step and lambdas else "")
            + (f", cfg {opts.cfg_scale:g}" if opts.cfg_scale != 1 else ""))


# --------------------------------------------------------------------------- per-edit metrics

SYNTHETIC_COLUMNS = ("method", "identity", "attribute", "direction", "success", "preservation", "preservation_gt",
                     "psnr_gt", "l1_gt", "l1_outside_mask", "region_iou", "seconds", "unet_evals")
REAL_COLUMNS = ("method", "image", "attribute", "direction", "success", "preservation", "l1_input",
                "psnr_input", "lpips", "seconds", "unet_evals")
KEY_COLUMNS = 3      # method, identity/image, attribute identify an edit
MEASURE_START = 4    # columns after `direction` are float measures


def direction(a_ref, attribute):
    """'add' when the edit turns `attribute` on, 'remove' when off, 'none' for reconstruction."""
    if attribute == RECONSTRUCTION_INDEX:
        return "none"
    return "add" if float(a_ref[attribute]) < 0.5 else "remove"


def _classifier_measures(probs_edited, probs_input, a_ref, a_q):
    """success [N] (NaN for reconstructions) and preservation vs the classifier's reading of the input."""
    edit_mask = a_q != a_ref
    success = metrics.edit_success(probs_edited, a_q, edit_mask).double()
    success[~edit_mask.any(dim=1)] = float("nan")
    return dict(success=success, preservation=metrics.preservation(probs_edited, probs_input, edit_mask).double())


def synthetic_edit_metrics(edited, x, ground_truth, allowed_mask, probs_edited, probs_input, a_ref, a_q,
                           region=None):
    """Per-edit measures on synthetic faces.

    :param edited, x, ground_truth: [N, 3, H, W] edit, input, and the input's identity rendered
        under a_q.
    :param allowed_mask: [N, H, W] bool, pixels the edited attribute may change (all False for a
        reconstruction).
    :param probs_edited, probs_input: [N, 20] evaluation-classifier probabilities.
    :param a_ref, a_q: [N, 20] 0/1.
    :return: dict measure -> float64 tensor [N]: success (every edited attribute read as a_q; NaN
        for a reconstruction), preservation (other attributes read as on the input),
        preservation_gt (other attributes read as their labels), psnr_gt, l1_gt, l1_outside_mask
        (L1 to the input where the attribute must not change; there the ground truth equals the
        input), region_iou (IoU of the method's inferred region, > 0.5, with the renderer's mask; NaN
        without a region or for a reconstruction).
    :param region: [N, 1, H, W] the method's inferred region (EditResult.region), or None.
    """
    edited, x, ground_truth = edited.cpu(), x.cpu(), ground_truth.cpu()
    out = _classifier_measures(probs_edited.cpu(), probs_input.cpu(), a_ref.cpu(), a_q.cpu())
    # The labels are 0/1, so they read like probabilities through the same threshold.
    out.update(preservation_gt=metrics.preservation(probs_edited.cpu(), a_ref.cpu(), a_q.cpu() != a_ref.cpu()).double(),
               psnr_gt=metrics.psnr(edited, ground_truth).double(),
               l1_gt=metrics.l1(edited, ground_truth),
               l1_outside_mask=metrics.l1(edited, x, mask=~allowed_mask.cpu().bool()),
               region_iou=region_iou(region, allowed_mask, a_ref, a_q))
    return out


def region_iou(region, allowed_mask, a_ref, a_q):
    """[N] IoU of region > 0.5 with allowed_mask [N, H, W]; NaN without a region or for rows with
    nothing edited."""
    n = allowed_mask.shape[0]
    if region is None:
        return torch.full((n,), float("nan"), dtype=torch.float64)
    inferred = region.cpu()[:, 0] > 0.5
    truth = allowed_mask.cpu().bool()
    union = (inferred | truth).flatten(1).sum(1).double()
    iou = (inferred & truth).flatten(1).sum(1).double() / union.clamp(min=1)
    edited = (a_q.cpu() != a_ref.cpu()).any(dim=1)
    return torch.where(edited, iou, torch.full_like(iou, float("nan")))


def real_edit_metrics(edited, x, probs_edited, probs_input, a_ref, a_q, lpips_fn=None):
    """Per-edit measures on a labelled dataset (no ground truth).

    :return: dict measure -> float64 tensor [N]: success (the classifier's accuracy on the edited
        attribute, NaN for a reconstruction), preservation, l1_input and psnr_input (for a
        reconstruction, the paper's L1 reconstruction error), lpips (only with `lpips_fn`).
    """
    out = _classifier_measures(probs_edited.cpu(), probs_input.cpu(), a_ref.cpu(), a_q.cpu())
    out.update(l1_input=metrics.l1(edited.cpu(), x.cpu()), psnr_input=metrics.psnr(edited.cpu(), x.cpu()).double())
    if lpips_fn is not None:
        with torch.no_grad():
            out["lpips"] = lpips_fn(edited, x.to(edited.device)).detach().double().cpu()
    return out


# --------------------------------------------------------------------------- rows and CSV files

def _typed(column, text):
    if column in ("identity", "image", "attribute"):
        return int(text)
    if column in ("method", "direction"):
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


# --------------------------------------------------------------------------- FID

def gaussian_statistics(features):
    """features [N, D] (N >= 2) -> (mean [D], unbiased covariance [D, D]), float64 numpy."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D] for a mean and covariance; got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix):
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    tr((s1 s2)^(1/2)) = tr((s1^(1/2) s2 s1^(1/2))^(1/2)), the latter symmetric PSD, so both square
    roots come from symmetric eigen-decompositions (no scipy, no complex round-off).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"Fréchet distance needs means [D] and covariances [D, D] of one D; got "
                         f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * cross, 0.0))


def frechet_distance_of_features(x, y):
    """Fréchet distance between the Gaussians fitted to features x [N, D] and y [M, D] (N, M >= 2).

    With few samples (N M <= D^2: a few hundred 2048-d Inception features) no D x D matrix is formed:
    with centred features scaled by 1/sqrt(N-1), Xc and Yc, sigma_x = Xc^T Xc and sigma_y = Yc^T Yc,
    and the non-zero eigenvalues of sigma_x sigma_y are those of K K^T with K = Xc Yc^T [N, M], so
    tr((sigma_x sigma_y)^(1/2)) is the sum of the square roots of K K^T's eigenvalues.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need features [N >= 2, D] and [M >= 2, D] of one D; got {x.shape} and {y.shape}")
    (n, d), m = x.shape, len(y)
    if n * m > d * d:
        return frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))
    xc = (x - x.mean(axis=0)) / math.sqrt(n - 1)
    yc = (y - y.mean(axis=0)) / math.sqrt(m - 1)
    k = xc @ yc.T
    gram = k @ k.T if n <= m else k.T @ k
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum()
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(max(diff @ diff + (xc * xc).sum() + (yc * yc).sum() - 2 * cross, 0.0))


class InceptionPool3(torch.nn.Module):
    """torchvision inception_v3 up to its 2048-d average pool ("pool3", the FID features)."""

    def __init__(self, net):
        super().__init__()
        net.fc = torch.nn.Identity()
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> features [N, 2048] (float64, CPU).

        The Google-trained weights expect [-1, 1] input at 299 px, so no ImageNet normalisation.
        """
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x).double().cpu()


def load_inception(path, device="cpu"):
    """InceptionPool3 from a torchvision inception_v3 state dict on disk (nothing is downloaded)."""
    import torchvision

    if not os.path.isfile(path):
        raise FileNotFoundError(f"inception weights not found: {path} (--inception_weights)")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read inception weights {path}: {type(err).__name__}: {err}") from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or "Mixed_7c.branch_pool.conv.weight" not in state_dict:
        raise ValueError(f"{path} is not a torchvision inception_v3 state dict")
    aux = any(k.startswith("AuxLogits.") for k in state_dict)
    net = torchvision.models.Inception3(aux_logits=aux, transform_input=False, init_weights=False)
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match torchvision's inception_v3: {str(err).splitlines()[0]}") from None
    return InceptionPool3(net).to(device)
