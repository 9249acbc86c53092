"""
Regenerate the README's editing figures with the shipped models (the paper's figures, redone on
the synthetic faces of a held-out seed):

    images/editing_all_attributes.png   one identity x the 7 editable attributes (+ reconstruction)
    images/editing_identities.png       8 identities, each edited by one attribute
    images/cycle_schemas.png            step-to-origin vs step-by-step on the same inputs
    images/reconstruction.png           inputs vs DDIM-inversion and edit-friendly reconstructions
    images/diffusion_samples.png        samples of the diffusion model under held-out faces' attributes
    images/regions.png                  each edit's inferred region next to the renderer's mask, with the IoU

    python scripts/make_figures.py [--preset fast] [--out_dir images] [--only regions,reconstruction]
"""
import argparse
import os
import sys

# Torch-free: the flags are parsed and checked before torch is imported (see the end of this block).
from guided_diffusion.safe_paths import InputError, OneLineParser, parse_checked, check_not_below_file, report_input_error
from optimization.arguments import DEFAULT_CLASSIFIER_PATH, DEFAULT_MODEL_PATH, PRESETS
from optimization.options import EditOptions

HELD_OUT = "synthetic:1000"
FIGURES = ("editing_all_attributes.png", "editing_identities.png", "cycle_schemas.png", "reconstruction.png",
           "diffusion_samples.png", "regions.png")


def build_parser():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=DEFAULT_MODEL_PATH)
    p.add_argument("--classifier_path", default=DEFAULT_CLASSIFIER_PATH)
    p.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    p.add_argument("--out_dir", default="images")
    p.add_argument("--index", type=int, default=0, help="held-out identity of the all-attributes figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma list of figures to redraw, e.g. regions,reconstruction "
                   "(file names with or without .png; default: all)")
    return p


def wanted_figures(only):
    """The figures --only names (a name with or without its .png: --only regions); all without it."""
    wanted = {n if n.endswith(".png") else n + ".png" for n in only.split(",")} if only else set(FIGURES)
    unknown = wanted - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown figure {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    return wanted


def check_flags(args):
    """Every check that needs neither torch nor a model."""
    wanted_figures(args.only)
    for flag, path in (("--model_path", args.model_path), ("--classifier_path", args.classifier_path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag}: checkpoint not found: {path}")
    check_not_below_file(args.out_dir, "--out_dir")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise InputError(f"--out_dir {args.out_dir} is a file, not a folder")
    if args.index < 0 or args.seed < 0:
        raise InputError(f"--index and --seed must be >= 0; got {args.index}, {args.seed}")


def parse_and_check(argv=None):
    """The parsed flags, after check_flags: an input error is one `error:` line, exit status 2."""
    return parse_checked(build_parser(), check_flags, argv)


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import torch  # noqa: E402

from optimization.editor import AttributeEditor  # noqa: E402
from optimization.image_io import load_dataset_item, synthetic_seed, to_uint8  # noqa: E402
from optimization.queries import query_from_indices  # noqa: E402
from optimization.visualization import labelled_grid, region_overlay, save_image_atomic  # noqa: E402
from preprocess.attributes import ATTRIBUTE_SHORT_NAMES, EDITABLE_ATTRIBUTES  # noqa: E402
from preprocess.synthetic_faces import attribute_mask, example_face  # noqa: E402


def options(preset, **overrides):
    # No LPIPS / ArcFace weights ship with the embedded default.
    return EditOptions.from_preset(preset, lpips_sim_lambda=0.0, id_lambda=0.0, **overrides)


def caption(a_ref, indices):
    return "\n".join(f"{'+' if a_ref[i] < 0.5 else '-'}{ATTRIBUTE_SHORT_NAMES[i]}" for i in indices) or "recon."


def edit_rows(editor, items, opts, seed):
    """items: list of (image [1,3,S,S], a_ref [20], flipped indices) -> edited uint8 images."""
    x = torch.cat([it[0] for it in items])
    a_ref = torch.stack([it[1] for it in items])
    a_q = torch.stack([query_from_indices(it[1], it[2]) for it in items])
    return list(to_uint8(editor.edit(x, a_ref, a_q, opts, seeds=[seed], progress=True).images))


def figure_all_attributes(editor, opts, index, seed):
    x, a = load_dataset_item(HELD_OUT, index, editor.image_size)
    groups = [[]] + [[k] for k in EDITABLE_ATTRIBUTES]
    edited = edit_rows(editor, [(x, a, g) for g in groups], opts, seed)
    return labelled_grid([[to_uint8(x)[0]] + edited], [["input"] + [caption(a, g) for g in groups]])


def figure_identities(editor, opts, indices, seed):
    items, captions = [], []
    for i, index in enumerate(indices):
        x, a = load_dataset_item(HELD_OUT, index, editor.image_size)
        k = EDITABLE_ATTRIBUTES[i % len(EDITABLE_ATTRIBUTES)]
        items.append((x, a, [k]))
        captions.append(caption(a, [k]))
    edited = edit_rows(editor, items, opts, seed)
    return labelled_grid([[to_uint8(it[0])[0] for it in items], edited],
                         [[f"input {i}" for i in indices], captions], row_titles=["input", "edit"])


def figure_schemas(editor, preset, indices, seed):
    items = []
    for i, index in enumerate(indices):
        x, a = load_dataset_item(HELD_OUT, index, editor.image_size)
        items.append((x, a, [EDITABLE_ATTRIBUTES[(i + 3) % len(EDITABLE_ATTRIBUTES)]]))
    rows = [[to_uint8(it[0])[0] for it in items]]
    titles = ["input"]
    for schema, target in (("step_to_origin", "noised_origin"), ("step_by_step", "noised_origin"),
                           ("step_by_step", "inversion")):
        opts = options(preset, cycle_schema=schema, cycle_target=target)
        rows.append(edit_rows(editor, items, opts, seed))
        titles.append(schema.replace("_", "-") + ("" if schema == "step_to_origin" else f"\n({target})"))
    captions = [[caption(it[1], it[2]) for it in items]] + [[""] * len(items)] * 3
    return labelled_grid(rows, captions, row_titles=titles)


def figure_reconstruction(editor, indices, seed):
    """Attribute index 20 at full strength on the fast preset's 25 steps (no guidance applies: the
    query equals the reference), through three inversions."""
    items = [(*load_dataset_item(HELD_OUT, index, editor.image_size), []) for index in indices]
    rows = [[to_uint8(it[0])[0] for it in items]]
    titles = ["input"]
    for name, overrides in (("DDIM inversion", dict(sampler="ddim", inversion="ddim")),
                            ("DDIM inversion\n+3 fixed-point", dict(sampler="ddim", inversion="ddim",
                                                                    inversion_fixed_point=3)),
                            ("edit-friendly", dict(inversion="ddpm_noise"))):
        rows.append(edit_rows(editor, items, options("fast", edit_strength=1.0, **overrides), seed))
        titles.append(name)
    return labelled_grid(rows, row_titles=titles)


def figure_samples(editor, indices, seed, per_row=6):
    """Per held-out face: its render, then DDIM-25 samples of the model under its attribute vector."""
    diffusion = editor.diffusion("ddim25")
    rows, titles = [], []
    for index in indices:
        x, a = load_dataset_item(HELD_OUT, index, editor.image_size)
        g = torch.Generator().manual_seed(seed + index)
        noise = torch.randn((per_row, *x.shape[1:]), generator=g)
        with torch.no_grad():
            samples = diffusion.ddim_sample_loop(editor.model, noise.shape, noise=noise, clip_denoised=True,
                                                 model_kwargs={"y": a.expand(per_row, -1)})
        rows.append([to_uint8(x)[0]] + list(to_uint8(samples)))
        on = [ATTRIBUTE_SHORT_NAMES[i] for i in range(len(a)) if a[i] > 0.5]
        titles.append(f"face {index}:\n" + "\n".join(", ".join(on[j:j + 3]) for j in range(0, len(on), 3)))
    captions = [["attributes\nof this face"] + [""] * per_row] + [[""] * (per_row + 1)] * (len(rows) - 1)
    return labelled_grid(rows, captions, row_titles=titles)


def figure_regions(editor, opts, indices, seed, cell=96):
    """Per editable attribute (rows) and held-out face (column pairs): the region the editor inferred
    for that edit | the renderer's mask of the pixels the attribute may touch, both drawn on the
    input; the caption gives their IoU (region > 0.5, as the benchmark's region_iou). Prints the
    IoUs. Returns (image, {attribute: [IoU per face]})."""
    from optimization.evaluation import region_iou

    size = editor.image_size
    top, top_captions = [], []
    cells = {k: ([], []) for k in EDITABLE_ATTRIBUTES}
    ious = {k: [] for k in EDITABLE_ATTRIBUTES}
    for index in indices:
        x, a = load_dataset_item(HELD_OUT, index, size)
        identity, _ = example_face(synthetic_seed(HELD_OUT), index)
        n = len(EDITABLE_ATTRIBUTES)
        a_ref = a.expand(n, -1)
        a_q = torch.stack([query_from_indices(a, [k]) for k in EDITABLE_ATTRIBUTES])
        result = editor.edit(x.expand(n, -1, -1, -1), a_ref, a_q, opts, seeds=[seed], progress=True)
        if result.region is None:
            raise ValueError("the options infer no region (region 'none'): nothing to draw")
        masks = torch.stack([torch.from_numpy(attribute_mask(identity, k, size)) for k in EDITABLE_ATTRIBUTES])
        iou = region_iou(result.region, masks, a_ref, a_q)
        face = to_uint8(x)[0]
        top += [face, None]
        top_captions += [f"held-out face {index}", ""]
        for j, k in enumerate(EDITABLE_ATTRIBUTES):
            ious[k].append(float(iou[j]))
            images, captions = cells[k]
            images += [region_overlay(face, result.region[j, 0].float().cpu().numpy(), cell),
                       region_overlay(face, masks[j].numpy().astype("float32"), cell)]
            captions += [f"{caption(a, [k])} inferred\nIoU {float(iou[j]):.2f}", "renderer's\nmask"]
    rows = [top] + [cells[k][0] for k in EDITABLE_ATTRIBUTES]
    captions = [top_captions] + [cells[k][1] for k in EDITABLE_ATTRIBUTES]
    titles = ["input"] + [f"{ATTRIBUTE_SHORT_NAMES[k]}\nmean IoU\n{sum(ious[k]) / len(ious[k]):.2f}"
                          for k in EDITABLE_ATTRIBUTES]
    for k in EDITABLE_ATTRIBUTES:
        print(f"region IoU {k:2d} {ATTRIBUTE_SHORT_NAMES[k]:>10}: " + " ".join(f"{v:.3f}" for v in ious[k])
              + f"  mean {sum(ious[k]) / len(ious[k]):.3f}")
    every = [v for k in EDITABLE_ATTRIBUTES for v in ious[k]]
    print(f"region IoU, all {len(every)} edits: mean {sum(every) / len(every):.3f}")
    return labelled_grid(rows, captions, row_titles=titles, cell=cell), ious


def main(argv=None, args=None):
    """Draw the figures; 0, or 2 with one `error:` line. `args`: flags already parsed (parse_and_check)."""
    if args is None:
        args = parse_and_check(argv)
    try:
        editor = AttributeEditor(args.model_path, args.classifier_path, device="cpu")
        os.makedirs(args.out_dir, exist_ok=True)
        opts = options(args.preset)
        indices = list(range(8))
        figures = {
            "editing_all_attributes.png": lambda: figure_all_attributes(editor, opts, args.index, args.seed),
            "editing_identities.png": lambda: figure_identities(editor, opts, indices, args.seed),
            "cycle_schemas.png": lambda: figure_schemas(editor, args.preset, indices[:6], args.seed),
            "reconstruction.png": lambda: figure_reconstruction(editor, indices, args.seed),
            "diffusion_samples.png": lambda: figure_samples(editor, [0, 1, 4, 5], args.seed),
            "regions.png": lambda: figure_regions(editor, opts, indices[:4], args.seed)[0],
        }
        assert tuple(figures) == FIGURES
        wanted = wanted_figures(args.only)
        for name, make in figures.items():
            if name not in wanted:
                continue
            path = os.path.join(args.out_dir, name)
            save_image_atomic(make(), path)
            print(f"wrote {path}")
    except (ValueError, FileNotFoundError) as e:
        return report_input_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main(args=_CLI_ARGS))
