"""Fréchet distances: between two Gaussians, between feature samples (also when they are fewer than
the feature dimension), and FID's Inception pool3 features from a torchvision weights file on disk."""
import math
import os

import numpy as np
import torch


def gaussian_statistics(features):
    """features [N, D] (N >= 2) -> (mean [D], unbiased covariance [D, D]), float64 numpy."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D] for a mean and covariance; got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix):
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    tr((s1 s2)^(1/2)) = tr((s1^(1/2) s2 s1^(1/2))^(1/2)), the latter symmetric PSD, so both square
    roots come from symmetric eigen-decompositions (no scipy, no complex round-off).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"Fréchet distance needs means [D] and covariances [D, D] of one D; got "
                         f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * cross, 0.0))


def frechet_distance_of_features(x, y):
    """Fréchet distance between the Gaussians fitted to features x [N, D] and y [M, D] (N, M >= 2).

    With few samples (N M <= D^2: a few hundred 2048-d Inception features) no D x D matrix is formed:
    with centred features scaled by 1/sqrt(N-1), Xc and Yc, sigma_x = Xc^T Xc and sigma_y = Yc^T Yc,
    and the non-zero eigenvalues of sigma_x sigma_y are those of K K^T with K = Xc Yc^T [N, M], so
    tr((sigma_x sigma_y)^(1/2)) is the sum of the square roots of K K^T's eigenvalues.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need features [N >= 2, D] and [M >= 2, D] of one D; got {x.shape} and {y.shape}")
    (n, d), m = x.shape, len(y)
    if n * m > d * d:
        return frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))
    xc = (x - x.mean(axis=0)) / math.sqrt(n - 1)
    yc = (y - y.mean(axis=0)) / math.sqrt(m - 1)
    k = xc @ yc.T
    gram = k @ k.T if n <= m else k.T @ k
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum()
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(max(diff @ diff + (xc * xc).sum() + (yc * yc).sum() - 2 * cross, 0.0))


class InceptionPool3(torch.nn.Module):
    """torchvision inception_v3 up to its 2048-d average pool ("pool3", the FID features)."""

    def __init__(self, net):
        super().__init__()
        net.fc = torch.nn.Identity()
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x):
        """Images [N, 3, H, W] in [-1, 1] -> features [N, 2048] (float64, CPU).

        The Google-trained weights expect [-1, 1] input at 299 px, so no ImageNet normalisation.
        """
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x).double().cpu()


def load_inception(path, device="cpu"):
    """InceptionPool3 from a torchvision inception_v3 state dict on disk (nothing is downloaded)."""
    import torchvision

    if not os.path.isfile(path):
        raise FileNotFoundError(f"inception weights not found: {path} (--inception_weights)")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read inception weights {path}: {type(err).__name__}: {err}") from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or "Mixed_7c.branch_pool.conv.weight" not in state_dict:
        raise ValueError(f"{path} is not a torchvision inception_v3 state dict")
    aux = any(k.startswith("AuxLogits.") for k in state_dict)
    net = torchvision.models.Inception3(aux_logits=aux, transform_input=False, init_weights=False)
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match torchvision's inception_v3: {str(err).splitlines()[0]}") from None
    return InceptionPool3(net).to(device)
