"""Edit-evaluation benchmark: every method of `optimization.evaluation.METHODS` on the same models
and inputs (README, "Evaluation").

Synthetic faces (default): identities 0..N-1 of --synthetic_seed (held out: training used seed 0),
each --attributes entry flipped in the direction that changes it for that identity. The identity
rendered under the query attributes is the ground truth. Measures: success and preservation read
by the evaluation classifier, PSNR / L1 to the ground truth, L1 outside the attribute's mask,
seconds and UNet evaluations.

Real data (--dataset_dir, a dataset folder as in docs/design.md): the paper's measures — accuracy of the edits by the
classifier (the evaluation classifier when there is one, else the guidance one) and L1 to the input
(attribute 20 = reconstruction) — plus LPIPS when the `lpips` package and AlexNet weights are on
disk, and FID with --inception_weights.

    python scripts/evaluate_edits.py --per_direction 2                  # the fast methods: minutes
    mpiexec -n 2 python scripts/evaluate_edits.py --per_direction 32    # shards edits; rank 0 merges
    python scripts/evaluate_edits.py --per_direction 1 --methods paper --paper_steps 100   # the paper preset: slow
    python scripts/evaluate_edits.py --dataset_dir data/celebahq256 --num_identities 200 \\
        --inception_weights inception_v3_google-0cc3c7bd.pth

Two more splits on synthetic faces, each opt-in and reported in its own section of results.md:

    python scripts/evaluate_edits.py --per_direction 2 --joint_pairs default    # + joint edits
    python scripts/evaluate_edits.py --per_direction 2 --noneditable all         # + non-editable attributes
    python scripts/evaluate_edits.py --per_direction 2 --attributes none --joint_pairs 9+15,15+18   # joint only

--joint_pairs: two editable attributes flipped at once, each in the direction that changes it for the
identity (`default`: 9+15, 15+18, 2+12, 9+19, 11+18; or a comma list of pairs a+b). Success needs
both read as the query; the ground truth renders both flipped; the mask is the union of the two.
With --per_direction K, per pair the first K identities of each of the four combinations of the two
attributes. --noneditable: single flips of the 13 non-editable attributes (`all` or a comma list);
a flip the renderer cannot draw as labelled (a second hair colour, straight and wavy together,
bangs on a bald head) or that renders no change (texture on a bald head) is left out and counted in
results.md. `--attributes none` skips the single editable split.

Outputs in --output_dir: results.csv (one row per edit), results.md (tables), summary.png,
grid_<method>.png, images/<method>/<index>_<attribute>.png (a pair: <index>_<a>+<b>.png), and with
the extra splits results_joint.csv / results_noneditable.csv and grid_joint_<method>.png /
grid_noneditable_<method>.png; and the bookkeeping that lets a killed run resume: run.json (the
settings the rows depend on) and partial_rank<R>.csv (rows as they finish, every split; a pair a+b
is attribute 100 a + b there). Rerun the same command to continue (also after Ctrl-C); finished
edits are not redone. A larger --per_direction or more --methods extend a finished run the same way;
a method whose options changed since its rows were made is refused (run.json records them).

--methods: `fast` (the default: CycleDiff's fast preset, the baselines and, on synthetic faces,
`ground_truth`), `paper` (the paper preset's methods: thousands of UNet evaluations per edit, minutes
each on a CPU), `all`, or a comma list of names. The progress bar counts UNet evaluations (estimated
per method, then measured), so its time left holds when slow and fast methods are mixed.
"""
import argparse
import contextlib
import csv
import functools
import itertools
import json
import math
import os
import sys

# Torch-free: the flags are parsed and checked before torch is imported (see the end of this block).
from guided_diffusion.safe_paths import OneLineParser, parse_checked, check_reusable_folder, report_input_error
from optimization import evaluation as ev
from optimization.arguments import DEFAULT_CLASSIFIER_PATH, DEFAULT_MODEL_PATH, REPO_ROOT
from optimization.queries import check_attribute_index
from preprocess.attributes import ATTRIBUTE_NAMES, EDITABLE_ATTRIBUTES, RECONSTRUCTION_INDEX

INPUT_ERRORS = (ValueError, FileNotFoundError)

DEFAULT_EVAL_CLASSIFIER_PATH = os.path.join(REPO_ROOT, "checkpoints", "eval_classifier.pt")
DEFAULT_IDENTITY_NET_PATH = os.path.join(REPO_ROOT, "checkpoints", "identity.pt")
DEFAULT_EVAL_IDENTITY_NET_PATH = os.path.join(REPO_ROOT, "checkpoints", "eval_identity.pt")
DEFAULT_SYNTHETIC_IDENTITIES = 50


# --------------------------------------------------------------------------- command line


def build_parser():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument("--model_path", default=DEFAULT_MODEL_PATH, help="diffusion checkpoint (JSON beside it)")
    g.add_argument("--classifier_path", default=DEFAULT_CLASSIFIER_PATH, help="guidance classifier")
    g.add_argument("--eval_classifier_path", default=None,
                   help=f"evaluation classifier (default: {os.path.relpath(DEFAULT_EVAL_CLASSIFIER_PATH, REPO_ROOT)}; "
                        "on --dataset_dir the guidance classifier stands in when the default is absent)")
    g.add_argument("--ir_se50_weights", default=None, help="ArcFace weights: the paper preset's identity loss")
    g.add_argument("--identity_net", default=DEFAULT_IDENTITY_NET_PATH,
                   help="identity network of the methods' id_lambda term on synthetic faces ('' for none)")
    g.add_argument("--eval_identity_net", default=None,
                   help="an independently trained identity network that scores identity_input / identity_gt "
                        f"(default: {os.path.relpath(DEFAULT_EVAL_IDENTITY_NET_PATH, REPO_ROOT)} when present, "
                        "synthetic faces; '' for none)")
    g.add_argument("--inception_weights", default=None,
                   help="torchvision inception_v3 state dict: adds FID (edited vs input images) per method")
    g.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    g = p.add_argument_group("inputs")
    g.add_argument("--synthetic_seed", type=int, default=1000,
                   help="synthetic identities of this seed (training used 0)")
    g.add_argument("--dataset_dir", default=None, help="evaluate on this labelled dataset instead of synthetic faces")
    g.add_argument("--num_identities", type=int, default=None,
                   help=f"synthetic identities 0..N-1 (default {DEFAULT_SYNTHETIC_IDENTITIES}), or the first N "
                        "images of --dataset_dir (default: all)")
    g.add_argument("--per_direction", type=int, default=None,
                   help="synthetic faces: for each attribute, the first K identities of the seed that have it "
                        "and the first K that do not (both directions equally often; replaces --num_identities)")
    g.add_argument("--attributes", default=None,
                   help="comma list of attribute indices, each flipped alone; 20 = reconstruction "
                        f"(default: {','.join(map(str, EDITABLE_ATTRIBUTES))}, plus 20 on --dataset_dir); "
                        "none: no single edits (only the splits below)")
    g.add_argument("--joint_pairs", default=None,
                   help="synthetic faces: add the joint split, two editable attributes flipped at once: default ("
                        + ",".join(f"{a}+{b}" for a, b in ev.DEFAULT_JOINT_PAIRS) + ") or a comma list of pairs "
                        "a+b (default: none)")
    g.add_argument("--noneditable", default=None,
                   help="synthetic faces: add the split of single flips of non-editable attributes: all ("
                        f"{','.join(map(str, ev.NON_EDITABLE_ATTRIBUTES))}) or a comma list of them (default: none); "
                        "flips the renderer cannot draw as labelled are left out")
    g = p.add_argument_group("methods")
    g.add_argument("--methods", default="fast",
                   help=f"fast (default: {', '.join(method_group('fast', real=False))}), paper "
                        f"({', '.join(method_group('paper', real=False))}; minutes per edit on a CPU), all, or a "
                        f"comma list of: {', '.join(list(ev.METHODS) + [ev.GROUND_TRUTH])} (ground_truth: the "
                        "synthetic counterfactual scored as an edit, the ceiling)")
    g.add_argument("--variants", default=None,
                   help="extra methods for a sweep or an ablation: 'NAME=BASE:key=value,...;NAME2=...', BASE a "
                        "method above, keys main.py's method flags (e.g. 's2o_w4000=cyclediff_s2o_paper:"
                        "cycle_reconstruct_lambda=4000,weight_resolution=0'); name them in --methods")
    g.add_argument("--paper_steps", type=int, default=None,
                   help="run the paper preset on a respaced N-step chain instead of the model's full one "
                        "(1000 steps is hours per edit on a CPU)")
    g.add_argument("--steps", type=int, default=None, help="run every method on a respaced N-step chain (smoke runs)")
    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default="evaluation")
    g.add_argument("--batch_size", type=int, default=8, help="edits of one method run together")
    g.add_argument("--seed", type=int, default=0, help="edit of input i, attribute k uses seed + 1000 i + k")
    g.add_argument("--grid_rows", type=int, default=6, help="edits shown in each method's sample grid")
    g.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (0: torch's default; under mpiexec, cores / processes)")
    g.add_argument("--max_edits", type=int, default=None,
                   help="stop after this many new edits per process (a partial run; rerun to continue)")
    return p


def method_group(name, real):
    """The methods `--methods fast` / `paper` stand for (the fast group adds ground_truth on synthetic faces)."""
    if name == "fast":
        return [m for m, (preset, _) in ev.METHODS.items() if preset == "fast"] + ([] if real else [ev.GROUND_TRUTH])
    return [m for m, (preset, _) in ev.METHODS.items() if preset.startswith("paper")]


def expand_methods(text, real):
    """--methods with the groups `fast` and `paper` written out (`all` and names are left to parse_methods)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not any(n in ("fast", "paper") for n in names):
        return text
    expanded = [m for n in names for m in (method_group(n, real) if n in ("fast", "paper") else [n])]
    return ",".join(dict.fromkeys(expanded))


def parse_attributes(text, real):
    """'2,9,20' -> [2, 9, 20]; None -> the editable attributes (+ reconstruction on real data); 'none' -> []."""
    if text is None:
        return list(EDITABLE_ATTRIBUTES) + ([RECONSTRUCTION_INDEX] if real else [])
    if str(text).strip() == "none":
        return []
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--attributes must be a comma list of integers 0-{RECONSTRUCTION_INDEX}; got {text!r}")
    if not values:
        raise ValueError("--attributes is empty")
    for v in values:
        check_attribute_index(v)
    if len(set(values)) != len(values):
        raise ValueError(f"attribute listed twice in --attributes {text!r}")
    return values


def require_file(path, flag):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} not found: {path}")
    return path


def check_flags(args, real):
    """Validate the flags before anything is loaded: (methods, edits per split {split: edit codes},
    evaluation classifier path or None)."""
    ev.register_variants(args.variants)
    methods = ev.parse_methods(expand_methods(args.methods, real), synthetic=not real)
    splits = dict(single=parse_attributes(args.attributes, real), joint=ev.parse_joint_pairs(args.joint_pairs),
                  noneditable=ev.parse_noneditable(args.noneditable))
    if real and (splits["joint"] or splits["noneditable"]):
        raise ValueError("--joint_pairs and --noneditable need synthetic faces (their ground truth is the "
                         "renderer's): not with --dataset_dir")
    if not any(splits.values()):
        raise ValueError("nothing to evaluate: --attributes none without --joint_pairs or --noneditable")
    if args.per_direction is not None and (real or args.num_identities is not None):
        raise ValueError("--per_direction picks synthetic identities itself: not with --dataset_dir or --num_identities")
    for flag in ("num_identities", "per_direction", "batch_size", "steps", "paper_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be positive; got {value}")
    for flag in ("grid_rows", "max_edits", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"--{flag} must be >= 0; got {value}")
    # A folder with files but no run.json is the user's: its results.csv or summary.png would be replaced.
    check_reusable_folder(args.output_dir, "--output_dir", "evaluate_edits.py",
                          recognise=lambda folder: os.path.isfile(os.path.join(folder, "run.json")))
    require_file(args.model_path, "diffusion checkpoint (--model_path)")
    require_file(args.classifier_path, "guidance classifier (--classifier_path)")
    eval_path = args.eval_classifier_path
    if eval_path is None and (not real or os.path.isfile(DEFAULT_EVAL_CLASSIFIER_PATH)):
        eval_path = DEFAULT_EVAL_CLASSIFIER_PATH
    if eval_path is not None:
        require_file(eval_path, "evaluation classifier (--eval_classifier_path)")
    if args.inception_weights is not None:
        require_file(args.inception_weights, "inception weights (--inception_weights)")
    if args.identity_net == DEFAULT_IDENTITY_NET_PATH and not os.path.isfile(args.identity_net):
        args.identity_net = ""  # a clone without the shipped network: the id term is dropped with a note
    elif args.identity_net:
        require_file(args.identity_net, "identity network (--identity_net)")
    if args.eval_identity_net is None:
        args.eval_identity_net = DEFAULT_EVAL_IDENTITY_NET_PATH if os.path.isfile(DEFAULT_EVAL_IDENTITY_NET_PATH) else ""
    if args.eval_identity_net:
        require_file(args.eval_identity_net, "evaluation identity network (--eval_identity_net)")
    return methods, splits, eval_path


def parse_and_check(argv=None):
    """The parsed flags, after check_flags; an input error is one `error:` line (said once under
    mpiexec) and exit status 2."""
    return parse_checked(build_parser(), lambda args: check_flags(args, args.dataset_dir is not None), argv,
                         INPUT_ERRORS)


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from guided_diffusion.attribute_table import ATTRIBUTES_FILE, read_attribute_table  # noqa: E402
from guided_diffusion.mpi_launch import mpi_world  # noqa: E402
from optimization.editor import AttributeEditor, EditResult  # noqa: E402
from optimization.image_io import load_dataset_item, save_png, to_tensor, to_uint8  # noqa: E402
from optimization.queries import query_from_indices  # noqa: E402
from optimization.losses import load_lpips  # noqa: E402
from optimization.visualization import save_image_atomic  # noqa: E402
from preprocess.classifier import load_classifier  # noqa: E402
from preprocess.identity import load_identity_net  # noqa: E402
from preprocess.synthetic_faces import MIN_IMAGE_SIZE, attribute_mask, example_face, render  # noqa: E402


def estimated_unet_evals(editor, opts):
    """UNet evaluations one edit with `opts` makes (a batched call counts once per image): per step
    of the k inverted and re-sampled ones, the inversion's (with its fixed-point refinements), the
    passes under the query attributes (two with a classifier-free contrast) and the cycle term's;
    plus the region map's passes. Only the progress bar uses it (until the method's first batch)."""
    k = opts.num_steps(editor.diffusion(opts.timestep_respacing).num_timesteps)
    inversion = (1 + opts.inversion_fixed_point) if opts.inversion in ("ddim", "ddpm_noise") else 0
    query = 2 if opts.cfg_scale != 1 and editor.conditional else 1
    cycle = 1 if opts.cycle_schema != "none" and opts.weights.cycle_reconstruct_lambda else 0
    # An inferred region: eps under the flipped attribute at each of its noise levels, and under a_ref
    # where the edit-friendly inversion has not computed it already.
    region = 0
    if getattr(opts, "region", "none") == "inferred" and editor.conditional:
        from optimization.region import level_index, parse_levels

        steps = editor.diffusion(opts.timestep_respacing).num_timesteps
        for level in parse_levels(opts.region_levels):
            region += 1 + (opts.inversion != "ddpm_noise" or level_index(level, steps) >= k)
    return k * (inversion + query + cycle) + region


class _EditProgress:
    """One bar per process counting UNet evaluations (its time left holds across methods of very
    different cost), moved on every UNet call through a forward hook; shows edits done in its postfix."""

    def __init__(self, editor, options, todo, desc):
        self.costs = {m: (0 if m == ev.GROUND_TRUTH else estimated_unet_evals(editor, options[m]))
                      for m in dict.fromkeys(m for m, _, _ in todo)}
        self.measured = set()
        self.left = {m: sum(1 for t in todo if t[0] == m) for m in self.costs}
        self.edits, self.total_edits = 0, len(todo)
        self.bar = tqdm(total=sum(self._cost(m) * n for m, n in self.left.items()), desc=desc, unit="eval",
                        bar_format="{desc}: {percentage:3.0f}%|{bar}|{postfix} [{elapsed}<{remaining}]")
        self.batch_budget = self.batch_moved = self.batch_size = 0
        model = getattr(editor, "model", None)
        self.hook = model.register_forward_hook(self._on_call) if isinstance(model, torch.nn.Module) else None
        self._postfix()

    def _cost(self, method):
        return max(1, self.costs[method])  # the ground truth costs no UNet call but still counts

    def _postfix(self, method=None):
        self.bar.set_postfix_str(f"{self.edits}/{self.total_edits} edits" + (f", {method}" if method else ""))

    def _on_call(self, module, inputs, output):
        rows = inputs[0].shape[0] if inputs else self.batch_size  # the images this call evaluated
        step = min(rows, self.batch_budget - self.batch_moved)
        if step > 0:
            self.batch_moved += step
            self.bar.update(step)

    def start(self, method, size):
        self.batch_budget, self.batch_moved, self.batch_size = self._cost(method) * size, 0, size
        self._postfix(method)

    def finish(self, method, size, unet_evals):
        self.bar.update(self.batch_budget - self.batch_moved)
        self.left[method] -= size
        if method not in self.measured and method != ev.GROUND_TRUTH:  # the estimate gives way to the count
            self.measured.add(method)
            if unet_evals and unet_evals != self.costs[method]:
                self.bar.total += (unet_evals - self.costs[method]) * self.left[method]
                self.costs[method] = unet_evals
        self.edits += size
        self.batch_budget = self.batch_moved = 0
        self._postfix()

    def close(self):
        if self.hook is not None:
            self.hook.remove()
        self.bar.close()


# --------------------------------------------------------------------------- inputs

@functools.lru_cache(maxsize=64)
def _render(seed, index, attributes, image_size):
    identity, _ = example_face(seed, index)
    return to_tensor(render(identity, list(attributes), image_size))


@functools.lru_cache(maxsize=16)
def _load_image(directory, index, image_size):
    return load_dataset_item(directory, index, image_size)[0]


class SyntheticFaces:
    """Identities 0..count-1 of `seed`: inputs [1, 3, S, S], labels [20], counterfactuals, masks.
    Edits are edit codes (`ev.edit_attributes`): one attribute, a reconstruction or a pair."""

    item_column = "identity"

    def __init__(self, seed, count, image_size, per_direction=None):
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"the synthetic renderer needs image_size >= {MIN_IMAGE_SIZE}; "
                             f"the model is {image_size} px")
        self.seed, self.image_size, self.per_direction = seed, image_size, per_direction
        self.indices = list(range(2 * per_direction if per_direction else count))
        self.left_out = {}  # edit code -> {reason: identities passed over} (inputs_for with drawable_only)

    def inputs_for(self, attribute, scan_limit=100000, drawable_only=False):
        """Identities edited for edit code `attribute`: all of them, or with `per_direction` K, for
        each combination of the flipped attributes' values (two for one attribute, four for a pair),
        the first K identities that have it (a reconstruction: identities 0..2K-1).

        :param drawable_only: pass over identities whose flip `flip_problem` refuses (counted in
            self.left_out)."""
        flipped = ev.edit_attributes(attribute)
        if not flipped:
            return self.indices
        left_out = self.left_out.setdefault(attribute, {}) if drawable_only else None

        def drawable(index):
            why = self.flip_problem(index, attribute) if drawable_only else None
            if why is not None:
                left_out[why] = left_out.get(why, 0) + 1
            return why is None

        if not self.per_direction:
            return [i for i in self.indices if drawable(i)]
        groups = {values: [] for values in itertools.product((0, 1), repeat=len(flipped))}
        for index in range(scan_limit):
            group = groups[tuple(int(self.labels(index)[k] > 0.5) for k in flipped)]
            if len(group) < self.per_direction and drawable(index):
                group.append(index)
            if all(len(g) == self.per_direction for g in groups.values()):
                return sorted(i for g in groups.values() for i in g)
        short = next(v for v, g in groups.items() if len(g) < self.per_direction)
        raise ValueError(f"fewer than {self.per_direction} of the first {scan_limit} identities of seed {self.seed} "
                         f"have {' and '.join(f'{ATTRIBUTE_NAMES[k]} = {v}' for k, v in zip(flipped, short))}"
                         + (" with a flip the renderer can draw" if drawable_only else ""))

    def flip_problem(self, index, attribute):
        """None when the renderer draws identity `index` with edit code `attribute` flipped as its
        labels say, else why not: a vector its sampler never makes (`ev.renderer_rule_broken`), or
        the same image as the input."""
        a_ref = self.labels(index)
        a_q = query_from_indices(a_ref, ev.edit_attributes(attribute))
        why = ev.renderer_rule_broken(a_q)
        if why is None and torch.equal(self.ground_truth(index, a_q), self.image(index)):
            why = "no visible change"
        return why

    def labels(self, index):
        return torch.as_tensor(example_face(self.seed, index)[1], dtype=torch.float32)

    def image(self, index):
        return self.ground_truth(index, self.labels(index))

    def ground_truth(self, index, a_q):
        return _render(self.seed, index, tuple(int(v) for v in a_q), self.image_size)

    def allowed_mask(self, index, attribute):
        """[1, S, S] bool: the pixels the edit (code) `attribute` may change: the union of its
        attributes' masks (none for a reconstruction)."""
        mask = torch.zeros(1, self.image_size, self.image_size, dtype=torch.bool)
        identity, _ = example_face(self.seed, index)
        for k in ev.edit_attributes(attribute):
            mask |= torch.from_numpy(attribute_mask(identity, k, self.image_size))[None]
        return mask

    def describe(self):
        which = (f"per attribute, the first {self.per_direction} identities of seed {self.seed} with it and the "
                 f"first {self.per_direction} without it" if self.per_direction else
                 f"identities 0-{len(self.indices) - 1} of seed {self.seed}")
        return f"synthetic faces: {which} (held out; training used seed 0), {self.image_size}x{self.image_size} px"


class LabelledDataset:
    """The first `count` images of a dataset folder (docs/design.md) and their attributes.pt labels."""

    item_column = "image"

    def __init__(self, directory, count, image_size):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"dataset directory not found: {directory}")
        require_file(os.path.join(directory, ATTRIBUTES_FILE), "labels (attributes.pt of --dataset_dir)")
        table = read_attribute_table(directory, num_attributes=len(ATTRIBUTE_NAMES), expected_by="the editor")
        if count is not None and count > len(table):
            raise ValueError(f"--num_identities {count} but {directory} has {len(table)} labelled images")
        self.directory, self.image_size, self.table = directory, image_size, table.float()
        self.indices = list(range(len(table) if count is None else count))

    def labels(self, index):
        return self.table[index]

    def inputs_for(self, attribute):
        return self.indices

    def image(self, index):
        return _load_image(self.directory, index, self.image_size)

    def describe(self):
        return f"dataset {self.directory}: images 0-{len(self.indices) - 1}, resized to {self.image_size} px"


# --------------------------------------------------------------------------- bookkeeping

def check_run_config(path, config, may_write):
    """Refuse to mix rows of runs whose results would differ; the first process records the settings.

    `config["method_options"]` (method -> its option values) is checked per method: a method's rows
    are reused only under the same options, and a method new to the run is added. --per_direction is
    not recorded: an edit's row does not depend on it, so a finished run can be extended.
    """
    recorded = None
    if os.path.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
        except ValueError:
            raise ValueError(f"{path} is not valid JSON; delete it or use a new --output_dir") from None
        changed = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in config.items()
                   if k != "method_options" and recorded.get(k) != v]
        if "method_options" in config and "method_options" not in recorded:
            changed.append("the methods' options, which a run.json of an older version does not record")
        before = recorded.get("method_options", {})
        changed += [f"options of {m}" for m, v in config.get("method_options", {}).items() if m in before and before[m] != v]
        if changed:
            raise ValueError(f"{os.path.dirname(path) or '.'} holds a run with other settings ({'; '.join(changed)}); "
                             "use a new --output_dir")
    if may_write and (recorded is None or any(m not in recorded.get("method_options", {})
                                              for m in config.get("method_options", {}))):
        merged = dict(config)
        if recorded is not None:
            merged["method_options"] = {**recorded.get("method_options", {}), **config["method_options"]}
        ev.write_text_atomic(path, json.dumps(merged, indent=2) + "\n")


def partial_path(output_dir, rank):
    return os.path.join(output_dir, f"partial_rank{rank}.csv")


def finished_rows(output_dir, columns):
    """Every complete row any process of any earlier run wrote, first copy of each edit."""
    rows = {}
    for name in sorted(os.listdir(output_dir)):
        if name.startswith("partial_rank") and name.endswith(".csv"):
            for r in ev.read_rows(os.path.join(output_dir, name), columns):
                rows.setdefault(ev.row_key(r, columns), r)
    return rows


def edit_image_path(output_dir, method, index, attribute):
    """images/<method>/<index>_<attribute>.png; a pair's code gives <index>_<a>+<b>.png."""
    return os.path.join(output_dir, "images", method, f"{index:05d}_{ev.edit_label(attribute)}.png")


# --------------------------------------------------------------------------- the run

def run_edits(args, editor, eval_classifier, source, options, todo, columns, lpips_fn, rank, world, identity_fn=None):
    """Edit `todo` [(method, index, edit code)] in batches of one method; append each row as it finishes."""
    path = partial_path(args.output_dir, rank)
    ev.write_rows_atomic(path, ev.read_rows(path, columns), columns)  # drops a line cut by a kill
    batches = []
    for item in todo:
        if batches and batches[-1][0][0] == item[0] and len(batches[-1]) < args.batch_size:
            batches[-1].append(item)
        else:
            batches.append([item])
    progress = _EditProgress(editor, options, todo, f"rank {rank}" if world > 1 else "edits")
    with open(path, "a", newline="") as f, contextlib.closing(progress):
        writer = csv.writer(f, lineterminator="\n")
        for batch in batches:
            method = batch[0][0]
            progress.start(method, len(batch))
            x = torch.cat([source.image(i) for _, i, _ in batch])
            a_ref = torch.stack([source.labels(i) for _, i, _ in batch])
            a_q = torch.stack([query_from_indices(a_ref[j], ev.edit_attributes(k)) for j, (_, _, k) in enumerate(batch)])
            seeds = [ev.edit_seed(args.seed, i, k) for _, i, k in batch]
            truth = (torch.cat([source.ground_truth(i, a_q[j]) for j, (_, i, _) in enumerate(batch)])
                     if isinstance(source, SyntheticFaces) else None)  # synthetic faces only
            if method == ev.GROUND_TRUTH:
                result = EditResult(images=truth, unet_evals=0, seconds=0.0, frames=[], guidance_log=[])
            else:
                result = editor.edit(x, a_ref, a_q, options[method], seeds=seeds)
            probs_edited, probs_input = eval_classifier(result.images), eval_classifier(x)
            if truth is not None:
                allowed = torch.cat([source.allowed_mask(i, k) for _, i, k in batch])
                measures = ev.synthetic_edit_metrics(result.images, x, truth, allowed, probs_edited, probs_input,
                                                     a_ref, a_q, region=result.region, identity_fn=identity_fn)
            else:
                measures = ev.real_edit_metrics(result.images, x, probs_edited, probs_input, a_ref, a_q, lpips_fn)
            pixels = to_uint8(result.images)
            for j, (_, index, attribute) in enumerate(batch):
                image_path = edit_image_path(args.output_dir, method, index, attribute)
                os.makedirs(os.path.dirname(image_path), exist_ok=True)
                save_png(pixels[j], image_path)
                row = {"method": method, source.item_column: index, "attribute": attribute,
                       "direction": ev.edit_direction(a_ref[j], attribute),
                       **{name: float(values[j]) for name, values in measures.items()},
                       # Per image: each image goes through every (batched) UNet call once.
                       "unet_evals": float(result.unet_evals), "seconds": result.seconds / len(batch)}
                writer.writerow(ev.format_row(row, columns))
            f.flush()
            progress.finish(method, len(batch), result.unet_evals)


def write_reports(args, source, methods, split_items, done, columns, notes, inception):
    """Rank 0, after every edit: for the single split results.csv, summary.png, grid_<method>.png
    and results.md's tables; for each extra split (`split_items`: split -> its items) its CSV, grids
    and section of results.md. Returns (overall rows of the single split, measures)."""
    measures = list(columns[ev.MEASURE_START:])
    synthetic = isinstance(source, SyntheticFaces)
    inputs_name = "synthetic faces" if synthetic else os.path.basename(os.path.normpath(args.dataset_dir))
    title = f"Edit evaluation on {inputs_name}"
    notes = list(notes) + diverged_notes([done[it] for items in split_items.values() for it in items], synthetic)
    overall, text = [], [f"# {title}", "", *[f"- {n}" for n in notes], ""]
    if split_items.get("single"):
        items = split_items["single"]
        overall, text = write_single_reports(args, source, methods, items, [done[it] for it in items], columns,
                                             notes, inception, title)
    for split, (heading, describe) in EXTRA_SPLITS.items():
        items = split_items.get(split)
        if not items:
            continue
        rows = [done[it] for it in items]
        split_columns = JOINT_CSV_COLUMNS if split == "joint" else columns
        csv_rows = [dict(r, pair="+".join(map(str, ev.edit_attributes(r["attribute"])))) for r in rows]
        ev.write_rows_atomic(os.path.join(args.output_dir, f"results_{split}.csv"), csv_rows, split_columns)
        write_grids(args, source, methods, items, f"grid_{split}_")
        text += [ev.split_markdown(heading, describe(args, source, items), rows, measures,
                                   reference=ev.DEFAULT_METHOD), ""]
    ev.write_text_atomic(os.path.join(args.output_dir, "results.md"), "\n".join(text).rstrip("\n") + "\n")
    return overall, measures


def diverged_notes(rows, synthetic):
    """One note per method with edits whose image is not finite (their pixel measures are NaN and
    left out of the means; their success counts as a failure), so that no mean hides them."""
    pixel = "psnr_gt" if synthetic else "l1_input"
    counts = {}
    for r in rows:
        if r["method"] != ev.GROUND_TRUTH and not math.isfinite(r[pixel]):
            counts[r["method"]] = counts.get(r["method"], 0) + 1
    return [f"**{m}: {c} edit(s) diverged** (non-finite image): counted as failures, left out of the pixel "
            f"measures' means" for m, c in counts.items()]


# The joint split's CSV names the pair ('9+15') where the rows hold its code.
JOINT_CSV_COLUMNS = ("method", "identity", "pair") + ev.SYNTHETIC_COLUMNS[ev.KEY_COLUMNS:]


def _describe_joint(args, source, items):
    pairs = list(dict.fromkeys(k for _, _, k in items))
    which = (f"for each pair, the first {source.per_direction} identities of seed {source.seed} for each of the "
             f"four combinations of the two attributes" if source.per_direction else "every identity")
    return [f"Two editable attributes flipped at once, each in the direction that changes it for the identity: "
            f"{', '.join(ev.edit_name(k) for k in pairs)}; {which}. `direction` names the two in order "
            "(add+remove: the first added, the second removed).",
            "success: both flipped attributes read as the query by the evaluation classifier (threshold 0.5); "
            "preservation: the other 18; psnr_gt / l1_gt: to the identity rendered with both flipped; "
            "l1_outside_mask and region_iou: against the union of the two attributes' masks.",
            f"Seeds: a pair a+b of input i uses the seed of a's single edit ({args.seed} + 1000 i + a).",
            "Paired differences match edits on identity and pair.", _passed_over(source, pairs)]


def _describe_noneditable(args, source, items):
    attributes = list(dict.fromkeys(k for _, _, k in items))
    notes = [f"Single flips of attributes the editor is not offered for: {', '.join(ev.edit_name(k) for k in attributes)}"
             + (f"; per attribute the first {source.per_direction} identities of seed {source.seed} with it and the "
                f"first {source.per_direction} without it" if source.per_direction else "") + ".",
             "Left out: flips the renderer cannot draw as labelled — a vector its sampler never makes (a second "
             "hair colour; straight and wavy together; bangs on a bald head: the renderer would show the first "
             "colour, both textures, no bangs) — and flips that render no change (straight or wavy on a bald "
             "head). The ground truth of every edit kept is the renderer's image of the flipped labels."]
    return notes + [_passed_over(source, attributes)]


def _passed_over(source, codes):
    """The note counting the identities `inputs_for(drawable_only=True)` passed over, per edit and reason."""
    counts = [f"{ev.edit_name(k)}: " + ", ".join(f"{n} ({why})" for why, n in sorted(source.left_out[k].items()))
              for k in codes if source.left_out.get(k)]
    return "Identities passed over (flip not drawable as labelled): " + ("; ".join(counts) or "none") + "."


# Extra splits: name -> (results.md heading, notes for its section).
EXTRA_SPLITS = {"joint": ("Joint edits", _describe_joint),
                "noneditable": ("Non-editable attributes", _describe_noneditable)}


def write_single_reports(args, source, methods, items, rows, columns, notes, inception, title):
    """The single split's results.csv, summary.png, grids; returns (overall, results.md lines)."""
    out = args.output_dir
    ev.write_rows_atomic(os.path.join(out, "results.csv"), rows, columns)
    measures = list(columns[ev.MEASURE_START:])
    per_attribute = ev.aggregate(rows, ("method", "attribute"), measures)
    per_direction = ev.aggregate(rows, ("method", "attribute", "direction"), measures)
    overall = ev.aggregate(rows, ("method",), measures)
    if inception is not None:
        add_fid(args, source, rows, overall, inception)
    synthetic = isinstance(source, SyntheticFaces)
    interval_measures = [m for m in measures if m not in ("seconds", "unet_evals")]
    intervals = ev.interval_tables(rows, interval_measures, reference=ev.DEFAULT_METHOD, keys=(source.item_column,
                                                                                            "attribute"))
    text = ev.results_markdown(title, notes, per_attribute, overall, measures, per_direction, intervals=intervals)
    fidelity = ("psnr_gt", "PSNR to the ground truth (dB)") if synthetic else ("psnr_input", "PSNR to the input (dB)")
    ev.plot_summary(overall, per_attribute, os.path.join(out, "summary.png"), *fidelity)
    write_grids(args, source, methods, items, "grid_")
    return overall, [text]


def edit_title(index, a_ref, attribute):
    """A grid row's title: '4: +Eyeglasses', '0: -Male +Smiling', '2: reconstruction'."""
    signs = {"add": "+", "remove": "-"}
    name = " ".join(signs[ev.direction(a_ref, k)] + ATTRIBUTE_NAMES[k] for k in ev.edit_attributes(attribute))
    return f"{index}: {name or 'reconstruction'}"


def write_grids(args, source, methods, items, prefix):
    """<prefix><method>.png per method: rows of input, ground truth (synthetic faces) and edit."""
    out = args.output_dir
    synthetic = isinstance(source, SyntheticFaces)
    for method in methods:
        shown = grid_items([it for it in items if it[0] == method], args.grid_rows)
        images, titles = [], []
        for _, index, attribute in shown:
            a_ref = source.labels(index)
            a_q = query_from_indices(a_ref, ev.edit_attributes(attribute))
            edit_path = edit_image_path(out, method, index, attribute)
            edited = to_uint8(to_tensor(_read_png(edit_path)))[0] if os.path.isfile(edit_path) else None
            row = [to_uint8(source.image(index))[0]]
            if synthetic:
                row.append(to_uint8(source.ground_truth(index, a_q))[0])
            images.append(row + [edited])
            titles.append(edit_title(index, a_ref, attribute))
        columns_shown = ["input", "ground truth", "edit"] if synthetic else ["input", "edit"]
        save_image_atomic(ev.sample_grid(images, titles, columns_shown), os.path.join(out, f"{prefix}{method}.png"))


def grid_items(method_items, count):
    """Up to `count` of one method's edits, stepping input and attribute together so that the rows
    show different faces and different edits."""
    inputs = list(dict.fromkeys(i for _, i, _ in method_items))
    attributes = list(dict.fromkeys(k for _, _, k in method_items))
    method = method_items[0][0]
    edited = set(method_items)  # a step of the walk may pair a face with an attribute it was not edited by
    walk = [(method, inputs[r % len(inputs)], attributes[r % len(attributes)])
            for r in range(len(inputs) * len(attributes))]
    return list(dict.fromkeys([it for it in walk if it in edited] + method_items))[:count]


def _read_png(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def add_fid(args, source, rows, overall, inception):
    """FID of each method's attribute edits (reconstructions left out) against the inputs, into `overall`."""
    def features(images):
        return torch.cat([inception(torch.cat(images[s:s + 16])) for s in range(0, len(images), 16)]).numpy()

    inputs = sorted({r[source.item_column] for r in rows})
    input_features = features([source.image(i) for i in inputs])
    for summary in overall:
        paths = [edit_image_path(args.output_dir, summary["method"], r[source.item_column], r["attribute"])
                 for r in rows if r["method"] == summary["method"] and r["attribute"] != RECONSTRUCTION_INDEX]
        edited = [to_tensor(_read_png(p)) for p in paths if os.path.isfile(p)]
        if len(inputs) < 2 or len(edited) < 2:
            summary["fid"] = float("nan")  # a covariance needs two samples
            continue
        summary["fid"] = ev.frechet_distance_of_features(features(edited), input_features)


def evaluate(args, comm, rank, world):
    real = args.dataset_dir is not None
    methods, splits, eval_path = check_flags(args, real)
    threads = args.threads or (max(1, (os.cpu_count() or 1) // world) if world > 1 else 0)
    if threads:
        torch.set_num_threads(threads)

    options = {m: ev.method_options(m, args.steps, args.paper_steps) for m in methods if m != ev.GROUND_TRUTH}
    wants_lpips = any(o.weights.lpips_sim_lambda for o in options.values())
    wants_identity = any(o.weights.id_lambda for o in options.values())
    editor = AttributeEditor(args.model_path, args.classifier_path, device=args.device, lpips=wants_lpips,
                             ir_se50_weights=args.ir_se50_weights if wants_identity else None,
                             identity_net=(args.identity_net or None) if wants_identity else None)
    notes = []
    for term, loaded, why in (("lpips_sim_lambda", editor.lpips_fn, "no `lpips` package or AlexNet weights"),
                              ("id_lambda", editor.id_fn, "no --identity_net or --ir_se50_weights")):
        dropped = [name for name, o in options.items() if loaded is None and getattr(o.weights, term)]
        for name in dropped:
            setattr(options[name].weights, term, 0.0)
        if dropped:
            notes.append(f"{term} set to 0 ({why}) for {', '.join(dropped)}.")
    eval_classifier = editor.classify if eval_path is None else _classifier_fn(eval_path, editor)
    identity_fn = _identity_fn(args.eval_identity_net, editor) if args.eval_identity_net and not real else None
    source = (LabelledDataset(args.dataset_dir, args.num_identities, editor.image_size) if real else
              SyntheticFaces(args.synthetic_seed, args.num_identities or DEFAULT_SYNTHETIC_IDENTITIES,
                             editor.image_size, args.per_direction))
    lpips_fn = None
    columns = ev.SYNTHETIC_COLUMNS
    if real:
        lpips_fn = editor.lpips_fn or (None if wants_lpips else load_lpips(editor.device))
        columns = ev.REAL_COLUMNS if lpips_fn is not None else tuple(c for c in ev.REAL_COLUMNS if c != "lpips")
        if lpips_fn is None:
            print("LPIPS column omitted: no `lpips` package or AlexNet weights (see above).")
    inception = None
    if args.inception_weights and rank == 0:  # only the merging process computes FID
        inception = ev.load_inception(args.inception_weights, editor.device)

    notes = step_notes(args, methods, int(editor.config["diffusion_steps"])) + notes
    for note in notes:
        print(note)
    notes += [source.describe() + ".",
              f"Models: diffusion `{args.model_path}`, guidance classifier `{args.classifier_path}`, evaluation "
              f"classifier `{eval_path or args.classifier_path}`.",
              f"Seeds: edit of input i, attribute k uses {args.seed} + 1000 i + k."]
    if not splits["single"]:
        notes.append("No single edits of the editable attributes (--attributes none).")
    notes += [f"`{m}`: {ev.describe_options(o, int(editor.config['diffusion_steps']))}." for m, o in options.items()]
    if ev.GROUND_TRUTH in methods:
        notes.append(f"`{ev.GROUND_TRUTH}`: no model, the renderer's counterfactual of each input scored as an "
                     "edit: the most the evaluation classifier lets any method reach.")
    notes.append("unet_evals: UNet evaluations each image went through (inversion and guidance included); "
                 "seconds: wall time of its batch divided by the batch size.")

    os.makedirs(args.output_dir, exist_ok=True)
    config = dict(mode="dataset" if real else "synthetic", model_path=os.path.abspath(args.model_path),
                  classifier_path=os.path.abspath(args.classifier_path),
                  eval_classifier_path=os.path.abspath(eval_path) if eval_path else None,
                  eval_identity_net=os.path.abspath(args.eval_identity_net) if identity_fn is not None else None,
                  inputs=os.path.abspath(args.dataset_dir) if real else args.synthetic_seed,
                  seed=args.seed, steps=args.steps, paper_steps=args.paper_steps,
                  method_options={m: o.values() for m, o in options.items()},
                  lpips_guidance=editor.lpips_fn is not None, identity_guidance=editor.id_fn is not None,
                  columns=list(columns))
    run_json = os.path.join(args.output_dir, "run.json")
    check_run_config(run_json, config, may_write=rank == 0)
    if comm is not None:
        comm.Barrier()
        check_run_config(run_json, config, may_write=False)

    # Each split's edits; the extra splits keep only flips the renderer draws as labelled. An edit
    # in two splits (a non-editable attribute also in --attributes) is made once.
    split_items = {}
    for split, codes in splits.items():
        inputs = {k: source.inputs_for(k, drawable_only=True) if split != "single" else source.inputs_for(k)
                  for k in codes}
        split_items[split] = [(m, i, k) for m in methods for k in codes for i in inputs[k]]
    items = list(dict.fromkeys(it for split_list in split_items.values() for it in split_list))
    done = finished_rows(args.output_dir, columns)
    todo = [it for n, it in enumerate(items) if n % world == rank and it not in done]
    skipped = sum(1 for n, it in enumerate(items) if n % world == rank and it in done)
    if skipped:
        print(f"rank {rank}: {skipped} edits already done, {len(todo)} to go")
    if args.max_edits is not None:
        todo = todo[:args.max_edits]
    run_edits(args, editor, eval_classifier, source, options, todo, columns, lpips_fn, rank, world, identity_fn)
    if comm is not None:
        comm.Barrier()
    if rank != 0:
        return 0

    done = finished_rows(args.output_dir, columns)
    missing = [it for it in items if it not in done]
    if missing:
        print(f"{len(items) - len(missing)} of {len(items)} edits done; rerun the same command to continue.")
        return 0
    overall, measures = write_reports(args, source, methods, split_items, done, columns, notes, inception)
    if overall:
        print(ev.markdown_table(overall, ["method", "n", *measures] + (["fid"] if inception is not None else [])))
        print(f"wrote {os.path.join(args.output_dir, 'results.csv')}, results.md, summary.png and grid_<method>.png")
    for split in EXTRA_SPLITS:
        if split_items[split]:
            print(f"{split}: {len(split_items[split])} edits in results_{split}.csv, grid_{split}_<method>.png and "
                  f"their section of {os.path.join(args.output_dir, 'results.md')}")
    return 0


def step_notes(args, methods, chain):
    """What the chains were shortened to, if they were (results.md says it first)."""
    if args.steps:
        return [f"Every method ran on a respaced {args.steps}-step chain (--steps {args.steps})."]
    if args.paper_steps and any("_paper" in m for m in methods):
        return [f"The paper preset ran on a respaced {args.paper_steps}-step DDPM chain (--paper_steps "
                f"{args.paper_steps}), not the model's full {chain}-step chain."]
    return []


def _identity_fn(path, editor):
    """Images [N, 3, H, W] in [-1, 1] -> unit identity embeddings [N, D] of the evaluation identity network."""
    network = load_identity_net(path, device=editor.device)

    @torch.no_grad()
    def embed(x):
        return network(x.to(editor.device).float()).float().cpu()

    return embed


def _classifier_fn(path, editor):
    classifier = load_classifier(path, device=editor.device)
    if classifier.num_attributes != len(ATTRIBUTE_NAMES):
        raise ValueError(f"evaluation classifier {path} predicts {classifier.num_attributes} attributes; "
                         f"the benchmark needs {len(ATTRIBUTE_NAMES)}")

    @torch.no_grad()
    def classify(x):
        return classifier(x.to(editor.device).float()).float()

    return classify


def main(argv=None, args=None):
    """Run the benchmark; 0 on success, 2 (one 'error:' line on stderr) on bad input. `args`: flags
    already parsed (parse_and_check), else parsed from `argv`."""
    if args is None:
        args = build_parser().parse_args(argv)
    comm, rank, world = mpi_world()
    try:
        check_flags(args, args.dataset_dir is not None)
    except (ValueError, FileNotFoundError) as e:  # every rank finds it: said once, every rank exits 2
        return report_input_error(e)
    try:
        return evaluate(args, comm, rank, world)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        if world > 1:
            comm.Abort(2)  # the other processes may be waiting at a barrier
        return 2
    except KeyboardInterrupt:  # mpiexec passes Ctrl-C to every process: one line, from the first
        if rank == 0:
            print(f"\ninterrupted: finished edits are kept in {args.output_dir}; rerun the same command to "
                  "continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(args=_CLI_ARGS))
