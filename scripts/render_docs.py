"""Render every results table of the documentation from the committed results under docs/results/.

A table lives between two marker comments in README.md, checkpoints/README.md or docs/*.md:

    <!-- results:NAME -->
    ... rendered text, replaced on every run ...
    <!-- /results:NAME -->

NAME is one of RENDERERS below; each reads machine-readable results (JSON written by the project's
tools, or transcribed from the committed report a number was first published in, which the JSON
names) and returns Markdown that ends with where the numbers come from: the command, the date and
the hardware. Nothing between the markers is edited by hand.

    python scripts/render_docs.py            # rewrite the regions that changed
    python scripts/render_docs.py --check    # exit 1, naming each region that differs (tests/test_docs_render.py)

Standard library only: the check runs without torch.
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from optimization.presets import PRESETS  # noqa: E402  (plain dicts, no torch)
RESULTS = os.path.join("docs", "results")
MARKER = re.compile(r"<!-- results:([a-z0-9_]+) -->\n(.*?)<!-- /results:\1 -->", re.S)
OPEN_MARKER = re.compile(r"<!-- results:([a-z0-9_]+) -->")

# The editable attributes, in index order (docs/design.md, "The 20 attributes").
EDITABLE = ["Bags_Under_Eyes", "Eyeglasses", "Male", "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick", "Young"]
ATTRIBUTE_INDEX = {"Bags_Under_Eyes": 2, "Eyeglasses": 9, "Male": 11, "Mouth_Slightly_Open": 12, "Smiling": 15,
                   "Wearing_Lipstick": 18, "Young": 19}
ALL_ATTRIBUTES = ["Goatee", "Beard", "Bags_Under_Eyes", "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair",
                  "Gray_Hair", "Eyeglasses", "Heavy_Makeup", "Male", "Mouth_Slightly_Open", "Narrow_Eyes", "Pale_Skin",
                  "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Lipstick", "Young"]

# Benchmark method names -> what the tables call them.
METHOD_LABELS = {
    "cyclediff_sbs_inversion_region_fast": "**CycleDiff step-by-step, inside the inferred region — the default**",
    "cyclediff_s2o_region_fast": "CycleDiff step-to-origin, inside the region",
    "guidance_no_cycle_region_fast": "classifier guidance without the cycle term, inside the region",
    "conditional_only_region_fast": "conditional model only (cfg 2, no classifier), inside the region",
    "ddim_conditional_region_fast": "DDIM inversion + conditional sampling, inside the region",
    "sdedit_region_fast": "SDEdit, inside the region",
    "cyclediff_sbs_inversion_fast": "CycleDiff step-by-step, whole image",
    "guidance_no_cycle_fast": "classifier guidance without the cycle term, whole image",
    "conditional_only_fast": "conditional model only, whole image",
    "ddim_conditional_fast": "DDIM inversion + conditional sampling, whole image",
    "sdedit_fast": "SDEdit, whole image",
    "ground_truth": "*ground truth (the counterfactual itself)*",
    "cyclediff_s2o_paper": "step-to-origin (the released code's active scheme)",
    "cyclediff_sbs_paper": "step-by-step (the released code's commented-out `cond_fn_step`)",
}


class MissingResults(Exception):
    """A results file a region needs is not there (and the region has no pending form)."""


def load(name, root):
    path = os.path.join(root, RESULTS, name)
    if not os.path.isfile(path):
        raise MissingResults(f"{RESULTS}/{name} is missing")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def exists(name, root):
    return os.path.isfile(os.path.join(root, RESULTS, name))


# -- formatting ---------------------------------------------------------------------------------

def pct(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f} %"


def num(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def interval(cell, digits=1, unit=""):
    """'99.1 % [98.2, 99.8]' from a transcribed {value, low, high} cell."""
    if cell is None:
        return "–"
    if not isinstance(cell, dict):
        return f"{cell:.{digits}f}{unit}"
    return f"{cell['value']:.{digits}f}{unit} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def table(header, aligns, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(doc, what="Measured"):
    """Where the numbers come from: command, date, hardware, and the transcription if any."""
    parts = [f"{what} {doc['date']} on {doc['hardware']}"]
    if doc.get("wall_time"):
        parts[0] += f" ({doc['wall_time']})"
    text = parts[0] + f" with `{doc['command']}`"
    if doc.get("methods_variable_M"):
        text += f" (`M`: the {len(doc['methods_variable_M'])} methods of the table)"
    if doc.get("transcribed_from"):
        text += f"; transcribed from `{doc['transcribed_from']}`"
        if doc.get("transcribed_from_commit"):
            text += f" as of commit {doc['transcribed_from_commit'][:7]}"
    return text + "."


def rel(path, page):
    """A link target for `path` (repository-relative) as seen from the Markdown file `page`."""
    return os.path.relpath(path, os.path.dirname(page) or ".").replace(os.sep, "/")


# -- renderers: each takes (repository root, page path) and returns Markdown ---------------------

def render_edits_single(root, page):
    doc = load("evaluation_synthetic_448.json", root)
    point, ci = doc["per_method"], doc["per_method_ci"]
    identity = any("identity_input" in r for r in ci.values())  # scored since the identity networks shipped
    rows = []
    order = [m for m in METHOD_LABELS if m in ci and m != "ground_truth"] + [m for m in ci if m not in METHOD_LABELS]
    for method in order + (["ground_truth"] if "ground_truth" in ci else []):
        r = ci[method]
        label = METHOD_LABELS.get(method, f"`{method}`")
        same = [interval(r.get("identity_input"), digits=3)] if identity else []
        if method == "ground_truth":
            rows.append([label, f"*{interval(r['success'], unit=' %')}*", f"*{interval(r['preservation'], unit=' %')}*",
                         "*exact*", *[f"*{c}*" for c in same], "*0*", "–"])
            continue
        rows.append([label, interval(r["success"], unit=" %"), interval(r["preservation"], unit=" %"),
                     interval(r["psnr_gt"]), *same, num(point[method]["l1_outside_mask"], 4), point[method]["unet_evals"]])
    n = doc["per_method"][doc["default_method"]]["n"]
    header = ["method", "success", "preservation", "PSNR to ground truth (dB)"]
    header += ["identity similarity to the input"] if identity else []
    header += ["L1 outside the attribute's mask", "UNet evals / edit"]
    text = table(header, ["---"] + ["---:"] * (len(header) - 1), rows)
    report = rel(doc["source_report"], page)
    scored = (" and by the evaluation identity network (cosine of its embeddings; trained on other people)"
              if identity else "")
    return (f"{text}\n\n{n} edits per method ({doc['data']}), read by the evaluation classifier{scored}; "
            f"95 % bootstrap intervals. {source_line(doc)} Every table, per attribute and direction, and the paired "
            f"differences: [{doc['source_report']}]({report}).")


def render_edits_splits(root, page):
    """The default method on each benchmark split, beside the ground truth's ceiling."""
    rows = []
    sources = []
    for name, split in [("evaluation_synthetic_448.json", "single edits (the seven editable attributes)"),
                        ("evaluation_joint_80.json", "joint edits (two attributes at once)"),
                        ("evaluation_noneditable_52.json", "the 13 non-editable attributes")]:
        doc = load(name, root)
        d, gt = doc["per_method_ci"][doc["default_method"]], doc["per_method_ci"]["ground_truth"]
        link = f"[{os.path.basename(doc['source_report'])}]({rel(doc['source_report'], page)})"
        rows.append([split, doc["per_method"][doc["default_method"]]["n"], interval(d["success"], unit=" %"),
                     interval(d["preservation"], unit=" %"), interval(d["psnr_gt"]),
                     interval(d.get("identity_input"), digits=3),
                     f"{interval(gt['success'], unit=' %')} / {interval(gt['preservation'], unit=' %')}", link])
        sources.append(f"{os.path.basename(doc['source_report'])}: {doc['date']}, {doc['hardware']}")
    text = table(["split (held-out seed 1000)", "edits", "success", "preservation", "PSNR to ground truth (dB)",
                  "identity similarity to the input", "ground truth: success / preservation", "report"],
                 ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---"], rows)
    return (f"{text}\n\nThe default (`fast` preset) with the shipped models, read by the evaluation classifier and "
            f"the evaluation identity network; 95 % "
            f"bootstrap intervals; commands in each report ({'; '.join(sources)}).")


def render_paper_procedure(root, page):
    rows = []
    docs = []
    for name, what in [("evaluation_paper_procedure_250.json", "edits, 250 steps"),
                       ("evaluation_paper_procedure_1000.json", "edits (smile only), 1000 steps"),
                       ("evaluation_paper_procedure_reconstruction_250.json", "reconstruction, 250 steps")]:
        doc = load(name, root)
        docs.append(doc)
        for method, r in doc["per_method_ci"].items():
            p = doc["per_method"][method]
            rows.append([f"{METHOD_LABELS.get(method, method)}: {what}", r["n"],
                         interval(r["success"], unit=" %"), interval(r["preservation"], unit=" %"),
                         interval(r["psnr_gt"]), p["unet_evals"]])
    text = table(["`--preset paper` (v model)", "edits", "success", "preservation", "PSNR to ground truth (dB)",
                  "UNet evals / edit"], ["---", "---:", "---:", "---:", "---:", "---:"], rows)
    lines = [f"- `{d['command']}` — {d['date']}, {d['hardware']}; "
             f"[{os.path.basename(d['source_report'])}]({rel(d['source_report'], page)})" for d in docs]
    return (f"{text}\n\nHeld-out identities of seed 1000, 95 % bootstrap intervals; the LPIPS and identity terms off (no "
            f"weights on disk then). Transcribed from the reports:\n\n" + "\n".join(lines))


def ablation_label(options, identity_active=False):
    """A configuration of the paper's procedure named by its recorded options (what sets it apart);
    the identity weight is named only where its network was loaded (`identity_active`)."""
    schema = {"step_to_origin": "step-to-origin", "step_by_step": "step-by-step"}.get(options["cycle_schema"])
    if schema is None or not options["cycle_reconstruct_lambda"]:
        if identity_active and options.get("id_lambda"):
            return f"no cycle term (attribute, range and identity {options['id_lambda']:g} terms)"
        return "no cycle term (attribute and range terms only)"
    weight = options["cycle_reconstruct_lambda"]
    side = options.get("weight_resolution") or 0
    label = f"{schema}, cycle {weight:g}"
    if side:
        label += f" translated from {side} px to 64 px ({weight * (64 / side) ** 2:g}, `--weight_resolution {side}`)"
    if options.get("attribute_guidance_lambda", 50) != 50:
        label += f", attribute {options['attribute_guidance_lambda']:g}"
    if identity_active:
        label += f", identity {options['id_lambda']:g}" if options.get("id_lambda") else ", no identity term"
    inversion = options.get("inversion", "input")  # runs before this key was recorded: the paper preset's
    if inversion == "ddim":
        label = f"DDIM inversion first, {label}"
    paper = PRESETS["paper"]
    if (options["cycle_schema"], weight, side, options.get("attribute_guidance_lambda")) == (
            paper["cycle_schema"], paper["cycle_reconstruct_lambda"], paper["weight_resolution"],
            paper["attribute_guidance_lambda"]) and \
            (options.get("id_lambda") == paper["id_lambda"] or not identity_active) and inversion in ("input", "ddim"):
        label += ": **`--preset paper_inversion`**" if inversion == "ddim" else ": **`--preset paper`**"
    return label


def paper_ablation_renderer(name):
    return lambda root, page: render_paper_ablation(root, page, name)


def render_paper_ablation(root, page, name="paper_ablation_100.json"):
    """The paper's procedure swept (scripts/paper_procedure_ablation.sh, summarised by
    scripts/summarise_ablation.py): each configuration's edits and reconstructions, and what the
    cycle term changes against the same procedure without it."""
    doc = load(name, root)
    reference = doc["reference"]

    def cell(entry, key, unit="", digits=1):
        value = entry.get(key)
        if value is None:
            return "–"
        scale = 100 if unit == " %" else 1
        return (f"{scale * value['mean']:.{digits}f} [{scale * value['low']:.{digits}f}, "
                f"{scale * value['high']:.{digits}f}]")

    identity_active = doc.get("identity_guidance", False)
    scored = doc.get("identity_scored", False)
    rows = []
    for method, entry in doc["edits"].items():
        recon = doc["reconstructions"].get(method, {})
        row = [ablation_label(doc["options"][method], identity_active), entry["n"], cell(entry, "success", " %"),
               cell(entry, "preservation", " %"), cell(entry, "psnr_gt"), cell(entry, f"psnr_gt_vs_{reference}")]
        if scored:
            row += [cell(entry, "identity_input", digits=3), cell(entry, f"identity_input_vs_{reference}", digits=3)]
        rows.append(row + [cell(recon, "psnr_gt")])
    header = ["configuration (the paper's procedure, {} steps)".format(doc["steps"]), "edits", "success (%)",
              "preservation (%)", "PSNR to ground truth (dB)", "PSNR vs no cycle term (dB, paired)"]
    if scored:
        header += ["identity similarity to the input", "identity vs no cycle term (paired)"]
    header.append("reconstruction PSNR (dB)")
    text = table(header, ["---"] + ["---:"] * (len(header) - 1), rows)
    state = "" if doc.get("complete") else " The run was cut short: configurations with fewer edits are partial."
    raw = os.path.splitext(f"{RESULTS}/{name}")[0]
    terms = ("the identity term uses the shipped identity network (`checkpoints/identity.pt`) where its weight is "
             "set; LPIPS off (no AlexNet weights on disk)" if identity_active
             else "the identity and LPIPS terms off (no weights on disk when it ran)")
    if scored:
        terms += ("; identity similarity: cosine of the evaluation identity network's embeddings "
                  "(`checkpoints/eval_identity.pt`, trained on other people)")
    return (f"{text}\n\nHeld-out identities of seed {doc.get('seed', 1000)}, 95 % bootstrap intervals; each configuration differs "
            f"from `--preset paper` (or from the preset it names) only in what its name says; {terms}.{state} "
            f"`{doc['command']}` — {doc['date']}, {doc['hardware']}; rows in [{raw}]({rel(raw, page)}).")


def render_speed(root, page):
    """From scripts/bench_edit.py's JSON (`--output docs/results/bench_edit.json`) when committed, else from
    the figure transcribed before that file existed."""
    name = "bench_edit.json" if exists("bench_edit.json", root) else "bench_edit_transcribed.json"
    doc = load(name, root)
    rows = list(doc.get("rows", [])) + list(doc.get("batched_rows") or [])
    if not rows:
        raise MissingResults(f"{RESULTS}/{name} has no rows")
    compare = any(r.get("baseline_seconds_per_edit") is not None for r in rows)
    header = ["preset", "image side", "steps", "sampler", "inversion", "images per call", "s / edit", "UNet evals / edit"]
    aligns = ["---", "---:", "---:", "---", "---", "---:", "---:", "---:"]
    if compare:
        header += ["s / edit, reference path (one call per pass)", "speed-up"]
        aligns += ["---:", "---:"]
    out = []
    for r in rows:
        row = [r["preset"], r.get("resolution", "–"), r.get("steps", "–"), r.get("sampler", "–"), r.get("inversion", "–"),
               r.get("batch_size", 1), num(r["seconds_per_edit"], 2), f"{r['unet_evals']:g}"]
        if compare:
            base, ratio = r.get("baseline_seconds_per_edit"), r.get("speedup")
            row += [num(base, 2), "–" if ratio is None else f"{ratio:.2f} ×"]
        out.append(row)
    text = table(header, aligns, out)
    line = source_line(doc)
    if doc.get("torch"):
        line = line[:-1] + f" (torch {doc['torch']})."
    return f"{text}\n\n{line}"


def balanced_accuracy(doc):
    """{attribute: balanced accuracy} of an `encoder_train.py --evaluate` results file."""
    return {name: entry["balanced_accuracy"] for name, entry in doc["attributes"].items()}


def render_classifier_accuracy(root, page):
    doc = load("classifier_heldout.json", root)
    acc = balanced_accuracy(doc)
    half = (len(ALL_ATTRIBUTES) + 1) // 2
    rows = []
    for a, b in zip(ALL_ATTRIBUTES[:half], ALL_ATTRIBUTES[half:] + [None]):
        mark = lambda n: f"{n} (editable)" if n in ATTRIBUTE_INDEX else n  # noqa: E731
        rows.append([mark(a), num(acc[a], 4), mark(b) if b else "", num(acc[b], 4) if b else ""])
    rows.append(["**mean**", f"**{doc['mean_balanced_accuracy']:.4f}**", "", ""])
    text = table(["attribute", "balanced acc.", "attribute", "balanced acc."], ["---", "---:", "---", "---:"], rows)
    return f"{text}\n\nOn {doc['data']}. {source_line(doc)}"


# The evaluation classifier's card lists the attributes edits are judged on and the weakest ones.
EVAL_CLASSIFIER_SHOWN = ("Bags_Under_Eyes", "Eyeglasses", "Male", "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick",
                         "Young", "Straight_Hair", "Wavy_Hair")


def render_eval_classifier_accuracy(root, page):
    doc = load("eval_classifier_heldout.json", root)
    acc = balanced_accuracy(doc)
    rows = [[n, num(acc[n], 3)] for n in EVAL_CLASSIFIER_SHOWN]
    others = [v for n, v in acc.items() if n not in EVAL_CLASSIFIER_SHOWN]
    rows.append([f"the other {len(others)}", f"each ≥ {min(others):.3f}"])
    rows.append([f"**mean of {len(acc)}**", f"**{doc['mean_balanced_accuracy']:.3f}**"])
    text = table(["attribute", "balanced acc."], ["---", "---:"], rows)
    return f"{text}\n\nOn {doc['data']}. {source_line(doc)}"


SAMPLE_RUNS = [("samples_eps_ddim50.json", "`diffusion_eps.pt` (eps prediction)"),
               ("samples_v_ddim50.json", "**`diffusion.pt` (v prediction, shipped)**")]
# scripts/evaluate_samples.py's JSON does not record when and where it ran: the commit that added
# these two files (561ae63) and the model card of that date say.
SAMPLES_MEASURED = "2026-12-02 on 2 CPU cores, no GPU"


def render_samples(root, page):
    rows, floor = [], None
    for name, label in SAMPLE_RUNS:
        d = load(name, root)
        if floor is None:
            floor = d
            rows.append([f"real faces of seed {d['floor_seed']} (floor)", num(d["fd_floor"], 2),
                         num(d["color_w1_floor"], 4), pct(100 * d["saturated_fraction_floor"], 2),
                         num(d["conditioning_accuracy_editable_floor"], 3), num(d["conditioning_accuracy_floor"], 3)])
        rows.append([label, f"{d['fd']:.2f} ({d['fd'] / d['fd_floor']:.2f} × floor)",
                     f"{d['color_w1']:.4f} ({d['color_w1'] / d['color_w1_floor']:.2f} ×)",
                     pct(100 * d["saturated_fraction"], 2), num(d["conditioning_accuracy_editable"], 3),
                     num(d["conditioning_accuracy"], 3)])
    text = table(["model", "FD (eval-classifier features)", "colour W1", "saturated pixels",
                  "conditioning acc. (editable)", "conditioning acc. (all 20)"],
                 ["---", "---:", "---:", "---:", "---:", "---:"], rows)
    v = load("samples_v_ddim50.json", root)
    per = ", ".join(f"{n} {v['per_attribute_accuracy'][str(ATTRIBUTE_INDEX[n])]:.3f}" for n in EDITABLE)
    return (f"{text}\n\n{v['num_samples']} samples from pure noise, conditioned on the attribute vectors of held-out "
            f"faces (seed {v['synthetic_seed']}), {v['sampler'].upper()} {v['steps']} steps, no clipping, read by the "
            f"evaluation classifier; the floor is {v['num_samples']} real faces of seed {v['floor_seed']} measured the "
            f"same way. `diffusion.pt`'s conditioning accuracy per editable attribute: {per}. "
            f"Command: `python scripts/evaluate_samples.py --model_path checkpoints/diffusion.pt --num_samples "
            f"{v['num_samples']} --timestep_respacing {v['timestep_respacing']}` (and the same for "
            f"`diffusion_eps.pt`), measured {SAMPLES_MEASURED}; results: `docs/results/samples_*.json`.")


def identity_renderer(name, checkpoint):
    def render(root, page):
        if not exists(name, root):
            return (f"Evaluation pending: `{RESULTS}/{name}` is not committed yet. It is written by "
                    f"`python preprocess/identity_train.py --evaluate {checkpoint} --data_dir "
                    f"runs/data/people64_s1000 --output {RESULTS}/{name}`.")
        doc = load(name, root)
        s = doc["summary"]
        rows = [["verification accuracy (10-fold, same person or not)", num(s["verification_accuracy"], 4)],
                ["decision threshold (cosine)", num(s["threshold"], 3)],
                ["cosine, same person, another view", num(s["mean_same_person_views"], 4)],
                ["cosine, same person, one editable attribute flipped (mean)", num(s["mean_attribute_flip"], 4)],
                ["cosine, same person, one editable attribute flipped (lowest)", num(s["min_attribute_flip"], 4)],
                ["cosine, different people (verification pairs)", num(s["mean_different_people_pairs"], 4)],
                ["cosine, different people (all)", num(s["mean_different_people"], 4)]]
        rows += [[f"cosine, {attr} flipped", num(v, 4)] for attr, v in s["attribute_flip_by_attribute"].items()]
        text = table(["measure (held-out people of seed 1000)", "value"], ["---", "---:"], rows)
        data = doc.get("data_dir", "runs/data/people64_s1000")
        line = (f"Held-out people: `{data}`. Command: `python preprocess/identity_train.py --evaluate "
                f"{doc.get('checkpoint', checkpoint)} --data_dir {data} --output {RESULTS}/{name}`")
        if doc.get("date"):
            line += f", {doc['date']}"
        if doc.get("hardware"):
            line += f", {doc['hardware']}"
        text += f"\n\n{line}."
        figure = os.path.join("images", "identity_similarity.png")
        if name == "identity.json" and os.path.isfile(os.path.join(root, figure)):
            text += f"\n\n![similarity distributions]({rel(figure, page)})"
        return text
    return render


RENDERERS = {
    "edits_single": render_edits_single,
    "edits_splits": render_edits_splits,
    "paper_procedure": render_paper_procedure,
    "paper_ablation": paper_ablation_renderer("paper_ablation_250_identity.json"),
    "paper_250_seed1003_identity": paper_ablation_renderer("paper_250_seed1003_identity.json"),
    "paper_1000_identity": paper_ablation_renderer("paper_1000_identity.json"),
    "paper_ablation_100": paper_ablation_renderer("paper_ablation_100.json"),
    "paper_ablation_250": paper_ablation_renderer("paper_ablation_250.json"),
    "paper_250_seed1003": paper_ablation_renderer("paper_250_seed1003.json"),
    "speed": render_speed,
    "classifier_accuracy": render_classifier_accuracy,
    "eval_classifier_accuracy": render_eval_classifier_accuracy,
    "samples": render_samples,
    "identity": identity_renderer("identity.json", "checkpoints/identity.pt"),
    "eval_identity": identity_renderer("eval_identity.json", "checkpoints/eval_identity.pt"),
}


# -- the pages ----------------------------------------------------------------------------------

def pages(root):
    """The Markdown files that may hold results regions (repository-relative)."""
    out = ["README.md", os.path.join("checkpoints", "README.md")]
    docs = os.path.join(root, "docs")
    if os.path.isdir(docs):
        out += sorted(os.path.join("docs", n) for n in os.listdir(docs) if n.endswith(".md"))
    return [p for p in out if os.path.isfile(os.path.join(root, p))]


def render_page(text, page, root):
    """(new text, names of the regions in it); raises ValueError on an unknown or unclosed region."""
    names = []
    opened = OPEN_MARKER.findall(text)

    def replace(m):
        name = m.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page}: unknown results region {name!r} (known: {', '.join(sorted(RENDERERS))})")
        names.append(name)
        body = RENDERERS[name](root, page).rstrip("\n")
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    new = MARKER.sub(replace, text)
    if len(names) != len(opened):
        unclosed = sorted(set(opened) - set(names)) or opened
        raise ValueError(f"{page}: results region(s) without their closing marker: {', '.join(unclosed)}")
    return new, names


def stale_regions(root=ROOT):
    """[(page, region name)] whose committed text differs from what the renderer gives now."""
    stale = []
    for page in pages(root):
        with open(os.path.join(root, page), encoding="utf-8") as f:
            text = f.read()
        new, names = render_page(text, page, root)
        if new != text:
            old_bodies = {m.group(1): m.group(2) for m in MARKER.finditer(text)}
            new_bodies = {m.group(1): m.group(2) for m in MARKER.finditer(new)}
            stale += [(page, n) for n in names if old_bodies.get(n) != new_bodies.get(n)]
    return stale


def render_all(root=ROOT):
    """Rewrite every page whose regions changed; returns the pages written."""
    written = []
    for page in pages(root):
        path = os.path.join(root, page)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new, _ = render_page(text, page, root)
        if new != text:
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(tmp, path)
            written.append(page)
    return written


def main(argv=None):
    from guided_diffusion.safe_paths import OneLineParser

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region differs from its rendering")
    args = p.parse_args(argv)
    try:
        if args.check:
            stale = stale_regions()
            for page, name in stale:
                print(f"{page}: results region {name!r} differs from docs/results (run python scripts/render_docs.py)")
            return 1 if stale else 0
        for page in render_all():
            print(f"rendered {page}")
        return 0
    except (ValueError, MissingResults) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
