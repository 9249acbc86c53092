"""
A small key/value logger in the spirit of openai/baselines' logger.

Values are accumulated with `logkv` / `logkv_mean` and written by `dumpkvs`
(averaged over ranks when training is distributed) to every configured
output: "stdout" (one line per dump), "log" (the same lines in log.txt, plus
every `log` message), "csv" (progress.csv) and "tensorboard" (when the
tensorboard package is installed). Rank 0 writes all outputs; other ranks
only keep a log.rank<R>.txt for their own messages.
"""

import csv
import datetime
import importlib.util
import os
import sys
from collections import defaultdict

import torch.distributed as dist

from .atomic import atomic_write


class StdoutFormat:
    """Print one line per dump: `step 100 | loss 0.0123 | ...`."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write_kvs(self, kvs):
        self.stream.write(_format_line(kvs) + "\n")
        self.stream.flush()

    def write_text(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        pass


class TextFormat(StdoutFormat):
    """The stdout lines, appended to a text file."""

    def __init__(self, path):
        super().__init__(open(path, "a"))

    def close(self):
        self.stream.close()


class CSVFormat:
    """progress.csv: one row per dump; new keys widen the header in place."""

    def __init__(self, path):
        self.path = path
        self.keys = []
        if os.path.exists(path):  # resuming: keep the rows already there
            with open(path, newline="") as f:
                self.keys = next(csv.reader(f), [])

    def write_kvs(self, kvs):
        new_keys = [k for k in _ordered_keys(kvs) if k not in self.keys]
        if new_keys:
            self._rewrite_with(self.keys + new_keys)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([kvs.get(k, "") for k in self.keys])

    def rewind(self, step):
        """Drop the rows whose "step" is beyond `step` (a run resumed from `step` logs them again);
        return how many were dropped."""
        if not os.path.exists(self.path):
            return 0
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if not _beyond(row.get("step"), step)]
        if len(kept) != len(rows):
            self._write(self.keys, kept)
        return len(rows) - len(kept)

    def _rewrite_with(self, keys):
        rows = []
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        self._write(keys, rows)

    def _write(self, keys, rows):
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys, restval="", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.path, write)
        self.keys = keys

    def write_text(self, text):
        pass

    def close(self):
        pass


class TensorBoardFormat:
    """Scalars for TensorBoard, indexed by the "step" key when present."""

    def __init__(self, dir):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(dir)
        self.dumps = 0

    def write_kvs(self, kvs):
        step = int(kvs.get("step", self.dumps))
        for k, v in kvs.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()
        self.dumps += 1

    def write_text(self, text):
        pass

    def close(self):
        self.writer.close()


def _beyond(value, step):
    try:
        return float(value) > step
    except (TypeError, ValueError):  # no step in this row
        return False


def _ordered_keys(kvs):
    first = [k for k in ("step", "samples") if k in kvs]
    return first + sorted(k for k in kvs if k not in first)


def _format_line(kvs):
    parts = []
    for k in _ordered_keys(kvs):
        v = kvs[k]
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return " | ".join(parts)


def tensorboard_available():
    return importlib.util.find_spec("tensorboard") is not None


def make_output_format(name, dir):
    if name == "stdout":
        return StdoutFormat()
    if name == "log":
        return TextFormat(os.path.join(dir, "log.txt"))
    if name == "csv":
        return CSVFormat(os.path.join(dir, "progress.csv"))
    if name == "tensorboard":
        return TensorBoardFormat(os.path.join(dir, "tb"))
    raise ValueError(f"unknown logger output format {name!r} (expected stdout, log, csv or tensorboard)")


class Logger:
    """Accumulates key/values between dumps and writes them to its outputs."""

    def __init__(self, dir, output_formats):
        self.dir = dir
        self.output_formats = output_formats
        self.name2val = {}
        self.name2cnt = defaultdict(int)

    def logkv(self, key, val):
        self.name2val[key] = val
        self.name2cnt[key] = 1

    def logkv_mean(self, key, val):
        cnt = self.name2cnt[key]
        old = self.name2val.get(key, 0.0)
        self.name2val[key] = old * cnt / (cnt + 1) + val / (cnt + 1)
        self.name2cnt[key] = cnt + 1

    def dumpkvs(self):
        """Write the accumulated values (rank-averaged) and start afresh. Collective when distributed."""
        kvs = _mean_over_ranks(self.name2val, self.name2cnt)
        for fmt in self.output_formats:
            fmt.write_kvs(kvs)
        self.name2val.clear()
        self.name2cnt.clear()
        return kvs

    def log(self, *args):
        text = " ".join(str(a) for a in args)
        for fmt in self.output_formats:
            fmt.write_text(text)

    def rewind_to_step(self, step):
        """Drop logged rows beyond `step` where the outputs allow it (progress.csv); rows dropped."""
        return sum(fmt.rewind(step) for fmt in self.output_formats if hasattr(fmt, "rewind"))

    def close(self):
        for fmt in self.output_formats:
            fmt.close()


def _mean_over_ranks(name2val, name2cnt):
    """Count-weighted mean of every key over all ranks (keys may differ by rank)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return dict(name2val)
    local = {k: (float(v), name2cnt[k]) for k, v in name2val.items() if _is_number(v)}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    totals = defaultdict(lambda: [0.0, 0])
    for rank_vals in gathered:
        for k, (v, cnt) in rank_vals.items():
            totals[k][0] += v * cnt
            totals[k][1] += cnt
    merged = {k: total / cnt for k, (total, cnt) in totals.items()}
    for k in ("step", "samples"):  # counters stay integers
        if k in merged:
            merged[k] = int(round(merged[k]))
    return merged


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_current = Logger(dir=None, output_formats=[StdoutFormat()])


def configure(dir=None, format_strs=None):
    """
    Send logs to `dir` (created if needed).

    :param dir: log directory; default runs/<timestamp> in the working directory.
    :param format_strs: outputs for this rank; default stdout, log, csv (+ tensorboard
        when installed) on rank 0 and a per-rank log file elsewhere.
    """
    global _current
    rank = dist.get_rank() if dist.is_initialized() else 0
    if dir is None:
        dir = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(dir, exist_ok=True)
    if format_strs is not None:
        formats = [make_output_format(name, dir) for name in format_strs]
    elif rank == 0:
        names = ["stdout", "log", "csv"] + (["tensorboard"] if tensorboard_available() else [])
        formats = [make_output_format(name, dir) for name in names]
    else:
        formats = [TextFormat(os.path.join(dir, f"log.rank{rank}.txt"))]
    _current.close()
    _current = Logger(dir=dir, output_formats=formats)
    return _current


def get_current():
    return _current


def get_dir():
    """The directory logs go to (None before `configure`)."""
    return _current.dir


def logkv(key, val):
    """Record `val` for `key` in this dump (the last value wins)."""
    _current.logkv(key, val)


def logkv_mean(key, val):
    """Record `val` for `key`, averaged with the other values of this dump."""
    _current.logkv_mean(key, val)


def logkvs(d):
    for k, v in d.items():
        logkv(k, v)


def dumpkvs():
    return _current.dumpkvs()


def rewind_to_step(step):
    """Resuming from `step`: drop the progress.csv rows logged after it (they will be logged again)."""
    return _current.rewind_to_step(step)


def log(*args):
    """Write a text message to this rank's outputs."""
    _current.log(*args)
