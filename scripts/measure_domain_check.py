"""How well the editor's out-of-domain check (optimization/domain.py) separates real photos from
the synthetic faces the shipped models know.

Fits the reference exactly as the editor does (guidance classifier, seed-0 faces, threshold from
seed-1000 faces), then scores
- further held-out synthetic faces: seed 1000 faces after those that set the threshold, and seed 2000
  (other people again), both attribute samplings: how many are wrongly flagged;
- real images found offline: matplotlib's sample photos, and with --skimage_data DIR the images of
  scikit-image's `skimage/data` folder (its `lfw_subset.npy` holds 100 LFW faces): how many are flagged.
With --feature penultimate the same rule is applied to the classifier's penultimate features (what
its heads read), for comparison.

    python scripts/measure_domain_check.py --skimage_data /path/to/skimage/data --output domain.json
"""
import argparse
import glob
import json
import os
import sys

# Torch-free: the flags are parsed and checked before torch is imported (see the end of this block).
from guided_diffusion.safe_paths import OneLineParser, check_output_file, report_input_error
from optimization.arguments import DEFAULT_CLASSIFIER_PATH

FEATURE_NAMES = ("layer2", "penultimate")


def build_parser():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER_PATH)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--feature", choices=sorted(FEATURE_NAMES), default="layer2")
    p.add_argument("--skimage_data", default=None, help="scikit-image's skimage/data folder (no import needed)")
    p.add_argument("--num_test", type=int, default=400, help="further held-out faces of each of seeds 1000 and 2000")
    p.add_argument("--output", default=None, help="write the numbers as JSON")
    return p


def parse_and_check(argv=None):
    """The parsed flags, checked without torch; an input error is one `error:` line and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.classifier):
            raise FileNotFoundError(f"--classifier: checkpoint not found: {args.classifier}")
        if args.image_size < 8 or args.num_test < 1:
            raise ValueError(f"--image_size must be >= 8 and --num_test >= 1; got {args.image_size}, {args.num_test}")
        if args.skimage_data and not os.path.isdir(args.skimage_data):
            raise FileNotFoundError(f"--skimage_data: folder not found: {args.skimage_data}")
        if args.output:
            check_output_file(args.output, "--output")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(report_input_error(e))
    return args


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from optimization import domain  # noqa: E402
from optimization.image_io import load_image_file, to_tensor  # noqa: E402
from preprocess.classifier import load_classifier  # noqa: E402
from preprocess.synthetic_faces import example_face, render  # noqa: E402

FEATURES = {"layer2": domain.classifier_features, "penultimate": domain.penultimate_features}
assert tuple(FEATURES) == FEATURE_NAMES


def matplotlib_photos():
    try:
        import matplotlib.cbook as cbook
    except ImportError:
        return []
    folder = os.path.dirname(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return [os.path.join(folder, n) for n in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
            if os.path.isfile(os.path.join(folder, n))]


def real_images(skimage_data, image_size):
    names, xs = [], []
    paths = matplotlib_photos()
    if skimage_data:
        paths += sorted(glob.glob(os.path.join(skimage_data, "*.png")) + glob.glob(os.path.join(skimage_data, "*.jpg")))
    for p in paths:
        try:
            xs.append(load_image_file(p, image_size))
            names.append(os.path.basename(p))
        except ValueError:
            pass
    lfw = os.path.join(skimage_data or "", "lfw_subset.npy")
    if skimage_data and os.path.isfile(lfw):
        faces = np.load(lfw)[:100]  # the first 100 are faces, the rest are not
        for i, f in enumerate(faces):
            im = Image.fromarray((f * 255).round().astype(np.uint8)).convert("RGB")
            xs.append(to_tensor(np.array(im.resize((image_size, image_size), Image.LANCZOS))))
            names.append(f"lfw_face_{i:03d}")
    return names, (torch.cat(xs) if xs else torch.zeros(0, 3, image_size, image_size))


def synthetic(seed, start, count, image_size):
    out = []
    for i in range(start, start + count):
        sampling = domain.SYNTHETIC_SAMPLINGS[i % 2]
        out.append(to_tensor(render(*example_face(seed, i // 2, sampling), image_size)))
    return torch.cat(out)


def main(argv=None, args=None):
    if args is None:
        args = parse_and_check(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    classifier = load_classifier(args.classifier)
    features_fn = FEATURES[args.feature]
    ref = domain.fit_reference(classifier, args.image_size, features_fn=features_fn)

    def scores(x):
        return torch.cat([ref.score(classifier, x[i:i + 64], features_fn) for i in range(0, len(x), 64)])

    held = {f"seed {s}": scores(synthetic(s, start, args.num_test, args.image_size))
            for s, start in ((1000, domain.NUM_HELDOUT), (2000, 0))}
    names, x = real_images(args.skimage_data, args.image_size)
    real = scores(x) if len(x) else torch.zeros(0)
    report = dict(
        feature=args.feature, threshold=ref.threshold, heldout_percentile=ref.heldout_percentile,
        heldout_max=ref.heldout_max, num_fit=ref.num_fit, num_heldout=ref.num_heldout,
        synthetic={k: dict(count=len(v), flagged=int((v > ref.threshold).sum()), median=float(v.median()),
                           max=float(v.max())) for k, v in held.items()},
        real=dict(count=len(real), flagged=int((real > ref.threshold).sum()),
                  faces=sum(n.startswith("lfw") or n in ("grace_hopper.jpg", "astronaut.png") for n in names),
                  faces_flagged=sum(bool(s > ref.threshold) for n, s in zip(names, real)
                                    if n.startswith("lfw") or n in ("grace_hopper.jpg", "astronaut.png")),
                  min=float(real.min()) if len(real) else None,
                  min_image=names[int(real.argmin())] if len(real) else None,
                  scores={n: round(float(s), 3) for n, s in zip(names, real) if not n.startswith("lfw")}),
    )
    print(json.dumps({k: v for k, v in report.items() if k != "real"}, indent=1))
    print(json.dumps({k: v for k, v in report["real"].items() if k != "scores"}, indent=1))
    for n, s in report["real"]["scores"].items():
        print(f"  {n:32s} {s:8.3f} {'OUT' if s > ref.threshold else 'in'}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main(args=_CLI_ARGS)
