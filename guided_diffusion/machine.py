"""One line naming the machine a measurement was taken on (recorded beside every figure)."""

import contextlib
import os
import platform

import torch


def machine_line(device):
    """'NVIDIA H100 80GB HBM3' on CUDA; on the CPU the processor model, core count and torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{model}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
