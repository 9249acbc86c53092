"""The command line's checks that need neither torch nor a model.

`python main.py` runs them on the input, model and output flags before it imports torch (a few
seconds on a small CPU), so that a typo is one `error:` line in a fraction of a second;
`optimization.attribute_editor.validate` runs them again with everything else, before any model
loads. Each raises ValueError or FileNotFoundError with one line.
"""
import math
import os
import re
import zipfile

from .queries import parse_attribute_indices, parse_index_list

SYNTHETIC_PREFIX = "synthetic"
DEFAULT_SYNTHETIC_SEED = 1000
# The grid is an image: its name must end with a format PIL writes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NO_DOMAIN_CHECK = ("none", "")


def synthetic_seed(dataset_dir):
    """The seed of a 'synthetic' / 'synthetic:SEED' dataset spec, or None when `dataset_dir` is a path.

    Only these exact forms are specs: a folder named 'synthetic64' is a folder."""
    text = str(dataset_dir)
    if text == SYNTHETIC_PREFIX:
        return DEFAULT_SYNTHETIC_SEED
    if not text.startswith(SYNTHETIC_PREFIX + ":"):
        return None
    seed = text.split(":", 1)[1].strip()
    if not seed.isdigit():
        raise ValueError(f"--dataset_dir {text!r}: 'synthetic:SEED' needs a non-negative integer seed")
    return int(seed)


def parse_domain_reference(spec):
    """('synthetic', seed) | ('folder', path) | None for 'none' (see optimization.domain)."""
    text = str(spec).strip()
    if text.lower() in NO_DOMAIN_CHECK:
        return None
    seed = synthetic_seed(text)
    if seed is not None:
        return "synthetic", seed
    if not os.path.isdir(text):
        raise ValueError(f"--domain_reference {text!r}: not 'synthetic:SEED', 'none', nor a dataset directory")
    return "folder", text


def check_checkpoint_file(path, flag):
    """FileNotFoundError / ValueError (one line) unless `path` is a file torch.save could have written."""
    if not path:
        raise ValueError(f"{flag}: empty path")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{flag}: checkpoint not found: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{flag}: {path} is a directory, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"{flag}: {path} is empty, not a PyTorch checkpoint")
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # torch.save's zip format, or a legacy pickle
        return
    hint = ""
    if head.startswith(b"version https://git-lfs"):
        hint = " (a Git LFS pointer: fetch the file with `git lfs pull`)"
    elif head.lstrip()[:1] in (b"{", b"["):
        hint = " (it looks like JSON)"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        hint = " (it is a text file)"
    raise ValueError(f"{flag}: {path} is not a PyTorch checkpoint{hint}")


def check_counts(args):
    for name in ("batch_size", "iterations_num"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1; got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0; got {args.seed}")


def check_outputs(args):
    from guided_diffusion.safe_paths import check_not_below_file

    check_not_below_file(args.output_path, "--output_path")  # before any model loads, not after the edits
    if os.path.exists(args.output_path) and not os.path.isdir(args.output_path):
        raise ValueError(f"--output_path {args.output_path} is an existing file, not a folder")
    if args.output_file is not None:
        if os.path.basename(args.output_file) != args.output_file or args.output_file in ("", ".", ".."):
            raise ValueError(f"-o/--output_file {args.output_file!r} must be a file name (it is written inside "
                             f"--output_path)")
        if not args.output_file.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"-o/--output_file {args.output_file!r}: the grid is an image; end the name with "
                             f"{' or '.join(IMAGE_SUFFIXES[:2])}")
        if os.path.isdir(os.path.join(args.output_path, args.output_file)):
            raise ValueError(f"-o/--output_file: {os.path.join(args.output_path, args.output_file)} is a folder")


def check_model_files(args, eval_classifier_path):
    """The checkpoints named by the flags (`eval_classifier_path`: the one to use, None for none)."""
    check_checkpoint_file(args.model_path, "--model_path")
    if args.attribute_cpk_path:
        check_checkpoint_file(args.attribute_cpk_path, "--attribute_cpk_path")
    if eval_classifier_path:
        check_checkpoint_file(eval_classifier_path, "--eval_classifier_path")
    if args.ir_se50_weights:
        check_checkpoint_file(args.ir_se50_weights, "--ir_se50_weights")
    elif getattr(args, "identity_net", None) and (getattr(args, "id_lambda", None) or 0) > 0:
        from .arguments import DEFAULT_IDENTITY_NET_PATH

        if args.identity_net == DEFAULT_IDENTITY_NET_PATH and not os.path.isfile(args.identity_net):
            args.identity_net = ""  # the shipped network is missing: the id term is dropped with a message
        else:
            check_checkpoint_file(args.identity_net, "--identity_net")


def check_inputs(args, default_image_index=None, default_attribute_index=None):
    """(attribute indices, image indices or [] for --init_image) of the flags, checked; an index
    neither given nor defaulted (None) is left unchecked and returned as None."""
    if args.query_attribute is not None and args.attribute_index is not None:
        raise ValueError("give --attribute_index or -qa/--query_attribute, not both (the query vector says every "
                         "attribute)")
    if args.attribute is not None and not args.attribute.strip():
        raise ValueError("-a/--attribute is empty")
    if args.query_attribute is not None and not args.query_attribute.strip():
        raise ValueError("-qa/--query_attribute is empty")
    attribute_index = args.attribute_index if args.attribute_index is not None else default_attribute_index
    attribute_indices = parse_attribute_indices(attribute_index) if attribute_index is not None else None
    parse_domain_reference(args.domain_reference)
    if args.init_image:
        if args.image_index is not None:
            raise ValueError("give --init_image or --image_index, not both")
        if os.path.isdir(args.init_image):
            raise ValueError(f"-i/--init_image {args.init_image} is a folder, not an image (--dataset_dir takes a "
                             f"dataset folder)")
        if not os.path.isfile(args.init_image):
            raise FileNotFoundError(f"image not found: {args.init_image}")
        return attribute_indices, []
    image_index = args.image_index if args.image_index is not None else default_image_index
    indices = parse_index_list(image_index) if image_index is not None else None
    if synthetic_seed(args.dataset_dir) is None:
        if not os.path.exists(args.dataset_dir):
            raise FileNotFoundError(f"dataset directory not found: {args.dataset_dir}")
        if not os.path.isdir(args.dataset_dir):
            raise ValueError(f"--dataset_dir {args.dataset_dir} is a file, not a dataset directory")
    return attribute_indices, indices


def resolve_eval_classifier_path(args):
    """--eval_classifier_path, its default (checkpoints/eval_classifier.pt when present), or None for ''."""
    path = args.eval_classifier_path
    if path is None:
        from .arguments import DEFAULT_EVAL_CLASSIFIER_PATH
        path = DEFAULT_EVAL_CLASSIFIER_PATH if os.path.isfile(DEFAULT_EVAL_CLASSIFIER_PATH) else None
    return path or None


def check_device_name(text):
    """The device forms the editor runs on; `cuda` refused at once where no NVIDIA driver is installed
    (torch's own check, which needs torch imported, follows in attribute_editor.check_device)."""
    if text is None:
        return
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", str(text)):
        raise ValueError(f"--device {text!r} is not a device the editor runs on (cpu, cuda, cuda:1, mps)")
    drivers = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd")  # NVIDIA's, or ROCm's (torch calls it cuda too)
    if str(text).startswith("cuda") and not any(os.path.exists(p) for p in drivers):
        if os.name == "posix":
            raise ValueError(f"--device {text}: no CUDA GPU is available here (no NVIDIA driver); use --device cpu")


def check_weights(args):
    """The loss weights given on the command line (attributes of `args` named like the weights): finite, >= 0
    (EditOptions checks the same, after torch is imported)."""
    from .arguments import WEIGHT_NAMES

    for name in WEIGHT_NAMES:
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")


def preflight(args, default_image_index=None, default_attribute_index=None):
    """Every torch-free check of the input, model and output flags; returns what check_inputs returns."""
    check_device_name(args.device)
    check_weights(args)
    check_counts(args)
    check_outputs(args)
    check_model_files(args, resolve_eval_classifier_path(args))
    return check_inputs(args, default_image_index, default_attribute_index)
