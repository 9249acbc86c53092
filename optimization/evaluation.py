"""The edit-evaluation benchmark's methods and per-edit measures (what "works" means: README,
"Evaluation").

- `METHODS`: the compared methods, each a preset of `optimization.presets.PRESETS` plus
  `EditOptions` overrides; `method_options` builds them.
- Per-edit metrics: `synthetic_edit_metrics` (against the ground-truth counterfactual of a synthetic
  face) and `real_edit_metrics` (a labelled dataset: classifier accuracy, L1 to the input, LPIPS).
- The benchmark's splits besides single flips of the editable attributes: joint edits (two editable
  attributes flipped at once, `parse_joint_pairs`) and single flips of the non-editable ones
  (`parse_noneditable`); an edit is keyed by an int code (`edit_attributes`), and `split_markdown`
  writes a split's section of results.md.

The reports (rows, CSV, aggregation, intervals, tables, plots) are `optimization.reports`, the
Fréchet distances and Inception features `optimization.fid`; both are re-exported here.
Images are [N, 3, H, W] in [-1, 1]; attribute vectors [N, 20] of 0/1.

Importing this module does not import torch (the measures import it when called): the benchmark
checks its flags (methods, variants, splits) with it before torch loads.
"""
import re
from dataclasses import asdict

from preprocess.attributes import ATTRIBUTE_NAMES, EDITABLE_ATTRIBUTES, RECONSTRUCTION_INDEX
from preprocess.synthetic_faces import BALD, BANGS, HAIR_COLOURS, STRAIGHT, WAVY

from .options import EditOptions, GuidanceWeights, parse_attribute_thresholds
from .reports import (GROUND_TRUTH, KEY_COLUMNS, MEASURE_START, REAL_COLUMNS, SYNTHETIC_COLUMNS, aggregate,  # noqa: F401
                      attribute_label, bootstrap_interval, format_row, interval_tables, markdown_table,
                      paired_differences, plot_summary, read_rows, results_markdown, row_key, sample_grid,
                      write_rows_atomic, write_text_atomic)

# Re-exported from optimization.fid (and the measures module), imported on first use: they need torch.
_FID_NAMES = ("InceptionPool3", "frechet_distance", "frechet_distance_of_features", "gaussian_statistics",
              "load_inception")


def __getattr__(name):
    if name in _FID_NAMES:
        from . import fid

        return getattr(fid, name)
    if name == "metrics":
        from . import metrics

        return metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "ddim_conditional_region_fast": ("fast", dict(sampler="ddim", inversion="ddim", cycle_schema="none",
                                                  region="inferred", **NO_GUIDANCE)),
    # SDEdit: the input noised to the start level, conditional DDPM denoising under a_q (with the
    # region, the input's noised copy is kept outside it).
    "sdedit_fast": ("fast", dict(inversion="sdedit", cycle_schema="none", **NO_GUIDANCE, **_NO_REGION)),
    "sdedit_region_fast": ("fast", dict(inversion="sdedit", cycle_schema="none", region="inferred", **NO_GUIDANCE)),
}


# The method `python main.py` runs by default (the fast preset as it is): the reference of the
# paired differences in the report.
DEFAULT_METHOD = "cyclediff_sbs_inversion_region_fast"



def register_variants(text):
    """Add methods defined on the command line to METHODS: 'NAME=BASE:key=value,key=value;NAME2=...'
    (BASE a METHODS name, each key an editor option, parsed as its `main.py` flag). For sweeps and
    ablations; returns the new names in order."""
    import argparse

    from .arguments import add_option_flags

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_option_flags(parser)
    names = []
    for spec in filter(None, (s.strip() for s in str(text or "").split(";"))):
        name, _, rest = spec.partition("=")
        base, _, settings = rest.partition(":")
        name, base = name.strip(), base.strip()
        if not name or not base:
            raise ValueError(f"--variants entry {spec!r}: write NAME=BASE_METHOD:key=value,...")
        if base not in METHODS:
            raise ValueError(f"--variants {name}: unknown base method {base!r}")
        argv = []
        for setting in filter(None, (s.strip() for s in settings.split(","))):
            key, _, value = setting.partition("=")
            argv += [f"--{key.strip()}", value.strip()]
        try:
            parsed, unknown = parser.parse_known_args(argv)
        except (argparse.ArgumentError, SystemExit) as err:
            raise ValueError(f"--variants {name}: {err}") from None
        if unknown:
            raise ValueError(f"--variants {name}: unknown option(s) {' '.join(u for u in unknown if u.startswith('--'))}")
        preset, overrides = METHODS[base]
        overrides = {**overrides, **{k: v for k, v in vars(parsed).items() if v is not None}}
        EditOptions.from_preset(preset, **overrides)  # a bad value fails here
        if (name in METHODS and METHODS[name] != (preset, overrides)) or name == GROUND_TRUTH:
            raise ValueError(f"--variants: {name!r} is already a method")
        METHODS[name] = (preset, overrides)
        names.append(name)
    return names


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
            + (f", gradient {opts.guidance_gradient}" if lambdas else "")
            + (f", region {opts.region}" if opts.region != "none" else "")
            + (f" (threshold {opts.region_threshold:g}"
               + "".join(f", {ATTRIBUTE_NAMES[k]}={v:g}"
                         for k, v in parse_attribute_thresholds(opts.region_attribute_thresholds).items()) + ")"
               if opts.region == "inferred" else "")
            + (f", cfg {opts.cfg_scale:g}" if opts.cfg_scale != 1 else ""))


# --------------------------------------------------------------------------- per-edit metrics

def direction(a_ref, attribute):
    """'add' when the edit turns `attribute` on, 'remove' when off, 'none' for reconstruction."""
    if attribute == RECONSTRUCTION_INDEX:
        return "none"
    return "add" if float(a_ref[attribute]) < 0.5 else "remove"


def _classifier_measures(probs_edited, probs_input, a_ref, a_q):
    """success [N] (NaN for reconstructions) and preservation vs the classifier's reading of the input."""
    from . import metrics

    edit_mask = a_q != a_ref
    success = metrics.edit_success(probs_edited, a_q, edit_mask).double()
    success[~edit_mask.any(dim=1)] = float("nan")
    return dict(success=success, preservation=metrics.preservation(probs_edited, probs_input, edit_mask).double())


def synthetic_edit_metrics(edited, x, ground_truth, allowed_mask, probs_edited, probs_input, a_ref, a_q,
                           region=None, identity_fn=None):
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
    :param identity_fn: images -> unit identity embeddings [N, D] (the evaluation identity network):
        adds identity_input / identity_gt, the cosine similarity of the edit's embedding to the
        input's / the ground truth's (NaN without it).
    """
    import torch

    from . import metrics

    edited, x, ground_truth = edited.cpu(), x.cpu(), ground_truth.cpu()
    out = _classifier_measures(probs_edited.cpu(), probs_input.cpu(), a_ref.cpu(), a_q.cpu())
    # The labels are 0/1, so they read like probabilities through the same threshold.
    out.update(preservation_gt=metrics.preservation(probs_edited.cpu(), a_ref.cpu(), a_q.cpu() != a_ref.cpu()).double(),
               psnr_gt=metrics.psnr(edited, ground_truth).double(),
               l1_gt=metrics.l1(edited, ground_truth),
               l1_outside_mask=metrics.l1(edited, x, mask=~allowed_mask.cpu().bool()),
               region_iou=region_iou(region, allowed_mask, a_ref, a_q))
    if identity_fn is None:
        out["identity_input"] = out["identity_gt"] = torch.full((len(edited),), float("nan"), dtype=torch.float64)
    else:
        embedded = identity_fn(edited).double()
        out["identity_input"] = (embedded * identity_fn(x).double()).sum(1)
        out["identity_gt"] = (embedded * identity_fn(ground_truth).double()).sum(1)
    return out


def region_iou(region, allowed_mask, a_ref, a_q):
    """[N] IoU of region > 0.5 with allowed_mask [N, H, W]; NaN without a region or for rows with
    nothing edited."""
    import torch

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
    import torch

    from . import metrics

    out = _classifier_measures(probs_edited.cpu(), probs_input.cpu(), a_ref.cpu(), a_q.cpu())
    out.update(l1_input=metrics.l1(edited.cpu(), x.cpu()), psnr_input=metrics.psnr(edited.cpu(), x.cpu()).double())
    if lpips_fn is not None:
        with torch.no_grad():
            out["lpips"] = lpips_fn(edited, x.to(edited.device)).detach().double().cpu()
    return out


# --------------------------------------------------------------------------- the extra splits

NON_EDITABLE_ATTRIBUTES = tuple(k for k in range(len(ATTRIBUTE_NAMES)) if k not in EDITABLE_ATTRIBUTES)

# Pairs the renderer draws without conflict (its rules concern only the hair): two separate regions
# (glasses + smile), one region twice (smile + lipstick on the mouth), two small local ones (bags +
# open mouth), a local and a global one (glasses + age, male + lipstick).
DEFAULT_JOINT_PAIRS = ((9, 15), (15, 18), (2, 12), (9, 19), (11, 18))

# An edit's int code (the `attribute` column of the rows): 0-19 flips one attribute, 20 is a
# reconstruction, 100 a + b (a < b, both editable, so >= 209) flips the pair a+b together.
JOINT_CODE_BASE = 100


def joint_code(a, b):
    """The code of the joint edit flipping attributes a and b (either order): 100 min + max."""
    a, b = sorted((int(a), int(b)))
    return JOINT_CODE_BASE * a + b


def edit_attributes(code):
    """The attribute indices an edit code flips: [] (reconstruction), [k] or [a, b]."""
    code = int(code)
    if code == RECONSTRUCTION_INDEX:
        return []
    if code < RECONSTRUCTION_INDEX:
        return [code]
    return [code // JOINT_CODE_BASE, code % JOINT_CODE_BASE]


def edit_label(code):
    """File-name label of an edit: '09', '20', or '09+15' for a pair."""
    return "+".join(f"{k:02d}" for k in edit_attributes(code)) or f"{RECONSTRUCTION_INDEX:02d}"


def edit_name(code):
    """Table label: '3 Bald', 'reconstruction', '9+15 Eyeglasses+Smiling'."""
    flipped = edit_attributes(code)
    if len(flipped) < 2:
        return attribute_label(int(code))
    return "+".join(map(str, flipped)) + " " + "+".join(ATTRIBUTE_NAMES[k] for k in flipped)


def edit_direction(a_ref, code):
    """`direction` for each flipped attribute, joined by '+' ('add+remove' for a pair)."""
    flipped = edit_attributes(code)
    return "+".join(direction(a_ref, k) for k in flipped) if flipped else "none"


def edit_seed(base, index, code):
    """Seed of an edit of input `index`: base + 1000 index + k; a pair takes its first attribute's
    (the same noise as that attribute's single edit)."""
    flipped = edit_attributes(code)
    return int(base) + 1000 * int(index) + (flipped[0] if flipped else RECONSTRUCTION_INDEX)


def _index(text, what):
    text = text.strip()
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{what}: {text!r} is not an attribute index")
    value = int(text)
    if not 0 <= value < len(ATTRIBUTE_NAMES):
        raise ValueError(f"{what}: attribute index {value} out of range 0-{len(ATTRIBUTE_NAMES) - 1}")
    return value


def parse_joint_pairs(text):
    """--joint_pairs: None / 'none' -> []; 'default' -> DEFAULT_JOINT_PAIRS; '9+15,15+18' -> those
    pairs. Returns joint codes in the given order. ValueError (one line) for a malformed pair, an
    index out of range, an attribute paired with itself, a non-editable attribute or a pair twice."""
    if text is None or str(text).strip() == "none":
        return []
    text = str(text).strip()
    if text == "default":
        return [joint_code(a, b) for a, b in DEFAULT_JOINT_PAIRS]
    codes = []
    for part in text.split(","):
        halves = part.split("+")
        if len(halves) != 2 or not all(h.strip() for h in halves):
            raise ValueError(f"--joint_pairs: {part.strip()!r} is not a pair 'a+b' (e.g. 9+15); got {text!r}")
        a, b = (_index(h, "--joint_pairs") for h in halves)
        if a == b:
            raise ValueError(f"--joint_pairs: {part.strip()!r} pairs attribute {a} with itself")
        for k in (a, b):
            if k not in EDITABLE_ATTRIBUTES:
                raise ValueError(f"--joint_pairs: {k} ({ATTRIBUTE_NAMES[k]}) is not editable; pairs are of "
                                 f"{', '.join(map(str, EDITABLE_ATTRIBUTES))}")
        if joint_code(a, b) in codes:
            raise ValueError(f"--joint_pairs: the pair {min(a, b)}+{max(a, b)} is listed twice in {text!r}")
        codes.append(joint_code(a, b))
    return codes


def parse_noneditable(text):
    """--noneditable: None / 'none' -> []; 'all' -> NON_EDITABLE_ATTRIBUTES; or a comma list of them."""
    if text is None or str(text).strip() == "none":
        return []
    text = str(text).strip()
    if text == "all":
        return list(NON_EDITABLE_ATTRIBUTES)
    values = [_index(v, "--noneditable") for v in text.split(",")]
    for v in values:
        if v in EDITABLE_ATTRIBUTES:
            raise ValueError(f"--noneditable: {v} ({ATTRIBUTE_NAMES[v]}) is editable (--attributes flips it)")
        if values.count(v) > 1:
            raise ValueError(f"--noneditable: attribute {v} listed twice in {text!r}")
    return values


def renderer_rule_broken(a):
    """Why the synthetic sampler could never draw the 0/1 vector `a` [20] (its hard rules: at most
    one hair colour, not both straight and wavy, no bangs when bald), or None. The renderer
    draws such a vector anyway, but not as its labels say (the first hair colour wins, bangs vanish
    on a bald head)."""
    if sum(int(a[k]) for k in HAIR_COLOURS) > 1:
        return "two hair colours"
    if int(a[STRAIGHT]) and int(a[WAVY]):
        return "straight and wavy hair"
    if int(a[BALD]) and int(a[BANGS]):
        return "bangs on a bald head"
    return None


def split_markdown(heading, notes, rows, measures, reference=None):
    """results.md's section of one extra split: `notes`, then per method and edit, per method, the
    bootstrap intervals and paired differences against `reference` (`interval_tables`, matched on
    identity and edit code), per method, edit and direction.

    :param rows: result rows whose `attribute` is an edit code (`edit_attributes`).
    """
    labelled = [dict(r, edit=edit_name(r["attribute"])) for r in rows]
    parts = [f"## {heading}", "", *[f"- {n}" for n in notes], ""]
    if not rows:
        return "\n".join(parts + ["No edits in this split.", ""])
    intervals = interval_tables(rows, [m for m in measures if m not in ("seconds", "unet_evals")], reference=reference)
    parts += ["### Per method and edit", "", markdown_table(aggregate(labelled, ("method", "edit"), measures),
                                                            ["method", "edit", "n", *measures]),
              "", "### Per method", "", markdown_table(aggregate(labelled, ("method",), measures),
                                                       ["method", "n", *measures]),
              "", "\n".join("#" + line if line.startswith("## ") else line for line in intervals.splitlines()),
              "", "### Per method, edit and direction", "",
              markdown_table(aggregate(labelled, ("method", "edit", "direction"), measures),
                             ["method", "edit", "direction", "n", *measures]), ""]
    return "\n".join(parts)
