"""
Timestep respacing: run a diffusion process on a subset of its timesteps
(fewer sampling steps for a model trained on all of them).
"""

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps, section_counts):
    """
    Choose the timesteps of an original process of num_timesteps steps to keep.

    :param num_timesteps: T of the original process.
    :param section_counts: one of
        - "ddimN": N steps with the integer stride of the DDIM paper
          (0, s, 2s, ...), for the stride s that gives exactly N;
        - "N" or "N1,N2,...": split [0, T) into equal sections and take
          N1, N2, ... evenly spaced steps from each (first and last of a
          section included);
        - a list of ints, as the comma-separated form (an int: one section);
        - "" : all T steps.
    :return: set of kept timesteps of the original process.
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec == "":
            return set(range(num_timesteps))
        if spec.startswith("ddim"):
            desired = _parse_count(spec[len("ddim") :], section_counts)
            for stride in range(1, num_timesteps + 1):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"timestep respacing {section_counts!r}: no integer stride gives exactly "
                f"{desired} of {num_timesteps} steps"
            )
        counts = [_parse_count(part, section_counts) for part in spec.split(",")]
    elif isinstance(section_counts, int):
        counts = [_parse_count(section_counts, section_counts)]
    elif isinstance(section_counts, (list, tuple)):
        counts = [_parse_count(part, section_counts) for part in section_counts]
    else:
        raise ValueError(f"timestep respacing must be a string or a list of ints, got {section_counts!r}")
    if not counts:
        raise ValueError(f"timestep respacing {section_counts!r} names no section")

    size_per_section, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept = []
    for i, count in enumerate(counts):
        size = size_per_section + (1 if i < extra else 0)
        if count > size:
            raise ValueError(
                f"timestep respacing {section_counts!r}: cannot take {count} steps from a section of {size}"
            )
        stride = (size - 1) / (count - 1) if count > 1 else 1
        kept += [start + round(j * stride) for j in range(count)]
        start += size
    return set(kept)


def _parse_count(part, spec):
    """A positive step count from one part of a respacing spec."""
    text = str(part).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"invalid timestep respacing {spec!r}: expected 'N', 'N1,N2,...' or 'ddimN' with positive integers"
        )
    return int(text)


class SpacedDiffusion(GaussianDiffusion):
    """
    A diffusion process on a subset of a base process's timesteps.

    Its schedule keeps the base alphas_cumprod at the kept timesteps (betas
    are recomputed from them), so all GaussianDiffusion methods work on
    indices 0..len(use_timesteps)-1. Only the model sees original timesteps:
    index i is mapped to timestep_map[i]. cond_fn receives the respaced
    index, as every other method does.

    :param use_timesteps: collection of base timesteps to keep.
    :param kwargs: the base process's GaussianDiffusion arguments.
    """

    def __init__(self, use_timesteps, **kwargs):
        base = GaussianDiffusion(**kwargs)
        self.original_num_steps = base.num_timesteps
        self.use_timesteps = {int(step) for step in use_timesteps}
        if not self.use_timesteps:
            raise ValueError("use_timesteps is empty")
        if min(self.use_timesteps) < 0 or max(self.use_timesteps) >= base.num_timesteps:
            raise ValueError(f"use_timesteps must lie in [0, {base.num_timesteps - 1}]")
        self.timestep_map = sorted(self.use_timesteps)
        self._timestep_map_tensor = torch.tensor(self.timestep_map, dtype=torch.long)

        kept_alphas_cumprod = base.alphas_cumprod[self.timestep_map]
        betas = 1.0 - kept_alphas_cumprod / np.append(1.0, kept_alphas_cumprod[:-1])
        super().__init__(**{**kwargs, "betas": betas})

    def _model_timesteps(self, t):
        original = self._timestep_map_tensor.to(t.device)[t]
        if self.rescale_timesteps:
            return original.float() * (1000.0 / self.original_num_steps)
        return original
