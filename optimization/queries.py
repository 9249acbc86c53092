"""Edit queries: which attributes an edit flips, parsed from the command line's forms.

Attribute indices are positions in `preprocess.attributes.ATTRIBUTE_NAMES` (0-19); 20 means
reconstruction (nothing flipped).
"""
import torch

from preprocess.attributes import ATTRIBUTE_NAMES, EDITABLE_ATTRIBUTES, RECONSTRUCTION_INDEX

NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)


def attribute_label(indices):
    """File-name / caption label of an edit: '9', '9+15', or '20' for reconstruction."""
    return "+".join(str(i) for i in indices) if indices else str(RECONSTRUCTION_INDEX)


def check_attribute_index(v):
    """ValueError unless v is 0-19 (flip one attribute) or 20 (reconstruction)."""
    if not 0 <= v <= RECONSTRUCTION_INDEX:
        raise ValueError(f"attribute index {v} out of range 0-{RECONSTRUCTION_INDEX} "
                         f"(0-{RECONSTRUCTION_INDEX - 1} flip one attribute, {RECONSTRUCTION_INDEX} reconstructs)")


def parse_attribute_indices(text):
    """'9' -> [9]; '9,15' -> [9, 15]; '20' -> [] (reconstruction); 'all' -> the seven editable ones."""
    text = str(text).strip()
    if text == "all":
        return list(EDITABLE_ATTRIBUTES)
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"attribute index must be integers 0-{RECONSTRUCTION_INDEX} or 'all'; got {text!r}")
    if not values:
        raise ValueError("no attribute index given")
    for v in values:
        check_attribute_index(v)
    if RECONSTRUCTION_INDEX in values and len(values) > 1:
        raise ValueError(f"index {RECONSTRUCTION_INDEX} (reconstruction) cannot be combined with edits")
    return [v for v in values if v != RECONSTRUCTION_INDEX]


def parse_attribute_vector(text, name="attribute"):
    """'0, 1, ...' (20 values of 0/1) -> float tensor [20]."""
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


def parse_index_list(text):
    """'7' -> [7]; '0-3' -> [0, 1, 2, 3]; '1,5,9' -> [1, 5, 9]."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if not out or min(out) < 0:
        raise ValueError(f"image index must be non-negative integers, a range 'a-b' or a list; got {text!r}")
    return out
