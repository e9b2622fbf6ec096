"""Where a trial computes: the device Ray gave it, its share of that GPU, and errors that name the share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


class TrialResourceError(RuntimeError):
    """The trial's share of its device is too small for its configuration."""


@dataclass(frozen=True)
class Placement:
    """The resources Ray assigned a trial."""

    cpus: int
    gpus: float
    """0 on CPU; a fraction below 1 shares one GPU with other trials."""

    @property
    def device(self) -> torch.device:
        # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned; with none assigned, stay on the CPU even where
        # CUDA exists, or trials would pile onto GPU 0 outside Ray's accounting.
        if self.gpus > 0 and torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"):
            return torch.device("cuda")
        return torch.device("cpu")


def placement() -> Placement:
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    return Placement(cpus=max(1, int(resources.get("CPU", 1))), gpus=float(resources.get("GPU", 0.0)))


def memory_fraction(gpus: float) -> float | None:
    """The share of GPU memory a trial may allocate: its GPU share when that is a fraction, else no cap."""
    return gpus if 0 < gpus < 1 else None


def cap_memory(place: Placement, device: torch.device) -> float | None:
    """Hold the trial to its share of the GPU's memory, so an oversized neighbour fails alone instead of all."""
    fraction = memory_fraction(place.gpus)
    if fraction is None or device.type != "cuda":
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def oom_message(gpus: float, batch_size: int, total_bytes: int | None) -> str:
    share = f"gpus_per_trial = {gpus:g}"
    if (fraction := memory_fraction(gpus)) is not None and total_bytes:
        share += f" (memory capped at {fraction * total_bytes / 2**30:.1f} of {total_bytes / 2**30:.1f} GiB)"
    return (
        f"CUDA out of memory with {share} and batch_size = {batch_size}: lower batch_size or hidden_size in the "
        "search space, or give each trial a larger share (--gpus-per-trial)"
    )


@contextmanager
def named_oom(place: Placement, device: torch.device, batch_size: int) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into one that names the trial's GPU share and batch size."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        raise TrialResourceError(oom_message(place.gpus, batch_size, total)) from None


__all__ = ["Placement", "TrialResourceError", "cap_memory", "memory_fraction", "named_oom", "oom_message", "placement"]
