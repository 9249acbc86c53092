"""
Train the attribute-conditional diffusion model on a dataset folder.

    python scripts/image_train.py --data_dir data/celebahq --log_dir runs/diffusion
    mpiexec -n 2 python scripts/image_train.py ...      # data parallel, one shard per rank

Defaults are the paper's released training script's (256 px, 128 channels,
2 res blocks, 4 heads, attention at 16 and 8, 1000 linear-schedule steps,
lr 1e-4 decaying linearly to 0 at step 500,000, batch 4 per rank, EMA 0.9999).
Running the same command again resumes from the latest checkpoint in
--log_dir; model_config.json there records the model/diffusion flags, so
sampling and editing never need them again.

The flags, --log_dir and every image's size are checked before torch is imported; a refused run
leaves no log behind (a --log_dir it created is removed again).
"""

import os
import re
import shutil
import sys

from guided_diffusion.image_files import list_image_files
from guided_diffusion.safe_paths import OneLineParser, check_not_below_file, report_input_error
from guided_diffusion.script_util import add_dict_to_argparser, model_and_diffusion_defaults

# What logger.configure writes into a new --log_dir before training starts (log.rank1.txt: rank 1's).
_LOG_FILE = re.compile(r"(log|progress)(\.rank\d+)?\.(txt|csv)")


def main(argv=None):
    args = create_argparser().parse_args(argv)
    created = not os.path.exists(args.log_dir)
    try:
        check_flags(args)
        train(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        _remove_refused_log(args.log_dir, created)
        return report_input_error(exc)  # every rank finds the same error; rank 0 says it
    return 0


def _remove_refused_log(log_dir, created):
    """A --log_dir this run created and left holding only its log is removed: a refused run leaves nothing."""
    if created and os.path.isdir(log_dir) and all(_LOG_FILE.fullmatch(n) for n in os.listdir(log_dir)):
        shutil.rmtree(log_dir, ignore_errors=True)


def check_flags(args):
    """Torch-free checks, on every rank: sizes, --log_dir, and every image of --data_dir."""
    for name in ("batch_size", "image_size", "save_interval", "log_interval"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.image_size > 1024:
        raise ValueError(f"--image_size {args.image_size} is larger than the model supports (at most 1024)")
    check_not_below_file(args.log_dir, "--log_dir")
    if os.path.exists(args.log_dir) and not os.path.isdir(args.log_dir):
        raise ValueError(f"--log_dir {args.log_dir} is a file, not a folder")
    if not args.resize_data:
        check_image_size(args.data_dir, args.image_size)
    else:
        list_image_files(args.data_dir)


def train(args):
    import torch

    from guided_diffusion import dist_util, logger
    from guided_diffusion.image_datasets import load_data
    from guided_diffusion.resample import create_named_schedule_sampler
    from guided_diffusion.script_util import args_to_dict, check_state_dict, create_model_and_diffusion
    from guided_diffusion.train_util import TrainLoop, find_resume_checkpoint, parse_resume_step_from_filename

    dist_util.setup_dist()
    logger.configure(dir=args.log_dir)
    logger.log(f"arguments: {vars(args)}")
    torch.manual_seed(args.seed)

    model_config = args_to_dict(args, model_and_diffusion_defaults().keys())
    model, diffusion = create_model_and_diffusion(**model_config)
    model.to(dist_util.dev())
    schedule_sampler = create_named_schedule_sampler(args.schedule_sampler, diffusion)

    # The newest step whose files all load (a corrupt newest step is skipped, with a message).
    resume = dist_util.rank0_result(
        lambda: find_resume_checkpoint(args.resume_checkpoint, args.log_dir, ema_rates=args.ema_rate, log=logger.log)
    )
    start_step = parse_resume_step_from_filename(resume) if resume else 0
    if args.init_from and not resume:  # a fine-tune's first start; a resumed run ignores it
        state_dict = dist_util.load_state_dict(args.init_from, map_location="cpu")
        check_state_dict(model, state_dict, args.init_from)
        model.load_state_dict({k: v.float() for k, v in state_dict.items()})
        logger.log(f"initialised from {args.init_from} (step 0)")
    data = _collectively(
        lambda: load_data(
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            image_size=args.image_size,
            attribute_cond=args.num_attributes > 0,
            class_cond=args.class_cond,
            random_flip=args.random_flip,
            num_attributes=args.num_attributes or None,
            seed=args.seed,
            start_batch=start_step,  # a resumed run sees the batches an uninterrupted one would
        )
    )

    logger.log("training...")
    TrainLoop(
        model=model,
        diffusion=diffusion,
        data=data,
        batch_size=args.batch_size,
        microbatch=args.microbatch,
        lr=args.lr,
        ema_rate=args.ema_rate,
        ema_warmup=args.ema_warmup,
        log_interval=args.log_interval,
        save_interval=args.save_interval,
        resume_checkpoint=resume or "",
        use_fp16=args.use_fp16,
        use_bf16=args.use_bf16,
        fp16_scale_growth=args.fp16_scale_growth,
        schedule_sampler=schedule_sampler,
        weight_decay=args.weight_decay,
        lr_anneal_steps=args.lr_anneal_steps,
        max_steps=args.max_steps,
        seed=args.seed,
        model_config=model_config,
    ).run_loop()


def check_image_size(data_dir, image_size):
    """Refuse a dataset any of whose images is not image_size x image_size or cannot be read (every
    image's header is read): the loader would resize them silently."""
    from PIL import Image

    for path in list_image_files(data_dir):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from None
        if (width, height) != (image_size, image_size):
            raise ValueError(
                f"{path} is {width}x{height} but --image_size is {image_size}: pass --image_size "
                f"{width if width == height else min(width, height)} (with model flags for that size; the "
                "README has a 64 px recipe) or --resize_data True to centre-crop and resize the images"
            )


def _collectively(fn):
    """Run fn on every rank; if it fails on any rank, raise on all (so none waits in a collective)."""
    from guided_diffusion import dist_util

    result, error = None, None
    try:
        result = fn()
    except (ValueError, FileNotFoundError) as exc:
        error = exc
    messages = dist_util.all_gather_object(None if error is None else str(error))
    failures = [f"{m} (rank {rank})" if len(messages) > 1 else m for rank, m in enumerate(messages) if m]
    if failures:
        raise (type(error) if error is not None else ValueError)(failures[0])
    return result


HELP = {
    "data_dir": "folder of 00000.png ... and attributes.pt (float [N, num_attributes])",
    "log_dir": "checkpoints, model_config.json, log.txt and progress.csv go here; rerunning resumes",
    "batch_size": "images per rank per step",
    "microbatch": "images per forward/backward (-1: the whole batch); same result, less memory",
    "ema_rate": "comma-separated EMA rates, one ema_<rate>_NNNNNN.pt each",
    "ema_warmup": "decay min(rate, (1+step)/(10+step)): usable EMA weights after short runs",
    "lr_anneal_steps": "if > 0: lr decays linearly to 0 at this step, where training ends",
    "max_steps": "if > 0: stop at this step without changing the lr schedule",
    "resume_checkpoint": "modelNNNNNN.pt to resume from (default: the latest step in --log_dir whose "
    "model, opt and ema files all load)",
    "resize_data": "centre-crop and resize images that are not --image_size square (default: refuse them)",
    "init_from": "weights to start a new run from (a fine-tune, e.g. of an eps model as v-prediction); "
    "ignored when --log_dir has a checkpoint to resume",
    "predict_v": "predict v = sqrt(abar) eps - sqrt(1 - abar) x0 instead of eps (no 1/sqrt(abar) "
    "amplification of the model's error in x0 at the noisiest levels)",
    "use_fp16": "float16 weights with loss scaling (GPU)",
    "use_bf16": "bfloat16 autocast, float32 weights",
    "schedule_sampler": "uniform or loss-second-moment",
    "snr_gamma": "min-SNR-gamma loss weighting (none: plain MSE)",
    "num_attributes": "attribute-vector length (0: unconditional, or class_cond)",
    "timestep_respacing": "respacing of the diffusion steps, e.g. ddim25 ('' keeps all)",
    "seed": "seeds initialisation, data order and noise; a resumed run repeats an uninterrupted one",
}


def create_argparser():
    defaults = dict(
        data_dir=os.path.join("data", "celebahq"),
        log_dir=os.path.join("runs", "diffusion"),
        schedule_sampler="uniform",
        lr=1e-4,
        weight_decay=0.0,
        lr_anneal_steps=500000,
        max_steps=0,
        batch_size=4,
        microbatch=-1,
        ema_rate="0.9999",
        ema_warmup=False,
        log_interval=10,
        save_interval=10000,
        resume_checkpoint="",
        init_from="",
        use_bf16=False,
        fp16_scale_growth=1e-3,
        random_flip=True,
        resize_data=False,
        seed=0,
    )
    defaults.update(model_and_diffusion_defaults())
    parser = OneLineParser(description=__doc__.split("\n\n")[0].strip())
    add_dict_to_argparser(parser, defaults, help=HELP)
    return parser


if __name__ == "__main__":
    sys.exit(main())
