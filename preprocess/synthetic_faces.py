"""
Synthetic frontal faces with the paper's 20 attributes and exact counterfactuals.

A face is an *identity* (a JSON-serialisable dict: face shape, skin tone, eye
spacing/shape/colour, brows, nose, hair style and colours, background,
clothes, pose and lighting) plus a 0/1 vector of the 20 attributes of
``preprocess.attributes.ATTRIBUTE_NAMES``. :func:`render` draws it; rendering
the same identity with one attribute flipped is the ground-truth edit.

Rendering draws the face large with PIL (``_supersample`` times the output
size, at least 256 px), box-downsamples it (anti-aliasing) and applies a
per-pixel lighting gradient. Only PIL drawing and float64 arithmetic (+, -, *,
/, no transcendental functions: circles come from a rational parametrisation)
are used and there is no randomness inside :func:`render`, so the same inputs
give the same pixels on any machine; only a different Pillow rasteriser could
change them (``identities.json`` records the Pillow version and
:data:`RENDERER_VERSION`).

Locality. The face is painted as a list of parts (:data:`_PARTS`), back to
front. Each part declares the attributes that change its shape and the ones
that change only its colours, and is handed only those. Changing attribute k
can therefore only change pixels some part that declares k paints, in one
state or the other: :func:`attribute_mask` is the union of those parts'
footprints over all their shape states, box-reduced to the output grid. What
the masks cover, per attribute:

- Goatee: chin patch and moustache. Beard: cheeks, jaw, chin, upper lip.
- Bags_Under_Eyes: crescents under the eyes. Narrow_Eyes: the eyes.
- Bald, Bangs, hair colours, Straight_Hair, Wavy_Hair: the hair (all styles).
- Eyeglasses: frames, lenses and temples. Heavy_Makeup: eyelids and cheeks.
- Male: the lower face (men's square jaw is painted over it), the brows and
  the hair (men get a square jaw, thick straight brows and short hair).
- Mouth_Slightly_Open, Smiling, Wearing_Lipstick: the mouth and lips.
- Pale_Skin, Young: the skin (face, ears, neck, jaw); not young adds wrinkles
  (forehead, eye corners, nose-to-mouth folds) and a greyer, duller skin.

render() draws whatever vector it is given, including ones the sampler never
makes: a beard on a woman's face, or, with precedence, the first of black,
blond, brown, gray when several hair colours are set and no bangs when bald.
With none of the four hair colours, the hair has the identity's own red or
auburn tone.
"""

import itertools
import json
import os

import numpy as np
import PIL
from PIL import Image, ImageDraw

from preprocess.attributes import ATTRIBUTE_NAMES

NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)
(
    GOATEE,
    BEARD,
    BAGS,
    BALD,
    BANGS,
    BLACK_HAIR,
    BLOND_HAIR,
    BROWN_HAIR,
    GRAY_HAIR,
    EYEGLASSES,
    MAKEUP,
    MALE,
    MOUTH_OPEN,
    NARROW_EYES,
    PALE,
    SMILING,
    STRAIGHT,
    WAVY,
    LIPSTICK,
    YOUNG,
) = range(NUM_ATTRIBUTES)
HAIR_COLOURS = (BLACK_HAIR, BLOND_HAIR, BROWN_HAIR, GRAY_HAIR)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 256
RENDERER_VERSION = 3  # bumped whenever the pixels of a face change
IDENTITIES_JSON = "identities.json"
IDENTITIES_FORMAT = "cyclediff-synthetic-faces"

# ---------------------------------------------------------------------------
# Attribute statistics (CelebA-like).
#
# Sampling order: Male; then the rest conditioned on it (and on Young,
# Smiling where CelebA shows a strong dependence). Hard rules: beard and goatee
# only on men, at most one hair colour, never both straight and wavy, bald
# faces have no bangs.
# ---------------------------------------------------------------------------

P_MALE = 0.42
P_YOUNG = {"female": 0.85, "male": 0.65}
P_BEARD = {"female": 0.0, "male": 0.40}
P_GOATEE = {"female": 0.0, "male": 0.15}
P_BALD = {"female": 0.03, "male": 0.18}
P_BANGS_IF_NOT_BALD = {"female": 0.21, "male": 0.095}
P_LIPSTICK = {"female": 0.80, "male": 0.01}
P_MAKEUP = {"female": 0.65, "male": 0.01}
P_EYEGLASSES = {"female": 0.04, "male": 0.10}
P_PALE = {"female": 0.06, "male": 0.02}
# (straight, wavy); the rest have neither.
P_HAIR_TEXTURE = {"female": (0.18, 0.45), "male": (0.25, 0.14)}
# Keyed by (sex, young): probabilities of (black, blond, brown, gray); the rest
# have none of the four (rendered in the identity's own red/auburn tone).
P_HAIR_COLOUR = {
    ("female", 1): (0.24, 0.24, 0.23, 0.00),
    ("female", 0): (0.20, 0.15, 0.20, 0.20),
    ("male", 1): (0.30, 0.05, 0.20, 0.00),
    ("male", 0): (0.22, 0.03, 0.12, 0.20),
}
P_BAGS = {
    ("female", 1): 0.08,
    ("female", 0): 0.30,
    ("male", 1): 0.22,
    ("male", 0): 0.50,
}
P_SMILING = 0.48
P_MOUTH_OPEN = {"smiling": 0.70, "not smiling": 0.28}
P_NARROW_EYES = {"smiling": 0.17, "not smiling": 0.06}

# The marginals the tables above imply (CelebA's in brackets where they
# differ by more than a point); tests check samples against these.
INTENDED_MARGINALS = {
    "Goatee": 0.063,
    "Beard": 0.168,
    "Bags_Under_Eyes": 0.199,  # [0.205]
    "Bald": 0.093,  # Bald | Receding_Hairline
    "Bangs": 0.150,  # [0.152]
    "Black_Hair": 0.250,  # [0.239]
    "Blond_Hair": 0.149,
    "Brown_Hair": 0.203,
    "Gray_Hair": 0.047,  # [0.042]
    "Eyeglasses": 0.065,
    "Heavy_Makeup": 0.381,  # [0.387]
    "Male": 0.420,  # [0.417]
    "Mouth_Slightly_Open": 0.470,  # [0.483]
    "Narrow_Eyes": 0.113,  # [0.115]
    "Pale_Skin": 0.043,
    "Smiling": 0.480,
    "Straight_Hair": 0.209,
    "Wavy_Hair": 0.320,
    "Wearing_Lipstick": 0.468,  # [0.472]
    "Young": 0.766,  # [0.774]
}


def sample_attributes(rng):
    """
    Draw one CelebA-like attribute vector.

    :param rng: numpy.random.Generator.
    :return: int64 ndarray [20] of 0/1 in ATTRIBUTE_NAMES order.
    """
    a = np.zeros(NUM_ATTRIBUTES, dtype=np.int64)
    a[MALE] = rng.random() < P_MALE
    sex = "male" if a[MALE] else "female"
    a[YOUNG] = rng.random() < P_YOUNG[sex]
    a[BEARD] = rng.random() < P_BEARD[sex]
    a[GOATEE] = rng.random() < P_GOATEE[sex]
    a[BALD] = rng.random() < P_BALD[sex]
    a[BANGS] = (not a[BALD]) and rng.random() < P_BANGS_IF_NOT_BALD[sex]
    a[LIPSTICK] = rng.random() < P_LIPSTICK[sex]
    a[MAKEUP] = rng.random() < P_MAKEUP[sex]
    a[EYEGLASSES] = rng.random() < P_EYEGLASSES[sex]
    a[PALE] = rng.random() < P_PALE[sex]
    a[BAGS] = rng.random() < P_BAGS[(sex, int(a[YOUNG]))]
    p_straight, p_wavy = P_HAIR_TEXTURE[sex]
    texture = rng.random()
    a[STRAIGHT] = texture < p_straight
    a[WAVY] = p_straight <= texture < p_straight + p_wavy
    colour = rng.random()
    for index, upper in zip(HAIR_COLOURS, np.cumsum(P_HAIR_COLOUR[(sex, int(a[YOUNG]))])):
        if colour < upper:
            a[index] = 1
            break
    a[SMILING] = rng.random() < P_SMILING
    smile = "smiling" if a[SMILING] else "not smiling"
    a[MOUTH_OPEN] = rng.random() < P_MOUTH_OPEN[smile]
    a[NARROW_EYES] = rng.random() < P_NARROW_EYES[smile]
    return a


def sample_attributes_independent(rng):
    """
    Draw an attribute vector with no correlations beyond the renderer's hard
    rules: at most one hair colour (none or one of four, uniform), straight,
    wavy or neither (uniform), bald a quarter of the time and then no bangs;
    everything else a fair coin, beards and lipstick on anyone. For an
    evaluation classifier that must read each attribute from its own pixels
    (one trained on CelebA-like data reads "male" partly from "no lipstick").

    :param rng: numpy.random.Generator.
    :return: int64 ndarray [20] of 0/1 in ATTRIBUTE_NAMES order.
    """
    a = (rng.random(NUM_ATTRIBUTES) < 0.5).astype(np.int64)
    a[list(HAIR_COLOURS)] = 0
    colour = rng.integers(len(HAIR_COLOURS) + 1)
    if colour < len(HAIR_COLOURS):
        a[HAIR_COLOURS[colour]] = 1
    texture = rng.integers(3)
    a[STRAIGHT], a[WAVY] = texture == 1, texture == 2
    a[BALD] = rng.random() < 0.25
    if a[BALD]:
        a[BANGS] = 0
    return a


ATTRIBUTE_SAMPLERS = {"celeba": sample_attributes, "independent": sample_attributes_independent}


def _sampler(sampling):
    if sampling not in ATTRIBUTE_SAMPLERS:
        raise ValueError(f"attribute sampling must be one of {', '.join(ATTRIBUTE_SAMPLERS)}; got {sampling!r}")
    return ATTRIBUTE_SAMPLERS[sampling]


# ---------------------------------------------------------------------------
# Identities.
# ---------------------------------------------------------------------------

# Light to dark; CelebA is mostly light-skinned, so light tones are drawn more.
_SKIN_TONES = [
    (250, 222, 200),
    (238, 200, 170),
    (222, 176, 140),
    (192, 140, 104),
    (150, 100, 70),
    (105, 70, 50),
]
_IRIS_COLOURS = [
    (70, 45, 30),
    (110, 70, 40),
    (120, 100, 50),
    (70, 110, 70),
    (60, 100, 150),
    (100, 115, 125),
]
# Red/auburn/ginger: clearly none of black, blond, brown or gray.
_OWN_HAIR_COLOURS = [(175, 55, 25), (200, 85, 35), (220, 125, 65), (185, 45, 40)]
_BACKGROUNDS = [
    (200, 205, 215),
    (230, 225, 210),
    (170, 190, 200),
    (120, 130, 150),
    (210, 190, 180),
    (180, 200, 170),
    (90, 95, 100),
    (235, 235, 235),
    (160, 150, 170),
]
_CLOTHES = [
    (40, 50, 80),
    (140, 30, 40),
    (230, 230, 230),
    (30, 30, 30),
    (60, 110, 70),
    (190, 150, 90),
    (90, 90, 110),
    (200, 120, 150),
]


def _uniform(rng, low, high):
    return float(low + (high - low) * rng.random())


def _pick(rng, options):
    return [int(v) for v in options[int(rng.integers(len(options)))]]


def _jitter_colour(rng, colour, amount):
    return [int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour]


def sample_identity(rng):
    """
    Draw the attribute-independent look of one person.

    :param rng: numpy.random.Generator.
    :return: JSON-serialisable dict of floats, ints and RGB lists; sizes are
        fractions of the image side.
    """
    tone = min(int(rng.random() ** 1.8 * len(_SKIN_TONES)), len(_SKIN_TONES) - 1)
    skin = _jitter_colour(rng, _SKIN_TONES[tone], 8)
    background = _jitter_colour(rng, _pick(rng, _BACKGROUNDS), 15)
    gradient = ["none", "vertical", "horizontal", "diagonal"][int(rng.integers(4))]
    return {
        "skin": skin,
        "face_width": _uniform(rng, 0.205, 0.235),
        "face_height": _uniform(rng, 0.285, 0.31),
        "chin_taper": _uniform(rng, 0.12, 0.28),
        "jaw_width": _uniform(rng, 0.86, 0.96),
        "eye_spacing": _uniform(rng, 0.088, 0.102),
        "eye_height": _uniform(rng, -0.035, -0.015),
        "eye_width": _uniform(rng, 0.043, 0.05),
        "eye_openness": _uniform(rng, 0.5, 0.62),
        "eye_tilt": _uniform(rng, -0.004, 0.006),
        "iris": _jitter_colour(rng, _pick(rng, _IRIS_COLOURS), 10),
        "brow_thickness": _uniform(rng, 0.009, 0.013),
        "brow_arch": _uniform(rng, 0.008, 0.018),
        "brow_colour": _jitter_colour(rng, (60, 45, 35), 20),
        "nose_length": _uniform(rng, 0.085, 0.11),
        "nose_width": _uniform(rng, 0.028, 0.038),
        "mouth_width": _uniform(rng, 0.05, 0.062),
        "mouth_height": _uniform(rng, 0.15, 0.17),
        "lip_fullness": _uniform(rng, 0.8, 1.2),
        "lip_colour": list(_shade(_mix(skin, (205, 105, 115), 0.45), 0.85)),
        "hair_shade": _uniform(rng, 0.85, 1.12),
        "own_hair_colour": _jitter_colour(rng, _pick(rng, _OWN_HAIR_COLOURS), 12),
        "hair_volume": _uniform(rng, 0.025, 0.055),
        "hair_length": _uniform(rng, 0.82, 0.98),
        "hair_parting": _uniform(rng, -0.6, 0.6),
        "beard_colour": _jitter_colour(rng, (45, 38, 36), 10),
        "background": background,
        "background_2": _jitter_colour(rng, background, 45),
        "background_gradient": gradient,
        "clothes": _jitter_colour(rng, _pick(rng, _CLOTHES), 15),
        "offset_x": _uniform(rng, -0.02, 0.02),
        "offset_y": _uniform(rng, -0.015, 0.015),
        "scale": _uniform(rng, 0.95, 1.05),
        "yaw": _uniform(rng, -0.012, 0.012),
        "light_x": _uniform(rng, -0.25, 0.25),
        "light_y": _uniform(rng, -0.15, 0.1),
    }


def example_rng(seed, index, stream):
    """Generator for one face of a dataset: derived from (seed, index, stream)
    only, so different seeds give unrelated faces and any face can be redrawn
    alone. stream 0 draws the identity, stream 1 the attributes."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), stream])


def example_face(seed, index, sampling="celeba"):
    """Face ``index`` of dataset ``seed``: (identity dict, int64 ndarray [20]).

    ``sampling`` picks the attribute statistics (``ATTRIBUTE_SAMPLERS``); the
    identity is the same whichever it is."""
    return sample_identity(example_rng(seed, index, 0)), _sampler(sampling)(example_rng(seed, index, 1))


# What a photo of a person may change without changing who it is: where the face sits, the light,
# and (the renderer ties them to the identity, a camera would not) background and clothes.
VIEW_FIELDS = ("background", "background_2", "background_gradient", "clothes",
               "offset_x", "offset_y", "scale", "yaw", "light_x", "light_y")


def person_view(seed, person, view, sampling="independent"):
    """View ``view`` of person ``person`` of dataset ``seed``: (identity dict, int64 ndarray [20]).

    The person is identity ``person`` of :func:`example_face` (the same people as a dataset of that
    seed); each view redraws the :data:`VIEW_FIELDS` and the attributes, so that what stays the same
    across views is the person alone (for training a face-identity network)."""
    person_identity = sample_identity(example_rng(seed, person, 0))
    if int(view) < 0:
        raise ValueError(f"view must be non-negative, got {view}")
    scene = sample_identity(np.random.default_rng([int(seed), int(person), 2, int(view)]))
    identity = dict(person_identity, **{k: scene[k] for k in VIEW_FIELDS})
    attributes = _sampler(sampling)(np.random.default_rng([int(seed), int(person), 3, int(view)]))
    return identity, attributes


def make_identities(seed, n):
    """Identities 0..n-1 of dataset ``seed`` (deterministic)."""
    return [sample_identity(example_rng(seed, i, 0)) for i in range(n)]


def make_attributes(seed, n, sampling="celeba"):
    """Attribute vectors 0..n-1 of dataset ``seed``: int64 ndarray [n, 20]."""
    sample = _sampler(sampling)
    return np.stack([sample(example_rng(seed, i, 1)) for i in range(n)])


def identities_header(seed, image_size, sampling="celeba"):
    """The fields of ``identities.json`` other than ``faces``."""
    _sampler(sampling)
    return {
        "format": IDENTITIES_FORMAT,
        "renderer_version": RENDERER_VERSION,
        "pillow_version": PIL.__version__,
        "seed": int(seed),
        "attribute_sampling": sampling,
        "image_size": int(image_size),
        "attribute_names": list(ATTRIBUTE_NAMES),
    }


def read_identities(data_dir):
    """
    Load a synthetic dataset's ``identities.json``.

    :return: dict with ``image_size``, ``seed``, ... and ``faces``: a list of
        {"file", "identity", "attributes" (list of 20 0/1)}, in image order, so
        ``render(face["identity"], edited_attributes, image_size)`` gives the
        ground truth of any edit.
    """
    path = os.path.join(data_dir, IDENTITIES_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {IDENTITIES_JSON} in {data_dir} (not a synthetic-faces dataset?)")
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != IDENTITIES_FORMAT or "faces" not in record:
        raise ValueError(f"{path}: not a {IDENTITIES_FORMAT} file")
    if record.get("attribute_names") != list(ATTRIBUTE_NAMES):
        raise ValueError(f"{path}: attribute names differ from preprocess.attributes.ATTRIBUTE_NAMES")
    return record


# ---------------------------------------------------------------------------
# Geometry helpers (pure float arithmetic; see the module docstring).
# ---------------------------------------------------------------------------


def _quarter_arc(n):
    # Rational parametrisation of the circle: exact IEEE arithmetic everywhere.
    t = np.linspace(-0.41421356237309503, 0.41421356237309503, n, endpoint=False)
    return (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)


def _unit_circle(n_per_quarter=16):
    """Points (cos, sin) going clockwise on screen from the right (+x, y down)."""
    c, s = _quarter_arc(n_per_quarter)
    xs = np.concatenate([c, -s, -c, s])
    ys = np.concatenate([s, c, -s, -c])
    return xs, ys


_CIRCLE_X, _CIRCLE_Y = _unit_circle()


def _ellipse_points(cx, cy, rx, ry, y_from=None):
    """Polygon of an ellipse; with ``y_from`` only the part above that y."""
    xs, ys = cx + rx * _CIRCLE_X, cy + ry * _CIRCLE_Y
    if y_from is not None:
        keep = ys <= y_from
        xs, ys = xs[keep], ys[keep]
    return list(zip(xs.tolist(), ys.tolist()))


def _upper_arc(cx, cy, rx, ry):
    """Upper half of an ellipse, from its left end over the top to its right end."""
    pts = _ellipse_points(cx, cy, rx, ry, y_from=cy)
    start = int(np.argmin([x for x, _ in pts]))
    return pts[start:] + pts[:start]


def _bezier(p0, p1, p2, n=12):
    """Quadratic Bezier from p0 to p2 pulled towards p1, as n+1 points."""
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    pts = (1 - t) * (1 - t) * p0 + 2 * (1 - t) * t * p1 + t * t * p2
    return [tuple(p) for p in pts.tolist()]


def _wave(u):
    """Smooth periodic bump in [-1, 1] with period 1 (parabolic sine)."""
    f = u - np.floor(u)
    half = f < 0.5
    g = np.where(half, f, f - 0.5)
    return np.where(half, 1.0, -1.0) * 16 * g * (0.5 - g)


def _mix(c1, c2, t):
    """Colour c1 * (1 - t) + c2 * t, rounded."""
    return tuple(int(round(a * (1 - t) + b * t)) for a, b in zip(c1, c2))


def _alpha(colour, alpha):
    return tuple(colour[:3]) + (int(alpha),)


def _grey(colour):
    luma = (299 * colour[0] + 587 * colour[1] + 114 * colour[2]) / 1000
    return (luma, luma, luma)


class _Geometry:
    """Face landmarks in pixels of the drawing canvas (side ``size``)."""

    def __init__(self, identity, size):
        s = identity["scale"]
        u = size * s * 1.12  # pixels per unit of face size
        self.size = size
        self.u = u
        self.cx = size * (0.5 + identity["offset_x"])
        self.cy = size * (0.55 + identity["offset_y"])
        self.yaw = size * identity["yaw"]  # inner features shift by this
        self.w = u * identity["face_width"]
        self.h = u * identity["face_height"]
        self.mid_x = self.cx + self.yaw
        self.eye_y = self.cy + u * identity["eye_height"]
        self.eye_dx = u * identity["eye_spacing"]
        self.eye_w = u * identity["eye_width"]
        self.eye_h = self.eye_w * identity["eye_openness"]
        self.brow_y = self.eye_y - u * 0.048
        self.nose_y = self.cy + u * (identity["nose_length"] - 0.02)
        self.mouth_y = self.cy + u * identity["mouth_height"]
        self.mouth_w = u * identity["mouth_width"]
        self.chin_y = self.cy + self.h
        self.hairline_y = self.cy - u * 0.185
        self.temple_y = self.eye_y - u * 0.035

    def eyes(self):
        """Centres (x, y) of the left and right eye (as seen)."""
        return [(self.mid_x - self.eye_dx, self.eye_y), (self.mid_x + self.eye_dx, self.eye_y)]

    def px(self, v):
        """Length in face units -> pixels."""
        return self.u * v


def _skin_colour(identity, a):
    """Skin RGB under Pale_Skin and Young (both change only the skin)."""
    skin = tuple(identity["skin"])
    if a[PALE]:
        skin = _mix(_mix(skin, _grey(skin), 0.5), (255, 250, 248), 0.7)
    if not a[YOUNG]:
        skin = _mix(_mix(skin, _grey(skin), 0.4), (125, 115, 105), 0.12)
    return skin


def _shade(colour, factor):
    return tuple(int(min(255, round(c * factor))) for c in colour)


# ---------------------------------------------------------------------------
# Parts, painted back to front. Each gets (draw, geometry, identity, a) where a
# holds only the attributes the part declared.
# ---------------------------------------------------------------------------


def _hair_colour(identity, a):
    shade = identity["hair_shade"]
    if a[BLACK_HAIR]:
        base = (28, 24, 24)
    elif a[BLOND_HAIR]:
        base = (232, 196, 120)
    elif a[BROWN_HAIR]:
        base = (112, 70, 38)
    elif a[GRAY_HAIR]:
        base = (178, 178, 182)
    else:
        base = tuple(identity["own_hair_colour"])
    return _shade(base, shade)


def _hair_strand_colour(colour):
    """Contrasting strands: lighter on dark hair, darker on light hair."""
    if sum(colour) < 240:
        return _mix(colour, (150, 140, 130), 0.5)
    return _shade(colour, 0.72)


def _hair_outline_points(g, wavy, half_width, y_top, y_bottom):
    """Outer outline of long hair: round top, straight (or wavy) sides."""
    r = half_width
    ys = np.linspace(y_top + r * 0.9, y_bottom, 14)
    amplitude = g.px(0.012) if wavy else 0.0
    right = g.cx + r + amplitude * _wave(ys / g.px(0.09))
    left = g.cx - r - amplitude * _wave(ys / g.px(0.09) + 0.5)
    pts = list(zip(right.tolist(), ys.tolist()))
    pts += [(g.cx + r * 0.6, y_bottom + g.px(0.01)), (g.cx - r * 0.6, y_bottom + g.px(0.01))]
    pts += list(zip(left[::-1].tolist(), ys[::-1].tolist()))
    return pts + _upper_arc(g.cx, y_top + r * 0.9, r, r * 0.9)


def _draw_hair_back(draw, g, identity, a):
    """Long hair hanging behind the head and shoulders (women, not bald)."""
    if a[MALE] or a[BALD]:
        return
    colour = _hair_colour(identity, a)
    half_width = g.w + g.px(identity["hair_volume"]) + g.px(0.02)
    y_top = g.cy - g.h - g.px(identity["hair_volume"])
    y_bottom = g.size * identity["hair_length"]
    pts = _hair_outline_points(g, a[WAVY], half_width, y_top, y_bottom)
    draw.polygon(pts, fill=colour)
    if a[STRAIGHT] or a[WAVY]:
        strand = _hair_strand_colour(colour)
        for side in (-1, 1):
            for k in range(3):
                x = g.cx + side * (g.w + g.px(0.012 + 0.014 * k))
                ys = np.linspace(g.eye_y, y_bottom - g.px(0.02), 10)
                if a[WAVY]:
                    xs = x + g.px(0.008) * _wave(ys / g.px(0.09) + 0.25 * k)
                else:
                    xs = np.full_like(ys, x)
                draw.line(list(zip(xs.tolist(), ys.tolist())), fill=strand, width=max(1, round(g.px(0.008))))


def _draw_clothes(draw, g, identity, a):
    top = g.chin_y + g.px(0.07)
    draw.ellipse(
        [g.cx - g.px(0.46), top, g.cx + g.px(0.46), top + g.px(0.5)], fill=tuple(identity["clothes"])
    )


def _draw_neck(draw, g, identity, a):
    skin = _skin_colour(identity, a)
    neck_w = g.w * 0.52
    draw.rectangle([g.cx - neck_w, g.cy + g.h * 0.3, g.cx + neck_w, g.chin_y + g.px(0.1)], fill=_shade(skin, 0.9))
    draw.chord(
        [g.cx - neck_w, g.chin_y + g.px(0.03), g.cx + neck_w, g.chin_y + g.px(0.17)], 0, 180, fill=_shade(skin, 0.9)
    )
    # Shadow under the chin.
    draw.ellipse(
        [g.cx - neck_w, g.chin_y - g.px(0.03), g.cx + neck_w, g.chin_y + g.px(0.035)], fill=_shade(skin, 0.78)
    )


def _draw_ears(draw, g, identity, a):
    skin = _skin_colour(identity, a)
    for side in (-1, 1):
        x = g.cx + side * g.w * 0.97
        draw.ellipse(
            [x - g.px(0.028), g.eye_y - g.px(0.01), x + g.px(0.028), g.nose_y + g.px(0.015)],
            fill=_shade(skin, 0.93),
        )


def _face_points(g, identity):
    """Egg-shaped face outline: full width above the centre, tapering to the chin."""
    taper = identity["chin_taper"]
    xs, ys = _CIRCLE_X.copy(), _CIRCLE_Y.copy()
    below = ys > 0
    xs[below] = xs[below] * (1 - taper * ys[below] * ys[below])
    return list(zip((g.cx + g.w * xs).tolist(), (g.cy + g.h * ys).tolist()))


def _draw_face(draw, g, identity, a):
    draw.polygon(_face_points(g, identity), fill=_skin_colour(identity, a))


def _male_jaw_points(g, identity):
    jaw = identity["jaw_width"]
    top = g.cy + g.h * 0.05
    return [
        (g.cx - g.w, top),
        (g.cx + g.w, top),
        (g.cx + g.w * jaw, g.cy + g.h * 0.62),
        (g.cx + g.w * 0.45, g.chin_y + g.px(0.004)),
        (g.cx - g.w * 0.45, g.chin_y + g.px(0.004)),
        (g.cx - g.w * jaw, g.cy + g.h * 0.62),
    ]


def _draw_male_jaw(draw, g, identity, a):
    """Men: square jaw, filled over the tapered chin."""
    if not a[MALE]:
        return
    skin = _skin_colour(identity, a)
    pts = _male_jaw_points(g, identity)
    draw.polygon(pts, fill=skin)
    draw.line(pts[2:], fill=_shade(skin, 0.85), width=max(1, round(g.px(0.006))))


def _draw_wrinkles(draw, g, identity, a):
    """Age: forehead lines, crow's feet, nose-to-mouth folds and eye-bag lines,
    each a dark crease with a light edge below (visible on any skin)."""
    if a[YOUNG]:
        return
    width = max(1, round(g.px(0.01)))
    offset = g.px(0.011)
    creases = []
    for k in range(3):
        y = g.hairline_y + g.px(0.022 + 0.02 * k)
        half = g.w * (0.55 - 0.06 * k)
        creases.append(
            _bezier((g.mid_x - half, y + g.px(0.006)), (g.mid_x, y - g.px(0.008)), (g.mid_x + half, y + g.px(0.006)))
        )
    for side, (ex, ey) in zip((-1, 1), g.eyes()):
        x0 = ex + side * (g.eye_w + g.px(0.01))
        for dy in (-0.014, 0.0, 0.014):
            creases.append([(x0, ey + g.px(dy * 0.5)), (x0 + side * g.px(0.024), ey + g.px(dy * 1.5))])
        top = ey + g.eye_h * 1.4 + g.px(0.03)
        creases.append(_bezier((ex - g.eye_w * 0.8, top), (ex, top + g.px(0.03)), (ex + g.eye_w * 0.8, top), n=6))
    for side in (-1, 1):
        creases.append(
            _bezier(
                (g.mid_x + side * g.px(0.045), g.nose_y),
                (g.mid_x + side * g.px(0.07), g.mouth_y - g.px(0.03)),
                (g.mid_x + side * (g.mouth_w + g.px(0.008)), g.mouth_y + g.px(0.02)),
            )
        )
    for line in creases:
        draw.line([(x, y + offset) for x, y in line], fill=(255, 240, 225, 90), width=width)
    for line in creases:
        draw.line(line, fill=(60, 35, 30, 200), width=width)


def _draw_nose(draw, g, identity, a):
    nw = g.px(identity["nose_width"])
    shadow = (110, 70, 60, 110)
    width = max(1, round(g.px(0.007)))
    side = 1 if identity["light_x"] < 0 else -1
    draw.line(
        _bezier(
            (g.mid_x + side * g.px(0.012), g.eye_y + g.px(0.01)),
            (g.mid_x + side * g.px(0.02), g.nose_y - g.px(0.03)),
            (g.mid_x + side * nw * 0.9, g.nose_y - g.px(0.002)),
        ),
        fill=shadow,
        width=width,
    )
    for s in (-1, 1):
        x = g.mid_x + s * nw * 0.5
        box = [x - g.px(0.011), g.nose_y - g.px(0.006), x + g.px(0.011), g.nose_y + g.px(0.006)]
        draw.ellipse(box, fill=(70, 40, 35, 170))


def _draw_blush(draw, g, identity, a):
    """Heavy makeup, part 1: rosy cheeks."""
    if not a[MAKEUP]:
        return
    for s in (-1, 1):
        x = g.mid_x + s * (g.eye_dx + g.px(0.008))
        y = g.nose_y - g.px(0.01)
        for k, alpha in enumerate((50, 60, 70)):
            rx, ry = g.px(0.04 - 0.01 * k), g.px(0.025 - 0.006 * k)
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=(225, 60, 90, alpha))


def _draw_bags(draw, g, identity, a):
    """Puffy dark crescents under the eyes, with a light rim below."""
    if not a[BAGS]:
        return
    for ex, ey in g.eyes():
        top = ey + g.eye_h * 0.6
        half = g.eye_w * 1.1
        outer = _bezier((ex - half, top), (ex, top + g.px(0.075)), (ex + half, top))
        inner = _bezier((ex + half, top), (ex, top + g.px(0.015)), (ex - half, top))
        draw.polygon(outer + inner, fill=(60, 30, 55, 200))
        rim_y = top + g.px(0.012)
        rim = _bezier((ex - half * 0.8, rim_y), (ex, top + g.px(0.09)), (ex + half * 0.8, rim_y))
        draw.line(rim, fill=(255, 235, 220, 110), width=max(1, round(g.px(0.009))))


def _eye_height(g, a):
    return g.eye_h * (0.35 if a[NARROW_EYES] else 1.0)


def _eye_outline(ex, ey, w, h, tilt):
    upper = _bezier((ex - w, ey + tilt), (ex, ey - 2 * h), (ex + w, ey - tilt))
    lower = _bezier((ex + w, ey - tilt), (ex, ey + 1.3 * h), (ex - w, ey + tilt))
    return upper + lower


def _draw_eyes(draw, g, identity, a):
    h = _eye_height(g, a)
    tilt = g.px(identity["eye_tilt"])
    iris = tuple(identity["iris"])
    lid = max(1, round(g.px(0.007)))
    for side, (ex, ey) in zip((-1, 1), g.eyes()):
        t = side * tilt
        draw.polygon(_eye_outline(ex, ey, g.eye_w, h, t), fill=(245, 245, 240))
        r = g.eye_w * 0.5
        ih = min(r, h * 1.05)
        draw.ellipse([ex - r, ey - ih, ex + r, ey + ih], fill=iris)
        pr, ph = r * 0.45, min(r * 0.45, h * 0.7)
        draw.ellipse([ex - pr, ey - ph, ex + pr, ey + ph], fill=(15, 10, 10))
        upper_lid = _bezier((ex - g.eye_w * 1.05, ey + t), (ex, ey - 2.05 * h), (ex + g.eye_w * 1.05, ey - t))
        draw.line(upper_lid, fill=(40, 25, 20), width=lid)


def _draw_eye_makeup(draw, g, identity, a):
    """Heavy makeup, part 2: eyeshadow on the lids and a winged eyeliner."""
    if not a[MAKEUP]:
        return
    for side, (ex, ey) in zip((-1, 1), g.eyes()):
        top = _bezier((ex - g.eye_w * 1.1, ey), (ex, ey - g.eye_h * 2 - g.px(0.05)), (ex + g.eye_w * 1.1, ey))
        bottom = _bezier((ex + g.eye_w * 1.1, ey), (ex, ey - g.eye_h * 1.6), (ex - g.eye_w * 1.1, ey))
        draw.polygon(top + bottom, fill=(120, 50, 130, 150))
        outer = ex + side * g.eye_w * 1.05
        draw.line(
            [
                (ex - side * g.eye_w * 0.3, ey - g.eye_h * 1.2),
                (outer, ey - g.eye_h * 0.3),
                (outer + side * g.px(0.018), ey - g.eye_h * 1.3),
            ],
            fill=(10, 5, 10),
            width=max(1, round(g.px(0.011))),
        )


def _draw_brows(draw, g, identity, a):
    """Women: thin arched brows; men: thick, straight and lower."""
    male = a[MALE]
    thickness = g.px(identity["brow_thickness"] * (1.9 if male else 1.0))
    arch = g.px(identity["brow_arch"] * (0.35 if male else 1.0))
    y = g.brow_y + (g.px(0.008) if male else 0.0)
    colour = tuple(identity["brow_colour"])
    for side, (ex, _) in zip((-1, 1), g.eyes()):
        inner = (ex - side * g.eye_w * 1.0, y + g.px(0.004))
        outer = (ex + side * g.eye_w * 1.25, y + g.px(0.006))
        peak = (ex + side * g.eye_w * 0.3, y - 2 * arch)
        upper = _bezier((inner[0], inner[1] - thickness * 0.5), (peak[0], peak[1] - thickness * 0.5), outer)
        lower = _bezier(outer, (peak[0], peak[1] + thickness * 0.5), (inner[0], inner[1] + thickness * 0.5))
        draw.polygon(upper + lower, fill=colour)


def _beard_points(g, identity):
    """Beard region: from the sideburns along the cheeks, over the upper lip,
    down the (male) jaw to the chin."""
    jaw = _male_jaw_points(g, identity)
    cheek_y = g.nose_y + g.px(0.005)
    lip_y = g.nose_y + g.px(0.014)
    right = _bezier(
        (g.cx + g.w * 0.97, g.eye_y + g.px(0.03)),
        (g.mid_x + g.px(0.09), cheek_y - g.px(0.01)),
        (g.mid_x + g.px(0.04), lip_y),
    )
    left = [(2 * g.mid_x - x, y) for x, y in right]
    chin = _bezier(jaw[3], (g.mid_x, g.chin_y + g.px(0.02)), jaw[4])
    return left + right[::-1] + [jaw[2]] + chin + [jaw[5]]


def _draw_beard(draw, g, identity, a):
    """Stubble/beard: a dark translucent layer over the lower face."""
    if not a[BEARD]:
        return
    colour = tuple(identity["beard_colour"])
    draw.polygon(_beard_points(g, identity), fill=_alpha(colour, 135))
    jaw = _male_jaw_points(g, identity)
    chin = _bezier(jaw[3], (g.mid_x, g.chin_y + g.px(0.02)), jaw[4])
    draw.line([jaw[2]] + chin + [jaw[5]], fill=_alpha(colour, 110), width=max(1, round(g.px(0.02))))


def _draw_goatee(draw, g, identity, a):
    """Goatee: moustache over the lips joined around the mouth to a chin patch."""
    if not a[GOATEE]:
        return
    colour = _alpha(identity["beard_colour"], 235)
    mw, x0, y0 = g.mouth_w, g.mid_x, g.mouth_y
    upper = _bezier((x0 - mw * 1.2, y0 + g.px(0.01)), (x0, y0 - g.px(0.11)), (x0 + mw * 1.2, y0 + g.px(0.01)))
    lower = _bezier((x0 + mw * 0.9, y0), (x0, y0 - g.px(0.03)), (x0 - mw * 0.9, y0))
    draw.polygon(upper + lower, fill=colour)
    top = _bezier((x0 - mw * 0.65, y0 + g.px(0.04)), (x0, y0 + g.px(0.03)), (x0 + mw * 0.65, y0 + g.px(0.04)))
    chin_y = g.chin_y - g.px(0.01)
    bottom = _bezier((x0 + mw * 0.65, chin_y), (x0, g.chin_y + g.px(0.03)), (x0 - mw * 0.65, chin_y))
    draw.polygon(top + bottom, fill=colour)
    for s in (-1, 1):
        draw.line(
            [(x0 + s * mw * 1.12, y0 + g.px(0.005)), (x0 + s * mw * 0.6, y0 + g.px(0.05))],
            fill=colour,
            width=max(1, round(g.px(0.016))),
        )


def _draw_mouth(draw, g, identity, a):
    """Lips; smiling curls the corners up, open shows a dark gap (teeth if smiling)."""
    lip = (205, 20, 45) if a[LIPSTICK] else tuple(identity["lip_colour"])
    fullness = identity["lip_fullness"]
    x0, y0 = g.mid_x, g.mouth_y
    w = g.mouth_w * (1.2 if a[SMILING] else 1.0)
    lift = g.px(0.03) if a[SMILING] else 0.0
    gap = g.px(0.03) if a[MOUTH_OPEN] else 0.0
    left, right = (x0 - w, y0 - lift), (x0 + w, y0 - lift)
    # Control points of the lip edges; a Bezier passes half way to its control
    # point, hence the factors 2.
    sag = g.px(0.025) if a[SMILING] else g.px(0.002)
    upper_inner_y = y0 + 2 * sag - lift - gap
    lower_inner_y = y0 + 2 * sag - lift + gap
    top = _bezier(left, (x0, upper_inner_y - 2 * g.px(0.016) * fullness), right)
    upper_inner = _bezier(right, (x0, upper_inner_y), left)
    lower_inner = _bezier(left, (x0, lower_inner_y), right)
    bottom = _bezier(right, (x0, lower_inner_y + 2 * g.px(0.02) * fullness), left)
    if a[MOUTH_OPEN]:
        draw.polygon(lower_inner + upper_inner, fill=(55, 12, 18))
        if a[SMILING]:
            teeth = _bezier(left, (x0, upper_inner_y + gap * 0.9), right)
            draw.polygon(teeth + upper_inner, fill=(245, 245, 235))
    draw.polygon(top + upper_inner, fill=lip)
    draw.polygon(lower_inner + bottom, fill=lip if a[LIPSTICK] else _shade(lip, 0.92))
    if not a[MOUTH_OPEN]:
        draw.line(upper_inner, fill=(45, 15, 15), width=max(1, round(g.px(0.01))))
    if a[SMILING]:
        # Smile creases curling up beside the corners.
        for s, corner in ((-1, left), (1, right)):
            draw.line(
                _bezier(
                    (corner[0] + s * g.px(0.006), corner[1] - g.px(0.02)),
                    (corner[0] + s * g.px(0.022), corner[1] + g.px(0.002)),
                    (corner[0] + s * g.px(0.004), corner[1] + g.px(0.026)),
                    n=6,
                ),
                fill=(60, 30, 25, 160),
                width=max(1, round(g.px(0.009))),
            )


def _draw_hair_top(draw, g, identity, a):
    """Hair over the head: a cap, side locks, bangs; none on top when bald.

    Straight hair is sleek: a glossy band and straight strands; wavy hair has a
    scalloped outline and wavy strands; neither is plain.
    """
    colour = _hair_colour(identity, a)
    strand = _hair_strand_colour(colour)
    strand_width = max(1, round(g.px(0.009)))
    volume = g.px(identity["hair_volume"] * (0.45 if a[MALE] else 1.0))
    centre_y = g.temple_y
    outer_rx = g.w + volume * 0.7
    outer_ry = centre_y - (g.cy - g.h) + volume
    inner_rx = g.w * 0.96
    inner_ry = centre_y - g.hairline_y
    if a[BALD]:
        # Horseshoe: short hair above the ears only, and a shiny scalp.
        for s in (-1, 1):
            x = g.cx + s * g.w
            draw.polygon(
                [
                    (x - s * g.px(0.02), g.temple_y - g.px(0.03)),
                    (x + s * g.px(0.018), g.temple_y - g.px(0.02)),
                    (x + s * g.px(0.015), g.eye_y + g.px(0.03)),
                    (x - s * g.px(0.012), g.eye_y + g.px(0.03)),
                ],
                fill=colour,
            )
        draw.ellipse(
            [g.mid_x - g.px(0.07), g.cy - g.h + g.px(0.025), g.mid_x + g.px(0.03), g.cy - g.h + g.px(0.07)],
            fill=(255, 255, 255, 80),
        )
        return
    # Cap: outer outline left -> over the top -> right, then the hairline back.
    outer = _upper_arc(g.cx, centre_y, outer_rx, outer_ry)
    if a[WAVY]:
        bumps = 1 + 0.05 * _wave(np.arange(len(outer)) / 3.0)
        outer = [(g.cx + (x - g.cx) * b, centre_y + (y - centre_y) * b) for (x, y), b in zip(outer, bumps)]
    inner = _upper_arc(g.cx, centre_y, inner_rx, inner_ry)[::-1]
    draw.polygon(outer + inner, fill=colour)
    # Side locks: down to the jaw for women, short sideburns for men.
    lock_bottom = g.eye_y + g.px(0.02) if a[MALE] else g.cy + g.h * 0.75
    for s in (-1, 1):
        x_in, x_out = g.cx + s * g.w * 0.93, g.cx + s * outer_rx
        ys = np.linspace(centre_y, lock_bottom, 10)
        amplitude = g.px(0.01) if a[WAVY] else 0.0
        outer_x = x_out + s * amplitude * _wave(ys / g.px(0.07))
        draw.polygon(list(zip(outer_x.tolist(), ys.tolist())) + [(x_in, lock_bottom), (x_in, centre_y)], fill=colour)
    if a[BANGS]:
        bottom_y = g.brow_y - g.px(0.016)
        xs = np.linspace(-inner_rx, inner_rx, 17)
        # From the hairline ellipse (clipped to start above bottom_y) down to bottom_y.
        top = centre_y - inner_ry * np.sqrt(np.clip(1 - (xs / inner_rx) ** 2, 0, 1))
        top = np.minimum(top, bottom_y) - g.px(0.01)
        edge = np.full_like(xs, bottom_y)
        if a[WAVY]:
            edge = edge + g.px(0.01) * _wave(xs / g.px(0.05))
        pts = list(zip((g.cx + xs).tolist(), top.tolist()))
        pts += list(zip((g.cx + xs[::-1]).tolist(), edge[::-1].tolist()))
        draw.polygon(pts, fill=colour)
        # The fringe's shadow on the forehead: visible whatever the skin tone.
        shadow = list(zip((g.cx + xs[1:-1]).tolist(), (edge[1:-1] + g.px(0.006)).tolist()))
        draw.line(shadow, fill=(30, 15, 10, 170), width=max(1, round(g.px(0.012))))
    if a[STRAIGHT]:
        # Glossy band across the cap and straight strands down the locks.
        gloss = _upper_arc(g.cx, centre_y, (outer_rx + inner_rx) * 0.5, (outer_ry + inner_ry) * 0.5)
        draw.line(gloss[3:-3], fill=_mix(colour, (255, 255, 255), 0.35), width=max(1, round(g.px(0.014))))
    if a[STRAIGHT] or a[WAVY]:
        for s in (-1, 1):
            x = g.cx + s * (g.w * 0.93 + (outer_rx - g.w * 0.93) * 0.5)
            ys = np.linspace(centre_y - g.px(0.02), lock_bottom - g.px(0.01), 8)
            xs = x + (g.px(0.008) * _wave(ys / g.px(0.07)) if a[WAVY] else np.zeros_like(ys))
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=strand, width=strand_width)
    if a[WAVY]:
        for k in (-1, 0, 1):
            xs = np.linspace(-inner_rx * 0.6, inner_rx * 0.6, 12)
            ys = g.cy - g.h - volume * 0.2 + g.px(0.022) * (k + 1) + g.px(0.008) * _wave(xs / g.px(0.05))
            draw.line(list(zip((g.cx + xs).tolist(), ys.tolist())), fill=strand, width=strand_width)
    # Parting.
    part_x = g.cx + g.w * identity["hair_parting"] * 0.5
    draw.line(
        [(part_x, g.cy - g.h - volume * 0.3), (part_x + g.px(0.01), g.hairline_y - g.px(0.01))],
        fill=_shade(colour, 0.8),
        width=strand_width,
    )


def _draw_glasses(draw, g, identity, a):
    if not a[EYEGLASSES]:
        return
    frame = (20, 20, 25)
    width = max(2, round(g.px(0.011)))
    rims = []
    for ex, ey in g.eyes():
        box = [ex - g.eye_w * 1.35, ey - g.px(0.036), ex + g.eye_w * 1.35, ey + g.px(0.034)]
        draw.rounded_rectangle(box, radius=g.px(0.018), fill=(200, 220, 240, 45), outline=frame, width=width)
        rims.append(box)
    bridge_y = g.eye_y - g.px(0.012)
    draw.line([(rims[0][2], bridge_y), (rims[1][0], bridge_y)], fill=frame, width=width)
    draw.line([(rims[0][0], bridge_y), (g.cx - g.w * 0.99, bridge_y - g.px(0.004))], fill=frame, width=width)
    draw.line([(rims[1][2], bridge_y), (g.cx + g.w * 0.99, bridge_y - g.px(0.004))], fill=frame, width=width)


# (draw function, attributes changing its shape, attributes changing only its colours)
_HAIR_SHAPE = (MALE, BALD, BANGS, STRAIGHT, WAVY)
_PARTS = [
    (_draw_hair_back, _HAIR_SHAPE, HAIR_COLOURS),
    (_draw_clothes, (), ()),
    (_draw_neck, (), (PALE, YOUNG)),
    (_draw_ears, (), (PALE, YOUNG)),
    (_draw_face, (), (PALE, YOUNG)),
    (_draw_male_jaw, (MALE,), (PALE, YOUNG)),
    (_draw_wrinkles, (YOUNG,), ()),
    (_draw_nose, (), ()),
    (_draw_blush, (MAKEUP,), ()),
    (_draw_bags, (BAGS,), ()),
    (_draw_eyes, (NARROW_EYES,), ()),
    (_draw_eye_makeup, (MAKEUP,), ()),
    (_draw_brows, (MALE,), ()),
    (_draw_beard, (BEARD,), ()),
    (_draw_goatee, (GOATEE,), ()),
    (_draw_mouth, (SMILING, MOUTH_OPEN), (LIPSTICK,)),
    (_draw_hair_top, _HAIR_SHAPE, HAIR_COLOURS),
    (_draw_glasses, (EYEGLASSES,), ()),
]


def _supersample(image_size):
    """Drawing scale: the canvas is at least 256 px and at least 2x the output."""
    return max(2, -(-256 // image_size))


def _check_size(image_size):
    if not isinstance(image_size, (int, np.integer)) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size!r}")
    return int(image_size)


def _check_attributes(attributes):
    a = np.asarray(attributes)
    if a.shape != (NUM_ATTRIBUTES,):
        raise ValueError(f"attributes must have shape [{NUM_ATTRIBUTES}], got {list(a.shape)}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("attributes must be 0 or 1")
    return a.astype(np.int64)


def _background(identity, size):
    """RGB background [size, size, 3] uint8: flat or a linear gradient."""
    c1 = np.asarray(identity["background"], dtype=np.float64)
    c2 = np.asarray(identity["background_2"], dtype=np.float64)
    kind = identity["background_gradient"]
    if kind == "none":
        return np.broadcast_to(np.rint(c1).astype(np.uint8), (size, size, 3))
    # Colours along the gradient, one per step.
    if kind == "diagonal":
        # Step k = row + column; a pixel centre's position is (k + 1) / (2 size).
        t = (np.arange(2 * size - 1, dtype=np.float64) + 1.0) / (2 * size)
    else:
        t = (np.arange(size, dtype=np.float64) + 0.5) / size
    ramp = np.rint(c1 * (1 - t[:, None]) + c2 * t[:, None]).astype(np.uint8)
    if kind == "vertical":
        return np.broadcast_to(ramp[:, None, :], (size, size, 3))
    if kind == "horizontal":
        return np.broadcast_to(ramp[None, :, :], (size, size, 3))
    index = np.arange(size)
    return ramp[index[:, None] + index[None, :]]


def _lighting(identity, image_size):
    """Per-pixel brightness factor [H, W, 1]: a soft linear light gradient."""
    ramp = (np.arange(image_size, dtype=np.float64) + 0.5) / image_size - 0.5
    factor = 1 + identity["light_x"] * ramp[None, :] + identity["light_y"] * ramp[:, None]
    return factor[..., None]


def render(identity, attributes, image_size=64):
    """
    Draw a face.

    :param identity: dict from :func:`sample_identity`.
    :param attributes: 20 values of 0/1 (ATTRIBUTE_NAMES order).
    :param image_size: output side, 32..256.
    :return: uint8 ndarray [image_size, image_size, 3].
    """
    image_size = _check_size(image_size)
    a = _check_attributes(attributes)
    size = image_size * _supersample(image_size)
    g = _Geometry(identity, size)
    canvas = Image.fromarray(np.ascontiguousarray(_background(identity, size)))
    draw = ImageDraw.Draw(canvas, "RGBA")
    for part, shape_deps, colour_deps in _PARTS:
        part(draw, g, identity, _Only(a, shape_deps + colour_deps))
    small = np.asarray(canvas.reduce(_supersample(image_size)), dtype=np.float64)
    lit = small * _lighting(identity, image_size)
    return np.clip(np.rint(lit), 0, 255).astype(np.uint8)


class _Only:
    """Read-only view of an attribute vector exposing only declared indices,
    so a part cannot depend on attributes it did not declare."""

    def __init__(self, attributes, allowed):
        self._attributes = attributes
        self._allowed = frozenset(allowed)

    def __getitem__(self, index):
        if index not in self._allowed:
            raise KeyError(f"part reads undeclared attribute {ATTRIBUTE_NAMES[index]}")
        return int(self._attributes[index])


class _CoverageDraw:
    """ImageDraw look-alike that marks every pixel a call would paint."""

    def __init__(self, image):
        self._draw = ImageDraw.Draw(image)

    @staticmethod
    def _ink(colour):
        if colour is None or (len(colour) == 4 and colour[3] == 0):
            return None
        return 255

    def __getattr__(self, name):
        method = getattr(self._draw, name)

        def call(*args, **kwargs):
            for key in ("fill", "outline"):
                if key in kwargs:
                    kwargs[key] = self._ink(kwargs[key])
            return method(*args, **kwargs)

        return call


def attribute_mask(identity, attribute_index, image_size=64):
    """
    Pixels a change of one attribute may touch, whatever the other attributes.

    :param identity: dict from :func:`sample_identity`.
    :param attribute_index: 0..19 (ATTRIBUTE_NAMES order).
    :param image_size: output side, 32..256.
    :return: bool ndarray [image_size, image_size].
    """
    image_size = _check_size(image_size)
    if not isinstance(attribute_index, (int, np.integer)) or not 0 <= attribute_index < NUM_ATTRIBUTES:
        raise ValueError(f"attribute_index must be in [0, {NUM_ATTRIBUTES - 1}], got {attribute_index!r}")
    factor = _supersample(image_size)
    size = image_size * factor
    g = _Geometry(identity, size)
    coverage = Image.new("L", (size, size), 0)
    draw = _CoverageDraw(coverage)
    for part, shape_deps, colour_deps in _PARTS:
        if attribute_index not in shape_deps + colour_deps:
            continue
        for values in itertools.product((0, 1), repeat=len(shape_deps)):
            a = np.zeros(NUM_ATTRIBUTES, dtype=np.int64)
            a[list(shape_deps)] = values
            # Colour-only attributes: any value paints the same footprint.
            part(draw, g, identity, _Only(a, shape_deps + colour_deps))
    covered = np.asarray(coverage) > 0
    return covered.reshape(image_size, factor, image_size, factor).any(axis=(1, 3))
