"""
Train a face-identity network on synthetic people with ArcFace's margin loss, or evaluate one.

Training data: a synthetic dataset with several views per person,
    python preprocess/make_synthetic_dataset.py --out runs/data/people64_s0 --num_images 30000 \
        --views_per_person 6 --seed 0 --attributes celeba
(each person under independently drawn attributes, pose, light, background and clothes). Then
    python preprocess/identity_train.py --data_dir runs/data/people64_s0 --exp_dir runs/identity
trains one class per person (`mpiexec -n K ...` or --nprocs K runs K data-parallel processes;
--batch_size is the global batch). The last --val_people people are held out: every epoch the
script reports verification accuracy on their pairs of views. Re-running the same command resumes
from the latest checkpoint; the data order of step s is a function of (--seed, s), so a resumed run
repeats the uninterrupted one.

Outputs in --exp_dir: checkpoints/identity_NNNNNN.pt (resumable), train_log.csv, val_log.csv,
training_curves.png and, at the end, identity.pt (weights + opts) for the editor and the benchmark.

Evaluation on people never trained on (a dataset of another seed, made the same way):
    python preprocess/identity_train.py --evaluate CKPT --data_dir runs/data/people64_s1000 \
        [--output results.json] [--figure similarity.png]
reports verification accuracy (10-fold, threshold chosen on the other nine folds, as LFW's
protocol) on all same-person pairs of views against as many different-person pairs, and the
cosine similarity of a face to itself with one editable attribute flipped (rendered) and to
another person.
"""

import argparse
import json
import os
import sys
import time

# Torch-free: the flags are parsed and checked before torch is imported (see the end of this block).
from guided_diffusion.image_files import numbered_image_files
from guided_diffusion.safe_paths import OneLineParser, parse_checked, check_not_below_file, check_output_file, report_input_error
from preprocess.attributes import ATTRIBUTE_NAMES, EDITABLE_ATTRIBUTES
from preprocess.synthetic_faces import read_identities, render

INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError)


# ---------------------------------------------------------------- command line


def create_argparser():
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=os.path.join("runs", "data", "people64_s0"),
                        help="synthetic dataset with --views_per_person views of each person")
    parser.add_argument("--val_people", type=int, default=100, help="people held out for validation")
    model = parser.add_argument_group("model")
    model.add_argument("--widths", default="32,64,128,128", help="channels of the four stages")
    model.add_argument("--embedding_dim", type=int, default=128)
    model.add_argument("--input_size", type=int, default=48, help="side of the face crop the network sees")
    model.add_argument("--crop", default="0.125,0.875", help="crop start,stop as fractions of the image side")
    model.add_argument("--dropout", type=float, default=0.0,
                       help="before the embedding layer (0: its BatchNorm then sees at evaluation what it saw in training)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--exp_dir", default=os.path.join("runs", "identity"))
    optim.add_argument("--batch_size", type=int, default=128, help="global batch, split over the processes")
    optim.add_argument("--max_steps", type=int, default=3000)
    optim.add_argument("--learning_rate", type=float, default=2e-3)
    optim.add_argument("--weight_decay", type=float, default=5e-4)
    optim.add_argument("--margin", type=float, default=0.5, help="ArcFace's additive angular margin m")
    optim.add_argument("--scale", type=float, default=32.0, help="ArcFace's logit scale s")
    optim.add_argument("--margin_warmup_steps", type=int, default=500)
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument("--log_interval", type=int, default=20)
    optim.add_argument("--eval_interval", type=int, default=0, help="validate every N steps (0: every epoch)")
    optim.add_argument("--save_interval", type=int, default=250)
    distributed = parser.add_argument_group("distributed")
    distributed.add_argument("--nprocs", type=int, default=1, help="data-parallel processes (without mpiexec)")
    distributed.add_argument("--num_threads", type=int, default=0, help="CPU threads per process (0: share the cores)")
    distributed.add_argument("--device", default="", choices=["", "cpu", "cuda"])
    distributed.add_argument("--dist_backend", default="")
    distributed.add_argument("--master_addr", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    distributed.add_argument("--master_port", type=int, default=int(os.environ.get("MASTER_PORT", 0)))
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--evaluate", default="", metavar="CKPT", help="evaluate this identity network instead")
    evaluation.add_argument("--output", default="", help="write the evaluation as JSON here")
    evaluation.add_argument("--figure", default="", help="draw the similarity distributions here (PNG)")
    return parser


def model_options(args):
    return dict(widths=[int(w) for w in args.widths.split(",")], embedding_dim=args.embedding_dim,
                input_size=args.input_size, crop=[float(c) for c in args.crop.split(",")], dropout=args.dropout)


def read_views_record(data_dir):
    """The identities record of a dataset with several views per person (no images read)."""
    numbered_image_files(data_dir)  # the folder exists and holds numbered images
    record = read_identities(data_dir)
    if not record.get("views_per_person"):
        raise ValueError(f"{data_dir} has one face per person; the identity network needs several views of each "
                         "(make_synthetic_dataset.py --views_per_person K)")
    return record


def check_flags(args):
    """The checks that need neither torch nor the images (the ones that need the number of processes,
    the network or the people follow in check_args and run_training)."""
    if args.evaluate:
        if not os.path.isfile(args.evaluate):
            raise FileNotFoundError(f"--evaluate: checkpoint not found: {args.evaluate}")
        for flag, path in (("--output", args.output), ("--figure", args.figure)):
            if path:
                check_output_file(path, flag)
    else:
        for flag in ("batch_size", "max_steps", "save_interval", "log_interval", "embedding_dim"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
        try:
            model_options(args)
        except ValueError as err:
            raise ValueError(f"bad model options (--widths, --crop): {err}") from None
        check_not_below_file(args.exp_dir, "--exp_dir")
        if os.path.exists(args.exp_dir) and not os.path.isdir(args.exp_dir):
            raise ValueError(f"--exp_dir {args.exp_dir} is a file, not a folder")
    read_views_record(args.data_dir)


def parse_and_check(argv=None):
    """The parsed flags, after check_flags: an input error is one `error:` line, exit status 2."""
    return parse_checked(create_argparser(), check_flags, argv)


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from guided_diffusion.atomic import atomic_torch_save, atomic_write  # noqa: E402
from guided_diffusion.machine import machine_line  # noqa: E402
from guided_diffusion.mpi_launch import local_rank_and_size, mpi_world  # noqa: E402
from preprocess.encoder_train import checkpoint_paths as encoder_checkpoint_paths  # noqa: E402
from preprocess.encoder_train import (  # noqa: E402
    _stream_seed,
    cosine_schedule,
    free_port,
    load_labelled_images,
    read_csv,
    setup_process,
    to_model_range,
    write_csv,
)
from preprocess.identity import CHECKPOINT_KIND, ArcMarginHead, IdentityNet, load_identity_net  # noqa: E402

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "identity_"
FINAL_NAME = "identity.pt"


# ---------------------------------------------------------------- data


def read_people(data_dir):
    """Person ids long [N] and the identities record of a views dataset (no images read)."""
    record = read_views_record(data_dir)
    return torch.tensor([face["person"] for face in record["faces"]], dtype=torch.long), record


def load_people(data_dir, progress=True):
    """Images uint8 [N, 3, H, W], person ids long [N] and the identities record of a views dataset."""
    people, record = read_people(data_dir)
    images, _ = load_labelled_images(data_dir, len(ATTRIBUTE_NAMES), progress=progress)
    if len(people) != len(images):
        raise ValueError(f"{data_dir}: identities.json lists {len(people)} faces, the folder holds {len(images)}")
    return images, people, record


def split_people(people, val_people):
    """(training image indices, validation image indices): the last `val_people` people are held out."""
    count = int(people.max()) + 1
    if not 0 <= val_people < count:
        raise ValueError(f"--val_people must be in [0, {count - 1}] for {count} people, got {val_people}")
    held_out = people >= count - val_people
    return torch.nonzero(~held_out).flatten(), torch.nonzero(held_out).flatten()


# ---------------------------------------------------------------- measures


@torch.no_grad()
def embed_all(model, images, batch_size=256, device="cpu", progress=False):
    """uint8 images [N, 3, H, W] -> float embeddings [N, D] (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="embedding", disable=not progress):
        out.append(model(to_model_range(images[start:start + batch_size]).to(device)).cpu())
    model.train(was_training)
    return torch.cat(out)


def verification_pairs(people, seed=0):
    """All same-person pairs of a views dataset and as many different-person pairs (fixed by `seed`).

    :return: (pairs long [P, 2], same bool [P])."""
    positives = []
    for person in torch.unique(people):
        members = torch.nonzero(people == person).flatten()
        positives += [(int(a), int(b)) for i, a in enumerate(members) for b in members[i + 1:]]
    generator = torch.Generator().manual_seed(seed)
    negatives = []
    while len(negatives) < len(positives):
        a, b = torch.randint(len(people), (2,), generator=generator).tolist()
        if people[a] != people[b]:
            negatives.append((a, b))
    pairs = torch.tensor(positives + negatives, dtype=torch.long)
    same = torch.cat([torch.ones(len(positives), dtype=torch.bool), torch.zeros(len(negatives), dtype=torch.bool)])
    return pairs, same


def best_threshold(similarity, same):
    """The threshold on similarity that classifies most pairs right (same: similarity >= threshold)."""
    order = torch.argsort(similarity)
    s, y = similarity[order], same[order].long()
    # Threshold just above s[k]: pairs 0..k called different, the rest same.
    correct = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(1 - y, 0)]) + \
        torch.cat([y.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.long)])
    k = int(torch.argmax(correct))
    if k == 0:
        return float(s[0]) - 1e-6
    if k == len(s):
        return float(s[-1]) + 1e-6
    return float((s[k - 1] + s[k]) / 2)


def verification_accuracy(similarity, same, folds=10, seed=0):
    """Mean accuracy over `folds` folds, each with the threshold chosen on the other folds, and the
    threshold chosen on all pairs."""
    order = torch.randperm(len(same), generator=torch.Generator().manual_seed(seed))
    accuracies = []
    for fold in order.chunk(folds):
        rest = torch.ones(len(same), dtype=torch.bool)
        rest[fold] = False
        threshold = best_threshold(similarity[rest], same[rest])
        accuracies.append(((similarity[fold] >= threshold) == same[fold]).double().mean().item())
    return float(np.mean(accuracies)), best_threshold(similarity, same)


def flipped_attribute_pairs(record, people, attributes_to_flip=EDITABLE_ATTRIBUTES, progress=True):
    """The first view of every person, rendered again with each editable attribute flipped.

    :return: (originals uint8 [P, 3, S, S], flipped uint8 [P * A, 3, S, S], attribute index [P * A],
        index into originals [P * A])."""
    size = record["image_size"]
    first = [int(torch.nonzero(people == p).flatten()[0]) for p in torch.unique(people)]
    originals, flipped, which, source = [], [], [], []
    for k, index in enumerate(tqdm(first, desc="rendering attribute flips", disable=not progress)):
        face = record["faces"][index]
        attributes = np.array(face["attributes"], dtype=np.int64)
        originals.append(render(face["identity"], attributes, size))
        for attribute in attributes_to_flip:
            edited = attributes.copy()
            edited[attribute] = 1 - edited[attribute]
            flipped.append(render(face["identity"], edited, size))
            which.append(attribute)
            source.append(k)

    def stack(arrays):
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    return stack(originals), stack(flipped), torch.tensor(which), torch.tensor(source)


def evaluate_identity(model, images, people, record, device="cpu", progress=True):
    """The held-out measures of an identity network on a views dataset (see the module docstring)."""
    embeddings = embed_all(model, images, device=device, progress=progress)
    pairs, same = verification_pairs(people)
    similarity = (embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]]).sum(1)
    accuracy, threshold = verification_accuracy(similarity, same)
    originals, flipped, which, source = flipped_attribute_pairs(record, people, progress=progress)
    original_embeddings = embed_all(model, originals, device=device)
    flip_similarity = (original_embeddings[source] * embed_all(model, flipped, device=device)).sum(1)
    # Different people: each person's first view against the next person's first view.
    other_similarity = (original_embeddings * original_embeddings.roll(1, 0)).sum(1)
    return dict(
        num_people=int(len(torch.unique(people))),
        num_images=len(images),
        verification_pairs=len(same),
        verification_accuracy=accuracy,
        threshold=threshold,
        same_person_views=similarity[same].tolist(),
        different_people_pairs=similarity[~same].tolist(),
        attribute_flip=flip_similarity.tolist(),
        attribute_flip_attribute=which.tolist(),
        different_people=other_similarity.tolist(),
    )


def summarise(result):
    """Means and per-attribute means of `evaluate_identity`'s lists (the JSON's summary part)."""
    flips = torch.tensor(result["attribute_flip"])
    which = torch.tensor(result["attribute_flip_attribute"])
    return dict(
        verification_accuracy=result["verification_accuracy"],
        threshold=result["threshold"],
        mean_same_person_views=float(np.mean(result["same_person_views"])),
        mean_different_people_pairs=float(np.mean(result["different_people_pairs"])),
        mean_attribute_flip=float(flips.mean()),
        min_attribute_flip=float(flips.min()),
        mean_different_people=float(np.mean(result["different_people"])),
        attribute_flip_by_attribute={ATTRIBUTE_NAMES[a]: float(flips[which == a].mean())
                                     for a in sorted(set(which.tolist()))},
    )


def plot_similarities(result, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(-0.4, 1.0, 71)
    for key, label in (("attribute_flip", "same face, one editable attribute flipped"),
                       ("same_person_views", "same person, other view (pose, light, attributes)"),
                       ("different_people_pairs", "different people")):
        values = np.array(result[key])
        ax.hist(values, bins=bins, alpha=0.55, density=True, label=f"{label} (mean {values.mean():.3f})")
    ax.axvline(result["threshold"], color="k", lw=1, ls="--", label=f"threshold {result['threshold']:.3f}")
    ax.set(xlabel="cosine similarity of identity embeddings", ylabel="density", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


# ---------------------------------------------------------------- training


def checkpoint_paths(exp_dir):
    """Resumable checkpoints in exp_dir, sorted by step: list of (step, path)."""
    return encoder_checkpoint_paths(exp_dir, CHECKPOINT_PREFIX)


# A resumed run must be the same run: same model, same people, same optimisation.
RESUME_KEYS = ("model", "num_classes", "val_people", "batch_size", "learning_rate", "max_steps", "seed",
               "margin", "scale")


def run_record(args, num_classes):
    return dict(model=model_options(args), num_classes=num_classes, val_people=args.val_people,
                batch_size=args.batch_size, learning_rate=args.learning_rate, max_steps=args.max_steps,
                seed=args.seed, margin=args.margin, scale=args.scale, data_dir=args.data_dir)


def find_resume(args, num_classes, announce=True):
    """The newest readable checkpoint of this run in exp_dir (None to start); ValueError for another run's."""
    wanted = run_record(args, num_classes)
    for _, path in reversed(checkpoint_paths(args.exp_dir)):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated file: the one before it
            if announce:
                print(f"warning: not resuming from {path}: {type(err).__name__}", file=sys.stderr)
            continue
        saved = checkpoint.get("run", {})
        for key in RESUME_KEYS:
            if saved.get(key) != wanted[key]:
                raise ValueError(f"cannot resume from {path}: it has {key}={saved.get(key)!r}, this run asks for "
                                 f"{wanted[key]!r} (use another --exp_dir)")
        if announce:
            print(f"resuming from {path}")
        return path
    return None


def step_batch(train_indices, step, batch_size, seed):
    """Dataset indices of training step `step`: each epoch a fresh permutation, cut into batches."""
    steps_per_epoch = len(train_indices) // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(len(train_indices), generator=torch.Generator().manual_seed(_stream_seed(seed, epoch)))
    return train_indices[order[position * batch_size:(position + 1) * batch_size]]


class _Trainer(nn.Module):
    """Network and margin head as one module, so DDP averages the gradients of both."""

    def __init__(self, network, head):
        super().__init__()
        self.network, self.head = network, head

    def forward(self, x, labels, margin):
        return self.head(F.normalize(self.network.features(x), dim=1), labels, margin)


def train(rank, world_size, device, args, images, people, resume_path):
    is_main = rank == 0
    train_indices, val_indices = split_people(people, args.val_people)
    num_classes = int(people[train_indices].max()) + 1
    steps_per_epoch = len(train_indices) // args.batch_size
    torch.manual_seed(args.seed)
    network = IdentityNet(**model_options(args))
    head = ArcMarginHead(args.embedding_dim, num_classes, scale=args.scale, margin=args.margin)
    trainer = _Trainer(network, head).to(device)
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(args.max_steps))
    step = 0
    if resume_path:
        checkpoint = torch.load(resume_path, map_location="cpu", weights_only=True)
        trainer.load_state_dict(checkpoint["trainer"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step = checkpoint["step"]
    ddp = nn.parallel.DistributedDataParallel(trainer) if world_size > 1 else trainer
    record = run_record(args, num_classes)
    train_path, val_path = (os.path.join(args.exp_dir, n) for n in ("train_log.csv", "val_log.csv"))
    train_rows = [r for r in read_csv(train_path) if int(r["step"]) <= step] if is_main else []
    val_rows = [r for r in read_csv(val_path) if int(r["step"]) <= step] if is_main else []
    if is_main:
        os.makedirs(os.path.join(args.exp_dir, CHECKPOINT_DIR), exist_ok=True)

    def save(path, final):
        if final:
            state = dict(kind=CHECKPOINT_KIND, state_dict=network.state_dict(), opts=network.opts, step=step,
                         run=record)
        else:
            state = dict(kind=CHECKPOINT_KIND, trainer=trainer.state_dict(), optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict(), step=step, run=record)
        atomic_torch_save(state, path)

    trainer.train()
    loss_sum, loss_count, seconds = 0.0, 0, 0.0
    progress = tqdm(total=args.max_steps, initial=step, desc="training", disable=not is_main)
    while step < args.max_steps:
        start = time.time()
        indices = step_batch(train_indices, step, args.batch_size, args.seed)[rank::world_size]
        x = to_model_range(images[indices]).to(device)
        labels = people[indices].to(device)
        # The margin grows from 0 over the first steps: at full margin from random weights every
        # sample is far inside the wrong side and the loss has no gradient to follow.
        margin = args.margin * min(1.0, step / max(1, args.margin_warmup_steps))
        torch.manual_seed(_stream_seed(args.seed, step, rank, 2))  # dropout of this step
        loss = F.cross_entropy(ddp(x, labels, margin), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum, loss_count, seconds = loss_sum + loss.item(), loss_count + 1, seconds + time.time() - start
        progress.update(1)
        if step % args.log_interval == 0 or step == args.max_steps:
            mean = torch.tensor([loss_sum / loss_count], dtype=torch.float64)
            if world_size > 1:
                dist.all_reduce(mean)
            if is_main:
                train_rows.append(dict(step=step, epoch=f"{step / steps_per_epoch:.3f}",
                                       loss=f"{mean.item() / world_size:.5f}", margin=f"{margin:.3f}",
                                       lr=f"{scheduler.get_last_lr()[0]:.3e}",
                                       samples_per_s=f"{loss_count * args.batch_size / seconds:.1f}"))
                write_csv(train_path, train_rows)
                progress.set_postfix(loss=f"{mean.item() / world_size:.3f}")
            loss_sum, loss_count, seconds = 0.0, 0, 0.0
        eval_every = args.eval_interval or steps_per_epoch
        if is_main and len(val_indices) and (step % eval_every == 0 or step == args.max_steps):
            embeddings = embed_all(network, images[val_indices], device=device)
            pairs, same = verification_pairs(people[val_indices])
            similarity = (embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]]).sum(1)
            accuracy, _ = verification_accuracy(similarity, same)
            val_rows.append(dict(step=step, verification_accuracy=f"{accuracy:.5f}",
                                 mean_same=f"{similarity[same].mean():.4f}",
                                 mean_different=f"{similarity[~same].mean():.4f}"))
            write_csv(val_path, val_rows)
            plot_training(args.exp_dir, train_rows, val_rows)
            progress.write(f"step {step}: held-out verification accuracy {accuracy:.4f}, cosine same "
                           f"{similarity[same].mean():.3f} / different {similarity[~same].mean():.3f}")
        if world_size > 1 and len(val_indices) and (step % eval_every == 0 or step == args.max_steps):
            dist.barrier()
        if is_main and (step % args.save_interval == 0 or step == args.max_steps):
            save(os.path.join(args.exp_dir, CHECKPOINT_DIR, f"{CHECKPOINT_PREFIX}{step:06d}.pt"), final=False)
            for _, old in checkpoint_paths(args.exp_dir)[:-2]:
                os.remove(old)
    progress.close()
    if is_main:
        save(os.path.join(args.exp_dir, FINAL_NAME), final=True)
        print(f"wrote {os.path.join(args.exp_dir, FINAL_NAME)} (step {step})")


def plot_training(exp_dir, train_rows, val_rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot([int(r["step"]) for r in train_rows], [float(r["loss"]) for r in train_rows])
    ax_loss.set(xlabel="step", ylabel="ArcFace loss", yscale="log", title="training loss")
    steps = [int(r["step"]) for r in val_rows]
    ax_acc.plot(steps, [float(r["verification_accuracy"]) for r in val_rows], "o-", label="verification accuracy")
    ax_acc.plot(steps, [float(r["mean_same"]) for r in val_rows], "o-", label="cosine, same person")
    ax_acc.plot(steps, [float(r["mean_different"]) for r in val_rows], "o-", label="cosine, different people")
    ax_acc.set(xlabel="step", title="held-out people")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(os.path.join(exp_dir, "training_curves.png"), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


# ---------------------------------------------------------------- training and evaluation


def check_args(args, world_size):
    for flag in ("batch_size", "max_steps", "save_interval", "log_interval", "embedding_dim"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.batch_size % world_size:
        raise ValueError(f"--batch_size {args.batch_size} is not divisible by the {world_size} processes")
    try:
        IdentityNet(**model_options(args))
    except (ValueError, TypeError) as err:
        raise ValueError(f"bad model options: {err}") from None
    if os.path.exists(args.exp_dir) and not os.path.isdir(args.exp_dir):
        raise ValueError(f"--exp_dir {args.exp_dir} is a file, not a folder")


def run_training(args):
    comm, rank, world_size = mpi_world()
    if world_size == 1 and args.nprocs > 1:
        world_size = args.nprocs
    check_args(args, world_size)
    people, _ = read_people(args.data_dir)  # every check before the images are read
    train_indices, _ = split_people(people, args.val_people)
    if len(train_indices) < args.batch_size:
        raise ValueError(f"{len(train_indices)} training images, fewer than --batch_size {args.batch_size}")
    num_classes = int(people[train_indices].max()) + 1
    resume_path = find_resume(args, num_classes, announce=rank == 0)
    images, people, _ = load_people(args.data_dir, progress=rank == 0)
    if comm is not None and world_size > 1:  # one rank per MPI process
        if not args.master_port:
            args.master_port = comm.bcast(free_port() if rank == 0 else None, root=0)
        local_rank, local_count = local_rank_and_size(comm)
        device = setup_process(rank, world_size, local_rank, local_count, args)
        train(rank, world_size, device, args, images, people, resume_path)
        dist.destroy_process_group()
    elif world_size > 1:
        import torch.multiprocessing as mp

        args.master_port = args.master_port or free_port()
        images.share_memory_()
        mp.spawn(_spawned, args=(world_size, args, images, people, resume_path), nprocs=world_size)
    else:
        device = setup_process(0, 1, 0, 1, args)
        train(0, 1, device, args, images, people, resume_path)


def _spawned(rank, world_size, args, images, people, resume_path):
    device = setup_process(rank, world_size, rank, world_size, args)
    train(rank, world_size, device, args, images, people, resume_path)
    dist.destroy_process_group()


def run_evaluation(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model = load_identity_net(args.evaluate, device)
    images, people, record = load_people(args.data_dir)
    result = evaluate_identity(model, images, people, record, device=device)
    summary = summarise(result)
    print(f"{result['num_people']} people, {result['num_images']} images, {result['verification_pairs']} pairs")
    print(f"verification accuracy (10-fold): {summary['verification_accuracy']:.4f} "
          f"(threshold on all pairs {summary['threshold']:.3f})")
    print(f"cosine, same person other view:  {summary['mean_same_person_views']:.4f}")
    print(f"cosine, one attribute flipped:   {summary['mean_attribute_flip']:.4f} "
          f"(lowest {summary['min_attribute_flip']:.4f})")
    for name, value in summary["attribute_flip_by_attribute"].items():
        print(f"    {name:<22}{value:.4f}")
    print(f"cosine, different people:        {summary['mean_different_people']:.4f}")
    # Four decimals keep the committed distributions small; the summary is computed before rounding.
    distributions = {k: [round(v, 4) for v in vals] if isinstance(vals, list) and vals and isinstance(vals[0], float)
                     else vals for k, vals in result.items()}
    report = dict(checkpoint=args.evaluate, data_dir=args.data_dir, date=time.strftime("%Y-%m-%d"),
                  hardware=machine_line(device), summary=summary, distributions=distributions)
    if args.output:
        atomic_write(args.output, json.dumps(report) + "\n")
        print(f"wrote {args.output}")
    if args.figure:
        plot_similarities(result, args.figure, f"{os.path.basename(args.evaluate)} on held-out people")
        print(f"wrote {args.figure}")


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
