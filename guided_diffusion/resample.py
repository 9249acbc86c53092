"""
Timestep samplers for training: which t each sample of a batch is trained at,
and the importance weight that keeps the loss estimate unbiased.
"""

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.distributed as dist


def create_named_schedule_sampler(name, diffusion):
    """
    :param name: "uniform" or "loss-second-moment".
    :param diffusion: the GaussianDiffusion to sample timesteps for.
    """
    if name == "uniform":
        return UniformSampler(diffusion)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(diffusion)
    raise ValueError(f"unknown schedule sampler {name!r}; expected 'uniform' or 'loss-second-moment'")


class ScheduleSampler(ABC):
    """
    A distribution p over the timesteps. Sampling t ~ p and weighting the
    loss by 1 / (T p(t)) leaves the expected loss that of uniform t, while
    a p concentrated where the loss varies most lowers its variance.
    """

    @abstractmethod
    def weights(self):
        """Positive numpy array [T], proportional to p (need not sum to 1)."""

    def sample(self, batch_size, device):
        """
        Importance-sample timesteps for a batch (uses torch's global RNG).

        :return: (timesteps long [batch_size], weights float [batch_size])
            on device; weights are 1 / (T p(t)).
        """
        weights = np.asarray(self.weights(), dtype=np.float64)
        probs = torch.from_numpy(weights / weights.sum())
        indices = torch.multinomial(probs, batch_size, replacement=True)
        importance = 1.0 / (len(probs) * probs[indices])
        return indices.to(device), importance.float().to(device)


class UniformSampler(ScheduleSampler):
    def __init__(self, diffusion):
        self.diffusion = diffusion
        self._weights = np.ones([diffusion.num_timesteps])

    def weights(self):
        return self._weights


class LossAwareSampler(ScheduleSampler):
    """A sampler whose distribution follows the losses seen in training."""

    def update_with_local_losses(self, local_ts, local_losses):
        """
        Record this rank's batch of (timestep, loss) pairs.

        When torch.distributed is initialised, the pairs of all ranks are
        gathered first, so every rank applies the same update and keeps the
        same distribution. Call it on every rank.

        :param local_ts: integer tensor [B] of timesteps.
        :param local_losses: float tensor [B] of their losses.
        """
        if local_ts.shape != local_losses.shape or local_ts.dim() != 1:
            raise ValueError(
                f"local_ts and local_losses must be 1-D of one length, got "
                f"{tuple(local_ts.shape)} and {tuple(local_losses.shape)}"
            )
        if not (dist.is_available() and dist.is_initialized()):
            self.update_with_all_losses(local_ts.tolist(), local_losses.tolist())
            return
        world_size = dist.get_world_size()
        batch_sizes = [torch.zeros(1, dtype=torch.int64, device=local_ts.device) for _ in range(world_size)]
        dist.all_gather(batch_sizes, torch.tensor([len(local_ts)], dtype=torch.int64, device=local_ts.device))
        batch_sizes = [int(size.item()) for size in batch_sizes]
        # all_gather needs equal sizes: pad every rank's batch to the largest.
        max_size = max(batch_sizes)
        padded_ts = torch.zeros(max_size, dtype=torch.int64, device=local_ts.device)
        padded_losses = torch.zeros(max_size, dtype=torch.float64, device=local_ts.device)
        padded_ts[: len(local_ts)] = local_ts.to(torch.int64)
        padded_losses[: len(local_losses)] = local_losses.detach().to(torch.float64)
        ts_batches = [torch.zeros_like(padded_ts) for _ in range(world_size)]
        loss_batches = [torch.zeros_like(padded_losses) for _ in range(world_size)]
        dist.all_gather(ts_batches, padded_ts)
        dist.all_gather(loss_batches, padded_losses)
        timesteps = [t for batch, size in zip(ts_batches, batch_sizes) for t in batch[:size].tolist()]
        losses = [loss for batch, size in zip(loss_batches, batch_sizes) for loss in batch[:size].tolist()]
        self.update_with_all_losses(timesteps, losses)

    @abstractmethod
    def update_with_all_losses(self, ts, losses):
        """
        Update the distribution with every rank's (timestep, loss) pairs.
        Must be deterministic: all ranks call it with the same arguments.

        :param ts: list of int timesteps.
        :param losses: list of float losses.
        """


class LossSecondMomentResampler(LossAwareSampler):
    """
    p(t) proportional to sqrt(E[loss_t^2]) over the last history_per_term
    losses at t (Nichol & Dhariwal 2021), mixed with uniform_prob of the
    uniform distribution. Uniform until every t has a full history.
    """

    def __init__(self, diffusion, history_per_term=10, uniform_prob=0.001):
        self.diffusion = diffusion
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self._loss_history = np.zeros([diffusion.num_timesteps, history_per_term], dtype=np.float64)
        self._loss_counts = np.zeros([diffusion.num_timesteps], dtype=np.int64)

    def weights(self):
        if not self._warmed_up():
            return np.ones([self.diffusion.num_timesteps], dtype=np.float64)
        weights = np.sqrt(np.mean(self._loss_history**2, axis=-1))
        if weights.sum() == 0:
            return np.ones_like(weights)
        weights /= np.sum(weights)
        return weights * (1 - self.uniform_prob) + self.uniform_prob / len(weights)

    def update_with_all_losses(self, ts, losses):
        for t, loss in zip(ts, losses):
            if self._loss_counts[t] == self.history_per_term:
                # Full: drop the oldest loss.
                self._loss_history[t, :-1] = self._loss_history[t, 1:]
                self._loss_history[t, -1] = loss
            else:
                self._loss_history[t, self._loss_counts[t]] = loss
                self._loss_counts[t] += 1

    def _warmed_up(self):
        return bool((self._loss_counts == self.history_per_term).all())
