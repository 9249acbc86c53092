"""
The paper's 20 facial attributes and CelebA's annotation files.

CelebA annotates 40 binary attributes in ``list_attr_celeba.txt``: line 1 is
the image count, line 2 the 40 names, then one row per image,
``filename v1 ... v40`` with v in {-1, 1}, columns separated by one or more
spaces. The paper edits a 20-attribute vector derived from those (docs/design.md, "The 20 attributes"):
:data:`PAPER_FROM_CELEBA` gives, for each of the 20, the CelebA columns whose
logical OR defines it. CelebA-HQ (30,000 images) refers to CelebA rows through
``CelebA-HQ-to-CelebA-mapping.txt`` (header ``idx orig_idx orig_file``).

A dataset directory stores its labels twice, in the 20-attribute order:
``attributes.pt`` (float tensor [N, 20] of 0/1) and ``attributes.txt`` (the
same in CelebA's text format, -1/1).

CLI::

    python preprocess/attributes.py --celeba_attr list_attr_celeba.txt \
        [--hq_mapping CelebA-HQ-to-CelebA-mapping.txt] --out DIR
"""

import argparse
import io
import os
import sys

import blobfile as bf
import numpy as np

from guided_diffusion.atomic import atomic_write
from guided_diffusion.attribute_table import ATTRIBUTES_FILE, read_attribute_table
from guided_diffusion.image_files import is_image_file

ATTRIBUTE_NAMES = [
    "Goatee",
    "Beard",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Gray_Hair",
    "Eyeglasses",
    "Heavy_Makeup",
    "Male",
    "Mouth_Slightly_Open",
    "Narrow_Eyes",
    "Pale_Skin",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Lipstick",
    "Young",
]

# Labels for figures, same order as ATTRIBUTE_NAMES.
ATTRIBUTE_SHORT_NAMES = [
    "goatee",
    "beard",
    "bags",
    "bald",
    "bangs",
    "black",
    "blond",
    "brown",
    "gray",
    "glasses",
    "makeup",
    "male",
    "open",
    "narrow",
    "pale",
    "smile",
    "straight",
    "wavy",
    "lipstick",
    "young",
]

# The attributes the README offers for editing; index 20 means reconstruction.
EDITABLE_ATTRIBUTES = (2, 9, 11, 12, 15, 18, 19)
RECONSTRUCTION_INDEX = 20

CELEBA_ATTRIBUTE_NAMES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]

# For each paper attribute, the CelebA columns whose OR defines it (docs/design.md, "The 20 attributes"):
# Beard = 5_o_Clock_Shadow | Mustache | Sideburns, Bald = Bald | Receding_Hairline.
PAPER_FROM_CELEBA = [
    (16,),
    (0, 22, 30),
    (3,),
    (4, 28),
    (5,),
    (8,),
    (9,),
    (11,),
    (17,),
    (15,),
    (18,),
    (20,),
    (21,),
    (23,),
    (26,),
    (31,),
    (32,),
    (33,),
    (36,),
    (39,),
]

ATTRIBUTES_PT = ATTRIBUTES_FILE
ATTRIBUTES_TXT = "attributes.txt"


def image_filename(index, count, ext=".png"):
    """Name of image ``index`` in a dataset of ``count`` images: 00000.png, ...

    Five digits, more when ``count`` needs them (CelebA has 202,599 images).
    """
    width = max(5, len(str(max(count - 1, 0))))
    return f"{index:0{width}d}{ext}"


def image_sort_key(filename):
    """Sort key putting images in dataset order: numerically when the stem is a
    number (CelebA-HQ's ``0.jpg`` ... ``29999.jpg``), else by name."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    if stem.isdigit():
        return (0, int(stem), filename)
    return (1, 0, filename)


def celeba_to_paper(attrs40):
    """
    Map CelebA's 40 attributes to the paper's 20.

    :param attrs40: array or tensor [N, 40] with values in {-1, 1}.
    :return: float32 tensor [N, 20] of 0/1 in :data:`ATTRIBUTE_NAMES` order.
    """
    import torch  # here, not at the top: scripts check their flags before torch loads

    attrs40 = torch.as_tensor(np.asarray(attrs40))
    if attrs40.ndim != 2 or attrs40.shape[1] != len(CELEBA_ATTRIBUTE_NAMES):
        raise ValueError(
            f"celeba_to_paper expects shape [N, 40], got {list(attrs40.shape)}"
        )
    if not bool(((attrs40 == 1) | (attrs40 == -1)).all()):
        raise ValueError("celeba_to_paper expects values in {-1, 1}")
    positive = attrs40 == 1
    columns = [positive[:, list(cols)].any(dim=1) for cols in PAPER_FROM_CELEBA]
    return torch.stack(columns, dim=1).float()


def read_attribute_file(path, expected_names=None):
    """
    Parse a file in CelebA's attribute format.

    :param path: local or blobfile path.
    :param expected_names: if given, the names line must equal this list.
    :return: (names list[K], filenames list[N], values int8 ndarray [N, K] of -1/1,
        line numbers list[N] of the rows, 1-based).
    :raises FileNotFoundError, ValueError: naming the file and line at fault.
    """
    if not bf.exists(path):
        raise FileNotFoundError(f"attribute file not found: {path}")
    if bf.isdir(path):
        raise ValueError(f"attribute file {path} is a folder, not a file")
    try:
        with bf.BlobFile(path, "r") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file (CelebA's attribute format is text)") from None
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a names line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(
            f"{path}:1: expected the image count, got {lines[0].strip()!r}"
        ) from None
    names = lines[1].split()
    if expected_names is not None and names != list(expected_names):
        raise ValueError(
            f"{path}:2: expected the {len(expected_names)} names "
            f"{' '.join(expected_names[:3])} ..., got {len(names)} names"
        )
    rows = [(number, line) for number, line in enumerate(lines[2:], 3) if line.strip()]
    if len(rows) != count:
        raise ValueError(f"{path}: line 1 announces {count} rows, found {len(rows)}")
    filenames = []
    first_line = {}  # a repeated filename would give one image two rows and drop another
    values = np.empty((count, len(names)), dtype=np.int8)
    for row, (number, line) in enumerate(rows):
        fields = line.split()
        if len(fields) != len(names) + 1:
            raise ValueError(
                f"{path}:{number}: expected a filename and {len(names)} values, "
                f"got {len(fields)} columns"
            )
        bad = [v for v in fields[1:] if v not in ("1", "-1")]
        if bad:
            raise ValueError(f"{path}:{number}: values must be -1 or 1, got {bad[0]!r}")
        if fields[0] in first_line:
            raise ValueError(f"{path}:{number}: {fields[0]} is listed twice (first on line {first_line[fields[0]]})")
        first_line[fields[0]] = number
        filenames.append(fields[0])
        values[row] = [int(v) for v in fields[1:]]
    return names, filenames, values, [number for number, _ in rows]


def read_hq_mapping(path):
    """
    Parse ``CelebA-HQ-to-CelebA-mapping.txt``.

    :return: list of (idx, orig_idx, orig_file) in file order; idx must run 0..N-1.
    """
    if not bf.exists(path):
        raise FileNotFoundError(f"CelebA-HQ mapping file not found: {path}")
    if bf.isdir(path):
        raise ValueError(f"CelebA-HQ mapping file {path} is a folder, not a file")
    with bf.BlobFile(path, "r") as f:
        lines = f.read().splitlines()
    if not lines or lines[0].split()[:3] != ["idx", "orig_idx", "orig_file"]:
        raise ValueError(f"{path}:1: expected the header 'idx orig_idx orig_file'")
    mapping = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            raise ValueError(
                f"{path}:{number}: expected 'idx orig_idx orig_file', got {line.strip()!r}"
            )
        idx, orig_idx = int(fields[0]), int(fields[1])
        if idx != len(mapping):
            raise ValueError(f"{path}:{number}: expected idx {len(mapping)}, got {idx}")
        mapping.append((idx, orig_idx, fields[2]))
    if not mapping:
        raise ValueError(f"{path}: no rows after the header")
    return mapping


def load_celeba_attributes(celeba_attr_path, hq_mapping_path=None):
    """
    Read CelebA's annotations as the paper's 20 attributes, in dataset order.

    Without a mapping: CelebA's rows sorted by filename (the order
    ``prepare_images.py`` gives the images). With the CelebA-HQ mapping: one row
    per HQ image, in HQ index order.

    :return: (keys list[N], float tensor [N, 20] of 0/1, sources list[N]).
        keys name each row's image: the CelebA filename, or for CelebA-HQ the
        HQ index as a string. sources say where each row is defined
        ("file:line"), for error messages.
    """
    _, filenames, values, lines = read_attribute_file(celeba_attr_path, CELEBA_ATTRIBUTE_NAMES)
    if hq_mapping_path is None:
        order = sorted(range(len(filenames)), key=lambda i: image_sort_key(filenames[i]))
        sources = [f"{celeba_attr_path}:{lines[i]}" for i in order]
        return [filenames[i] for i in order], celeba_to_paper(values[order]), sources
    row_of_file = {name: row for row, name in enumerate(filenames)}
    rows, keys, sources = [], [], []
    for line, (idx, orig_idx, orig_file) in zip(_data_line_numbers(hq_mapping_path), read_hq_mapping(hq_mapping_path)):
        row = row_of_file.get(orig_file)
        if row is None:
            raise ValueError(
                f"{hq_mapping_path}:{line}: HQ image {idx} refers to {orig_file}, "
                f"which {celeba_attr_path} does not list"
            )
        rows.append(row)
        keys.append(str(idx))
        sources.append(f"{hq_mapping_path}:{line}")
    return keys, celeba_to_paper(values[rows]), sources


def _data_line_numbers(path):
    """1-based numbers of the non-empty lines after the header."""
    with bf.BlobFile(path, "r") as f:
        return [n for n, line in enumerate(f.read().splitlines()[1:], 2) if line.strip()]


def _check_attributes(attributes):
    import torch

    attributes = torch.as_tensor(np.asarray(attributes), dtype=torch.float32)
    if attributes.ndim != 2 or attributes.shape[1] != len(ATTRIBUTE_NAMES):
        raise ValueError(f"attributes must have shape [N, 20], got {list(attributes.shape)}")
    if not bool(((attributes == 0) | (attributes == 1)).all()):
        raise ValueError("attributes must be 0 or 1")
    return attributes


def format_attribute_file(filenames, attributes):
    """CelebA-format text of 0/1 ``attributes`` [N, 20] (written as -1/1)."""
    attributes = _check_attributes(attributes)
    if len(filenames) != attributes.shape[0]:
        raise ValueError(f"{len(filenames)} filenames for {attributes.shape[0]} attribute rows")
    lines = [str(len(filenames)), " ".join(ATTRIBUTE_NAMES)]
    for name, row in zip(filenames, attributes.long().tolist()):
        lines.append(name + " " + " ".join("1" if v else "-1" for v in row))
    return "\n".join(lines) + "\n"


def write_attributes(out_dir, filenames, attributes):
    """Write ``attributes.pt`` (float [N, 20] of 0/1) and ``attributes.txt``
    (CelebA format) into ``out_dir``, each atomically."""
    import torch

    attributes = _check_attributes(attributes)
    text = format_attribute_file(filenames, attributes)
    buffer = io.BytesIO()
    torch.save(attributes.clone(), buffer)
    atomic_write(os.path.join(out_dir, ATTRIBUTES_PT), buffer.getvalue())
    atomic_write(os.path.join(out_dir, ATTRIBUTES_TXT), text.encode())


def read_attributes(data_dir):
    """Float tensor [N, 20] of 0/1 from ``data_dir/attributes.pt`` (guided_diffusion.attribute_table's reader)."""
    return read_attribute_table(data_dir, num_attributes=len(ATTRIBUTE_NAMES), expected_by="the paper's list")


def main(argv=None):
    from guided_diffusion.safe_paths import OneLineParser, report_input_error

    parser = OneLineParser(
        description="Convert CelebA annotations to the paper's 20 attributes "
        "(attributes.pt and attributes.txt in --out)."
    )
    parser.add_argument("--celeba_attr", required=True, help="list_attr_celeba.txt")
    parser.add_argument(
        "--hq_mapping", default=None, help="CelebA-HQ-to-CelebA-mapping.txt (for CelebA-HQ)"
    )
    parser.add_argument("--out", required=True, help="dataset directory to write into")
    args = parser.parse_args(argv)
    try:
        _, attributes, _ = load_celeba_attributes(args.celeba_attr, args.hq_mapping)
        count = attributes.shape[0]
        if os.path.isdir(args.out):
            images = [n for n in os.listdir(args.out) if is_image_file(n)]
            if images and len(images) != count:
                raise ValueError(f"{args.out} holds {len(images)} images but the annotations list {count} rows")
        names = [image_filename(i, count) for i in range(count)]
        write_attributes(args.out, names, attributes)
    except (ValueError, FileNotFoundError) as e:
        return report_input_error(e)  # one line, exit 2 like every other input error
    print(f"wrote {count} rows to {os.path.join(args.out, ATTRIBUTES_PT)} and {ATTRIBUTES_TXT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
