"""
Small neural-network helpers shared by the UNet and the training loop.

Names and behaviour follow openai/guided-diffusion's nn.py, so a model built
from these layers has the same parameters and the same outputs.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


class GroupNorm32(nn.GroupNorm):
    """
    GroupNorm computed in at least float32, returned in the input dtype
    (fp16 activations are normalised without overflow; float64 stays float64).
    """

    def forward(self, x):
        if x.dtype == self.weight.dtype and x.dtype in (torch.float32, torch.float64):
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


def normalization(channels):
    """
    The standard normalization layer: GroupNorm with 32 groups.

    Channel counts that 32 does not divide (only tiny test models have them;
    guided-diffusion cannot build those at all) use gcd(32, channels) groups.

    :param channels: number of input channels.
    :return: a GroupNorm32 module.
    """
    return GroupNorm32(math.gcd(32, channels), channels)


def conv_nd(dims, *args, **kwargs):
    """Create a 1D, 2D, or 3D convolution module."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    if dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims} (expected 1, 2 or 3)")


def linear(*args, **kwargs):
    """Create a linear module."""
    return nn.Linear(*args, **kwargs)


def avg_pool_nd(dims, *args, **kwargs):
    """Create a 1D, 2D, or 3D average pooling module."""
    if dims == 1:
        return nn.AvgPool1d(*args, **kwargs)
    if dims == 2:
        return nn.AvgPool2d(*args, **kwargs)
    if dims == 3:
        return nn.AvgPool3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims} (expected 1, 2 or 3)")


def zero_module(module):
    """Zero out the parameters of a module and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def mean_flat(tensor):
    """Mean over all non-batch dimensions: [N, ...] -> [N]."""
    return tensor.mean(dim=list(range(1, tensor.ndim)))


@torch.no_grad()
def update_ema(target_params, source_params, rate=0.99):
    """
    Move target parameters towards source parameters by an exponential moving
    average: target = rate * target + (1 - rate) * source.

    :param target_params: the EMA parameter sequence (updated in place).
    :param source_params: the current parameter sequence.
    :param rate: the EMA rate (closer to 1 means slower).
    """
    for targ, src in zip(target_params, source_params):
        targ.lerp_(src.to(targ.dtype), 1.0 - rate)


def timestep_embedding(timesteps, dim, max_period=10000):
    """
    Sinusoidal timestep embeddings (cosines first, then sines).

    :param timesteps: [N] tensor of timesteps, possibly fractional.
    :param dim: the dimension D of the output.
    :param max_period: controls the minimum frequency of the embeddings.
    :return: [N, D] float32 tensor.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / half
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def checkpoint(func, inputs, flag):
    """
    Evaluate func(*inputs) without keeping its intermediate activations; they
    are recomputed in the backward pass (less memory, about a third more
    compute). Uses torch's non-reentrant checkpoint, which restores the RNG
    state so dropout masks match between the two passes.

    :param func: the function to evaluate.
    :param inputs: the argument sequence to pass to `func`.
    :param flag: if False (or when no gradient is recorded), call func directly.
    """
    if flag and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(func, *inputs, use_reentrant=False)
    return func(*inputs)
