"""Edit queries: which attributes an edit flips, parsed from the command line's forms.

Attribute indices are positions in `preprocess.attributes.ATTRIBUTE_NAMES` (0-19); 20 means
reconstruction (nothing flipped).

Importing this module imports neither torch nor preprocess (which does): `python main.py` checks
index lists with it before torch is loaded (`optimization.cli_checks`), so that a typo is reported
in a fraction of a second. The two counts below equal preprocess.attributes' (a test checks).
"""
import re

NUM_ATTRIBUTES = 20          # len(preprocess.attributes.ATTRIBUTE_NAMES)
RECONSTRUCTION_INDEX = 20    # preprocess.attributes.RECONSTRUCTION_INDEX


def attribute_label(indices):
    """File-name / caption label of an edit: '9', '9+15', or '20' for reconstruction."""
    return "+".join(str(i) for i in indices) if indices else str(RECONSTRUCTION_INDEX)


def check_attribute_index(v):
    """ValueError unless v is 0-19 (flip one attribute) or 20 (reconstruction)."""
    if not 0 <= v <= RECONSTRUCTION_INDEX:
        raise ValueError(f"attribute index {v} out of range 0-{RECONSTRUCTION_INDEX} "
                         f"(0-{RECONSTRUCTION_INDEX - 1} flip one attribute, {RECONSTRUCTION_INDEX} reconstructs)")


def parse_attribute_indices(text):
    """'9' -> [9]; '9,15' -> [9, 15]; '20' -> [] (reconstruction); 'all' -> the seven editable ones.

    ValueError (one line) for anything else: a value that is not an integer 0-20, an index given
    twice (flipping an attribute twice would give back the input), 20 combined with edits."""
    text = str(text).strip()
    if text == "all":
        from preprocess.attributes import EDITABLE_ATTRIBUTES
        return list(EDITABLE_ATTRIBUTES)
    parts = [v.strip() for v in text.split(",")]
    if not text or any(not p for p in parts):
        raise ValueError(f"attribute index must be integers 0-{RECONSTRUCTION_INDEX} separated by commas, "
                         f"or 'all'; got {text!r}")
    values = []
    for part in parts:
        if not re.fullmatch(r"[+-]?\d+", part):
            raise ValueError(f"attribute index must be integers 0-{RECONSTRUCTION_INDEX} or 'all'; got {text!r}")
        values.append(int(part))
    for v in values:
        check_attribute_index(v)
    for v in values:
        if values.count(v) > 1:
            raise ValueError(f"attribute index {v} given twice in {text!r}: each attribute can be flipped once "
                             f"(flipping it twice gives back the input)")
    if RECONSTRUCTION_INDEX in values and len(values) > 1:
        raise ValueError(f"index {RECONSTRUCTION_INDEX} (reconstruction) cannot be combined with edits")
    return [v for v in values if v != RECONSTRUCTION_INDEX]


def parse_attribute_vector(text, name="attribute"):
    """'0, 1, ...' (20 values of 0/1) -> float tensor [20]."""
    import torch

    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if len(parts) != NUM_ATTRIBUTES:
        raise ValueError(f"--{name} needs {NUM_ATTRIBUTES} comma-separated values; got {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--{name} values must be 0 or 1; got {text!r}")
    if any(v not in (0.0, 1.0) for v in values):
        raise ValueError(f"--{name} values must be 0 or 1; got {text!r}")
    return torch.tensor(values)


def query_from_indices(a_ref, indices):
    """Flip `indices` of the reference vector(s) a_ref [..., 20]; [] leaves it as is."""
    a_q = a_ref.clone()
    for i in indices:
        a_q[..., i] = 1 - a_q[..., i]
    return a_q


# More images than this in one --image_index is refused (a typo such as '0-1000000000' would
# otherwise build the list before anything else is checked).
MAX_IMAGE_INDICES = 1_000_000


def parse_index_list(text):
    """'7' -> [7]; '0-3' -> [0, 1, 2, 3]; '1,5,9' -> [1, 5, 9]; '0-3,7' -> [0, 1, 2, 3, 7].

    ValueError (one line) for anything else: a negative or non-integer value, a range whose end is
    below its start, an index given twice (directly or by overlapping ranges)."""
    text = str(text).strip()
    form = "image index must be a non-negative integer, a range 'a-b' or a comma list of them ('0-3,7')"
    parts = [p.strip() for p in text.split(",")]
    if not text or any(not p for p in parts):
        raise ValueError(f"{form}; got {text!r}")
    ranges = []
    for part in parts:
        if re.fullmatch(r"-\s*\d+", part):
            raise ValueError(f"image index must be >= 0; got {part!r} in {text!r}")
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if m is None:
            raise ValueError(f"{form}; got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"image index range {part!r} ends before it starts (write '{hi}-{lo}')")
        ranges.append((lo, hi))
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_IMAGE_INDICES:
        raise ValueError(f"image index {text!r} names more than {MAX_IMAGE_INDICES:,} images")
    out, seen = [], set()
    for lo, hi in ranges:
        for i in range(lo, hi + 1):
            if i in seen:
                raise ValueError(f"image index {i} given twice in {text!r} (each image is edited once; "
                                 f"use --iterations_num for several edits of one image)")
            seen.add(i)
            out.append(i)
    return out


def flipped_indices(a_ref, a_q):
    """The attributes an edit flips: where the query differs from the reference (sorted indices)."""
    return [i for i in range(NUM_ATTRIBUTES) if float(a_q[i]) != float(a_ref[i])]
