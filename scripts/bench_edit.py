"""
Seconds and UNet evaluations per edit, for each preset and resolution, single and batched.

With --model_path (default: the shipped checkpoint when present) the real model and classifier
are timed; otherwise a randomly initialised model of the given config is built for each
--resolutions entry (speed does not depend on the weights).

By default each timed edit is run twice in turn, the editor's fast path (`AttributeEditor.
set_fast_path`) and the reference path (one UNet call per pass, NCHW, the
attention in guided-diffusion's layout), so both are measured in the same run under the same load;
the table shows both, their ratio, where the time goes (inversion, region, the sampler's UNet
calls, the classifier's forward and backward, the rest) and the peak memory an edit adds.

    python scripts/bench_edit.py                                  # shipped models, the fast preset
    python scripts/bench_edit.py --output docs/results/bench_edit.json
    python scripts/bench_edit.py --presets fast,paper             # also the 1000-step paper preset (minutes)
    python scripts/bench_edit.py --device cuda --batch_sizes 1,16,64
    python scripts/bench_edit.py --random --resolutions 64,128    # random models of the default config

On a CPU shared with other work, torch's default of one thread per core can be far slower than
one thread (OpenMP threads spin waiting for each other); run with --threads 1, or with
OMP_WAIT_POLICY=PASSIVE in the environment, there.
"""
import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time

# Torch-free: the flags are parsed and checked before torch is imported (see the end of this block).
from guided_diffusion.safe_paths import OneLineParser
from optimization.arguments import DEFAULT_CLASSIFIER_PATH, DEFAULT_MODEL_PATH
from optimization.presets import PRESETS


def build_parser():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=DEFAULT_MODEL_PATH)
    p.add_argument("--classifier_path", default=DEFAULT_CLASSIFIER_PATH)
    p.add_argument("--random", action="store_true", help="time random-weight models of the default config")
    p.add_argument("--resolutions", default="64", help="with --random: comma list of image sizes")
    p.add_argument("--presets", default="fast",
                   help="comma list of presets to time (paper: the 1000-step preset, about 9 min per edit on a CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch_sizes", default="1,8", help="comma list: images per edit call (per-edit figures)")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the reference path (no fast path) in turn with the fast path")
    p.add_argument("--components", action=argparse.BooleanOptionalAction, default=None,
                   help="time the edit's parts (default: on a CPU; on CUDA it adds synchronisations)")
    p.add_argument("--paper_steps", type=int, default=0,
                   help="time the paper preset with this many steps instead of 1000 (0: all 1000)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (the figures in the README) or cuda")
    p.add_argument("--output", default="", help="also write the figures as JSON here (e.g. docs/results/bench_edit.json)")
    return p


def parse_and_check(argv=None):
    """The parsed flags; a bad one is one `error:` line and exit status 2, before torch is imported."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1 or args.repeats < 1:
        p.error(f"--batch_sizes must be positive integers and --repeats >= 1; got {args.batch_sizes!r}, {args.repeats}")
    unknown = [name for name in args.presets.split(",") if name not in PRESETS]
    if unknown:
        p.error(f"unknown preset {', '.join(unknown)} in --presets; choose from {', '.join(PRESETS)}")
    return args


if __name__ == "__main__":
    # --help, an unknown flag or a bad value answers here, in a fraction of a second: torch not yet imported.
    _CLI_ARGS = parse_and_check()

import torch  # noqa: E402

from guided_diffusion.atomic import atomic_write  # noqa: E402
from guided_diffusion.machine import machine_line  # noqa: E402
from guided_diffusion.script_util import (  # noqa: E402
    create_model_and_diffusion,
    model_and_diffusion_defaults,
    save_model_config,
)
from optimization.editor import AttributeEditor, EditOptions  # noqa: E402
from optimization.queries import query_from_indices  # noqa: E402
from preprocess.classifier import AttributeClassifier  # noqa: E402

# Seconds per 64 px edit on 2 CPU cores, rounded up from this script's measurements: what the
# start-up line's estimate scales.
CPU_SECONDS_PER_EDIT = {"fast": 3.0, "paper": 515.0}

# The embedded default's model config, used for --random runs.
RANDOM_CONFIG = dict(num_channels=32, channel_mult="1,2,2,2", num_res_blocks=1, attention_resolutions="16,8",
                     num_heads=4)


def random_checkpoint(folder, image_size):
    """Write a random-weight model (+ JSON) and classifier of the default config; return their paths."""
    config = model_and_diffusion_defaults()
    config.update(RANDOM_CONFIG, image_size=image_size)
    model, _ = create_model_and_diffusion(**config)
    model_path = os.path.join(folder, f"diffusion{image_size}.pt")
    torch.save(model.state_dict(), model_path)
    save_model_config(config, os.path.splitext(model_path)[0] + ".json")
    clf = AttributeClassifier(arch="resnet18_3stage", input_size=64)
    clf_path = os.path.join(folder, "classifier.pt")
    torch.save({"state_dict": clf.state_dict(), "opts": clf.opts}, clf_path)
    return model_path, clf_path


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


COMPONENTS = ("inversion", "region", "sampler UNet", "classifier", "other")


class _Timer:
    """Seconds spent in named parts of an edit (device-synchronised when `sync`)."""

    def __init__(self, device, sync):
        self.device, self.sync, self.seconds = device, sync, {}

    @contextlib.contextmanager
    def part(self, name):
        if self.sync:
            _sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                _sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class _TimedModule(torch.nn.Module):
    """Times a module's forward and, through two identity autograd nodes around it, its backward."""

    def __init__(self, module, timer, name):
        super().__init__()
        self.module, self.timer, self.name = module, timer, name

    def forward(self, x, *args, **kwargs):
        timer, name = self.timer, self.name
        if torch.is_grad_enabled() and x.requires_grad:
            x = _BackwardMark.apply(x, timer, name, "end")
        with timer.part(name):
            out = self.module(x, *args, **kwargs)
        if torch.is_grad_enabled() and out.requires_grad:
            out = _BackwardMark.apply(out, timer, name, "start")
        return out


class _BackwardMark(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, timer, name, which):
        ctx.timer, ctx.name, ctx.which = timer, name, which
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        timer = ctx.timer
        if timer.sync:
            _sync(timer.device)
        if ctx.which == "start":
            timer.backward_start = time.perf_counter()
        elif getattr(timer, "backward_start", None) is not None:
            key = ctx.name
            timer.seconds[key] = timer.seconds.get(key, 0.0) + time.perf_counter() - timer.backward_start
            timer.backward_start = None
        return grad, None, None, None


@contextlib.contextmanager
def instrumented(editor, timer):
    """Time the edit's parts: the inversion and region functions the editor calls, the UNet and the
    classifier (forward and backward)."""
    import optimization.editor as engine

    patched = {}
    for fn, part in (("invert_ddim", "inversion"), ("invert_ddpm_noise", "inversion"),
                     ("noise_input", "inversion"), ("infer_edit_region", "region")):
        original = getattr(engine, fn)

        def wrapper(*args, _original=original, _part=part, **kwargs):
            before = timer.seconds.get("UNet", 0.0)
            with timer.part(_part):
                out = _original(*args, **kwargs)
            timer.seconds["UNet outside the sampler"] = (timer.seconds.get("UNet outside the sampler", 0.0)
                                                        + timer.seconds.get("UNet", 0.0) - before)
            return out

        patched[fn] = original
        setattr(engine, fn, wrapper)
    unet, classifier = editor.model.model, editor.classifier
    editor.model.model = _TimedModule(unet, timer, "UNet")
    if classifier is not None:
        editor.classifier = _TimedModule(classifier, timer, "classifier")
    try:
        yield
    finally:
        for fn, original in patched.items():
            setattr(engine, fn, original)
        editor.model.model, editor.classifier = unet, classifier


def components(seconds, total):
    """The parts of one edit's `total` seconds (COMPONENTS) from an instrumented run's timer."""
    inversion, region = seconds.get("inversion", 0.0), seconds.get("region", 0.0)
    unet = seconds.get("UNet", 0.0) - seconds.get("UNet outside the sampler", 0.0)
    classifier = seconds.get("classifier", 0.0)
    return dict(zip(COMPONENTS, (inversion, region, unet, classifier,
                                 max(0.0, total - inversion - region - unet - classifier))))


class PeakMemory:
    """Peak memory an edit adds to the process: on CUDA allocated tensor memory, on Linux CPUs the
    resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs after returning freed
    heap pages to the system); None where neither is available."""

    def __init__(self, device):
        self.device = device
        self.libc = None
        if device.type != "cuda" and platform.system() == "Linux":
            with contextlib.suppress(OSError):
                self.libc = ctypes.CDLL("libc.so.6")

    @staticmethod
    def _status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(field)

    def start(self):
        gc.collect()
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        self.base = None
        if self.libc is not None:
            with contextlib.suppress(OSError):
                self.libc.malloc_trim(0)
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.base = self._status("VmRSS")

    def stop(self):
        """MiB above the level at start(), or None."""
        if self.device.type == "cuda":
            _sync(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if self.base is None:
            return None
        with contextlib.suppress(OSError):
            return (self._status("VmHWM") - self.base) / 2**20
        return None


def _median(values):
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2 if n else float("nan")


def time_preset(editor, preset, repeats, paper_steps, batch_size=1, compare=True, measure_components=True):
    """Time `repeats` edits of `batch_size` images, alternating the fast path and (with `compare`)
    the reference path after one warm-up edit of each; return (row dict, opts)."""
    overrides = dict(lpips_sim_lambda=0.0, id_lambda=0.0)  # LPIPS / ArcFace need weights not on disk
    if preset == "paper" and paper_steps:
        overrides["timestep_respacing"] = str(paper_steps)
    opts = EditOptions.from_preset(preset, **overrides)
    s = editor.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, s, s, generator=g) * 2 - 1
    a = (torch.rand(batch_size, 20, generator=g) > 0.5).float()
    q = query_from_indices(a, [9])
    ways = ("new", "baseline") if compare else ("new",)
    times = {w: [] for w in ways}
    parts = {w: [] for w in ways}
    memory = {w: None for w in ways}
    images = {}
    evals = {}
    peak = PeakMemory(editor.device)
    sync = editor.device.type == "cuda"
    for r in range(repeats + 1):  # r == 0: warm-up
        for way in (ways if r % 2 else ways[::-1]):  # alternate which way goes first
            editor.set_fast_path(way == "new")
            timer = _Timer(editor.device, sync)
            last = r == repeats
            if last:
                peak.start()
            with (instrumented(editor, timer) if measure_components else contextlib.nullcontext()):
                _sync(editor.device)
                start = time.perf_counter()
                res = editor.edit(x, a, q, opts, seeds=[r + i for i in range(batch_size)])
                _sync(editor.device)
                elapsed = time.perf_counter() - start
            if last:
                memory[way] = peak.stop()
            if r:
                times[way].append(elapsed)
                if measure_components:
                    parts[way].append(components(timer.seconds, elapsed))
            evals[way] = res.unet_evals
            images[way] = res.images.float().cpu()
    editor.set_fast_path(True)
    row = dict(batch_size=batch_size, seconds_per_edit=_median(times["new"]) / batch_size,
               unet_evals=evals["new"], peak_memory_mib=memory["new"])
    row["edits_per_second"] = 1.0 / row["seconds_per_edit"]
    if measure_components:
        row["components"] = {c: _median([p[c] for p in parts["new"]]) / batch_size for c in COMPONENTS}
    if compare:
        row.update(baseline_seconds_per_edit=_median(times["baseline"]) / batch_size,
                   baseline_unet_evals=evals["baseline"], baseline_peak_memory_mib=memory["baseline"],
                   speedup=_median([b / n for b, n in zip(times["baseline"], times["new"])]))
        if measure_components:
            row["baseline_components"] = {c: _median([p[c] for p in parts["baseline"]]) / batch_size
                                          for c in COMPONENTS}
        mse = float((images["new"] - images["baseline"]).pow(2).mean())
        row["psnr_new_vs_baseline_db"] = round(10 * torch.log10(torch.tensor(4.0 / mse)).item(), 1) if mse else None
    return row, opts


def announce(args, sizes):
    """What will be timed and, on a CPU, about how long it takes (said before the first edit)."""
    total = 0.0
    ways = 2 if getattr(args, "compare", False) else 1
    images = sum(int(b) for b in getattr(args, "batch_sizes", "1").split(","))
    for size in sizes:
        scale = ((size or 64) / 64) ** 2
        for preset in args.presets.split(","):
            per_edit = CPU_SECONDS_PER_EDIT.get(preset, CPU_SECONDS_PER_EDIT["fast"]) * scale
            if preset == "paper" and args.paper_steps:
                per_edit *= args.paper_steps / 1000
            total += per_edit * (args.repeats + 1) * ways * images  # + the warm-up edit
    what = (f"timing preset(s) {args.presets}, batches of {getattr(args, 'batch_sizes', '1')}, {args.repeats} edits "
            f"+ 1 warm-up each" + (", the fast path and the reference path in turn" if ways == 2 else ""))
    return f"{what}; about {total / 60:.0f} min on 2 CPU cores" if total >= 90 else f"{what}; about {total:.0f} s on 2 CPU cores"


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def print_row(preset, size, opts, row):
    steps = opts.timestep_respacing or "1000"
    base = row.get("baseline_seconds_per_edit")
    print(f"{preset:8s} {size:4d} {steps:>6s} {opts.sampler:>6s} {opts.inversion:>10s} {row['batch_size']:5d} "
          f"{row['seconds_per_edit']:8.3f} {_fmt(base, '9.3f')} {_fmt(row.get('speedup'), '6.2f')}x "
          f"{row['unet_evals']:6g} {_fmt(row['peak_memory_mib'], '7.0f')} {_fmt(row.get('baseline_peak_memory_mib'), '7.0f')}",
          flush=True)


def print_components(row):
    if "components" not in row:
        return
    new, old = row["components"], row.get("baseline_components", {})
    print("    per edit, s: " + ", ".join(
        f"{c} {new[c]:.3f}" + (f" (was {old[c]:.3f})" if c in old else "") for c in COMPONENTS), flush=True)


def main(argv=None, args=None):
    if args is None:
        args = parse_and_check(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    use_random = args.random or not os.path.isfile(args.model_path)
    device = torch.device(args.device)
    measure_components = args.components if args.components is not None else device.type != "cuda"
    where = machine_line(device)
    print(f"torch {torch.__version__}, {where}, "
          f"{'random-weight models' if use_random else args.model_path}")
    sizes = [int(s) for s in args.resolutions.split(",")] if use_random else [None]
    print(announce(args, sizes), flush=True)
    print(f"{'preset':8s} {'res':>4s} {'steps':>6s} {'sampler':>6s} {'inversion':>10s} {'batch':>5s} {'s/edit':>8s} "
          f"{'was s/edit':>9s} {'ratio':>7s} {'UNet evals':>6s} {'MiB':>7s} {'was MiB':>7s}")
    doc = dict(command=" ".join(["python scripts/bench_edit.py"] + list(argv if argv is not None else sys.argv[1:])),
               date=datetime.date.today().isoformat(), hardware=where, torch=torch.__version__,
               baseline="the same code with AttributeEditor.set_fast_path(False), timed in turn with the fast path"
               if args.compare else None,
               rows=[], batched_rows=[])
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            if use_random:
                model_path, clf_path = random_checkpoint(tmp, size)
            else:
                model_path, clf_path = args.model_path, args.classifier_path
            editor = AttributeEditor(model_path, clf_path, device=device)
            for preset in args.presets.split(","):
                for batch_size in batch_sizes:
                    row, opts = time_preset(editor, preset, args.repeats, args.paper_steps, batch_size,
                                            args.compare, measure_components)
                    print_row(preset, editor.image_size, opts, row)
                    print_components(row)
                    row = dict(preset=preset, resolution=editor.image_size, steps=opts.timestep_respacing or "1000",
                               sampler=opts.sampler, inversion=opts.inversion, **row)
                    doc["rows" if batch_size == 1 else "batched_rows"].append(row)
    if args.output:
        atomic_write(args.output, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(args=_CLI_ARGS))
