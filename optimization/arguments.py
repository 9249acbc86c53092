"""Command-line flags of the editor (`python main.py`).

Every flag of the paper's code is kept (with working defaults instead of absolute paths), plus the
project's own. Options a preset controls default to None here and are filled by `apply_preset`:
explicit flags always win over the preset.
"""
import argparse
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints", "diffusion.pt")
DEFAULT_CLASSIFIER_PATH = os.path.join(REPO_ROOT, "checkpoints", "classifier.pt")
DEFAULT_EVAL_CLASSIFIER_PATH = os.path.join(REPO_ROOT, "checkpoints", "eval_classifier.pt")
DEFAULT_IDENTITY_NET_PATH = os.path.join(REPO_ROOT, "checkpoints", "identity.pt")
DEFAULT_OUTPUT_PATH = "outputs"
# The embedded default input: faces rendered on the fly by the synthetic-face renderer, from a
# seed never used for training ("synthetic:SEED").
SYNTHETIC_PREFIX = "synthetic"
DEFAULT_DATASET = f"{SYNTHETIC_PREFIX}:1000"

from .presets import DEFAULT_PRESET, PRESETS  # noqa: E402,F401 (PRESETS is part of this module's API)


class UsageError(ValueError):
    """A flag the parser refused: reported as one `error: ...` line (exit 2) like every other input error."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a refused flag raises UsageError instead of printing the usage and exiting, so
    that `python main.py` reports it in one line like the checks after parsing."""

    def error(self, message):
        raise UsageError(f"{message} (python main.py --help lists the flags)")


def _bool(text):
    if str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _preset_values(name):
    def show(value):
        return repr(value) if value == "" else str(value)
    return " | ".join(show(PRESETS[p].get(name)) for p in ("fast", "paper", "paper_inversion"))


_WEIGHT_HELP = {
    "attribute_guidance_lambda": "weight of the classifier term on the edited attributes",
    "cycle_reconstruct_lambda": "weight of the cycle-consistency term",
    "range_lambda": "weight of the penalty on x0_hat pixels outside [-1, 1]",
    "lpips_sim_lambda": "weight of LPIPS to the input (needs the lpips package and AlexNet weights on disk)",
    "id_lambda": "weight of the identity distance to the input (--identity_net, or --ir_se50_weights on real faces)",
    "preserve_lambda": "weight of the classifier term keeping the other attributes at the reference",
}


# The loss weights' flags (GuidanceWeights' fields; add_option_flags fails if one lacks its help here).
WEIGHT_NAMES = tuple(_WEIGHT_HELP)


def _add_light_weight_flags(p):
    """The loss weights for the light parser (their values checked before torch is imported)."""
    for name in WEIGHT_NAMES:
        p.add_argument(f"--{name}", type=float, default=None, help=argparse.SUPPRESS)


def add_option_flags(group):
    """One flag per `EditOptions` option (and per loss weight), generated from the dataclass: the
    options left at None are filled from the preset by `apply_preset`."""
    from dataclasses import fields

    from .options import EditOptions, GuidanceWeights

    for f in fields(EditOptions):
        if f.name == "weights":
            continue
        kind = {"bool": _bool, "int": int, "float": float, "Optional[int]": int}.get(
            f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)), str)
        if f.name == "skip_timesteps":
            kind = int
        help_text = f"{f.metadata.get('help', '')} [{_preset_values(f.name)}]"
        group.add_argument(f"--{f.name}", type=kind, default=None, choices=f.metadata.get("choices"),
                           help=help_text)
    for f in fields(GuidanceWeights):
        group.add_argument(f"--{f.name}", type=float, default=None,
                           help=f"{_WEIGHT_HELP[f.name]} [{_preset_values(f.name)}]")


def build_parser(with_method=True, **parser_kwargs):
    """The flags of `python main.py` (torch-free: the method flags come from optimization.options).
    with_method=False leaves out the method group: `light_parser` uses that."""
    p = _Parser(
        description="CycleDiff: edit facial attributes with an attribute-conditional diffusion model.",
        formatter_class=argparse.RawDescriptionHelpFormatter, **parser_kwargs
    )
    _add_input_and_model_flags(p)
    if with_method:
        _add_method_flags(p)
    else:
        _add_light_weight_flags(p)
    _add_output_flags(p)
    return p


def light_parser():
    """The input, model and output flags only, for `parse_known_args` before torch is imported (the
    method flags stay unparsed); no abbreviations, so that a method flag is never read as one of these."""
    return build_parser(with_method=False, add_help=False, allow_abbrev=False)


def _add_input_and_model_flags(p):
    g = p.add_argument_group("input")
    g.add_argument("--image_index", type=str, default=None,
                   help="index into --dataset_dir; a range '0-15' or list '0,4,7' edits a batch "
                        "(default: IMAGE_INDEX in optimization/attribute_editor.py)")
    g.add_argument("--attribute_index", type=str, default=None,
                   help="attribute(s) to flip: one index 0-19, a comma list for a joint edit, 20 for "
                        "reconstruction, or 'all' for the seven editable ones "
                        "(default: ATTRIBUTE_INDEX in optimization/attribute_editor.py)")
    g.add_argument("--dataset_dir", type=str, default=DEFAULT_DATASET,
                   help="a dataset directory (images + attributes.pt) or 'synthetic:SEED' for faces "
                        "rendered on the fly")
    g.add_argument("-i", "--init_image", type=str, default=None,
                   help="edit this image file instead of a dataset index (any size, centre-cropped)")
    g.add_argument("-a", "--attribute", type=str, default=None,
                   help="reference attributes as 20 comma-separated 0/1 values (default: the dataset's "
                        "labels, or the classifier's reading for --init_image)")
    g.add_argument("-qa", "--query_attribute", type=str, default=None,
                   help="query attributes as 20 comma-separated 0/1 values (overrides --attribute_index)")

    g = p.add_argument_group("models")
    g.add_argument("--model_path", type=str, default=DEFAULT_MODEL_PATH,
                   help="diffusion checkpoint; its hyper-parameters come from the JSON beside it")
    g.add_argument("--attribute_cpk_path", type=str, default=DEFAULT_CLASSIFIER_PATH,
                   help="the guidance classifier: the attribute classifier the edit is steered by (the "
                        "project's or the paper's layout; '' for none: no guidance, no readings)")
    g.add_argument("--eval_classifier_path", type=str, default=None,
                   help="an independently trained attribute classifier that judges the edits in the report "
                        "(the guidance classifier is what the edit optimised, a biased judge); default: "
                        "checkpoints/eval_classifier.pt when present; '' for none")
    g.add_argument("--domain_reference", type=str, default="synthetic:0",
                   help="faces the models were trained on, to tell whether an input looks like them "
                        "(optimization/domain.py): 'synthetic:SEED' (the shipped models: synthetic:0), a "
                        "dataset directory, or 'none' to skip the check")
    g.add_argument("--ir_se50_weights", type=str, default=None,
                   help="ArcFace IR-SE50 weights for the identity loss on real faces (the paper's network; "
                        "replaces --identity_net)")
    g.add_argument("--identity_net", type=str, default=DEFAULT_IDENTITY_NET_PATH,
                   help="face-identity network of the id_lambda term (default: the shipped synthetic-faces "
                        "network, checkpoints/identity.pt; '' for none)")
    g.add_argument("--model_output_size", type=int, default=None,
                   help="expected model resolution; checked against the checkpoint's JSON")
    g.add_argument("--device", type=str, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")



def _add_method_flags(p):
    g = p.add_argument_group("method", "defaults from --preset; [fast | paper | paper_inversion] shows each "
                                       "preset's value")
    g.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help="a named set of the options below (fast: seconds on a CPU; paper: the released code's "
                        "procedure; paper_inversion: the paper's weights from a full DDIM inversion)")
    add_option_flags(g)
    g.add_argument("--ddim", action="store_const", const="ddim", dest="sampler",
                   help="same as --sampler ddim (the paper's flag)")
    g.add_argument("--no_blend", dest="blend_x0", action="store_false",
                   help="same as --blend_x0 False")



def _add_output_flags(p):
    g = p.add_argument_group("output")
    g.add_argument("--output_path", type=str, default=DEFAULT_OUTPUT_PATH,
                   help="folder of the outputs (created when the edits are done)")
    g.add_argument("-o", "--output_file", type=str, default=None,
                   help="name of the output set inside --output_path: the grid is this file, the edit images "
                        "and the report are NAME_<edit>.png and NAME_edit.json (default: the set {index}_{edit}, "
                        "e.g. 00000_9_grid.png; with several inputs {index}_NAME); a NAME another run wrote is "
                        "refused")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw of the edit (>= 0)")
    g.add_argument("--iterations_num", type=int, default=1, help="independent edits (seeds seed, seed+1, ...)")
    g.add_argument("--batch_size", type=int, default=8, help="images edited together in a batch run")
    g.add_argument("--vid", action="store_true", help="also write a GIF of x0_hat along the trajectory")
    g.add_argument("--export_assets", action="store_true", help="also write the raw tensors (.pt)")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="hide progress bars")




def apply_preset(args):
    """Fill every option left at None from the chosen preset (options no preset sets keep the
    EditOptions default); returns args."""
    from .options import EditOptions

    defaults = EditOptions().values()
    for key in EditOptions.flag_names():
        if getattr(args, key, None) is None:
            setattr(args, key, PRESETS[args.preset].get(key, defaults[key]))
    return args


def get_arguments(argv=None):
    return apply_preset(build_parser().parse_args(argv))
