"""Measures of a diffusion model's samples against held-out synthetic faces (scripts/evaluate_samples.py).

Every measure is also computed for real faces of other people against the same reference, the
floor a perfect generator would reach with the same number of images.
"""
import numpy as np
import torch

from optimization.fid import frechet_distance_of_features
from preprocess.attributes import EDITABLE_ATTRIBUTES
from preprocess.synthetic_faces import example_face, render


def wasserstein_1d(a, b):
    """1-D Wasserstein-1 distance between the empirical distributions of samples a [N] and b [M].

    The integral of |F_a - F_b| over the merged support (exact for any N, M)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if a.ndim != 1 or b.ndim != 1 or not len(a) or not len(b):
        raise ValueError(f"need two non-empty 1-D samples, got shapes {a.shape} and {b.shape}")
    support = np.concatenate([a, b])
    support.sort()
    cdf_a = np.searchsorted(a, support[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, support[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(support)))


def channel_mean_w1(x, y):
    """Mean over R, G, B of the W1 distance between per-image channel means (pixels in [0, 1]) of
    images x [N, 3, H, W] and y [M, 3, H, W] given in [-1, 1]."""
    mx = ((x.double() + 1) / 2).mean(dim=(2, 3)).numpy()
    my = ((y.double() + 1) / 2).mean(dim=(2, 3)).numpy()
    return float(np.mean([wasserstein_1d(mx[:, c], my[:, c]) for c in range(3)]))


def conditioning_accuracy(probs, attributes):
    """Per-attribute accuracy [A] of probabilities [N, A] read against 0/1 attributes [N, A]."""
    return ((probs > 0.5).float() == attributes.float()).float().mean(dim=0)


class SampleMetrics:
    """The evaluation classifier's readings of images, and the measures built on them.

    :param classifier: preprocess.classifier.AttributeClassifier (images in [-1, 1] -> [N, 20]).
    """

    def __init__(self, classifier, image_size, device="cpu", batch_size=250):
        self.classifier = classifier
        self.image_size = image_size
        self.device = device
        self.batch_size = batch_size

    def held_out_faces(self, seed, n):
        """Faces 0..n-1 of synthetic seed `seed` (CelebA-like attribute statistics): images
        [n, 3, S, S] in [-1, 1] and their attributes [n, 20] (float)."""
        images, attributes = [], []
        for i in range(n):
            identity, a = example_face(seed, i)
            images.append(torch.from_numpy(render(identity, a, self.image_size)).permute(2, 0, 1))
            attributes.append(torch.as_tensor(a, dtype=torch.float32))
        return torch.stack(images).float() / 127.5 - 1, torch.stack(attributes)

    @torch.no_grad()
    def read(self, images):
        """(features [N, D] float64 numpy, probabilities [N, 20]) of images [N, 3, H, W] in [-1, 1]."""
        features, probs = [], []
        c = self.classifier
        for begin in range(0, len(images), self.batch_size):
            x = images[begin:begin + self.batch_size].to(self.device, next(c.parameters()).dtype)
            feature = c.feature_activation(c.base_model(c.prepare(x)))
            features.append(feature.double().cpu())
            probs.append(torch.sigmoid(c.classify_headers(feature)).float().cpu())
        return torch.cat(features).numpy(), torch.cat(probs)

    def compare(self, samples, attributes, reference, floor, floor_attributes):
        """The measures of samples (conditioned on `attributes`) and of the floor faces, both against
        the reference faces: fd, conditioning accuracy (all 20 and editable), color_w1."""
        ref_features, _ = self.read(reference)
        out = {}
        for suffix, images, target in (("", samples, attributes), ("_floor", floor, floor_attributes)):
            features, probs = self.read(images)
            accuracy = conditioning_accuracy(probs, target)
            out[f"fd{suffix}"] = frechet_distance_of_features(features, ref_features)
            out[f"conditioning_accuracy{suffix}"] = float(accuracy.mean())
            out[f"conditioning_accuracy_editable{suffix}"] = float(accuracy[list(EDITABLE_ATTRIBUTES)].mean())
            out[f"per_attribute_accuracy{suffix}"] = {str(i): round(float(v), 4) for i, v in enumerate(accuracy)}
            out[f"color_w1{suffix}"] = channel_mean_w1(images, reference)
        return out
