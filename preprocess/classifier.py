"""
The multi-attribute face classifier C(x) that guides the editor.

Structure (the paper's): a torchvision ResNet trunk whose output is a
`feature_dim` feature, a GELU, then one small two-layer head per attribute,
each ending in a sigmoid. The trunk's fc maps straight to the feature
(`trunk_fc_dim=0`, this project's classifiers) or, as in the paper's released
classifier, keeps an N-way fc followed by a GELU and Linear(N, feature_dim)
(`trunk_fc_dim=N`). Images come in the diffusion model's range [-1, 1] at any
resolution; the model resizes them to `input_size` and normalises them itself,
so the editor can back-propagate from the probabilities to the pixels.

State-dict layout ("project"):
    base_model.model.<torchvision resnet keys>            (fc: Linear(trunk, trunk_fc_dim or feature_dim))
    base_model.projection.{weight,bias}                   (only with trunk_fc_dim: Linear(trunk_fc_dim, feature_dim))
    classify_headers.classify_headers.<i>.0.{weight,bias}  Linear(feature_dim, head_hidden_dim)
    classify_headers.classify_headers.<i>.3.{weight,bias}  Linear(head_hidden_dim, 1)
(indices 1 and 2 of each head are GELU and Dropout, as in the paper's heads).

Checkpoints: the project writes {"state_dict", "opts", ...} with `opts` from
AttributeClassifier.opts. The paper's training code (gongshuai1/CycleDiff,
preprocess/coach.py) wrote {"state_dict", "opts"} from a
DistributedDataParallel model: keys carry a "module." prefix and opts hold
training flags, not the architecture, so `load_classifier` reads arch, widths
and attribute count off the weights and uses the paper's input handling
(torchvision's Resize(224) of the raw [-1, 1] image, no ImageNet
normalisation). Two paper layouts are read, one per published version of
coach.py:
- "paper", the released version (the one the paper's editor loads):
  `ImageEncoder.model = ModuleList([Resize(224), resnet18, GELU,
  Linear(1000, 256), GELU])` and one `FeedForward.net = Sequential(Linear(256,
  128), GELU, Dropout, Linear(128, 1), Sigmoid)` per attribute, so the keys
  are module.base_model.model.1.<resnet18 keys, its own 1000-way fc>,
  module.base_model.model.3.{weight,bias} and
  module.classify_headers.classify_headers.<i>.net.{0,3}.{weight,bias}.
  It loads as trunk_fc_dim=1000, feature_dim=256, head_hidden_dim=128.
- "paper-early", the first published version: module.base_model.* (a bare
  torchvision ResNet, 1000-way fc) and module.classify_headers.<i>.net.<layer>.*
  with FeedForward(1000, 768) heads reading the fc output directly (no GELU).
"""

import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# The names and choices live in the torch-free preprocess.classifier_options (the training script
# checks its flags with them before importing torch).
from preprocess.classifier_options import (ARCHITECTURE_NAMES, FEATURE_ACTIVATIONS,  # noqa: E402,F401
                                           INPUT_NORMALIZATIONS, THREE_STAGE_SUFFIX)

# "<arch>_3stage": the same trunk without its last stage (layer4 holds 3/4 of resnet18's weights
# but, at 64 px, sees only a 2x2 map): small enough to ship two classifiers in the 40 MB budget.
ARCHITECTURES = {name: getattr(torchvision.models, name.removesuffix(THREE_STAGE_SUFFIX)) for name in ARCHITECTURE_NAMES}
# Blocks per stage and block type identify the architecture from its weights.
_ARCH_SIGNATURES = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((2, 2, 2, 0), False): "resnet18_3stage",
    ((3, 4, 6, 0), False): "resnet34_3stage",
    ((3, 4, 6, 0), True): "resnet50_3stage",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Constructor arguments, stored as a checkpoint's "opts".
OPTION_NAMES = (
    "arch",
    "num_attributes",
    "feature_dim",
    "input_size",
    "head_hidden_dim",
    "dropout",
    "input_normalization",
    "feature_activation",
    "trunk_fc_dim",
    "logit_temperature",
)
# Options added after checkpoints were written without them: the value those checkpoints mean.
OPTION_DEFAULTS = {"trunk_fc_dim": 0, "logit_temperature": 1.0}
# Settings the paper's classifier was trained with, used for its checkpoints.
PAPER_INPUT_SIZE = 224
PAPER_INPUT_NORMALIZATION = "none"


class ResNetTrunk(nn.Module):
    """
    A torchvision ResNet (random init) giving a `feature_dim` feature: its fc
    layer outputs the feature (fc_dim=0), or outputs fc_dim values followed by
    a GELU and `projection`, Linear(fc_dim, feature_dim) (the paper's released
    ImageEncoder: resnet18 with its 1000-way fc, GELU, Linear(1000, 256)).
    """

    def __init__(self, arch, feature_dim, fc_dim=0):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
        self.model = ARCHITECTURES[arch](weights=None)
        in_features = self.model.fc.in_features
        if arch.endswith(THREE_STAGE_SUFFIX):
            in_features //= 2  # layer4 doubles the width in every torchvision ResNet
            self.model.layer4 = nn.Identity()
        self.model.fc = nn.Linear(in_features, fc_dim or feature_dim)
        self.projection = nn.Linear(fc_dim, feature_dim) if fc_dim else None

    def forward(self, x):
        """x: normalised images [N, 3, S, S] -> features [N, feature_dim]."""
        x = self.model(x)
        return x if self.projection is None else self.projection(F.gelu(x))


class AttributeHeads(nn.Module):
    """One Linear-GELU-Dropout-Linear head per attribute, each giving one logit."""

    def __init__(self, num_attributes, feature_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.classify_headers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(feature_dim, hidden_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, 1),
            )
            for _ in range(num_attributes)
        )

    def forward(self, feature):
        """feature [N, feature_dim] -> logits [N, num_attributes]."""
        return torch.cat([head(feature) for head in self.classify_headers], dim=1)


class AttributeClassifier(nn.Module):
    """
    Multi-attribute classifier: images in [-1, 1] -> per-attribute probabilities.

    :param arch: "resnet18", "resnet34" or "resnet50" (torchvision, never downloaded).
    :param num_attributes: number of binary attributes (20 in this project).
    :param feature_dim: width of the trunk's output feature.
    :param input_size: side the input is resized to before the trunk.
    :param head_hidden_dim: hidden width of each attribute head.
    :param dropout: dropout inside the heads (training only).
    :param input_normalization: "imagenet" (mean/std of torchvision weights) or
        "none" (the trunk sees [-1, 1] directly, as the paper's classifier did).
    :param feature_activation: "gelu" between feature and heads, or "none"
        (for checkpoints of the first published coach.py).
    :param trunk_fc_dim: 0 (the ResNet's fc outputs the feature) or N (the
        ResNet keeps an N-way fc, then GELU and Linear(N, feature_dim), as in
        the paper's released classifier, N = 1000).
    :param logit_temperature: the heads' logits are divided by it (1: as trained). Above 1 the
        probabilities saturate later, so the editor's attribute term, whose gradient vanishes as
        p -> 1, keeps pushing until the edit is plain; a decision (p > 0.5) never changes.
    """

    def __init__(
        self,
        arch="resnet18",
        num_attributes=20,
        feature_dim=256,
        input_size=PAPER_INPUT_SIZE,
        head_hidden_dim=256,
        dropout=0.0,
        input_normalization="imagenet",
        feature_activation="gelu",
        trunk_fc_dim=0,
        logit_temperature=1.0,
    ):
        super().__init__()
        for name, value in (
            ("num_attributes", num_attributes),
            ("feature_dim", feature_dim),
            ("input_size", input_size),
            ("head_hidden_dim", head_hidden_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(trunk_fc_dim, int) or trunk_fc_dim < 0:
            raise ValueError(f"trunk_fc_dim must be an integer >= 0, got {trunk_fc_dim!r}")
        if not isinstance(logit_temperature, (int, float)) or not logit_temperature > 0:
            raise ValueError(f"logit_temperature must be a number > 0, got {logit_temperature!r}")
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32 (the ResNet downsamples 32x), got {input_size}")
        if input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(
                f"input_normalization must be one of {INPUT_NORMALIZATIONS}, got {input_normalization!r}"
            )
        if feature_activation not in FEATURE_ACTIVATIONS:
            raise ValueError(
                f"feature_activation must be one of {FEATURE_ACTIVATIONS}, got {feature_activation!r}"
            )
        self.opts = dict(
            arch=arch,
            num_attributes=num_attributes,
            feature_dim=feature_dim,
            input_size=input_size,
            head_hidden_dim=head_hidden_dim,
            dropout=dropout,
            input_normalization=input_normalization,
            feature_activation=feature_activation,
            trunk_fc_dim=trunk_fc_dim,
            logit_temperature=float(logit_temperature),
        )
        self.num_attributes = num_attributes
        self.input_size = input_size
        self.feature_activation = nn.GELU() if feature_activation == "gelu" else nn.Identity()
        self.base_model = ResNetTrunk(arch, feature_dim, trunk_fc_dim)
        self.classify_headers = AttributeHeads(num_attributes, feature_dim, head_hidden_dim, dropout)
        if input_normalization == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:
            mean, std = torch.full((3,), 0.5), torch.full((3,), 0.5)
        # x in [-1, 1] -> ((x + 1) / 2 - mean) / std == x * scale + shift.
        # Non-persistent: they follow the options, not the checkpoint.
        self.register_buffer("input_scale", (0.5 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((0.5 - mean) / std).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> trunk input [N, 3, input_size, input_size]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"classifier expects images [N, 3, H, W], got shape {tuple(x.shape)}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True
            )
        return x * self.input_scale + self.input_shift

    @property
    def logit_temperature(self):
        """The divisor of the heads' logits, as the checkpoint's opts store it."""
        return self.opts["logit_temperature"]

    def logits(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> attribute logits [N, num_attributes]."""
        feature = self.feature_activation(self.base_model(self.prepare(x)))
        return self.classify_headers(feature) / self.logit_temperature

    def forward(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> attribute probabilities [N, num_attributes]."""
        return torch.sigmoid(self.logits(x))

    def load_pretrained_trunk(self, path):
        """
        Initialise the trunk from a torchvision ResNet state dict on disk (e.g.
        ImageNet weights); its 1000-way fc is skipped. Nothing is downloaded.
        """
        state_dict = _read_torch_file(path, "pretrained trunk weights")
        if isinstance(state_dict, dict) and "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
        if not isinstance(state_dict, dict):
            raise ValueError(f"{path}: expected a torchvision ResNet state dict")
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        expected = {k for k in self.base_model.model.state_dict() if not k.startswith("fc.")}
        _check_keys(path, state_dict, expected, f"a torchvision {self.opts['arch']} state dict")
        _check_shapes(path, state_dict, self.base_model.model.state_dict())
        self.base_model.model.load_state_dict(state_dict, strict=False)


def _read_torch_file(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read {what} {path}: {type(err).__name__}: {err}") from None


def _check_keys(path, state_dict, expected, what):
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise ValueError(f"{path} does not match {what}: " + ", ".join(details))


def _check_shapes(path, state_dict, reference):
    for key, value in state_dict.items():
        if key in reference and tuple(value.shape) != tuple(reference[key].shape):
            raise ValueError(
                f"{path}: weight {key} has shape {tuple(value.shape)}, the model expects {tuple(reference[key].shape)}"
            )


_PAPER_HEAD_KEY = re.compile(r"^classify_headers\.(?:classify_headers\.)?(\d+)\.net\.(\d+)\.(weight|bias)$")
_RELEASED_TRUNK = "base_model.model.1."  # ImageEncoder.model[1]: the resnet18
_RELEASED_PROJECTION = "base_model.model.3."  # ImageEncoder.model[3]: Linear(1000, 256)


def checkpoint_layout(state_dict):
    """"project", "paper" or "paper-early" (see the module docstring), from the keys."""
    if any(k.startswith("module." + _RELEASED_TRUNK) for k in state_dict):
        return "paper"
    if any(k.startswith("module.base_model.") for k in state_dict):
        return "paper-early"
    return "project"


def to_project_keys(state_dict):
    """Map a state dict in either paper layout to this module's keys; project keys pass unchanged."""
    layout = checkpoint_layout(state_dict)
    if layout == "project":
        return dict(state_dict)
    converted = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if layout == "paper":
            if key.startswith(_RELEASED_TRUNK):
                key = "base_model.model." + key[len(_RELEASED_TRUNK):]
            elif key.startswith(_RELEASED_PROJECTION):
                key = "base_model.projection." + key[len(_RELEASED_PROJECTION):]
        elif key.startswith("base_model."):
            key = "base_model.model." + key[len("base_model."):]
        match = _PAPER_HEAD_KEY.match(key)
        if match:
            key = "classify_headers.classify_headers.{}.{}.{}".format(*match.groups())
        converted[key] = value
    return converted


def infer_architecture(state_dict):
    """
    Read the architecture off project-layout weights: dict(arch,
    num_attributes, feature_dim, head_hidden_dim, trunk_fc_dim). ValueError if
    the weights are not an attribute classifier's.
    """
    trunk_prefix = "base_model.model."
    if f"{trunk_prefix}conv1.weight" not in state_dict or f"{trunk_prefix}fc.weight" not in state_dict:
        raise ValueError("weights have no ResNet trunk under base_model.model (not an attribute classifier)")
    blocks = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^{re.escape(trunk_prefix)}layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for m in map(pattern.match, state_dict) if m}
        blocks.append(len(indices))
    bottleneck = f"{trunk_prefix}layer1.0.conv3.weight" in state_dict
    arch = _ARCH_SIGNATURES.get((tuple(blocks), bottleneck))
    if arch is None:
        raise ValueError(f"unsupported ResNet trunk: blocks per stage {blocks}, bottleneck={bottleneck}")
    heads = sorted(
        {int(m.group(1)) for m in map(re.compile(r"^classify_headers\.classify_headers\.(\d+)\.").match, state_dict) if m}
    )
    if not heads or heads != list(range(len(heads))):
        raise ValueError("weights have no attribute heads under classify_headers.classify_headers")
    first_layer = state_dict["classify_headers.classify_headers.0.0.weight"]
    fc_dim = int(state_dict[f"{trunk_prefix}fc.weight"].shape[0])
    projection = state_dict.get("base_model.projection.weight")
    return dict(
        arch=arch,
        num_attributes=len(heads),
        feature_dim=fc_dim if projection is None else int(projection.shape[0]),
        head_hidden_dim=int(first_layer.shape[0]),
        trunk_fc_dim=0 if projection is None else fc_dim,
    )


def load_classifier(path, device="cpu", arch=None, num_attributes=None):
    """
    Load a classifier checkpoint (project or paper layout), frozen, in eval mode.

    :param path: checkpoint file: {"state_dict", "opts", ...}.
    :param arch, num_attributes: if given, what the caller needs; a checkpoint
        for anything else raises ValueError naming both.
    :return: AttributeClassifier on `device`, eval mode, requires_grad off
        (gradients still flow to its input).
    """
    checkpoint = _read_torch_file(path, "classifier checkpoint")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} is not a classifier checkpoint (no 'state_dict' entry)")
    layout = checkpoint_layout(checkpoint["state_dict"])
    state_dict = to_project_keys(checkpoint["state_dict"])
    try:
        found = infer_architecture(state_dict)
    except ValueError as err:
        where = "" if layout == "project" else f" (read as the {layout} layout)"
        raise ValueError(f"{path}: {err}{where}") from None
    opts = checkpoint.get("opts") or {}
    if layout == "project":
        model_opts = {k: opts[k] for k in OPTION_NAMES if k in opts}
        for key, value in found.items():
            if model_opts.get(key, OPTION_DEFAULTS.get(key)) != value:
                raise ValueError(
                    f"{path}: its opts say {key}={model_opts.get(key)!r} but its weights are {key}={value!r}"
                )
    else:
        model_opts = dict(
            found,
            input_size=int(opts.get("input_size", PAPER_INPUT_SIZE)),
            input_normalization=PAPER_INPUT_NORMALIZATION,
            feature_activation="gelu" if layout == "paper" else "none",
        )
    for key, wanted in (("arch", arch), ("num_attributes", num_attributes)):
        if wanted is not None and model_opts[key] != wanted:
            raise ValueError(f"{path} is a classifier with {key}={model_opts[key]!r}, expected {key}={wanted!r}")
    model = AttributeClassifier(**model_opts)
    _check_keys(path, state_dict, set(model.state_dict()), f"an attribute classifier ({model_opts['arch']})")
    _check_shapes(path, state_dict, model.state_dict())
    model.load_state_dict(state_dict)
    return model.to(device).eval().requires_grad_(False)
