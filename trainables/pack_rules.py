"""What a pack can train and which trials share one: plain rules, no torch (the driver checks a search space with
them before any trial starts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.config import TrialConfig

PACKABLE: dict[str, tuple[Any, ...]] = {
    "head": ("linear",),
    "pooling": ("last", "mean"),
    "level_gain": (False,),
    "window_norm": (False,),
    "loss": ("mse", "mae", "huber"),
}
"""What a packed forecaster can be, per key; other values train unpacked only."""

TEXT_PACKABLE: dict[str, tuple[Any, ...]] = {
    "pooling": ("last", "mean"),
    "embeddings": ("random", "finetune"),
}
"""What a packed text classifier can be (frozen embeddings would change which parameters the optimizer holds)."""

SHAPE_KEYS = (
    "hidden_size",
    "num_layers",
    "bidirectional",
    "pooling",
    "window",
    "batch_size",
    "loss",
    "embedding_dim",
)
"""The values members of one pack share: they fix a parameter's shape, or the batches and the loss all members
see. Everything else (learning rate and its decay, weight decay, L1, clipping, dropouts, residual, initialisation)
may differ from member to member."""


class NotPackable(ValueError):
    """A configuration, or the prepared data, that a pack cannot train."""


def rules_for(task: str) -> dict[str, tuple[Any, ...]]:
    return TEXT_PACKABLE if task == "classify" else PACKABLE


def packable_problem(key: str, value: Any, task: str = "forecast") -> str | None:
    """Why ``key = value`` cannot be packed for ``task`` (forecast, classify), or None."""
    allowed = rules_for(task).get(key)
    if allowed is None or value in allowed:
        return None
    return (
        f"{key} = {value!r} cannot be packed; a packed member takes {key} in {list(allowed)} "
        "(docs/design/packing.md#what-a-pack-trains)"
    )


def check_packable(flat: Mapping[str, Any], task: str = "forecast") -> None:
    """Raise :class:`NotPackable` naming the first key of a trial's flat config that a pack cannot train."""
    for key, value in flat.items():
        problem = packable_problem(key, value, task)
        if problem:
            raise NotPackable(problem)


def shape_key(flat: Mapping[str, Any]) -> str:
    """A short name for what a trial's members must share, e.g. ``h64-l1-uni-last-w24-b128-mse-e100``."""
    cfg = TrialConfig.from_flat({k: v for k, v in flat.items()})
    m, o = cfg.model, cfg.optim
    way = "bi" if m.bidirectional else "uni"
    return (
        f"h{m.hidden_size}-l{m.num_layers}-{way}-{m.pooling}-w{cfg.window.window}-b{o.batch_size}-{o.loss}"
        f"-e{m.embedding_dim}"
    )


__all__ = [
    "PACKABLE",
    "SHAPE_KEYS",
    "TEXT_PACKABLE",
    "NotPackable",
    "check_packable",
    "packable_problem",
    "rules_for",
    "shape_key",
]
