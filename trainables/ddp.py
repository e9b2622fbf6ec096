"""One worker's side of a data-parallel trial (DDP): wrap the model, train on uneven shards, reduce the epoch's
statistics. The training loop uses it; :mod:`trainables.parallel` starts the workers."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainables.tasks import EpochStats


@dataclass(frozen=True)
class DataParallel:
    """This worker's place in a data-parallel trial; the loop asks it to wrap, synchronise and reduce."""

    rank: int
    world_size: int

    @property
    def reports(self) -> bool:
        """Only rank 0 reports and checkpoints: every rank holds the same weights after each step."""
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.world_size == 1:
            return model
        ids = [device.index or 0] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def uneven(self, wrapped: nn.Module) -> Any:
        """Ranks hold different numbers of windows; DDP's join lets the ones that finish first shadow the rest."""
        if isinstance(wrapped, nn.parallel.DistributedDataParallel):
            return wrapped.join()
        return nullcontext()

    def reduce(self, stats: EpochStats) -> EpochStats:
        """The epoch as one trial saw it: mean loss over all ranks' samples, their samples and steps summed, the
        gradient norm and clipped share averaged over all ranks' steps."""
        if self.world_size == 1:
            return stats
        t = torch.tensor(
            [
                stats.loss * stats.samples,
                float(stats.samples),
                float(stats.steps),
                stats.grad_norm * stats.steps,
                stats.clipped * stats.steps,
            ],
            dtype=torch.float64,
        )
        dist.all_reduce(t)
        samples, steps = int(t[1]), int(t[2])
        return EpochStats(
            loss=float(t[0]) / samples if samples else float("nan"),
            steps=steps,
            samples=samples,
            grad_norm=float(t[3]) / steps if steps else float("nan"),
            clipped=float(t[4]) / steps if steps else float("nan"),
        )

    def gather(self, value: Any) -> list[Any]:
        if self.world_size == 1:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


__all__ = ["DataParallel"]
