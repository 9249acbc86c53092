"""
Contact sheets of the synthetic faces, for the README and for checking the look.

    python scripts/make_data_figures.py [--out_dir images] [--seed 0]

Writes ``synthetic_faces.png`` (a grid of faces, the attributes each has
written under it) and ``synthetic_counterfactuals.png`` (a few people, each
with every editable attribute flipped). Faces are rendered at --image_size and
enlarged with nearest neighbour, so the sheets show what the models see.
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from guided_diffusion.atomic import atomic_save_image
from guided_diffusion.safe_paths import OneLineParser, report_input_error
from preprocess.attributes import ATTRIBUTE_SHORT_NAMES, EDITABLE_ATTRIBUTES
from preprocess.synthetic_faces import example_face, render

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FONT_SIZE = 12
LINE_HEIGHT = FONT_SIZE + 2
PAD = 6


def _font():
    return ImageFont.load_default(size=FONT_SIZE)


def _wrap(words, font, width):
    """Greedy line wrap of ``words`` to ``width`` pixels."""
    lines, line = [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def _enlarge(pixels, scale):
    image = Image.fromarray(pixels)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def faces_sheet(seed, rows, cols, image_size, scale):
    """Grid of faces 0..rows*cols-1 of dataset ``seed``, attributes underneath."""
    font = _font()
    cell = image_size * scale
    faces = [example_face(seed, i) for i in range(rows * cols)]
    captions = [
        _wrap([ATTRIBUTE_SHORT_NAMES[k] for k in np.flatnonzero(attributes)] or ["(none)"], font, cell)
        for _, attributes in faces
    ]
    caption_height = LINE_HEIGHT * max(len(c) for c in captions)
    sheet = Image.new("RGB", (cols * (cell + PAD) + PAD, rows * (cell + caption_height + PAD) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, ((identity, attributes), caption) in enumerate(zip(faces, captions)):
        r, c = divmod(i, cols)
        x, y = PAD + c * (cell + PAD), PAD + r * (cell + caption_height + PAD)
        sheet.paste(_enlarge(render(identity, attributes, image_size), scale), (x, y))
        for j, line in enumerate(caption):
            draw.text((x, y + cell + j * LINE_HEIGHT), line, fill=INK, font=font)
    return sheet


def counterfactual_sheet(seed, people, image_size, scale):
    """One row per person: the face, then each editable attribute flipped.

    Each flipped face is labelled +name (attribute added) or -name (removed).
    """
    font = _font()
    cell = image_size * scale
    header = LINE_HEIGHT + PAD
    columns = ["original"] + [ATTRIBUTE_SHORT_NAMES[k] + " flipped" for k in EDITABLE_ATTRIBUTES]
    width = len(columns) * (cell + PAD) + PAD
    sheet = Image.new("RGB", (width, header + len(people) * (cell + LINE_HEIGHT + PAD) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((PAD + c * (cell + PAD), PAD), title, fill=INK, font=font)
    for r, index in enumerate(people):
        identity, attributes = example_face(seed, index)
        y = header + r * (cell + LINE_HEIGHT + PAD)
        sheet.paste(_enlarge(render(identity, attributes, image_size), scale), (PAD, y))
        draw.text((PAD, y + cell), f"face {index}", fill=INK, font=font)
        for c, k in enumerate(EDITABLE_ATTRIBUTES, 1):
            edited = attributes.copy()
            edited[k] = 1 - edited[k]
            x = PAD + c * (cell + PAD)
            sheet.paste(_enlarge(render(identity, edited, image_size), scale), (x, y))
            label = ("+" if edited[k] else "-") + ATTRIBUTE_SHORT_NAMES[k]
            draw.text((x, y + cell), label, fill=INK, font=font)
    return sheet


def main(argv=None):
    parser = OneLineParser(description="Contact sheets of the synthetic faces.")
    parser.add_argument("--out_dir", default="images", help="where the two PNGs go")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed the faces come from")
    parser.add_argument("--image_size", type=int, default=64, help="render size (what the models see)")
    parser.add_argument("--scale", type=int, default=3, help="nearest-neighbour enlargement")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument(
        "--people", type=int, nargs="+", default=[0, 3, 5, 7, 12], help="face indices for the counterfactual rows"
    )
    args = parser.parse_args(argv)
    try:
        faces = faces_sheet(args.seed, args.rows, args.cols, args.image_size, args.scale)
        counterfactuals = counterfactual_sheet(args.seed, args.people, args.image_size, args.scale)
    except ValueError as e:
        return report_input_error(e)
    for name, image in (("synthetic_faces.png", faces), ("synthetic_counterfactuals.png", counterfactuals)):
        path = os.path.join(args.out_dir, name)
        atomic_save_image(image, path, format="PNG")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
