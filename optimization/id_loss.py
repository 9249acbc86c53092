"""Identity loss: 1 - cosine similarity of ArcFace IR-SE50 embeddings (the paper's `id_lambda` term).

`IRSE50` reproduces the module and state-dict layout of TreB1eN/InsightFace_Pytorch's
`Backbone(num_layers=50, drop_ratio=0.6, mode='ir_se')`, so the public `model_ir_se50.pth`
checkpoint (the one pSp, e4e, StyleCLIP and the paper's code use) loads into it unchanged:

    input_layer.{0: Conv 3->64 3x3, 1: BatchNorm2d, 2: PReLU}
    body.{0..23}.shortcut_layer.{0: Conv 1x1, 1: BatchNorm2d}   (only where channels change: 3, 7, 21)
    body.{0..23}.res_layer.{0: BN, 1: Conv 3x3, 2: PReLU, 3: Conv 3x3 (strided), 4: BN, 5: SE.fc1/fc2}
    output_layer.{0: BatchNorm2d(512), 1: Dropout, 2: Flatten, 3: Linear(512*7*7, 512), 4: BatchNorm1d(512)}

Input: RGB faces [N, 3, 112, 112] in [-1, 1]; output: L2-normalised embeddings [N, 512].
`IDLoss` brings an image of any size to that input the way the paper's loss does: pool to
256x256, crop the face box [35:223, 32:220], pool to 112x112.
"""
import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

# (output channels, units) per stage of the 50-layer net; each stage's first unit strides by 2.
IRSE50_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
EMBEDDING_DIM = 512
INPUT_SIZE = 112
# The paper's face crop, in pixels of a 256x256 image.
CROP_SIZE = 256
CROP_ROWS = (35, 223)
CROP_COLS = (32, 220)


class SqueezeExcite(nn.Module):
    """Channel attention: x * sigmoid(fc2(relu(fc1(mean over H, W of x)))), 1x1 convs, no bias."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x):
        scale = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))


class IRSEUnit(nn.Module):
    """Improved-residual unit with squeeze-excitation: [N, C_in, H, W] -> [N, depth, H/stride, W/stride]."""

    def __init__(self, in_channels, depth, stride):
        super().__init__()
        if in_channels == depth:
            # A 1x1 max-pool is plain strided subsampling: no parameters, as in the checkpoint.
            self.shortcut_layer = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 face embedder: [N, 3, 112, 112] in [-1, 1] -> unit vectors [N, 512]."""

    def __init__(self, drop_ratio=0.6):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
        )
        units = []
        in_channels = 64
        for depth, count in IRSE50_STAGES:
            for i in range(count):
                units.append(IRSEUnit(in_channels, depth, stride=2 if i == 0 else 1))
                in_channels = depth
        self.body = nn.Sequential(*units)
        final_size = INPUT_SIZE // 2 ** len(IRSE50_STAGES)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(in_channels * final_size * final_size, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM),
        )

    def forward(self, x):
        if x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"IR-SE50 takes [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] images; got {list(x.shape)}")
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


def _short(error):
    """First line of an exception's message, prefixed with its type."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def load_irse50_weights(model, weights_path):
    """Load the checkpoint at `weights_path` (a plain state dict, as published) into `model`.

    Keys and shapes must match exactly, except BatchNorm's `num_batches_tracked` counters, which
    checkpoints saved before PyTorch 0.4.1 lack (they play no part in evaluation).
    Raises FileNotFoundError if the file is missing, ValueError naming the file otherwise.
    """
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"IR-SE50 weights not found: {weights_path}")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{weights_path} is not a readable PyTorch checkpoint ({_short(e)})") from None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{weights_path} is not an IR-SE50 state dict (expected a dict of tensors)")

    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ValueError(f"{weights_path} does not hold IR-SE50 (ir_se, 50 layers, 112 px) weights: "
                         + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return model


class IDLoss(nn.Module):
    """Identity distance 1 - cos(f(y_hat), f(y)) per sample, f = frozen ArcFace IR-SE50.

    Images: [N, 3, H, W] in [-1, 1], any H, W. Differentiable w.r.t. y_hat; y is a fixed target.
    """

    def __init__(self, weights_path):
        super().__init__()
        self.facenet = load_irse50_weights(IRSE50(), weights_path)
        self.facenet.requires_grad_(False)
        self.train(False)

    def train(self, mode=True):
        """Always evaluation mode: the embedder is a fixed measure, its BatchNorm stats must not move."""
        return super().train(False)

    def embed(self, x):
        """[N, 3, H, W] in [-1, 1] -> [N, 512] unit embeddings of the paper's face crop."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"identity loss takes RGB images [N, 3, H, W]; got {list(x.shape)}")
        if x.shape[-2:] != (CROP_SIZE, CROP_SIZE):
            x = F.adaptive_avg_pool2d(x, CROP_SIZE)
        x = x[:, :, CROP_ROWS[0]:CROP_ROWS[1], CROP_COLS[0]:CROP_COLS[1]]
        x = F.adaptive_avg_pool2d(x, INPUT_SIZE)
        weight = self.facenet.input_layer[0].weight
        return self.facenet(x.to(weight.dtype))

    def forward(self, y_hat, y):
        """[N] identity distances in [0, 2]; 0 for the same face."""
        if y_hat.shape != y.shape:
            raise ValueError(f"identity loss compares images of one shape; got {list(y_hat.shape)} "
                             f"and {list(y.shape)}")
        with torch.no_grad():
            target = self.embed(y)
        cosine = (self.embed(y_hat) * target).sum(dim=1)
        return (1 - cosine).to(y_hat.dtype)


def load_id_loss(weights_path, device="cpu"):
    """An `IDLoss` on `device`, or None (with a one-line message) when no weights path is given.

    Raises FileNotFoundError if a path is given but missing, ValueError if it holds something else.
    """
    if not weights_path:
        print("identity loss off: no IR-SE50 weights given (--ir_se50_weights).")
        return None
    return IDLoss(weights_path).to(device)
