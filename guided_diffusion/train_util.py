"""
The diffusion training loop: microbatching, mixed precision, several EMA
rates, linear learning-rate annealing, data parallelism and resumable,
atomically written checkpoints in guided-diffusion's layout.

A log dir holds, per saved step S (six digits):
    modelS.pt        model weights (float32 state dict)
    ema_<rate>_S.pt  EMA weights for each rate
    optS.pt          AdamW state
and model_config.json, the model/diffusion hyper-parameters. modelS.pt is
written last, so its presence means the whole step S is on disk. Resuming
checks more: the newest step whose files all load wins, and a newer step with
a corrupt or missing file is skipped with a message naming the file.
"""

import functools
import hashlib
import os
import re
import time

import numpy as np
import torch as th
from torch.nn.parallel.distributed import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from . import dist_util, logger
from .atomic import atomic_torch_save
from .fp16_util import MixedPrecisionTrainer
from .nn import update_ema
from .resample import LossAwareSampler, UniformSampler
from .script_util import (
    MODEL_CONFIG_FILE,
    check_state_dict,
    config_differences,
    load_model_config,
    save_model_config,
)

_MODEL_FILE = re.compile(r"^model(\d+)\.pt$")


class TrainLoop:
    """
    Trains `model` on batches from `data` with `diffusion.training_losses`.

    :param data: iterator of (images [B, C, H, W], model_kwargs dict of [B, ...] tensors).
    :param batch_size: images per rank per step (the batches `data` yields).
    :param microbatch: images per forward/backward; <= 0 means the whole batch.
        The step equals the whole-batch step: timesteps and noise are drawn
        for the batch and the gradient is the batch mean.
    :param lr: peak learning rate of AdamW.
    :param ema_rate: one rate, or several as a list or "0.9999,0.999".
    :param log_interval: steps between log lines.
    :param save_interval: steps between checkpoints.
    :param resume_checkpoint: modelNNNNNN.pt to resume from; "" finds the
        latest one in the log dir (a fresh run when there is none).
    :param lr_anneal_steps: if > 0, the lr falls linearly to 0 at this step,
        where training ends.
    :param max_steps: if > 0, stop at this step without touching the lr
        schedule (time-boxed runs).
    :param seed: if set, the random draws of step s depend only on (seed, s,
        rank), so a resumed run repeats an uninterrupted one exactly.
    :param model_config: hyper-parameter dict written to model_config.json
        (and checked against the one of the checkpoint resumed from).
    """

    def __init__(
        self,
        *,
        model,
        diffusion,
        data,
        batch_size,
        microbatch,
        lr,
        ema_rate,
        log_interval,
        save_interval,
        resume_checkpoint,
        use_fp16=False,
        use_bf16=False,
        fp16_scale_growth=1e-3,
        schedule_sampler=None,
        weight_decay=0.0,
        lr_anneal_steps=0,
        max_steps=0,
        seed=None,
        model_config=None,
        ema_warmup=False,
    ):
        if logger.get_dir() is None:
            raise ValueError("configure the logger (logger.configure(dir)) before creating a TrainLoop")
        if log_interval <= 0 or save_interval <= 0:
            raise ValueError(
                f"log_interval and save_interval must be positive, got {log_interval} and {save_interval}"
            )
        self.model = model
        self.diffusion = diffusion
        self.data = data
        self.batch_size = batch_size
        self.microbatch = microbatch if microbatch > 0 else batch_size
        self.lr = lr
        self.ema_rate = parse_ema_rates(ema_rate)
        self.ema_warmup = ema_warmup
        self.log_interval = log_interval
        self.save_interval = save_interval
        self.schedule_sampler = schedule_sampler or UniformSampler(diffusion)
        self.weight_decay = weight_decay
        self.lr_anneal_steps = lr_anneal_steps
        self.max_steps = max_steps
        self.seed = seed
        self.log_dir = logger.get_dir()
        self.rank = dist_util.get_rank()
        self.global_batch = batch_size * dist_util.get_world_size()
        self.device = next(model.parameters()).device

        # Rank 0 decides what to resume from; the others follow even if their disk differs.
        resume_path = dist_util.rank0_result(
            lambda: find_resume_checkpoint(resume_checkpoint, self.log_dir, ema_rates=self.ema_rate, log=logger.log)
        )
        self.resume_checkpoint = resume_path
        self.resume_step = parse_resume_step_from_filename(resume_path) if resume_path else 0
        self.step = self.resume_step
        if self.rank == 0:  # rows logged after the resumed step would be logged twice
            dropped = logger.rewind_to_step(self.resume_step)
            if dropped:
                logger.log(f"progress.csv: dropped {dropped} rows after step {self.resume_step} (logged again)")
        if model_config is not None:
            self._check_and_write_config(model_config, resume_path)
        if resume_path:
            self._load_model(resume_path)

        self.mp_trainer = MixedPrecisionTrainer(
            model=self.model,
            use_fp16=use_fp16,
            use_bf16=use_bf16,
            fp16_scale_growth=fp16_scale_growth,
            log_fn=logger.logkv_mean,
        )
        self.opt = th.optim.AdamW(self.mp_trainer.master_params, lr=self.lr, weight_decay=self.weight_decay)
        if resume_path:
            self._load_optimizer(resume_path)
        self.ema_params = [self._load_ema(rate, resume_path) for rate in self.ema_rate]

        self.use_ddp = dist_util.is_distributed()
        if self.use_ddp:
            self.ddp_model = DDP(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                bucket_cap_mb=128,
            )
        else:
            self.ddp_model = self.model

    def _check_and_write_config(self, model_config, resume_path):
        if resume_path:
            try:
                recorded = load_model_config(resume_path)
            except FileNotFoundError:  # bare weights without a JSON: nothing to compare
                recorded = None
            differences = config_differences(recorded, model_config) if recorded else []
            if differences:
                details = ", ".join(
                    f"{k}={recorded[k]!r} there, {model_config.get(k)!r} now" for k in differences
                )
                raise ValueError(
                    f"cannot resume from {resume_path}: it was trained with other hyper-parameters "
                    f"({details}); use another --log_dir or the same flags"
                )
        if self.rank == 0:
            save_model_config(model_config, os.path.join(self.log_dir, MODEL_CONFIG_FILE))

    def _load_model(self, path):
        logger.log(f"resuming from {path} (step {self.resume_step})")
        state_dict = dist_util.load_state_dict(path, map_location=self.device)
        check_state_dict(self.model, state_dict, path)
        self.model.load_state_dict(state_dict)

    def _load_optimizer(self, path):
        opt_path = os.path.join(os.path.dirname(path), f"opt{self.resume_step:06d}.pt")
        if not dist_util.rank0_result(lambda: os.path.isfile(opt_path)):
            logger.log(f"warning: {opt_path} not found, starting with a fresh optimizer")
            return
        try:
            state = dist_util.load_state_dict(opt_path, map_location=self.device)
        except ValueError as exc:  # the file itself is broken
            raise ValueError(
                f"{opt_path} is unreadable (corrupt or truncated: {exc.__cause__ or exc}); move step "
                f"{self.resume_step}'s files away to resume from an earlier step"
            ) from exc
        try:
            self.opt.load_state_dict(state)
        except ValueError as exc:  # a readable file of another optimizer
            raise ValueError(
                f"{opt_path} does not fit this optimizer: it was saved for other parameters "
                f"(another model, or --use_fp16 changed): {exc}"
            ) from exc
        for group in self.opt.param_groups:  # the flags of this run win over the saved ones
            group["lr"] = self.lr
            group["weight_decay"] = self.weight_decay

    def _load_ema(self, rate, resume_path):
        params = [p.detach().clone() for p in self.mp_trainer.master_params]
        if not resume_path:
            return params
        ema_path = os.path.join(os.path.dirname(resume_path), f"ema_{rate}_{self.resume_step:06d}.pt")
        if not dist_util.rank0_result(lambda: os.path.isfile(ema_path)):
            logger.log(f"warning: {ema_path} not found, EMA {rate} restarts from the model weights")
            return params
        state_dict = dist_util.load_state_dict(ema_path, map_location=self.device)
        check_state_dict(self.model, state_dict, ema_path)
        return [p.detach().clone() for p in self.mp_trainer.state_dict_to_master_params(state_dict)]

    def run_loop(self):
        """Train until lr_anneal_steps / max_steps (forever when neither is set); save at the end."""
        ends = [s for s in (self.lr_anneal_steps, self.max_steps) if s > 0]
        end = min(ends) if ends else None
        progress = tqdm(initial=self.step, total=end, desc="training", unit="step", disable=self.rank != 0)
        self._last_log = (self.step, time.time())
        while end is None or self.step < end:
            batch, cond = next(self.data)
            self.run_step(batch, cond)
            progress.update(1)
            if self.step % self.log_interval == 0:
                self.log_progress()
            if self.step % self.save_interval == 0:
                self.save()
        progress.close()
        if self.step % self.save_interval != 0 and self.step > self.resume_step:
            self.save()
        self.log_parameter_hash()

    def run_step(self, batch, cond):
        """One optimisation step on a batch; advances self.step."""
        if self.seed is not None:
            _seed_everything(self.seed, self.step, self.rank)
        self._set_lr()
        self.forward_backward(batch, cond)
        if self.mp_trainer.optimize(self.opt):
            for rate, params in zip(self.ema_rate, self.ema_params):
                update_ema(params, self.mp_trainer.master_params, rate=ema_decay(rate, self.step, self.ema_warmup))
        self.step += 1
        logger.logkv("step", self.step)
        logger.logkv("samples", self.step * self.global_batch)

    def forward_backward(self, batch, cond):
        """Accumulate the gradient of the batch-mean loss, one microbatch at a time."""
        self.mp_trainer.zero_grad()
        batch = batch.to(self.device)
        cond = {k: v.to(self.device) for k, v in cond.items()}
        n = batch.shape[0]
        t, weights = self.schedule_sampler.sample(n, self.device)
        noise = th.randn_like(batch)
        for i in range(0, n, self.microbatch):
            part = slice(i, i + self.microbatch)
            compute_losses = functools.partial(
                self.diffusion.training_losses,
                self.ddp_model,
                batch[part],
                t[part],
                model_kwargs={k: v[part] for k, v in cond.items()},
                noise=noise[part],
            )
            last_microbatch = i + self.microbatch >= n
            with self.mp_trainer.autocast():
                if last_microbatch or not self.use_ddp:
                    losses = compute_losses()
                else:
                    with self.ddp_model.no_sync():  # all-reduce once, after the last microbatch
                        losses = compute_losses()
            if isinstance(self.schedule_sampler, LossAwareSampler):
                self.schedule_sampler.update_with_local_losses(t[part], losses["loss"].detach())
            loss = (losses["loss"].float() * weights[part]).sum() / n
            log_loss_dict(self.diffusion, t[part], {k: v * weights[part] for k, v in losses.items()})
            self.mp_trainer.backward(loss)

    def _set_lr(self):
        lr = self.lr
        if self.lr_anneal_steps:
            lr = self.lr * max(0.0, 1.0 - self.step / self.lr_anneal_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        logger.logkv("lr", lr)

    def log_progress(self):
        """Write the accumulated statistics plus throughput (collective when distributed)."""
        last_step, last_time = self._last_log
        now = time.time()
        logger.logkv(
            "samples_per_sec", (self.step - last_step) * self.global_batch / max(now - last_time, 1e-9)
        )
        logger.dumpkvs()
        self._last_log = (self.step, now)

    def save(self):
        """Write optS.pt, ema_<rate>_S.pt and modelS.pt (in that order, atomically) from rank 0."""
        if self.rank == 0:
            for rate, params in zip(self.ema_rate, self.ema_params):
                self._save_state(
                    self.mp_trainer.master_params_to_state_dict(params), f"ema_{rate}_{self.step:06d}.pt"
                )
            self._save_state(self.opt.state_dict(), f"opt{self.step:06d}.pt")
            self._save_state(
                self.mp_trainer.master_params_to_state_dict(self.mp_trainer.master_params),
                f"model{self.step:06d}.pt",
            )
            logger.log(f"saved checkpoint for step {self.step} in {self.log_dir}")
        dist_util.barrier()

    def _save_state(self, state, filename):
        save_atomically(state, os.path.join(self.log_dir, filename))

    def log_parameter_hash(self):
        """Log this rank's parameter hash; collective: warns when ranks disagree."""
        digest = parameter_hash(self.mp_trainer.master_params)
        logger.log(f"rank {self.rank} step {self.step} parameter hash {digest}")
        digests = dist_util.all_gather_object(digest)
        if len(set(digests)) > 1:
            logger.log(f"warning: ranks hold different parameters: {digests}")


def ema_decay(rate, step, warmup):
    """The EMA decay used at `step`: `rate`, or with warm-up min(rate, (1 + step) / (10 + step)).

    Without warm-up the average keeps a weight rate**step on the initial (all-zero-output) model,
    which for short runs (0.999 over 2,000 steps: 14 %) ruins the EMA weights.
    """
    return min(rate, (1.0 + step) / (10.0 + step)) if warmup else rate


def parse_ema_rates(ema_rate):
    """[float] from 0.9999, "0.9999,0.999" or a list; each rate in [0, 1)."""
    if isinstance(ema_rate, str):
        try:
            rates = [float(x) for x in ema_rate.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"ema_rate must be comma-separated numbers, got {ema_rate!r}") from None
    elif isinstance(ema_rate, (int, float)):
        rates = [float(ema_rate)]
    else:
        rates = [float(x) for x in ema_rate]
    bad = [r for r in rates if not 0 <= r < 1]
    if bad:
        raise ValueError(f"EMA rates must lie in [0, 1), got {bad}")
    return rates


def parse_resume_step_from_filename(filename):
    """NNNNNN from .../modelNNNNNN.pt; 0 for other names (weights to start from)."""
    match = _MODEL_FILE.match(os.path.basename(filename))
    return int(match.group(1)) if match else 0


def find_resume_checkpoint(resume_checkpoint, log_dir, ema_rates=None, log=None):
    """
    The checkpoint to resume from: `resume_checkpoint` when given (it must
    exist), else the modelNNNNNN.pt of the highest step in `log_dir`, else None.

    With `ema_rates` (training), the search in `log_dir` takes the newest step
    whose whole set — modelS.pt, optS.pt and ema_<rate>_S.pt for every rate —
    is on disk and loads; each newer step is skipped with a message (through
    `log`) naming its missing or unreadable file. When no step is complete
    (e.g. --ema_rate changed), the newest step whose files on disk all load is
    taken (its missing files start afresh). A log dir where every step has an
    unreadable file is an error rather than a silent fresh start.
    """
    if resume_checkpoint:
        if not os.path.isfile(resume_checkpoint):
            raise FileNotFoundError(f"resume checkpoint not found: {resume_checkpoint}")
        return resume_checkpoint
    if not log_dir or not os.path.isdir(log_dir):
        return None
    steps = {int(m.group(1)): name for name in os.listdir(log_dir) if (m := _MODEL_FILE.match(name))}
    if not steps:
        return None
    if ema_rates is None:
        return os.path.join(log_dir, steps[max(steps)])
    log = log or (lambda message: None)
    rates = parse_ema_rates(ema_rates)
    newest_first = sorted(steps, reverse=True)

    def files(step):
        names = [steps[step], f"opt{step:06d}.pt"] + [f"ema_{rate}_{step:06d}.pt" for rate in rates]
        return [os.path.join(log_dir, name) for name in names]

    def first_problem(paths):
        return next(filter(None, (checkpoint_problem(p) for p in paths if os.path.isfile(p))), None)

    skipped = []
    for step in newest_first:  # complete sets first
        missing = [p for p in files(step) if not os.path.isfile(p)]
        problem = f"{missing[0]} is missing" if missing else first_problem(files(step))
        if problem is None:
            for _, message in skipped:
                log(message)
            return os.path.join(log_dir, steps[step])
        skipped.append((step, f"warning: not resuming from step {step}: {problem}"))
    for step in newest_first:  # no complete set: the newest whose files on disk all load
        problem = first_problem(files(step))
        if problem is None:
            for message in (m for s, m in skipped if s > step):
                log(message)
            log(f"warning: no step in {log_dir} has all of its model, opt and ema_<rate> files; resuming "
                f"from step {step}, whose missing files start afresh")
            return os.path.join(log_dir, steps[step])
    for _, message in skipped:
        log(message)
    raise ValueError(
        f"no step in {log_dir} can be resumed: each has an unreadable file (the newest: {skipped[0][1].split(': ', 2)[-1]}); "
        "move them away or use another --log_dir to start afresh"
    )


def checkpoint_problem(path):
    """None when `path` loads with torch.load, else a one-line description of what is wrong with it."""
    if not os.path.isfile(path):
        return f"{path} is missing"
    try:
        th.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / pickle errors of every kind for a corrupt file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{path} is unreadable (corrupt or truncated: {type(exc).__name__}{': ' + detail if detail else ''})"
    return None


def find_ema_checkpoint(log_dir, rate=None, step=None):
    """
    Path of ema_<rate>_<step>.pt in a log dir: the latest step by default and,
    among several rates, the slowest (largest) one unless `rate` is given.
    """
    pattern = re.compile(r"^ema_([0-9.]+)_(\d+)\.pt$")
    found = [
        (int(m.group(2)), float(m.group(1)), name)
        for name in os.listdir(log_dir)
        if (m := pattern.match(name))
    ]
    if rate is not None:
        found = [f for f in found if f[1] == float(rate)]
    if step is not None:
        found = [f for f in found if f[0] == step]
    if not found:
        wanted = f" for rate {rate}" if rate is not None else ""
        raise FileNotFoundError(f"no EMA checkpoint{wanted} in {log_dir}")
    return os.path.join(log_dir, max(found)[2])


# torch.save through a temporary file in the same folder, then rename: never a half-written file.
save_atomically = atomic_torch_save


def parameter_hash(params):
    """Short SHA-256 of parameter values (identical on ranks that hold identical weights)."""
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def log_loss_dict(diffusion, ts, losses):
    """Log each loss term's mean and its mean per quarter of the diffusion process (key_q0..q3)."""
    for key, values in losses.items():
        logger.logkv_mean(key, values.mean().item())
        for sub_t, sub_loss in zip(ts.cpu().numpy(), values.detach().cpu().numpy()):
            quartile = int(4 * sub_t / diffusion.num_timesteps)
            logger.logkv_mean(f"{key}_q{quartile}", float(sub_loss))


def _seed_everything(seed, step, rank):
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    th.manual_seed(int(state[0]) << 32 | int(state[1]))
    np.random.seed(int(state[0]))
