"""The CycleDiff command line (`python main.py`).

`python main.py` edits image IMAGE_INDEX of the default dataset by attribute ATTRIBUTE_INDEX
(set them here, as the paper's README says; flags override them). Attribute indices: see
`preprocess.attributes.ATTRIBUTE_NAMES`; 20 means reconstruction.

This module parses flags, builds the edit jobs, shards them over MPI ranks and writes the outputs;
the editing itself is `optimization.editor` (re-exported here for convenience).
"""
import json
import os
from dataclasses import asdict

import torch

from guided_diffusion.atomic import atomic_torch_save, atomic_write
from guided_diffusion.mpi_launch import mpi_rank_and_size
from preprocess.attributes import ATTRIBUTE_NAMES, RECONSTRUCTION_INDEX

from . import metrics
from .editor import (FINAL_OUTPUTS, INVERSIONS, PIXEL_MEAN_TERMS, AttributeEditor, EditOptions,  # noqa: F401
                     EditResult, translate_weights)
from .image_io import load_dataset_item, load_image_file, save_png, to_tensor, to_uint8  # noqa: F401
from .queries import (NUM_ATTRIBUTES, attribute_label, check_attribute_index, parse_attribute_indices,  # noqa: F401
                      parse_attribute_vector, parse_index_list, query_from_indices)
from .visualization import labelled_grid, save_gif, save_image_atomic

IMAGE_INDEX = 0
ATTRIBUTE_INDEX = 9  # Eyeglasses


# --------------------------------------------------------------------------- the command line

def short_name(index):
    return "reconstruction" if index == RECONSTRUCTION_INDEX else ATTRIBUTE_NAMES[index]


def _named(vector):
    return {name: round(float(v), 4) for name, v in zip(ATTRIBUTE_NAMES, vector)}


def _flip_caption(a_ref, indices):
    if not indices:
        return "reconstruction"
    return "\n".join(f"{'+' if a_ref[i] < 0.5 else '-'}{ATTRIBUTE_NAMES[i]}" for i in indices)


class EditJob:
    """One input image and the edits asked of it."""

    def __init__(self, name, x, a_ref, queries):
        self.name = name              # output stem: '00007' for dataset index 7, or the file's stem
        self.x = x                    # [1, 3, S, S]
        self.a_ref = a_ref            # [20]
        self.queries = queries        # list of (label, flipped indices, a_q [20])


def build_jobs(args, editor, indices, attribute_indices):
    """EditJobs for dataset `indices` (or --init_image), each with reconstruction + the edits."""
    fixed_ref = parse_attribute_vector(args.attribute, "attribute") if args.attribute else None
    fixed_query = parse_attribute_vector(args.query_attribute, "query_attribute") if args.query_attribute else None
    if args.init_image:
        sources = [(os.path.splitext(os.path.basename(args.init_image))[0],
                    load_image_file(args.init_image, editor.image_size), None)]
    else:
        sources = [(f"{i:05d}", *load_dataset_item(args.dataset_dir, i, editor.image_size)) for i in indices]
    jobs = []
    for name, x, a_ref in sources:
        if fixed_ref is not None:
            a_ref = fixed_ref
        if a_ref is None:
            if editor.classifier is None:
                raise ValueError("no reference attributes: give --attribute or a classifier")
            probs = editor.classify(x)[0].cpu()
            a_ref = (probs > 0.5).float()
            believed = ", ".join(ATTRIBUTE_NAMES[i] for i in range(NUM_ATTRIBUTES) if a_ref[i] > 0)
            print(f"{name}: no labels, the classifier reads: {believed or '(none of the 20)'}")
        queries = [("20", [], a_ref.clone())]
        if fixed_query is not None:
            flipped = [i for i in range(NUM_ATTRIBUTES) if fixed_query[i] != a_ref[i]]
            queries.append((attribute_label(flipped), flipped, fixed_query))
        else:
            groups = [[i] for i in attribute_indices] if args.attribute_index == "all" else [attribute_indices]
            for group in groups:
                if group:
                    queries.append((attribute_label(group), group, query_from_indices(a_ref, group)))
        jobs.append(EditJob(name, x, a_ref, queries))
    return jobs


def run_jobs(args, editor, jobs, opts):
    """Edit every job (batches of --batch_size edits), write images, grids and JSON. Returns summaries."""
    os.makedirs(args.output_path, exist_ok=True)
    items = [(job, q, it) for job in jobs for q in job.queries for it in range(args.iterations_num)]
    results = {}
    for start in range(0, len(items), max(1, args.batch_size)):
        chunk = items[start:start + args.batch_size]
        x = torch.cat([job.x for job, _, _ in chunk])
        a_ref = torch.stack([job.a_ref for job, _, _ in chunk])
        a_q = torch.stack([q[2] for _, q, _ in chunk])
        seeds = [args.seed + it for _, _, it in chunk]
        res = editor.edit(x, a_ref, a_q, opts, seeds=seeds, progress=args.progress, record_frames=args.vid)
        per_image_seconds = res.seconds / len(chunk)
        for k, (job, q, it) in enumerate(chunk):
            results[(job.name, q[0], it)] = dict(
                image=res.images[k:k + 1].cpu(), seconds=per_image_seconds,
                unet_evals=res.unet_evals / len(chunk),
                frames=[f[k:k + 1] for f in res.frames])
    return [_write_job(args, editor, job, results, opts,
                       args.output_file if len(jobs) == 1 else f"{job.name}_grid.png") for job in jobs]


def _write_job(args, editor, job, results, opts, grid_name):
    x = job.x
    row, captions, records = [to_uint8(x)[0]], ["input"], []
    probs_in = editor.classify(x)[0].cpu() if editor.classifier is not None else None
    for label, flipped, a_q in job.queries:
        for it in range(args.iterations_num):
            r = results[(job.name, label, it)]
            img = r["image"]
            suffix = label if args.iterations_num == 1 else f"{label}_{it}"
            path = os.path.join(args.output_path, f"{job.name}_{suffix}.png")
            save_png(to_uint8(img)[0], path)
            if args.vid and r["frames"]:
                save_gif([to_uint8(f)[0] for f in r["frames"]], os.path.join(args.output_path, f"{job.name}_{suffix}.gif"))
            if args.export_assets:
                atomic_torch_save({"input": x, "edited": img, "a_ref": job.a_ref, "a_q": a_q},
                                  os.path.join(args.output_path, f"{job.name}_{suffix}.pt"))
            rec = dict(query=label, flipped=[ATTRIBUTE_NAMES[i] for i in flipped], iteration=it, file=path,
                       l1_to_input=float(metrics.l1(img, x)[0]), psnr_to_input=float(metrics.psnr(img, x)[0]),
                       seconds=round(r["seconds"], 3), unet_evals=r["unet_evals"])
            if probs_in is not None:
                probs = editor.classify(img)[0].cpu()
                mask = (a_q != job.a_ref)[None]
                rec["classifier_after"] = _named(probs)
                rec["edit_success"] = bool(metrics.edit_success(probs[None], a_q[None], mask)[0]) if flipped else None
                rec["preserved"] = float(metrics.preservation(probs[None], probs_in[None], mask)[0])
            records.append(rec)
            row.append(to_uint8(img)[0])
            cap = _flip_caption(job.a_ref, flipped)
            if probs_in is not None and flipped:
                cap += "\n" + ", ".join(f"p={float(probs[i]):.2f}" for i in flipped)
            captions.append(cap)
    grid_path = os.path.join(args.output_path, grid_name)
    save_image_atomic(labelled_grid([row], [captions]), grid_path)
    summary = dict(
        input=job.name, grid=grid_path, reference_attributes=_named(job.a_ref),
        classifier_before=_named(probs_in) if probs_in is not None else None,
        edits=records, options=_jsonable(vars(opts) | {"weights": asdict(opts.weights)}),
        flags=vars(args))
    json_path = os.path.join(args.output_path, f"{job.name}_edit.json")
    atomic_write(json_path, json.dumps(summary, indent=2))
    return summary


def _jsonable(d):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), dict, list)) else str(v)) for k, v in d.items()}


def main(argv=None):
    """Entry point of `python main.py`: returns the list of per-image summaries."""
    from .arguments import get_arguments

    args = get_arguments(argv)
    if not os.path.isfile(args.model_path):
        raise FileNotFoundError(
            f"diffusion checkpoint not found: {args.model_path}. The embedded default ships in checkpoints/ "
            "(see checkpoints/README.md to re-train it), or pass --model_path.")
    classifier_path = args.attribute_cpk_path
    if classifier_path and not os.path.isfile(classifier_path):
        raise FileNotFoundError(f"classifier checkpoint not found: {classifier_path} (--attribute_cpk_path)")
    opts = EditOptions.from_args(args)
    attribute_indices = parse_attribute_indices(args.attribute_index if args.attribute_index is not None
                                                else ATTRIBUTE_INDEX)
    indices = parse_index_list(args.image_index if args.image_index is not None else IMAGE_INDEX)
    torch.manual_seed(args.seed)
    editor = AttributeEditor(args.model_path, classifier_path or None, device=args.device,
                             lpips=bool(args.lpips_sim_lambda), ir_se50_weights=args.ir_se50_weights)
    if args.model_output_size is not None and args.model_output_size != editor.image_size:
        raise ValueError(f"--model_output_size {args.model_output_size} but {args.model_path} is a "
                         f"{editor.image_size}x{editor.image_size} model")
    if editor.lpips_fn is None:
        opts.weights.lpips_sim_lambda = 0.0
    if editor.id_fn is None and opts.weights.id_lambda:
        print("id_lambda set to 0: no --ir_se50_weights given.")
        opts.weights.id_lambda = 0.0
    rank, world = mpi_rank_and_size()  # MPI only shards the inputs here
    indices = indices[rank::world]
    jobs = build_jobs(args, editor, indices, attribute_indices)
    return run_jobs(args, editor, jobs, opts)
