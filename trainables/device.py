"""Where a trial computes: the device Ray gave it, its share of that GPU, and errors that name the share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from trainables import metrics as M


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
            # With an index: set_per_process_memory_fraction refuses a bare "cuda" (seen on an H200, torch 2.11).
            return torch.device("cuda", 0)
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


def describe(device: torch.device) -> str:
    """``cpu``, or ``cuda:N (card name)``: enough to tell from a result where the trial ran."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def placement_metrics(device: torch.device, cap_fraction: float | None) -> dict[str, Any]:
    """Reported with every result: the device, and on a shared GPU the memory the trial may take."""
    found: dict[str, Any] = {M.DEVICE: describe(device)}
    if cap_fraction is not None and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        found[M.GPU_MEMORY_CAP] = cap_fraction * total / 2**30
    return found


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak CUDA memory so far; nothing on the CPU (the process's RSS says more there and Ray reports it)."""
    if device.type != "cuda":
        return {}
    return {M.GPU_MEMORY_PEAK: torch.cuda.max_memory_allocated(device) / 2**30}


@contextmanager
def named_oom(place: Placement, device: torch.device, batch_size: int) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into one that names the trial's GPU share and batch size."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        raise TrialResourceError(oom_message(place.gpus, batch_size, total)) from None


@contextmanager
def trial_device(place: Placement, batch_size: int) -> Iterator[tuple[torch.device, dict[str, Any]]]:
    """The device a trial (or a data-parallel worker) trains on, held to its share of the GPU, with the metrics that
    say so; a CUDA out-of-memory error inside names the share and the batch size."""
    device = place.device
    cap = cap_memory(place, device)
    with named_oom(place, device, batch_size):
        yield device, placement_metrics(device, cap)


__all__ = [
    "Placement",
    "TrialResourceError",
    "cap_memory",
    "describe",
    "memory_fraction",
    "memory_metrics",
    "named_oom",
    "oom_message",
    "placement",
    "placement_metrics",
    "trial_device",
]
