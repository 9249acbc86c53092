"""Labelled image grids, region overlays and trajectory GIFs (uint8 numpy images [H, W, 3])."""
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


# The region's contour: cyan stands apart from skin, hair and the synthetic backgrounds' hues.
REGION_COLOUR = (0, 255, 255)


def _shift_any(mask, radius):
    """mask [H, W] bool dilated by a (2 radius + 1) square (edges padded with False)."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def region_overlay(image, region, size=None, dim=0.45, colour=REGION_COLOUR):
    """The image with a region drawn on it: dimmed and greyed outside, a contour where it crosses 0.5.

    Drawn at the output size (the image upscaled nearest, the region bilinear), so the contour stays
    thin on a small image.

    :param image: uint8 [H, W, 3].
    :param region: float [H, W] in [0, 1] (an edit's soft region) or a bool mask [H, W].
    :param size: output side (default H); the contour is 2 * max(1, size // 128) px wide.
    :param dim: brightness kept where the region is 0 (1 where it is 1, blended in between).
    :return: uint8 [size, size, 3].
    """
    size = size or image.shape[0]
    big = np.asarray(Image.fromarray(image).resize((size, size), Image.NEAREST), dtype=np.float32)
    weight = np.asarray(Image.fromarray(np.asarray(region, dtype=np.float32)).resize((size, size), Image.BILINEAR))
    weight = np.clip(weight, 0, 1)[..., None]
    grey = big.mean(axis=2, keepdims=True)
    outside = dim * (0.5 * big + 0.5 * grey)  # darker and less saturated, so the inside stands out
    out = weight * big + (1 - weight) * outside
    inside = weight[..., 0] > 0.5
    radius = max(1, size // 128)
    edge = _shift_any(inside, radius) & _shift_any(~inside, radius)  # a band on both sides of the boundary
    out[edge] = colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


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
        title_w = max(int(font.getlength(line)) for t in row_titles for line in t.split("\n")) + 2 * pad
    ncols = max(len(r) for r in rows)
    width = title_w + ncols * (cell + pad) + pad
    height = len(rows) * (cell + caption_height + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = pad + r * (cell + caption_height + pad)
        if row_titles:
            title_lines = row_titles[r].split("\n")
            for k, line in enumerate(title_lines):  # the block centred on the row's images
                draw.text((pad, y + cell // 2 - len(title_lines) * line_h // 2 + k * line_h), line, fill=(0, 0, 0),
                          font=font)
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
