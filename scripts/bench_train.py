"""
Measure training throughput (samples/s) and peak memory of one model
configuration: full TrainLoop steps (forward, backward, AdamW, EMA) on a
fixed random batch, so data loading is left out.

    python scripts/bench_train.py --image_size 64 --num_channels 32 \\
        --channel_mult 1,2,2,2 --num_res_blocks 1 --batch_size 16
"""

import argparse
import resource
import sys
import tempfile
import time

import torch
from tqdm.auto import tqdm

from guided_diffusion import logger
from guided_diffusion.script_util import (
    add_dict_to_argparser,
    args_to_dict,
    create_model_and_diffusion,
    model_and_diffusion_defaults,
)
from guided_diffusion.train_util import TrainLoop


def main(argv=None):
    args = create_argparser().parse_args(argv)
    try:
        bench(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def bench(args):
    if args.steps <= 0 or args.batch_size <= 0 or args.warmup < 0:
        raise ValueError("--steps and --batch_size must be positive, --warmup non-negative")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    model_config = args_to_dict(args, model_and_diffusion_defaults().keys())
    model, diffusion = create_model_and_diffusion(**model_config)
    model.to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)

    size = args.image_size
    batch = (torch.rand(args.batch_size, 3, size, size) * 2 - 1).to(device, memory_format=memory_format)
    cond = {}
    if args.num_attributes:
        cond["y"] = (torch.rand(args.batch_size, args.num_attributes) < 0.5).float().to(device)
    elif args.class_cond:
        cond["y"] = torch.randint(0, 1000, (args.batch_size,), device=device)

    with tempfile.TemporaryDirectory() as log_dir:
        logger.configure(log_dir, format_strs=[])
        loop = TrainLoop(
            model=model,
            diffusion=diffusion,
            data=iter(()),
            batch_size=args.batch_size,
            microbatch=args.microbatch,
            lr=1e-4,
            ema_rate="0.9999",
            log_interval=1,
            save_interval=1,
            resume_checkpoint="",
            use_fp16=args.use_fp16,
            use_bf16=args.use_bf16,
        )
        for _ in tqdm(range(args.warmup), desc="warm-up", leave=False):
            loop.run_step(batch, cond)
        _synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in tqdm(range(args.steps), desc="timed steps", leave=False):
            loop.run_step(batch, cond)
        _synchronize(device)
        elapsed = time.perf_counter() - start

    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"config: {size}x{size}, num_channels {args.num_channels}, channel_mult {args.channel_mult or 'default'}, "
        f"num_res_blocks {args.num_res_blocks}, attention_resolutions {args.attention_resolutions}, "
        f"batch {args.batch_size}, microbatch {args.microbatch}, channels_last {args.channels_last}, "
        f"bf16 {args.use_bf16}, fp16 {args.use_fp16}"
    )
    print(f"device: {device} ({torch.get_num_threads()} threads), parameters: {num_params / 1e6:.2f} M")
    print(f"steps/s: {args.steps / elapsed:.3f}  ms/step: {1000 * elapsed / args.steps:.1f}")
    print(f"samples/s: {args.steps * args.batch_size / elapsed:.2f}")
    if device.type == "cuda":
        print(f"peak GPU memory (allocated): {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    else:
        # ru_maxrss is in KiB on Linux; it is the whole process (Python and torch included).
        print(
            f"peak process memory (RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"
        )


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def create_argparser():
    defaults = model_and_diffusion_defaults()
    defaults.update(
        image_size=64,
        num_channels=32,
        channel_mult="1,2,2,2",
        num_res_blocks=1,
        batch_size=16,
        microbatch=-1,
        steps=10,
        warmup=2,
        channels_last=False,
        use_bf16=False,
        seed=0,
        device="",
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    add_dict_to_argparser(
        parser,
        defaults,
        help={
            "steps": "timed training steps",
            "warmup": "untimed steps first (allocator, autotuning)",
            "channels_last": "NHWC memory format for model and batch",
            "use_bf16": "bfloat16 autocast",
            "device": "cpu, cuda, ... (default: cuda when available)",
        },
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
