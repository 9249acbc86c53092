"""
Face-identity networks for the synthetic faces: the `id_lambda` term of the editor and the
identity-preservation score of the benchmark.

The paper's identity term compares ArcFace IR-SE50 embeddings (trained on real people with an
additive angular margin loss). The synthetic world has its own people, so it gets its own
network of the same kind, trained the same way (`preprocess/identity_train.py`): one class per
rendered person, its samples that person under independently drawn attributes, pose, lighting,
background and clothes, so that the embedding sees the person and ignores the rest.

What it sees: like ArcFace's aligned face crop, the central square of the image (rows and columns
from 1/8 to 7/8 of the side: the face, the hairline, a little background at the sides), resized to
`input_size`. Not the whole image: background and clothes belong to the renderer's identity
record but not to the person, and an editor must not be rewarded for keeping the wall behind a
face while it redraws the face.

    IdentityNet: images [N, 3, H, W] in [-1, 1] -> unit embeddings [N, embedding_dim]
    IdentityLoss: (y_hat, y) -> [N] distances 1 - cos, differentiable w.r.t. y_hat

Checkpoints: {"state_dict", "opts", "kind": "identity", ...}; `opts` are the constructor's
arguments, so `load_identity_net` needs no flags.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

CHECKPOINT_KIND = "identity"
OPTION_NAMES = ("widths", "embedding_dim", "input_size", "crop", "dropout")


class SqueezeExcite(nn.Module):
    """Channel attention, as in IR-SE: x * sigmoid(fc2(relu(fc1(mean over H, W of x))))."""

    def __init__(self, channels, reduction=8):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, max(1, channels // reduction), kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(max(1, channels // reduction), channels, kernel_size=1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class IRBlock(nn.Module):
    """Improved residual unit (BN-conv-PReLU-conv-BN-SE) + shortcut: [N, C_in, H, W] -> [N, C, H/s, W/s]."""

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            SqueezeExcite(channels),
        )
        if in_channels == channels and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class IdentityNet(nn.Module):
    """
    A small IR-SE face embedder (ArcFace's trunk, scaled to 48-pixel synthetic faces).

    :param widths: channels of the four stages (two units each); the stem and stages 2-4 halve the resolution.
    :param embedding_dim: size of the embedding.
    :param input_size: side of the face crop the trunk sees (a multiple of 16).
    :param crop: (start, stop) of the crop, as fractions of the image side (rows and columns).
    :param dropout: before the embedding layer (training only). Off by default: dropout before the
        final BatchNorm1d makes its running statistics differ from evaluation-time inputs, and the
        layer's bias then dominates every embedding (cosines of different people near 0.9).
    """

    def __init__(self, widths=(32, 64, 128, 128), embedding_dim=128, input_size=48, crop=(0.125, 0.875),
                 dropout=0.0):
        super().__init__()
        widths, crop = tuple(int(w) for w in widths), tuple(float(c) for c in crop)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be four positive integers, got {widths}")
        if input_size < 16 or input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        if not 0.0 <= crop[0] < crop[1] <= 1.0:
            raise ValueError(f"crop must be 0 <= start < stop <= 1, got {crop}")
        self.opts = dict(widths=list(widths), embedding_dim=int(embedding_dim), input_size=int(input_size),
                         crop=list(crop), dropout=float(dropout))
        self.input_size, self.crop = input_size, crop
        # The stem halves the resolution (at full resolution a stage costs as much as the rest).
        self.input_layer = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                         nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        blocks, in_channels = [], widths[0]
        for stage, channels in enumerate(widths):
            blocks += [IRBlock(in_channels, channels, stride=1 if stage == 0 else 2),
                       IRBlock(channels, channels, stride=1)]
            in_channels = channels
        self.body = nn.Sequential(*blocks)
        final = input_size // 16  # stem and three stages halve it
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(in_channels * final * final, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def prepare(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> face crops [N, 3, input_size, input_size]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the identity network takes RGB images [N, 3, H, W]; got {list(x.shape)}")
        height, width = x.shape[-2:]
        rows = slice(round(self.crop[0] * height), round(self.crop[1] * height))
        cols = slice(round(self.crop[0] * width), round(self.crop[1] * width))
        x = x[:, :, rows, cols]
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def features(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> embeddings before normalisation [N, embedding_dim]."""
        x = self.prepare(x).to(self.input_layer[0].weight.dtype)
        return self.output_layer(self.body(self.input_layer(x)))

    def forward(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> unit embeddings [N, embedding_dim] (float32)."""
        return F.normalize(self.features(x).float(), dim=1)


class ArcMarginHead(nn.Module):
    """
    ArcFace's additive angular margin classifier (Deng et al. 2019): logits
    s * cos(theta_y + m) for the true class, s * cos(theta_j) for the others, theta the angle
    between the normalised embedding and the normalised class weight. Used in training only.
    """

    def __init__(self, embedding_dim, num_classes, scale=32.0, margin=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.scale, self.margin = float(scale), float(margin)

    def forward(self, embeddings, labels, margin=None):
        """embeddings [N, D] (unit), labels [N] long -> logits [N, num_classes]."""
        m = self.margin if margin is None else float(margin)
        cosine = F.linear(embeddings, F.normalize(self.weight, dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        # cos(theta + m), continued below theta = pi - m by a decreasing line (ArcFace's "easy" fix):
        # the target logit keeps falling with the angle, so no sample can gain by moving away.
        sin = (1 - target ** 2).sqrt()
        with_margin = target * torch.cos(torch.tensor(m)) - sin * torch.sin(torch.tensor(m))
        threshold = torch.cos(torch.tensor(torch.pi - m))
        with_margin = torch.where(target > threshold, with_margin, target - torch.sin(torch.tensor(torch.pi - m)) * m)
        return self.scale * cosine.scatter(1, labels[:, None], with_margin)


def read_identity_checkpoint(path):
    """The dict of an identity checkpoint; FileNotFoundError / ValueError (naming the file) otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"identity network not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read identity network {path}: {type(err).__name__}: {str(err)[:80]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not an identity-network checkpoint (made by preprocess/identity_train.py)")
    return checkpoint


def load_identity_net(path, device="cpu"):
    """An `IdentityNet` from a checkpoint, frozen, in eval mode, in float32 on `device`."""
    checkpoint = read_identity_checkpoint(path)
    opts = {k: checkpoint["opts"][k] for k in OPTION_NAMES}
    model = IdentityNet(**opts)
    try:
        model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()})
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the identity network its opts describe "
                         f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval().requires_grad_(False)


class IdentityLoss(nn.Module):
    """Identity distance 1 - cos(f(y_hat), f(y)) per sample, f a frozen `IdentityNet`.

    Images [N, 3, H, W] in [-1, 1]; differentiable w.r.t. y_hat; y is a fixed target.
    The same interface as `optimization.id_loss.IDLoss` (the paper's IR-SE50)."""

    def __init__(self, network):
        super().__init__()
        self.facenet = network.eval().requires_grad_(False)

    def train(self, mode=True):
        """Always evaluation mode: the embedder is a fixed measure."""
        return super().train(False)

    def embed(self, x):
        return self.facenet(x)

    def forward(self, y_hat, y):
        """[N] identity distances in [0, 2]; 0 for the same face."""
        if y_hat.shape != y.shape:
            raise ValueError(f"identity loss compares images of one shape; got {list(y_hat.shape)} "
                             f"and {list(y.shape)}")
        with torch.no_grad():
            target = self.embed(y)
        return (1 - (self.embed(y_hat) * target).sum(dim=1)).to(y_hat.dtype)
