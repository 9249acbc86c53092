"""The CycleDiff command line (`python main.py`).

`python main.py` edits image IMAGE_INDEX of the default dataset by attribute ATTRIBUTE_INDEX
(set them here, as the paper's README says; flags override them). Attribute indices: see
`preprocess.attributes.ATTRIBUTE_NAMES`; 20 means reconstruction.

This module checks the flags and inputs (`validate`: before any model loads, and nothing is
written until it passes), builds the edit jobs, shards them over MPI ranks, edits, judges each edit
(`judge_edit`) and writes the outputs; the editing itself is `optimization.editor` (re-exported here
for convenience).
"""
import json
import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch

from guided_diffusion.atomic import atomic_write
from preprocess.attributes import ATTRIBUTE_NAMES, RECONSTRUCTION_INDEX

from . import metrics
from .editor import (FINAL_OUTPUTS, INVERSIONS, PIXEL_MEAN_TERMS, AttributeEditor, EditOptions,  # noqa: F401
                     EditResult, translate_weights)
from .image_io import (load_dataset_item, load_image_file, read_dataset_labels, save_png,  # noqa: F401
                       synthetic_seed, to_tensor, to_uint8, dataset_image_path)
from .cli_checks import (check_checkpoint_file, parse_domain_reference, preflight,  # noqa: F401
                         resolve_eval_classifier_path)
from .queries import (NUM_ATTRIBUTES, attribute_label, check_attribute_index, flipped_indices,  # noqa: F401
                      parse_attribute_indices, parse_attribute_vector, parse_index_list, query_from_indices)
from .visualization import labelled_grid, region_overlay, save_gif, save_image_atomic

IMAGE_INDEX = 0
ATTRIBUTE_INDEX = 9  # Eyeglasses

# How the report decides that an edit succeeded. Not optimization.metrics.edit_success (the
# benchmark's 0.5 threshold): a reading of 0.5001 is a coin toss, not an edit.
SUCCESS_MARGIN = 0.1
SUCCESS_RULE = (f"an edit succeeds when every attribute it flips (query != reference) is read on the query's side "
                f"with margin {SUCCESS_MARGIN}: p >= {0.5 + SUCCESS_MARGIN:.1f} for an attribute added, "
                f"p <= {0.5 - SUCCESS_MARGIN:.1f} for one removed; an edit that flips nothing is a "
                f"reconstruction, never a success (the benchmark, scripts/evaluate_edits.py, counts a rate over "
                f"hundreds of edits at 0.5, where readings near 0.5 average out; one edit's verdict needs the "
                f"margin); preservation: the share of the other attributes whose reading kept its side of 0.5")
GUIDANCE_JUDGE_NOTE = ("the guidance classifier steered the edit, so it is a biased judge: an edit can fool it "
                       "without changing the face")
EVAL_JUDGE_NOTE = "an independently trained classifier that the edit never saw: the fairer judge"
# An edited image this far from its input is no longer the input's face.
MIN_PSNR_DB = 10.0
# The grid's cell side in pixels (a 64 px image is drawn at twice its size).
GRID_CELL = 128
REGION_FRACTION_RULE = ("region_fraction: the fraction of the image's pixels where the edit's inferred region is "
                        "> 0.5 (0 for a reconstruction: nothing is re-sampled; null with --region none: the whole "
                        "image is re-sampled)")
UNET_EVALS_RULE = ("unet_evals: UNet evaluations per image, averaged over the batch the edit ran in (with the "
                   "reconstruction beside it: that one skips the contrast and region passes, so an edit alone "
                   "costs more; scripts/bench_edit.py times one edit)")


# --------------------------------------------------------------------------- judging an edit

def margin_success(probs, a_q, flipped, margin=SUCCESS_MARGIN):
    """True when every flipped attribute reads on the query's side with `margin` (SUCCESS_RULE);
    None for a reconstruction (nothing flipped)."""
    if not flipped:
        return None
    for i in flipped:
        p = round(float(probs[i]), 6)  # a float32 0.4 is 0.40000000596
        added = float(a_q[i]) > 0.5
        if not (p >= 0.5 + margin if added else p <= 0.5 - margin):  # a NaN reading fails too
            return False
    return True


def _finite_or_none(v, digits=None):
    v = float(v)
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


def _named(vector):
    return {name: _finite_or_none(v, 4) for name, v in zip(ATTRIBUTE_NAMES, vector)}


def _read(classifier, x):
    p = next(classifier.parameters())
    with torch.no_grad():
        return classifier(x.to(p.device, p.dtype)).float().cpu()[0]


def judge_edit(img, x, a_ref, a_q, judges, before):
    """Readings, success and preservation of one edit by each judge ({'guidance': clf, 'evaluation': clf}),
    with `before` their readings of the input. Returns (record dict, warnings list)."""
    flipped = flipped_indices(a_ref, a_q)
    mask = (a_q != a_ref)[None]
    psnr = float(metrics.psnr(img, x)[0])
    rec = dict(kind="edit" if flipped else "reconstruction", flipped=[ATTRIBUTE_NAMES[i] for i in flipped],
               l1_to_input=_finite_or_none(metrics.l1(img, x)[0]), psnr_to_input=_finite_or_none(psnr))
    found = []
    if not bool(torch.isfinite(img).all()):
        found.append("the edited image has non-finite pixels (NaN or inf): the edit diverged (loss weights too "
                     "strong? try --preset fast, smaller weights or a --guidance_max_step cap)")
    elif not psnr >= MIN_PSNR_DB:
        found.append(f"the {'edited' if flipped else 'reconstructed'} image is {psnr:.1f} dB from its input (< "
                     f"{MIN_PSNR_DB:g} dB): it is no longer the input's face, whatever the classifiers read (loss "
                     f"weights too strong? try --preset fast)")
    for who, classifier in judges.items():
        if classifier is None:
            rec[who] = None
            continue
        probs = _read(classifier, img)
        # Attributes the edit was not asked to change whose reading crossed 0.5: what preservation counts.
        unasked = [ATTRIBUTE_NAMES[i] for i in range(NUM_ATTRIBUTES)
                   if i not in flipped and (float(probs[i]) > 0.5) != (float(before[who][i]) > 0.5)]
        rec[who] = dict(after=_named(probs), success=margin_success(probs, a_q, flipped),
                        flipped_readings={ATTRIBUTE_NAMES[i]: _finite_or_none(probs[i], 4) for i in flipped},
                        preserved=float(metrics.preservation(probs[None], before[who][None], mask)[0]),
                        changed_unasked=unasked)
    # The headline verdict: the fairer judge when there is one.
    verdict = rec.get("evaluation") or rec.get("guidance")
    rec["edit_success"] = verdict["success"] if verdict else None
    rec["judged_by"] = ("evaluation" if rec.get("evaluation") else "guidance") if verdict and flipped else None
    if found and flipped:
        rec["edit_success"] = False
    return rec, found


# --------------------------------------------------------------------------- validation (no model)

def check_device(text):
    """The torch.device `text` names, refused (ValueError) when this machine does not have it."""
    if text is None:
        return None
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {text}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {text}: the editor runs on cpu, cuda or mps")
    return str(device)


@dataclass
class Plan:
    """What `validate` established from the flags, before any model is loaded."""

    image_size: int
    device: Optional[str]
    classifier_path: Optional[str]
    eval_classifier_path: Optional[str]
    domain_reference: Optional[str]
    opts: EditOptions
    attribute_indices: List[int]
    indices: List[int] = field(default_factory=list)  # dataset indices (empty with --init_image)
    fixed_ref: Optional[torch.Tensor] = None
    fixed_query: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None               # the dataset folder's table, read once


def validate(args):
    """Check every flag and input that can be checked without loading a model; ValueError /
    FileNotFoundError with one line otherwise. Creates nothing."""
    from guided_diffusion.script_util import load_model_config, model_config_path

    eval_path = resolve_eval_classifier_path(args)
    attribute_indices, indices = preflight(args, IMAGE_INDEX, ATTRIBUTE_INDEX)
    device = check_device(args.device)
    json_path = model_config_path(args.model_path)
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"--model_path: no hyper-parameter file {json_path} beside {args.model_path} "
                                f"(image_train.py writes it; the shipped model has checkpoints/diffusion.json)")
    config = load_model_config(args.model_path)
    image_size = int(config["image_size"])
    if args.model_output_size is not None and args.model_output_size != image_size:
        raise ValueError(f"--model_output_size {args.model_output_size} but {args.model_path} is a "
                         f"{image_size}x{image_size} model")
    classifier_path = args.attribute_cpk_path or None
    domain_reference = args.domain_reference if parse_domain_reference(args.domain_reference) is not None else None
    opts = EditOptions.from_args(args)
    fixed_ref = parse_attribute_vector(args.attribute, "attribute") if args.attribute else None
    fixed_query = parse_attribute_vector(args.query_attribute, "query_attribute") if args.query_attribute else None
    plan = Plan(image_size=image_size, device=device, classifier_path=classifier_path, eval_classifier_path=eval_path,
                domain_reference=domain_reference, opts=opts, attribute_indices=attribute_indices, indices=indices,
                fixed_ref=fixed_ref, fixed_query=fixed_query)
    if fixed_ref is None and classifier_path is None and (args.init_image or _unlabelled(args.dataset_dir)):
        raise ValueError("no reference attributes: the input has no labels and no classifier is loaded "
                         "(give -a/--attribute, or --attribute_cpk_path)")
    if args.init_image:
        load_image_file(args.init_image, image_size)  # an unreadable file fails here
        return plan
    if synthetic_seed(args.dataset_dir) is None:
        plan.labels = read_dataset_labels(args.dataset_dir)
        for i in plan.indices:
            dataset_image_path(args.dataset_dir, i, plan.labels)
    return plan


def _unlabelled(dataset_dir):
    return synthetic_seed(dataset_dir) is None and not os.path.isfile(os.path.join(dataset_dir, "attributes.pt"))


# --------------------------------------------------------------------------- jobs

class EditJob:
    """One input image and the edits asked of it."""

    def __init__(self, name, x, a_ref, queries, label):
        self.name = name              # output stem: '00007' for dataset index 7, or the file's stem
        self.x = x                    # [1, 3, S, S]
        self.a_ref = a_ref            # [20]
        self.queries = queries        # list of (label, flipped indices, a_q [20])
        self.label = label            # what was asked: '9', '9+15', 'all', '20' (output file names)
        self.notes = []               # one-line remarks for the report (e.g. a query equal to its reference)
        self.domain = None            # the out-of-domain check's dict, when made


def load_sources(args, plan):
    """(name, image [1, 3, S, S], labels [20] or None) of every input this rank edits."""
    rank, world = _mpi_rank_and_size()
    if args.init_image:  # one input: rank 0 edits it (the others would write the same files)
        return [(os.path.splitext(os.path.basename(args.init_image))[0],
                 load_image_file(args.init_image, plan.image_size), None)] if rank == 0 else []
    labels = plan.labels if synthetic_seed(args.dataset_dir) is None else False
    return [(f"{i:05d}", *load_dataset_item(args.dataset_dir, i, plan.image_size, labels=labels))
            for i in plan.indices[rank::world]]


def build_jobs(args, editor, sources, plan):
    """EditJobs for `sources`, each with the reconstruction + the edits asked."""
    jobs = []
    for name, x, a_ref in sources:
        if plan.fixed_ref is not None:
            a_ref = plan.fixed_ref
        if a_ref is None:
            probs = editor.classify(x)[0].cpu()
            a_ref = (probs > 0.5).float()
            believed = ", ".join(ATTRIBUTE_NAMES[i] for i in range(NUM_ATTRIBUTES) if a_ref[i] > 0)
            print(f"{name}: no labels, the classifier reads: {believed or '(none of the 20)'}")
        queries = [(str(RECONSTRUCTION_INDEX), [], a_ref.clone())]
        notes = []
        if plan.fixed_query is not None:
            flipped = flipped_indices(a_ref, plan.fixed_query)
            label = attribute_label(flipped)
            if flipped:
                queries.append((label, flipped, plan.fixed_query.clone()))
            else:
                notes.append("the query attributes equal the reference ones: nothing to edit, only the "
                             "reconstruction is made")
        else:
            label = "all" if str(args.attribute_index).strip() == "all" else attribute_label(plan.attribute_indices)
            groups = [[i] for i in plan.attribute_indices] if label == "all" else [plan.attribute_indices]
            for group in groups:
                if group:
                    queries.append((attribute_label(group), group, query_from_indices(a_ref, group)))
        job = EditJob(name, x, a_ref, queries, label)
        job.notes = notes
        jobs.append(job)
    return jobs


# Flags that place or show the outputs but do not change the edit: a rerun differing only in them is the same run.
NOT_SETTINGS = frozenset({"output_path", "output_file", "progress", "vid", "export_assets", "batch_size", "device",
                          "guidance_terms", "resolved_eval_classifier_path"})


def _settings(flags):
    """The flags that decide an edit, as its JSON records them."""
    flags = json.loads(json.dumps(_finite_json(_jsonable(flags)), allow_nan=False))
    return {k: v for k, v in flags.items() if k not in NOT_SETTINGS}


def _same_run(json_path, settings):
    """True when `json_path` is an edit report made with `settings` (keys both know)."""
    try:
        with open(json_path) as f:
            recorded = json.load(f).get("flags")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(recorded, dict):
        return False
    recorded = {k: v for k, v in recorded.items() if k not in NOT_SETTINGS}
    return all(recorded[k] == settings[k] for k in recorded.keys() & settings.keys())


def set_files(args, set_name, job):
    """Every file a job's set writes: one image per edit (+ GIF, tensors), the grid and the JSON report."""
    names = []
    for label, _, _ in job.queries:
        for it in range(args.iterations_num):
            suffix = label if args.iterations_num == 1 else f"{label}_{it}"
            names += [f"{set_name}_{suffix}.png"] + ([f"{set_name}_{suffix}.gif"] if args.vid else []) + (
                [f"{set_name}_{suffix}.pt"] if args.export_assets else [])
    return names


def _set_taken(args, set_name, grid, files, settings):
    """Why the set's files must not be replaced (another run's, or not an edit's), or None."""
    json_path = os.path.join(args.output_path, f"{set_name}_edit.json")
    if os.path.exists(json_path):
        return None if _same_run(json_path, settings) else f"{json_path} records an edit with other settings"
    present = [n for n in [grid] + files if os.path.exists(os.path.join(args.output_path, n))]
    return f"{os.path.join(args.output_path, present[0])} is not from this edit" if present else None


def output_names(args, job, several):
    """(set name, grid file name, JSON file name) of a job. The set is named by the input and what was
    edited ('00001_9'), or by -o; a set another run wrote (other model, preset, flags) is kept and this
    run's set gets the first free '_run2', '_run3' ... name (with -o the run was refused up front)."""
    settings = _settings(vars(args))
    if args.output_file:
        stem = os.path.splitext(args.output_file)[0]
        set_name = f"{job.name}_{stem}" if several else stem
        grid = f"{job.name}_{args.output_file}" if several else args.output_file
        return set_name, grid, f"{set_name}_edit.json"
    base = f"{job.name}_{job.label}"
    n = 1
    while True:
        set_name = base if n == 1 else f"{base}_run{n}"
        if _set_taken(args, set_name, f"{set_name}_grid.png", set_files(args, set_name, job), settings) is None:
            return set_name, f"{set_name}_grid.png", f"{set_name}_edit.json"
        n += 1


def check_named_outputs(args, plan):
    """With -o NAME: refuse, before any model loads, a set NAME another run wrote (nothing is replaced)."""
    if not args.output_file:
        return
    names = ([os.path.splitext(os.path.basename(args.init_image))[0]] if args.init_image
             else [f"{i:05d}" for i in plan.indices])
    stem, settings = os.path.splitext(args.output_file)[0], _settings(vars(args))
    for name in names:
        several = len(names) > 1
        set_name = f"{name}_{stem}" if several else stem
        grid = f"{name}_{args.output_file}" if several else args.output_file
        taken = sorted(n for n in os.listdir(args.output_path) if n.startswith(f"{set_name}_")) \
            if os.path.isdir(args.output_path) else []  # the set's edit images, whatever their labels
        found = _set_taken(args, set_name, grid, taken, settings)
        if found:
            raise ValueError(f"-o/--output_file {args.output_file}: {found}; choose another name (nothing was "
                             f"replaced)")


# --------------------------------------------------------------------------- running

def run_jobs(args, editor, jobs, opts, judges=None):
    """Edit every job (batches of --batch_size edits), judge, write images, grids and JSON. Returns summaries."""
    judges = judges if judges is not None else {"guidance": editor.classifier, "evaluation": None}
    items = [(job, q, it) for job in jobs for q in job.queries for it in range(args.iterations_num)]
    results = {}
    several = len(items) > 1 and args.progress
    bar = None
    if several:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(items), unit="edit", desc="edits", file=sys.stderr)
    for start in range(0, len(items), args.batch_size):
        chunk = items[start:start + args.batch_size]
        x = torch.cat([job.x for job, _, _ in chunk])
        a_ref = torch.stack([job.a_ref for job, _, _ in chunk])
        a_q = torch.stack([q[2] for _, q, _ in chunk])
        seeds = [args.seed + it for _, _, it in chunk]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = editor.edit(x, a_ref, a_q, opts, seeds=seeds, progress=args.progress and not several,
                              record_frames=args.vid)
        # The engine's warnings (e.g. non-finite guidance steps) concern every edited image of the batch.
        batch_warnings = [" ".join(str(w.message).split()) for w in caught if issubclass(w.category, UserWarning)]
        per_image_seconds = res.seconds / len(chunk)
        for k, (job, q, it) in enumerate(chunk):
            results[(job.name, q[0], it)] = dict(
                image=res.images[k:k + 1].cpu(), seconds=per_image_seconds,
                unet_evals=res.unet_evals,
                frames=[f[k:k + 1] for f in res.frames],
                region=None if res.region is None else res.region[k:k + 1].float().cpu(),
                warnings=list(batch_warnings) if q[1] else [])
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    several_jobs = len(jobs) > 1
    return [_write_job(args, job, results, opts, judges, *output_names(args, job, several_jobs)) for job in jobs]


def _write_job(args, job, results, opts, judges, set_name, grid_name, json_name):
    os.makedirs(args.output_path, exist_ok=True)
    x = job.x
    row, captions, records = [to_uint8(x)[0]], ["input"], []
    # Under each edit: the input dimmed outside the edit's region (blank under the input and the reconstruction).
    region_row, region_captions = [None], [""]
    before = {who: _read(c, x) for who, c in judges.items() if c is not None}
    job_warnings = []
    if job.domain is not None and job.domain["out_of_domain"]:
        job_warnings.append(out_of_domain_line(job.domain))
    for label, flipped, a_q in job.queries:
        for it in range(args.iterations_num):
            r = results[(job.name, label, it)]
            img = r["image"]
            suffix = label if args.iterations_num == 1 else f"{label}_{it}"
            path = os.path.join(args.output_path, f"{set_name}_{suffix}.png")
            save_png(to_uint8(img)[0], path)
            if args.vid and r["frames"]:
                save_gif([to_uint8(f)[0] for f in r["frames"]], os.path.join(args.output_path, f"{set_name}_{suffix}.gif"))
            if args.export_assets:
                from guided_diffusion.atomic import atomic_torch_save
                atomic_torch_save({"input": x, "edited": img, "a_ref": job.a_ref, "a_q": a_q},
                                  os.path.join(args.output_path, f"{set_name}_{suffix}.pt"))
            judged, found = judge_edit(img, x, job.a_ref, a_q, judges, before)
            edit_warnings = list(r["warnings"]) + found
            if job.domain is not None and job.domain["out_of_domain"] and judged["kind"] == "edit":
                # The classifiers' readings of an input unlike their training faces mean little: no verdict.
                judged["edit_success"], judged["judged_by"] = None, None
            rec = dict(query=label, iteration=it, file=path, **judged, region_fraction=region_fraction(r["region"]),
                       seconds=round(r["seconds"], 3), unet_evals=r["unet_evals"], warnings=edit_warnings)
            records.append(rec)
            job_warnings.extend(f"edit {label}: {w}" for w in edit_warnings if f"edit {label}: {w}" not in job_warnings)
            row.append(to_uint8(img)[0])
            captions.append(_caption(job.a_ref, rec, job.domain))
            drawn = r["region"] is not None and rec["kind"] == "edit"
            region_row.append(region_overlay(to_uint8(x)[0], r["region"][0, 0].numpy(), GRID_CELL)
                              if drawn else None)
            region_captions.append(f"edit region\n{_percent(rec['region_fraction'])} of the image" if drawn else "")
    rows, row_captions = [row], [captions]
    if any(cell is not None for cell in region_row):
        rows.append(region_row)
        row_captions.append(region_captions)
    grid_path = os.path.join(args.output_path, grid_name)
    save_image_atomic(labelled_grid(rows, row_captions, cell=GRID_CELL), grid_path)
    json_path = os.path.join(args.output_path, json_name)
    summary = dict(
        input=job.name, edit=job.label, grid=grid_path, json=json_path,
        success_rule=SUCCESS_RULE, region_fraction_rule=REGION_FRACTION_RULE, unet_evals_rule=UNET_EVALS_RULE,
        judges={"guidance": dict(path=args.attribute_cpk_path or None, note=GUIDANCE_JUDGE_NOTE),
                "evaluation": dict(path=getattr(args, "resolved_eval_classifier_path", None), note=EVAL_JUDGE_NOTE)
                if judges.get("evaluation") is not None else None},
        reference_attributes=_named(job.a_ref),
        classifier_before=_named(before["guidance"]) if "guidance" in before else None,
        eval_classifier_before=_named(before["evaluation"]) if "evaluation" in before else None,
        out_of_domain=job.domain["out_of_domain"] if job.domain is not None else None,
        domain_check=job.domain,
        notes=job.notes, warnings=job_warnings, guidance_terms=getattr(args, "guidance_terms", None),
        edits=records, options=_jsonable(vars(opts) | {"weights": asdict(opts.weights)}),
        flags=_jsonable(vars(args)))
    summary = _finite_json(summary)
    atomic_write(json_path, json.dumps(summary, indent=2, allow_nan=False))
    return summary


def region_fraction(region):
    """Fraction of the pixels where `region` [1, 1, H, W] is > 0.5 (the evaluation's IoU threshold); None
    without a region."""
    if region is None:
        return None
    return round(float((region > 0.5).float().mean()), 4)


def _percent(fraction):
    percent = 100 * fraction
    return f"{percent:.1f}%" if percent < 10 else f"{percent:.0f}%"  # regions are often a few % of the face


def out_of_domain_line(domain):
    return (f"the input does not look like the models' training faces (out-of-domain score {domain['score']:.2f} > "
            f"threshold {domain['threshold']:.2f}, reference {domain['reference']}): the models only know such "
            f"faces, so treat this edit and its readings as unreliable")


def _caption(a_ref, rec, domain):
    if rec["kind"] == "reconstruction":
        return "reconstruction"
    lines = [f"{'+' if a_ref[ATTRIBUTE_NAMES.index(n)] < 0.5 else '-'}{n}" for n in rec["flipped"]]
    readings = []
    for who, tag in (("guidance", "g"), ("evaluation", "e")):
        if rec.get(who):
            readings.append(f"{tag} " + "/".join("nan" if p is None else f"{p:.2f}"
                                                 for p in rec[who]["flipped_readings"].values()))
    if readings:
        lines.append(" ".join(readings))
    if domain and domain["out_of_domain"]:
        lines.append("OUT OF DOMAIN")  # no verdict (the JSON and the printout say why)
    elif rec["warnings"]:
        lines.append("no success: warning" if rec["edit_success"] is False else "warning")
    elif rec["edit_success"] is not None:
        lines.append("success" if rec["edit_success"] else "no success")
    return "\n".join(lines)


def guidance_terms(opts, editor):
    """The guidance loss terms an edit runs with: {name: {"weight", "how"}} for each weight > 0 whose
    network is loaded (the attribute term needs the guidance classifier)."""
    w = opts.weights
    terms = {}
    if w.attribute_guidance_lambda and editor.classifier is not None:
        terms["attribute"] = dict(weight=w.attribute_guidance_lambda, how="guidance classifier")
    if w.preserve_lambda and editor.classifier is not None:
        terms["preserve"] = dict(weight=w.preserve_lambda, how="the other attributes, guidance classifier")
    if w.cycle_reconstruct_lambda:
        terms["cycle"] = dict(weight=w.cycle_reconstruct_lambda, how=f"{opts.cycle_schema}, target {opts.cycle_target}")
    if w.range_lambda:
        terms["range"] = dict(weight=w.range_lambda, how="")
    if w.lpips_sim_lambda and editor.lpips_fn is not None:
        terms["lpips"] = dict(weight=w.lpips_sim_lambda, how="AlexNet LPIPS")
    if w.id_lambda and editor.id_fn is not None:
        terms["identity"] = dict(weight=w.id_lambda, how=editor.identity_source)
    return terms


def _finite_json(value):
    """`value` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _jsonable(d):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), dict, list)) else str(v)) for k, v in d.items()}


# --------------------------------------------------------------------------- models

def _load_checkpoint(what, path, loader):
    """Run `loader()`; torch's refusal to unpickle a file becomes one line saying it is not a checkpoint
    (never torch's advice to load it with weights_only=False, which would run the file's code)."""
    try:
        return loader()
    except ValueError as err:
        text = str(err)
        if "weights_only" in text or "Weights only load failed" in text or "WeightsUnpickler" in text:
            raise ValueError(f"{what} {path} is not a PyTorch checkpoint of tensors (it holds other Python "
                             f"objects, which are not loaded)") from None
        raise ValueError(" ".join(text.split())) from None


def load_models(args, plan):
    """(editor, {'guidance': classifier or None, 'evaluation': classifier or None},
    (classifier, DomainReference) for the out-of-domain check or None)."""
    from preprocess.classifier import load_classifier

    editor = _load_checkpoint("--model_path", args.model_path, lambda: AttributeEditor(
        args.model_path, None, device=plan.device, lpips=bool(plan.opts.weights.lpips_sim_lambda),
        ir_se50_weights=args.ir_se50_weights if plan.opts.weights.id_lambda else None,
        identity_net=(args.identity_net or None) if plan.opts.weights.id_lambda else None))
    if plan.classifier_path:
        editor.classifier = _load_checkpoint("--attribute_cpk_path", plan.classifier_path, lambda: load_classifier(
            plan.classifier_path, device=editor.device)).requires_grad_(False).to(editor.dtype)
        _check_attribute_count(editor.classifier, plan.classifier_path)
    evaluation = None
    if plan.eval_classifier_path:
        evaluation = _load_checkpoint("--eval_classifier_path", plan.eval_classifier_path, lambda: load_classifier(
            plan.eval_classifier_path, device=editor.device)).to(editor.dtype)
        _check_attribute_count(evaluation, plan.eval_classifier_path)
    reference = None
    # The out-of-domain check reads the guidance classifier's features (the evaluation classifier's
    # when there is no guidance classifier).
    reader, reader_path = ((editor.classifier, plan.classifier_path) if editor.classifier is not None
                           else (evaluation, plan.eval_classifier_path))
    if plan.domain_reference and reader is not None:
        from .domain import load_or_fit_reference
        reference = (reader, load_or_fit_reference(reader, reader_path, editor.image_size, plan.domain_reference))
    return editor, {"guidance": editor.classifier, "evaluation": evaluation}, reference


def _check_attribute_count(classifier, path):
    if classifier.num_attributes != NUM_ATTRIBUTES:
        raise ValueError(f"classifier {path} predicts {classifier.num_attributes} attributes; the editor needs "
                         f"{NUM_ATTRIBUTES}")


def main(argv=None):
    """Entry point of `python main.py`: returns the list of per-image summaries."""
    from .arguments import get_arguments

    args = get_arguments(argv)
    plan = validate(args)                     # every check that needs no model; nothing written yet
    args.resolved_eval_classifier_path = plan.eval_classifier_path
    check_named_outputs(args, plan)
    sources = load_sources(args, plan)
    torch.manual_seed(args.seed)
    editor, judges, reference = load_models(args, plan)
    opts = plan.opts
    if editor.lpips_fn is None:
        opts.weights.lpips_sim_lambda = 0.0
    if editor.id_fn is None and opts.weights.id_lambda:
        print("id_lambda set to 0: no identity network (--identity_net '' and no --ir_se50_weights).")
        opts.weights.id_lambda = 0.0
    args.guidance_terms = guidance_terms(opts, editor)
    print("guidance terms: " + (", ".join(f"{name} {term['weight']:g}" + (f" ({term['how']})" if term.get("how") else "")
                                          for name, term in args.guidance_terms.items()) or "none"))
    jobs = build_jobs(args, editor, sources, plan)
    if reference is not None:
        reader, statistics = reference
        for job in jobs:
            job.domain = statistics.check(reader, job.x)[0]
    return run_jobs(args, editor, jobs, opts, judges)


def _mpi_rank_and_size():
    """(rank, size) when launched by mpiexec, else (0, 1). MPI only shards the inputs here."""
    from guided_diffusion.mpi_launch import mpi_rank_and_size

    return mpi_rank_and_size()
