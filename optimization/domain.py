"""Does an input look like the faces the models were trained on?

The shipped models know one kind of face: the project's synthetic faces (64 px, seed 0). Given a
real photo, they still return an edit, and their classifier still reads attributes from it, so the
report would look like any other. This module measures how far an input is from the training
faces, so that the editor can say so.

The signal: the guidance classifier's mid-level features — the channel means of its second ResNet
stage (`layer2`, 128 values for a ResNet-18), which describe colour and texture — scored by their
Mahalanobis distance (covariance shrunk towards its mean variance, divided by the feature count)
from the same features of training faces, rendered on the fly. The threshold is a margin
(THRESHOLD_MARGIN) above a high percentile (THRESHOLD_PERCENTILE) of held-out faces' scores
(other people: seed 1000 for the training seed 0).

Why not the classifier's penultimate features: they are trained to be invariant to everything but
the attributes, and a photo reads like a face there. Measured with the shipped guidance classifier
(`scripts/measure_domain_check.py`: 256 training faces fit the statistics, 512 held-out faces set
the threshold; 128 real images: matplotlib's two sample photos, scikit-image's 26 sample images and
its 100 LFW faces): the layer-2 means flag all 128 (lowest score 2.96 against a threshold of 2.51;
Grace Hopper's photo 16.5) and 2 of 800 further held-out synthetic faces; the penultimate features,
scored the same way, flag 4 of the 128 and none of the 102 real faces (Grace Hopper 0.60 against
1.36).

The statistics depend on the classifier and the image size only: they are computed once (768 faces
rendered and read: about 20 s on 2 CPU cores) and cached (`cache_dir()`), keyed by the classifier file's
content.
"""
import hashlib
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

# Bump when the features, the score or the threshold rule change: cached statistics are then recomputed.
METHOD_VERSION = 1
FEATURE = "layer2_channel_means"
SHRINKAGE = 0.05             # covariance -> (1 - s) cov + s * mean variance * I
THRESHOLD_PERCENTILE = 99.0  # of the held-out faces' scores ...
THRESHOLD_MARGIN = 1.25      # ... times this
NUM_FIT = 256                # training faces the statistics are fitted on (half each attribute sampling)
NUM_HELDOUT = 512            # held-out faces the threshold is read from
DEFAULT_REFERENCE = "synthetic:0"
# The shipped models saw seed 0's people with both attribute samplings (checkpoints/README.md).
SYNTHETIC_SAMPLINGS = ("celeba", "independent")
HELDOUT_SEED_OFFSET = 1000   # synthetic:S is held out by synthetic:S+1000 (seed 0 -> 1000, the evaluation's)


def cache_dir():
    """Where computed reference statistics are kept: $CYCLEDIFF_CACHE_DIR, else
    $XDG_CACHE_HOME/cyclediff/domain, else ~/.cache/cyclediff/domain."""
    if os.environ.get("CYCLEDIFF_CACHE_DIR"):
        return os.environ["CYCLEDIFF_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cyclediff", "domain")


def penultimate_features(classifier, x):
    """The classifier's penultimate features [N, D] (what its attribute heads read; for comparison)."""
    with torch.no_grad():
        p = next(classifier.parameters())
        return classifier.feature_activation(classifier.base_model(classifier.prepare(x.to(p.device, p.dtype)))
                                             ).double().cpu()


def classifier_features(classifier, x):
    """Layer-2 channel means [N, C] of images x [N, 3, H, W] in [-1, 1] (no gradient)."""
    trunk = classifier.base_model.model
    with torch.no_grad():
        p = next(classifier.parameters())
        h = classifier.prepare(x.to(p.device, p.dtype))
        h = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(h))))
        h = trunk.layer2(trunk.layer1(h))
        return h.mean(dim=(2, 3)).double().cpu()


def parse_reference(spec):
    """('synthetic', seed) | ('folder', path) | None for 'none'; ValueError for a bad spec."""
    from .cli_checks import parse_domain_reference

    return parse_domain_reference(spec)


def _resize(array, image_size):
    if array.shape[0] == image_size:
        return array
    return np.array(Image.fromarray(array).resize((image_size, image_size), Image.LANCZOS))


def reference_images(spec, image_size, count, held_out=False):
    """`count` images [count, 3, S, S] in [-1, 1] of the reference (or of its held-out part).

    synthetic:SEED: faces of seed SEED (held out: SEED + 1000), half with CelebA-like attributes,
    half with independent ones, rendered at the model's size (at 32 px and shrunk below it). A
    folder: its numbered images, the first `count` (held out: the next ones)."""
    from .image_io import load_image_file, to_tensor

    kind, where = parse_reference(spec)
    if kind == "synthetic":
        from preprocess.synthetic_faces import example_face, render

        seed = where + (HELDOUT_SEED_OFFSET if held_out else 0)
        out = []
        for i in range(count):
            sampling = SYNTHETIC_SAMPLINGS[i % len(SYNTHETIC_SAMPLINGS)]
            identity, attributes = example_face(seed, i // len(SYNTHETIC_SAMPLINGS), sampling)
            out.append(to_tensor(_resize(render(identity, attributes, max(32, image_size)), image_size)))
        return torch.cat(out)
    from guided_diffusion.image_files import list_image_files

    paths = list_image_files(where)
    start = count if held_out else 0
    if len(paths) < start + count:
        raise ValueError(f"--domain_reference {where} has {len(paths)} images; the domain check needs "
                         f"{NUM_FIT + NUM_HELDOUT} (the first {NUM_FIT} fit it, the next {NUM_HELDOUT} set "
                         f"its threshold)")
    return torch.cat([load_image_file(p, image_size) for p in paths[start:start + count]])


@dataclass
class DomainReference:
    """Statistics of the reference faces' features and the score above which an input is out of domain."""

    mean: torch.Tensor          # [C]
    precision: torch.Tensor     # [C, C]: inverse of the shrunk covariance
    threshold: float
    reference: str
    image_size: int
    heldout_percentile: float   # the percentile THRESHOLD_PERCENTILE of the held-out scores
    heldout_max: float
    num_fit: int
    num_heldout: int
    version: int = METHOD_VERSION

    def score(self, classifier, x, features_fn=classifier_features):
        """Out-of-domain score [N] of images x (about 0.5-1 for faces like the reference's)."""
        f = features_fn(classifier, x) - self.mean
        return ((f @ self.precision) * f).sum(dim=1) / f.shape[1]

    def check(self, classifier, x):
        """One dict per image: out_of_domain, score, threshold, reference, feature."""
        return [dict(out_of_domain=bool(s > self.threshold), score=round(float(s), 3),
                     threshold=round(self.threshold, 3), reference=self.reference, feature=FEATURE)
                for s in self.score(classifier, x)]


def fit_reference(classifier, image_size, reference=DEFAULT_REFERENCE, num_fit=NUM_FIT, num_heldout=NUM_HELDOUT,
                  batch_size=64, features_fn=classifier_features):
    """Fit the statistics on `num_fit` reference faces and the threshold on `num_heldout` held-out ones
    (`features_fn`: another feature, for comparisons; `DomainReference.score` must then be given it too)."""

    def features(images):
        return torch.cat([features_fn(classifier, images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])

    fit = features(reference_images(reference, image_size, num_fit))
    mean = fit.mean(dim=0)
    centred = fit - mean
    cov = centred.T @ centred / max(1, len(fit) - 1)
    shrunk = (1 - SHRINKAGE) * cov + SHRINKAGE * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
    ref = DomainReference(mean=mean, precision=torch.linalg.inv(shrunk), threshold=float("inf"),
                          reference=str(reference), image_size=int(image_size), heldout_percentile=float("nan"),
                          heldout_max=float("nan"), num_fit=len(fit), num_heldout=num_heldout)
    held = reference_images(reference, image_size, num_heldout, held_out=True)
    scores = torch.cat([ref.score(classifier, held[i:i + batch_size], features_fn)
                        for i in range(0, len(held), batch_size)])
    ref.heldout_percentile = float(torch.quantile(scores, THRESHOLD_PERCENTILE / 100))
    ref.heldout_max = float(scores.max())
    ref.threshold = THRESHOLD_MARGIN * ref.heldout_percentile
    return ref


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_or_fit_reference(classifier, classifier_path, image_size, reference=DEFAULT_REFERENCE, log=print):
    """The reference of (classifier file, image size, reference) from the cache, or fitted and cached."""
    spec = str(reference).strip()
    tag = "".join(c if c.isalnum() else "_" for c in (spec if parse_reference(spec)[0] == "synthetic"
                                                       else os.path.abspath(spec)))[-60:]
    name = f"{_file_digest(classifier_path)}_{image_size}px_{tag}_{NUM_FIT}_{NUM_HELDOUT}_v{METHOD_VERSION}.pt"
    path = os.path.join(cache_dir(), name)
    if os.path.isfile(path):
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            return DomainReference(**stored)
        except Exception:  # a damaged cache file is recomputed
            pass
    log(f"domain check: reading {NUM_FIT + NUM_HELDOUT} faces of {spec} once (cached in {cache_dir()})")
    ref = fit_reference(classifier, image_size, spec, num_fit=NUM_FIT, num_heldout=NUM_HELDOUT)
    try:
        from guided_diffusion.atomic import atomic_torch_save

        atomic_torch_save(asdict(ref), path)
    except OSError as err:  # a read-only home: work without the cache
        log(f"domain check: cannot cache the statistics in {path} ({err})")
    return ref

