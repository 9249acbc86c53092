"""Labelled image grids and trajectory GIFs (uint8 numpy images [H, W, 3])."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from guided_diffusion.atomic import atomic_save_image

# Saving a PIL image atomically (temporary file, then rename): guided_diffusion.atomic's.
save_image_atomic = atomic_save_image


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def labelled_grid(rows, captions=None, row_titles=None, cell=128, pad=4, caption_height=None):
    """Lay out rows of images, each cell upscaled (nearest) to `cell` px, captions under each.

    :param rows: list of rows, each a list of uint8 [H, W, 3] arrays (None leaves a blank cell).
    :param captions: same nesting as `rows`, strings (may contain '\\n').
    :param row_titles: optional title per row, drawn at the left.
    :return: PIL.Image.
    """
    captions = captions or [[""] * len(r) for r in rows]
    lines = max((c.count("\n") + 1 for row in captions for c in row if c), default=0)
    font = _font(max(10, cell // 10))
    line_h = font.getbbox("Ag")[3] + 2
    caption_height = caption_height if caption_height is not None else lines * line_h + (pad if lines else 0)
    title_w = 0
    if row_titles:
        title_w = max(int(font.getlength(t)) for t in row_titles) + 2 * pad
    ncols = max(len(r) for r in rows)
    width = title_w + ncols * (cell + pad) + pad
    height = len(rows) * (cell + caption_height + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = pad + r * (cell + caption_height + pad)
        if row_titles:
            draw.text((pad, y + cell // 2 - line_h // 2), row_titles[r], fill=(0, 0, 0), font=font)
        for c, img in enumerate(row):
            x = title_w + pad + c * (cell + pad)
            if img is not None:
                sheet.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST), (x, y))
            text = captions[r][c] if c < len(captions[r]) else ""
            for k, line in enumerate(text.split("\n") if text else []):
                w = font.getlength(line)
                draw.text((x + (cell - w) / 2, y + cell + 2 + k * line_h), line, fill=(0, 0, 0), font=font)
    return sheet


def save_gif(frames, path, cell=128, duration_ms=80):
    """Write uint8 frames [H, W, 3] as a looping GIF (last frame held longer)."""
    images = [Image.fromarray(np.asarray(f)).resize((cell, cell), Image.NEAREST) for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [1000]
    atomic_save_image(images[0], path, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                      loop=0)
