"""
Measure training throughput (samples/s) and peak memory of one model
configuration: full TrainLoop steps (forward, backward, AdamW, EMA) on a
fixed random batch, so data loading is left out.

    python scripts/bench_train.py --image_size 64 --num_channels 32 \\
        --channel_mult 1,2,2,2 --num_res_blocks 1 --batch_size 16

With --reference DIR (a checkout of openai/guided-diffusion: DIR/guided_diffusion/),
its UNetModel and TrainLoop train the same configuration (unconditional: it
has no attribute embedding) on the same batch, in rounds alternating with this
repository's, and the ratio of the step times is printed. The shipped
config's step on one of its two CPU ranks (batch 16 over 2 processes):

    OMP_NUM_THREADS=1 python scripts/bench_train.py --threads 1 --batch_size 8 \\
        --attention_resolutions 16,8 --num_heads 4 --num_attributes 20 --use_scale_shift_norm True \\
        --snr_gamma 5 --reference /path/to/guided-diffusion

Without a reference folder (or when it cannot be imported) only this
repository's step is timed.
"""

import importlib
import importlib.util
import os
import resource
import statistics
import sys
import tempfile
import time

# Torch-free: the flags are parsed and checked before torch is imported (torch and the training
# loop are imported at the end of this file, after the early parse of a command-line run).
from guided_diffusion.safe_paths import OneLineParser, parse_checked, report_input_error
from guided_diffusion.script_util import (
    add_dict_to_argparser,
    args_to_dict,
    create_model_and_diffusion,
    model_and_diffusion_defaults,
)


def main(argv=None, args=None):
    if args is None:
        args = parse_and_check(argv)
    try:
        bench(args)
    except (ValueError, FileNotFoundError) as exc:
        return report_input_error(exc)
    return 0


def check_flags(args):
    if args.steps <= 0 or args.batch_size <= 0 or args.warmup < 0 or args.rounds <= 0:
        raise ValueError("--steps, --rounds and --batch_size must be positive, --warmup non-negative")


def parse_and_check(argv=None):
    """The parsed flags, after check_flags: an input error is one `error:` line, exit status 2."""
    return parse_checked(create_argparser(), check_flags, argv)


def _batch(args, device, memory_format):
    size = args.image_size
    batch = (torch.rand(args.batch_size, 3, size, size) * 2 - 1).to(device, memory_format=memory_format)
    cond = {}
    if args.num_attributes:
        cond["y"] = (torch.rand(args.batch_size, args.num_attributes) < 0.5).float().to(device)
    elif args.class_cond:
        cond["y"] = torch.randint(0, 1000, (args.batch_size,), device=device)
    return batch, cond


def load_reference(folder):
    """openai/guided-diffusion's package from folder/guided_diffusion, imported under another name
    (this repository's package has the same one); raises ImportError / FileNotFoundError."""
    package = os.path.join(folder, "guided_diffusion")
    if not os.path.isfile(os.path.join(package, "train_util.py")):
        raise FileNotFoundError(f"no guided_diffusion/train_util.py in {folder}")
    name = "reference_guided_diffusion"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(package, "__init__.py"), submodule_search_locations=[package])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return {part: importlib.import_module(f"{name}.{part}") for part in ("script_util", "train_util", "logger")}


def reference_loop(ref, args, device, log_dir):
    """The reference's TrainLoop for the same configuration (unconditional), in a one-process group."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(log_dir, 'pg')}", rank=0, world_size=1)
    config = ref["script_util"].model_and_diffusion_defaults()
    ours = args_to_dict(args, model_and_diffusion_defaults().keys())
    config.update({k: v for k, v in ours.items() if k in config})
    config.update(class_cond=False, use_fp16=False)
    model, diffusion = ref["script_util"].create_model_and_diffusion(**config)
    model.to(device)
    ref["logger"].configure(dir=os.path.join(log_dir, "reference"), format_strs=[])
    loop = ref["train_util"].TrainLoop(
        model=model, diffusion=diffusion, data=iter(()), batch_size=args.batch_size, microbatch=args.microbatch,
        lr=1e-4, ema_rate=args.ema_rate, log_interval=1, save_interval=1, resume_checkpoint="")
    return loop


def bench(args):
    check_flags(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    model_config = args_to_dict(args, model_and_diffusion_defaults().keys())
    model, diffusion = create_model_and_diffusion(**model_config)
    model.to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    batch, cond = _batch(args, device, memory_format)

    ref = None
    if args.reference:
        try:
            ref = load_reference(args.reference)
        except (ImportError, OSError) as exc:
            print(f"reference not timed: {exc}")

    with tempfile.TemporaryDirectory() as log_dir:
        logger.configure(log_dir, format_strs=[])
        loop = TrainLoop(
            model=model,
            diffusion=diffusion,
            data=iter(()),
            batch_size=args.batch_size,
            microbatch=args.microbatch,
            lr=1e-4,
            ema_rate=args.ema_rate,
            log_interval=1,
            save_interval=1,
            resume_checkpoint="",
            use_fp16=args.use_fp16,
            use_bf16=args.use_bf16,
        )
        loops = {"this repository": (loop, batch, cond)}
        if ref is not None:
            ref_loop = reference_loop(ref, args, device, log_dir)
            loops["openai/guided-diffusion"] = (ref_loop, batch.contiguous(), {})
        for name, (lp, b, c) in loops.items():
            for _ in tqdm(range(args.warmup), desc=f"warm-up ({name})", leave=False):
                lp.run_step(b, c)
        _synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        per_step = {name: [] for name in loops}
        for r in range(args.rounds):
            order = list(loops) if r % 2 == 0 else list(loops)[::-1]  # alternate who goes first
            for name in order:
                lp, b, c = loops[name]
                start = time.perf_counter()
                for _ in range(args.steps):
                    lp.run_step(b, c)
                _synchronize(device)
                per_step[name].append((time.perf_counter() - start) / args.steps)

    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"config: {args.image_size}x{args.image_size}, num_channels {args.num_channels}, channel_mult {args.channel_mult or 'default'}, "
        f"num_res_blocks {args.num_res_blocks}, attention_resolutions {args.attention_resolutions}, "
        f"batch {args.batch_size}, microbatch {args.microbatch}, channels_last {args.channels_last}, "
        f"bf16 {args.use_bf16}, fp16 {args.use_fp16}, EMA rates {args.ema_rate}"
    )
    print(f"device: {device} ({torch.get_num_threads()} threads), parameters: {num_params / 1e6:.2f} M")
    print(f"{args.rounds} rounds of {args.steps} steps each (medians over rounds):")
    for name, times in per_step.items():
        ms = 1000 * statistics.median(times)
        print(f"  {name:24s} ms/step: {ms:.1f}  steps/s: {1000 / ms:.3f}  samples/s: {args.batch_size * 1000 / ms:.2f}")
    if len(per_step) == 2:
        ours, theirs = per_step.values()
        ratios = [t / o for o, t in zip(ours, theirs)]
        print(f"speed vs openai/guided-diffusion: {statistics.median(ratios):.2f}x "
              f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})")
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
        rounds=1,
        warmup=2,
        ema_rate="0.999,0.9999",
        reference="",
        threads=0,
        channels_last=False,
        use_bf16=False,
        seed=0,
        device="",
    )
    parser = OneLineParser(description=__doc__.split("\n\n")[0].strip())
    add_dict_to_argparser(
        parser,
        defaults,
        help={
            "steps": "timed training steps per round",
            "rounds": "rounds of --steps steps; with --reference the two loops alternate round by round",
            "ema_rate": "EMA rates (the shipped config keeps two)",
            "reference": "folder holding openai/guided-diffusion's guided_diffusion/ package, to time it too",
            "threads": "torch threads (0: torch's default)",
            "warmup": "untimed steps first (allocator, autotuning)",
            "channels_last": "NHWC memory format for model and batch",
            "use_bf16": "bfloat16 autocast",
            "device": "cpu, cuda, ... (default: cuda when available)",
        },
    )
    return parser


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from guided_diffusion import logger  # noqa: E402
from guided_diffusion.train_util import TrainLoop  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(args=_CLI_ARGS))
