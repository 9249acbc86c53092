"""
Train the multi-attribute classifier, or evaluate a classifier checkpoint.

Training (the paper's command works as is):
    python preprocess/encoder_train.py --world_size 1 --rank 0 --multiprocessing_distributed True \
        --data_dir data/synthetic_faces --exp_dir runs/classifier
runs one process per local GPU (or --nprocs CPU processes with gloo) under
DistributedDataParallel; `mpiexec -n K python preprocess/encoder_train.py ...`
runs one rank per MPI process instead. --batch_size is the global batch, split
evenly over the processes. The loss is the BCE over the attributes, by
default with each attribute's positives weighted by its negatives/positives
ratio (--balanced_loss), since balanced accuracy is what matters; Adam with a
cosine learning-rate schedule.

Outputs in --exp_dir: checkpoints/classifier_NNNNNN.pt (resumable: weights,
optimizer, scheduler, step), train_log.csv, val_log.csv (per-attribute
validation accuracy and balanced accuracy), training_curves.png and, at the
end, classifier.pt (weights + opts) for the editor. Re-running the same
command resumes from the latest checkpoint. The data order, flips and dropout
of step s are functions of (--seed, s, rank), so a resumed run repeats the
uninterrupted one without saving random-number-generator state.

Evaluation:
    python preprocess/encoder_train.py --evaluate CKPT --data_dir DIR [--output results.json]
prints per-attribute accuracy and balanced accuracy of any classifier
checkpoint (project or paper layout) and writes them as JSON.
"""

import argparse
import csv
import json
import math
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# Torch-free: the flags are parsed and checked before torch is imported (see the end of this block).
from guided_diffusion.image_files import numbered_image_files
from guided_diffusion.safe_paths import OneLineParser, parse_checked, check_not_below_file, check_output_file, report_input_error
from guided_diffusion.script_util import str2bool
from preprocess.attributes import ATTRIBUTE_NAMES
from preprocess.classifier_options import ARCHITECTURE_NAMES, FEATURE_ACTIVATIONS, INPUT_NORMALIZATIONS

INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError)


# ---------------------------------------------------------------- command line


def create_argparser():
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", default=os.path.join("data", "synthetic_faces"),
                      help="dataset directory: 00000.png ... and attributes.pt [N, num_attributes]")
    data.add_argument("--num_attributes", type=int, default=len(ATTRIBUTE_NAMES))
    data.add_argument("--val_fraction", type=float, default=0.1, help="share of images held out for validation")
    data.add_argument("--split_seed", type=int, default=0, help="seed of the train/validation split")
    data.add_argument("--random_flip", type=str2bool, default=True, help="random horizontal flips in training")
    data.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="threads decoding images")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", default="resnet18", choices=sorted(ARCHITECTURE_NAMES))
    model.add_argument("--input_size", type=int, default=0, help="side the classifier resizes to (0: dataset resolution)")
    model.add_argument("--feature_dim", type=int, default=256)
    model.add_argument("--head_hidden_dim", type=int, default=256)
    model.add_argument("--dropout", type=float, default=0.0, help="dropout inside the attribute heads")
    model.add_argument("--input_normalization", default="imagenet", choices=INPUT_NORMALIZATIONS)
    model.add_argument("--feature_activation", default="gelu", choices=FEATURE_ACTIVATIONS,
                       help="activation between the trunk's feature and the heads")
    model.add_argument("--pretrained_weights", default="", help="local torchvision ResNet state dict for the trunk")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--exp_dir", default=os.path.join("runs", "classifier"), help="checkpoints, logs and plots")
    optim.add_argument("--batch_size", type=int, default=64, help="global batch, split over the processes")
    optim.add_argument("--max_steps", type=int, default=3000)
    optim.add_argument("--learning_rate", type=float, default=1e-3)
    optim.add_argument("--weight_decay", type=float, default=0.0)
    optim.add_argument("--balanced_loss", type=str2bool, default=True,
                       help="weight each attribute's positives by negatives/positives, so rare attributes are "
                            "learnt early (False: the paper's plain BCE)")
    optim.add_argument("--seed", type=int, default=0, help="initialisation, data order and flips")
    optim.add_argument("--log_interval", type=int, default=10)
    optim.add_argument("--eval_interval", type=int, default=0, help="validate every N steps (0: every epoch)")
    optim.add_argument("--save_interval", type=int, default=500)
    optim.add_argument("--keep_checkpoints", type=int, default=2, help="resumable checkpoints kept")
    distributed = parser.add_argument_group("distributed")
    distributed.add_argument("--world_size", type=int, default=1, help="number of nodes")
    distributed.add_argument("--rank", type=int, default=0, help="rank of this node")
    distributed.add_argument("--multiprocessing_distributed", type=str2bool, default=True,
                             help="one process per local GPU (or --nprocs CPU processes)")
    distributed.add_argument("--nprocs", type=int, default=0, help="processes per node (0: one per GPU, 1 on CPU)")
    distributed.add_argument("--num_threads", type=int, default=0,
                             help="CPU threads per process (0: the cores divided among the local processes)")
    distributed.add_argument("--device", default="", choices=["", "cpu", "cuda"],
                             help="where to train (default: cuda when a GPU is visible, else cpu)")
    distributed.add_argument("--dist_backend", default="", help="nccl or gloo (default: nccl on GPU, gloo on CPU)")
    distributed.add_argument("--master_addr", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    distributed.add_argument("--master_port", type=int, default=int(os.environ.get("MASTER_PORT", 0)),
                             help="rendezvous port (0: pick a free one; single node only)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--evaluate", default="", metavar="CKPT", help="evaluate this checkpoint instead of training")
    evaluation.add_argument("--eval_split", default="all", choices=("all", "val"),
                            help="images to evaluate on (val: the split the checkpoint was trained without)")
    evaluation.add_argument("--output", default="", help="write the evaluation as JSON here")
    return parser


def check_flags(args):
    """The checks that need neither torch nor the images (the ones that need the number of processes
    or the data follow in check_training_args and prepare_training)."""
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.evaluate:
        if not os.path.isfile(args.evaluate):
            raise FileNotFoundError(f"--evaluate: checkpoint not found: {args.evaluate}")
        if args.output:
            check_output_file(args.output, "--output")
    else:
        for flag in ("max_steps", "save_interval", "log_interval", "keep_checkpoints", "num_attributes"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
        if args.input_size and args.input_size < 32:
            raise ValueError(f"--input_size must be at least 32 (or 0 for the dataset resolution), got {args.input_size}")
        if args.pretrained_weights and not os.path.isfile(args.pretrained_weights):
            raise FileNotFoundError(f"--pretrained_weights not found: {args.pretrained_weights}")
        check_not_below_file(args.exp_dir, "--exp_dir")
        if os.path.exists(args.exp_dir) and not os.path.isdir(args.exp_dir):
            raise ValueError(f"--exp_dir {args.exp_dir} is a file, not a folder")
    numbered_image_files(args.data_dir)  # the dataset folder exists and holds numbered images


def parse_and_check(argv=None):
    """The parsed flags, after check_flags: an input error is one `error:` line, exit status 2."""
    return parse_checked(create_argparser(), check_flags, argv)


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from guided_diffusion.atomic import atomic_torch_save, atomic_write  # noqa: E402
from guided_diffusion.attribute_table import read_attribute_table  # noqa: E402
from guided_diffusion.mpi_launch import local_rank_and_size, mpi_world  # noqa: E402
from preprocess.classifier import (  # noqa: E402
    ARCHITECTURES,
    OPTION_DEFAULTS,
    OPTION_NAMES,
    AttributeClassifier,
    load_classifier,
)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "classifier_"
# Flags that must not change when a run is resumed: the model and the held-out split.
RESUME_INVARIANTS = ("split_seed", "val_fraction")


# ---------------------------------------------------------------- files


# Every file is written through guided_diffusion.atomic (a temporary beside it, then a rename; the
# mode follows the umask).


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows):
    fields = list(rows[0]) if rows else []

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


# ---------------------------------------------------------------- data


def attribute_names(num_attributes):
    """The paper's names for its 20 attributes; generic names for other datasets."""
    if num_attributes == len(ATTRIBUTE_NAMES):
        return list(ATTRIBUTE_NAMES)
    return [f"attribute_{i}" for i in range(num_attributes)]


def _read_image(path):
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except Exception as err:  # PIL raises many types for corrupt files
        raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from None


def load_labelled_images(data_dir, num_attributes, num_workers=2, progress=True):
    """
    Load a whole dataset directory into memory.

    :return: (images uint8 [N, 3, H, W], attributes float [N, num_attributes] of 0/1).
    """
    paths = numbered_image_files(data_dir)  # path i is image i
    attributes = read_attribute_table(data_dir, num_attributes=num_attributes, num_images=len(paths),
                                      expected_by="the classifier")
    first = _read_image(paths[0])
    if first.shape[0] != first.shape[1]:
        raise ValueError(f"{paths[0]}: images must be square, got {first.shape[1]}x{first.shape[0]}")
    images = torch.empty((len(paths), 3, first.shape[0], first.shape[1]), dtype=torch.uint8)

    def load(index):
        array = _read_image(paths[index])
        if array.shape != first.shape:
            raise ValueError(
                f"{paths[index]}: size {array.shape[1]}x{array.shape[0]}, expected {first.shape[1]}x{first.shape[0]}"
            )
        images[index] = torch.from_numpy(array).permute(2, 0, 1)

    # PIL releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for _ in tqdm(pool.map(load, range(len(paths))), total=len(paths), desc="loading images", disable=not progress):
            pass
    return images, attributes


def split_indices(num_images, val_fraction, split_seed):
    """
    Held-out split by image index, fixed by split_seed.

    :return: (train indices, validation indices), sorted long tensors.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(split_seed))
    num_val = int(round(num_images * val_fraction))
    return order[num_val:].sort().values, order[:num_val].sort().values


def to_model_range(images, flip=None):
    """uint8 [N, 3, H, W] -> float in [-1, 1]; flip: bool [N], mirror those horizontally."""
    x = images.float() / 127.5 - 1.0
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    return x


def _stream_seed(*values):
    """A 63-bit seed from integers (a cheap, fixed mix; no Python hash randomisation)."""
    seed = 0
    for value in values:
        seed = (seed * 1_000_003 + int(value) + 1) % (2**63 - 1)
    return seed


def step_batch(train_indices, step, batch_size, seed, random_flip):
    """
    The global batch of training step `step`: each epoch is a fresh permutation
    of the training split (seeded by seed and the epoch), cut into batches.

    :return: (dataset indices [batch_size], horizontal-flip mask [batch_size]).
    """
    steps_per_epoch = len(train_indices) // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(len(train_indices), generator=torch.Generator().manual_seed(_stream_seed(seed, epoch)))
    indices = train_indices[order[position * batch_size:(position + 1) * batch_size]]
    if random_flip:
        flip = torch.rand(batch_size, generator=torch.Generator().manual_seed(_stream_seed(seed, step, 1))) < 0.5
    else:
        flip = torch.zeros(batch_size, dtype=torch.bool)
    return indices, flip


# ---------------------------------------------------------------- metrics


def confusion_counts(probabilities, targets):
    """probabilities, targets [N, A] -> long [4, A]: true pos, false pos, true neg, false neg (threshold 0.5)."""
    predicted = probabilities >= 0.5
    positive = targets >= 0.5
    return torch.stack(
        [
            (predicted & positive).sum(0),
            (predicted & ~positive).sum(0),
            (~predicted & ~positive).sum(0),
            (~predicted & positive).sum(0),
        ]
    ).long()


def accuracy_from_counts(counts):
    """
    counts [4, A] (tp, fp, tn, fn) -> (accuracy [A], balanced accuracy [A]).

    Balanced accuracy is the mean of the true-positive and true-negative rates;
    an attribute with no positives (or no negatives) gets the one rate it has.
    """
    tp, fp, tn, fn = counts.double()
    accuracy = (tp + tn) / (tp + fp + tn + fn).clamp(min=1)
    positives, negatives = tp + fn, tn + fp
    tpr = tp / positives.clamp(min=1)
    tnr = tn / negatives.clamp(min=1)
    balanced = torch.where(
        positives == 0, tnr, torch.where(negatives == 0, tpr, (tpr + tnr) / 2)
    )
    return accuracy, balanced


@torch.no_grad()
def evaluate(model, images, attributes, indices, batch_size, device, progress=False):
    """
    Classify images[indices] (this rank's share when distributed) in eval mode.

    :return: dict(loss=mean BCE, counts=[4, A] summed over all ranks, accuracy [A], balanced_accuracy [A]).
    """
    was_training = model.training
    model.eval()
    if dist.is_initialized():
        indices = indices[dist.get_rank()::dist.get_world_size()]
    counts = torch.zeros(4, attributes.shape[1], dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in tqdm(range(0, len(indices), batch_size), desc="evaluating", disable=not progress):
        batch = indices[start:start + batch_size]
        x = to_model_range(images[batch]).to(device)
        y = attributes[batch].to(device)
        logits = model.logits(x)
        loss_sum += F.binary_cross_entropy_with_logits(logits, y, reduction="sum").double()
        counts += confusion_counts(torch.sigmoid(logits), y)
    if dist.is_initialized():
        dist.all_reduce(counts)
        dist.all_reduce(loss_sum)
    model.train(was_training)
    counts = counts.cpu()
    accuracy, balanced = accuracy_from_counts(counts)
    num_labels = counts.sum().clamp(min=1).item()
    return dict(loss=loss_sum.item() / num_labels, counts=counts, accuracy=accuracy, balanced_accuracy=balanced)


def sync_buffers(model):
    """Copy rank 0's buffers (BatchNorm statistics) to all ranks; DDP only does so before a forward."""
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


def replica_max_abs_diff(model):
    """Largest |parameter or buffer - rank 0's| over all ranks (0 when replicas agree)."""
    flat = torch.cat([t.detach().reshape(-1).double() for t in model.state_dict().values() if t.is_floating_point()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


# ---------------------------------------------------------------- logs


class TrainingLog:
    """train_log.csv, val_log.csv and training_curves.png in exp_dir, rewritten atomically."""

    def __init__(self, exp_dir, resume_step):
        self.train_path = os.path.join(exp_dir, "train_log.csv")
        self.val_path = os.path.join(exp_dir, "val_log.csv")
        self.plot_path = os.path.join(exp_dir, "training_curves.png")
        # Rows logged after the checkpoint we resume from will be logged again.
        self.train_rows = [r for r in read_csv(self.train_path) if int(r["step"]) <= resume_step]
        self.val_rows = [r for r in read_csv(self.val_path) if int(r["step"]) <= resume_step]

    def add_train(self, row):
        self.train_rows.append(row)
        write_csv(self.train_path, self.train_rows)

    def add_val(self, row):
        self.val_rows.append(row)
        write_csv(self.val_path, self.val_rows)
        self.plot()

    def plot(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        if self.train_rows:
            train_steps = [int(r["step"]) for r in self.train_rows]
            ax_loss.plot(train_steps, [float(r["loss"]) for r in self.train_rows], label="train (loss optimised)")
        val_steps = [int(r["step"]) for r in self.val_rows]
        ax_loss.plot(val_steps, [float(r["val_loss"]) for r in self.val_rows], "o-", label="validation (plain BCE)")
        ax_loss.set(xlabel="step", ylabel="BCE per attribute", yscale="log", title="loss")
        ax_loss.legend()
        for key, label in (
            ("mean_accuracy", "mean accuracy"),
            ("mean_balanced_accuracy", "mean balanced accuracy"),
            ("min_balanced_accuracy", "worst attribute, balanced"),
        ):
            ax_acc.plot(val_steps, [float(r[key]) for r in self.val_rows], "o-", label=label)
        ax_acc.set(xlabel="step", ylabel="validation", title="accuracy")
        ax_acc.legend()
        fig.tight_layout()
        atomic_write(self.plot_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)


# ---------------------------------------------------------------- training


class _Logits(nn.Module):
    """Routes DDP's forward to classifier.logits (BCE-with-logits is the stable loss)."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier.logits(x)


def checkpoint_paths(exp_dir, prefix=CHECKPOINT_PREFIX):
    """Resumable checkpoints (exp_dir/checkpoints/<prefix>NNNNNN.pt), sorted by step: list of (step, path)."""
    directory = os.path.join(exp_dir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        stem, ext = os.path.splitext(name)
        if ext == ".pt" and stem.startswith(prefix) and stem[len(prefix):].isdigit():
            found.append((int(stem[len(prefix):]), os.path.join(directory, name)))
    return sorted(found)


def model_options(args, input_size):
    return dict(
        arch=args.arch,
        num_attributes=args.num_attributes,
        feature_dim=args.feature_dim,
        input_size=input_size,
        head_hidden_dim=args.head_hidden_dim,
        dropout=args.dropout,
        input_normalization=args.input_normalization,
        feature_activation=args.feature_activation,
        trunk_fc_dim=0,
    )


def training_options(args):
    return dict(
        data_dir=args.data_dir,
        seed=args.seed,
        split_seed=args.split_seed,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        max_steps=args.max_steps,
        random_flip=args.random_flip,
        balanced_loss=args.balanced_loss,
        attribute_names=attribute_names(args.num_attributes),
    )


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that does not load (corrupt or truncated), as opposed to one of another run."""


def read_resume_checkpoint(path, model_opts, args):
    """Load a resumable checkpoint and check it belongs to this run's model and split."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise UnreadableCheckpoint(f"cannot read checkpoint {path} (corrupt or truncated?): "
                                   f"{type(err).__name__}: {err}") from None
    for key in ("state_dict", "opts", "step", "optimizer", "scheduler"):
        if key not in checkpoint:
            raise ValueError(f"{path} is not a resumable classifier checkpoint (no '{key}')")
    saved = checkpoint["opts"]
    for key in OPTION_NAMES:
        wanted = model_opts.get(key, OPTION_DEFAULTS.get(key))
        if saved.get(key, OPTION_DEFAULTS.get(key)) != wanted:
            raise ValueError(
                f"cannot resume from {path}: it has {key}={saved.get(key)!r}, this run asks for {wanted!r} "
                f"(use another --exp_dir)"
            )
    for key in RESUME_INVARIANTS:
        if saved.get("training", {}).get(key) != getattr(args, key):
            raise ValueError(
                f"cannot resume from {path}: it has {key}={saved.get('training', {}).get(key)!r}, this run asks for "
                f"{getattr(args, key)!r} (use another --exp_dir)"
            )
    return checkpoint


def balancing_pos_weight(labels):
    """
    Per-attribute weight of positive labels in the BCE, negatives / positives of
    the training labels [N, A], so rare attributes count as much as common
    ones (1 where an attribute has no positives).
    """
    positives = labels.sum(0)
    negatives = len(labels) - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives))


def cosine_schedule(max_steps):
    """LR multiplier at a step: half a cosine from 1 to 0 over max_steps."""
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max_steps))


def train(rank, world_size, device, args, images, attributes, resume_path):
    """The training loop of one process (rank) of world_size; rank 0 writes all files."""
    is_main = rank == 0
    local_batch = args.batch_size // world_size
    train_indices, val_indices = split_indices(len(attributes), args.val_fraction, args.split_seed)
    steps_per_epoch = len(train_indices) // args.batch_size
    model_opts = model_options(args, args.input_size or images.shape[-1])

    torch.manual_seed(args.seed)
    model = AttributeClassifier(**model_opts).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(args.max_steps))
    step = 0
    if resume_path:
        checkpoint = read_resume_checkpoint(resume_path, model_opts, args)
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step = checkpoint["step"]
    elif args.pretrained_weights:
        model.load_pretrained_trunk(args.pretrained_weights)

    pos_weight = balancing_pos_weight(attributes[train_indices]).to(device) if args.balanced_loss else None
    trainer = _Logits(model)
    if world_size > 1:
        trainer = nn.parallel.DistributedDataParallel(trainer, device_ids=[device] if device.type == "cuda" else None)
    log = TrainingLog(args.exp_dir, step) if is_main else None
    options = dict(model_opts, training=training_options(args))

    def save(path, resumable):
        state = dict(state_dict=model.state_dict(), opts=options, step=step)
        if resumable:
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
        atomic_torch_save(state, path)

    model.train()
    loss_sum, loss_count, train_seconds = 0.0, 0, 0.0
    progress = tqdm(total=args.max_steps, initial=step, desc="training", disable=not is_main)
    while step < args.max_steps:
        step_start = time.time()
        indices, flip = step_batch(train_indices, step, args.batch_size, args.seed, args.random_flip)
        indices, flip = indices[rank::world_size], flip[rank::world_size]
        x = to_model_range(images[indices], flip).to(device)
        y = attributes[indices].to(device)
        torch.manual_seed(_stream_seed(args.seed, step, rank, 2))  # dropout of this step
        loss = F.binary_cross_entropy_with_logits(trainer(x), y, pos_weight=pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum += loss.item()
        loss_count += 1
        train_seconds += time.time() - step_start
        progress.update(1)

        if step % args.log_interval == 0 or step == args.max_steps:
            mean_loss = torch.tensor([loss_sum / loss_count], dtype=torch.float64, device=device)
            if world_size > 1:
                dist.all_reduce(mean_loss)
            if is_main:
                log.add_train(
                    dict(
                        step=step,
                        epoch=f"{step / steps_per_epoch:.3f}",
                        loss=f"{mean_loss.item() / world_size:.6f}",
                        lr=f"{scheduler.get_last_lr()[0]:.3e}",
                        samples_per_s=f"{loss_count * args.batch_size / train_seconds:.1f}",
                    )
                )
                progress.set_postfix(loss=f"{mean_loss.item() / world_size:.4f}")
            loss_sum, loss_count, train_seconds = 0.0, 0, 0.0

        eval_every = args.eval_interval or steps_per_epoch
        if len(val_indices) and (step % eval_every == 0 or step == args.max_steps):
            if world_size > 1:
                sync_buffers(model)
            result = evaluate(model, images, attributes, val_indices, local_batch, device)
            replica_diff = replica_max_abs_diff(model) if world_size > 1 else 0.0
            if is_main:
                log.add_val(validation_row(step, step / steps_per_epoch, result, args.num_attributes, replica_diff))
                progress.write(
                    f"step {step}: val loss {result['loss']:.4f}, mean balanced accuracy "
                    f"{result['balanced_accuracy'].mean():.4f} (worst {result['balanced_accuracy'].min():.4f})"
                )

        if is_main and (step % args.save_interval == 0 or step == args.max_steps):
            save(os.path.join(args.exp_dir, CHECKPOINT_DIR, f"{CHECKPOINT_PREFIX}{step:06d}.pt"), resumable=True)
            for _, old in checkpoint_paths(args.exp_dir)[: -args.keep_checkpoints]:
                os.remove(old)
    progress.close()
    if is_main:
        save(os.path.join(args.exp_dir, "classifier.pt"), resumable=False)
        print(f"wrote {os.path.join(args.exp_dir, 'classifier.pt')} (step {step})")


def validation_row(step, epoch, result, num_attributes, replica_diff):
    names = attribute_names(num_attributes)
    row = dict(
        step=step,
        epoch=f"{epoch:.3f}",
        val_loss=f"{result['loss']:.6f}",
        mean_accuracy=f"{result['accuracy'].mean():.5f}",
        mean_balanced_accuracy=f"{result['balanced_accuracy'].mean():.5f}",
        min_balanced_accuracy=f"{result['balanced_accuracy'].min():.5f}",
        replica_max_abs_diff=f"{replica_diff:.3e}",
    )
    row.update({f"acc/{n}": f"{a:.5f}" for n, a in zip(names, result["accuracy"].tolist())})
    row.update({f"bacc/{n}": f"{b:.5f}" for n, b in zip(names, result["balanced_accuracy"].tolist())})
    return row


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_cuda(args):
    """Whether to train on GPUs: --device cuda, or the default when one is visible."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible")
    return args.device == "cuda" or (not args.device and torch.cuda.is_available())


def setup_process(rank, world_size, local_rank, local_count, args):
    """Pick the device, share the CPU cores, join the process group; returns the device."""
    if use_cuda(args):
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        # Deterministic convolutions: a resumed run repeats an uninterrupted one on GPUs too.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        device = torch.device("cpu")
        torch.set_num_threads(args.num_threads or max(1, (os.cpu_count() or 1) // local_count))
    if world_size > 1:
        backend = args.dist_backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{args.master_addr}:{args.master_port}",
            world_size=world_size,
            rank=rank,
        )
    return device


def _die_with_parent(parent_pid):
    """Ask Linux to SIGTERM this process when its parent dies (a killed launcher leaves no workers
    writing to exp_dir). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def spawned_worker(local_rank, args, images, attributes, resume_path, local_count, world_size, parent_pid=None):
    """Entry of a process started by torch.multiprocessing (one per local device)."""
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    rank = args.rank * local_count + local_rank
    device = setup_process(rank, world_size, local_rank, local_count, args)
    train(rank, world_size, device, args, images, attributes, resume_path)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


def check_training_args(args, world_size):
    if args.arch not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {args.arch!r}; choose one of {sorted(ARCHITECTURES)}")
    for flag in ("batch_size", "max_steps", "save_interval", "log_interval", "keep_checkpoints", "num_attributes"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.batch_size % world_size:
        raise ValueError(f"--batch_size {args.batch_size} is not divisible by the {world_size} processes")
    if args.input_size and args.input_size < 32:
        raise ValueError(f"--input_size must be at least 32 (or 0 for the dataset resolution), got {args.input_size}")
    if args.pretrained_weights and not os.path.isfile(args.pretrained_weights):
        raise FileNotFoundError(f"--pretrained_weights not found: {args.pretrained_weights}")
    check_not_below_file(args.exp_dir, "--exp_dir")  # before any step: a bad path costs no training
    if os.path.exists(args.exp_dir) and not os.path.isdir(args.exp_dir):
        raise ValueError(f"--exp_dir {args.exp_dir} is a file, not a folder")


def prepare_training(args, images, attributes, announce=True):
    """Checks that need the data or exp_dir; returns the checkpoint to resume from (or None)."""
    train_indices, _ = split_indices(len(attributes), args.val_fraction, args.split_seed)
    if len(train_indices) < args.batch_size:
        raise ValueError(f"the training split has {len(train_indices)} images, fewer than --batch_size {args.batch_size}")
    found = checkpoint_paths(args.exp_dir)
    if not found:
        return None
    model_opts = model_options(args, args.input_size or images.shape[-1])
    for _, resume_path in reversed(found):  # a corrupt newest checkpoint: the one before it
        try:
            read_resume_checkpoint(resume_path, model_opts, args)
        except UnreadableCheckpoint as err:
            if announce:
                print(f"warning: not resuming from {resume_path}: {err}", file=sys.stderr)
            continue
        if announce:
            print(f"resuming from {resume_path}")
        return resume_path
    raise ValueError(f"every checkpoint in {os.path.join(args.exp_dir, CHECKPOINT_DIR)} is unreadable; move them "
                     "away or use another --exp_dir to start afresh")


def run_training(args):
    comm, rank, world_size = mpi_world()
    if world_size > 1:
        # One rank per MPI process; rank 0 chooses the rendezvous port.
        if not args.master_port:
            args.master_port = comm.bcast(free_port() if rank == 0 else None, root=0)
        check_training_args(args, world_size)
        images, attributes = load_labelled_images(args.data_dir, args.num_attributes, args.num_workers, rank == 0)
        resume_path = prepare_training(args, images, attributes, announce=rank == 0)
        local_rank, local_count = local_rank_and_size(comm)
        device = setup_process(rank, world_size, local_rank, local_count, args)
        train(rank, world_size, device, args, images, attributes, resume_path)
        dist.barrier()
        dist.destroy_process_group()
        return

    if args.multiprocessing_distributed:
        local_count = args.nprocs or (torch.cuda.device_count() if use_cuda(args) else 1)
    else:
        local_count = 1
    if use_cuda(args) and local_count > torch.cuda.device_count() and (args.dist_backend or "nccl") == "nccl":
        raise ValueError(f"--nprocs {local_count} exceeds the {torch.cuda.device_count()} visible GPU(s): NCCL "
                         f"needs one GPU per process; use --nprocs {torch.cuda.device_count()} or --device cpu")
    world_size = args.world_size * local_count
    if args.world_size > 1 and not args.master_port:
        raise ValueError("with --world_size > 1 (several nodes) give every node the same --master_addr and --master_port")
    check_training_args(args, world_size)
    images, attributes = load_labelled_images(args.data_dir, args.num_attributes, args.num_workers)
    resume_path = prepare_training(args, images, attributes)
    if world_size == 1:
        device = setup_process(0, 1, 0, 1, args)
        train(0, 1, device, args, images, attributes, resume_path)
        return
    args.master_port = args.master_port or free_port()
    # Workers read the images from shared memory instead of each decoding them.
    images.share_memory_()
    attributes.share_memory_()
    mp.spawn(
        spawned_worker,
        args=(args, images, attributes, resume_path, local_count, world_size, os.getpid()),
        nprocs=local_count,
    )


# ---------------------------------------------------------------- evaluation


def run_evaluation(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model = load_classifier(args.evaluate, device)
    num_attributes = model.num_attributes
    images, attributes = load_labelled_images(args.data_dir, num_attributes, args.num_workers)
    indices = torch.arange(len(attributes))
    if args.eval_split == "val":
        training = model_training_options(args.evaluate)
        split_seed = training.get("split_seed", args.split_seed)
        val_fraction = training.get("val_fraction", args.val_fraction)
        indices = split_indices(len(attributes), val_fraction, split_seed)[1]
        if not len(indices):
            raise ValueError("the validation split is empty (val_fraction 0)")
    result = evaluate(model, images, attributes, indices, args.batch_size, device, progress=True)
    names = attribute_names(num_attributes)
    positives = (result["counts"][0] + result["counts"][3]).tolist()
    report = dict(
        checkpoint=args.evaluate,
        data_dir=args.data_dir,
        split=args.eval_split,
        num_images=len(indices),
        logit_temperature=model.logit_temperature,  # divides the logits; accuracy does not depend on it
        mean_accuracy=result["accuracy"].mean().item(),
        mean_balanced_accuracy=result["balanced_accuracy"].mean().item(),
        attributes={
            name: dict(accuracy=a, balanced_accuracy=b, positives=p)
            for name, a, b, p in zip(names, result["accuracy"].tolist(), result["balanced_accuracy"].tolist(), positives)
        },
    )
    print(f"{'attribute':<22}{'accuracy':>10}{'balanced':>10}{'positives':>11}")
    for name, entry in report["attributes"].items():
        print(f"{name:<22}{entry['accuracy']:>10.4f}{entry['balanced_accuracy']:>10.4f}{entry['positives']:>11}")
    print(f"{'mean':<22}{report['mean_accuracy']:>10.4f}{report['mean_balanced_accuracy']:>10.4f}{len(indices):>11}")
    if args.output:
        atomic_write(args.output, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


def model_training_options(path):
    """The training flags stored in a project checkpoint's opts ({} for other checkpoints)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    training = (checkpoint.get("opts") or {}).get("training")
    return training if isinstance(training, dict) else {}


# ---------------------------------------------------------------- entry point


def main(args=None):
    """Train or evaluate; `args` already parsed and checked (parse_and_check), else from sys.argv."""
    if args is None:
        args = parse_and_check()
    try:
        if args.evaluate:
            run_evaluation(args)
        else:
            run_training(args)
    except INPUT_ERRORS as err:
        sys.exit(report_input_error(err))  # rank 0 says it once; every rank exits 2


if __name__ == "__main__":
    main(_CLI_ARGS)
