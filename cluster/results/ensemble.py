"""Which trials make an ensemble: the best K by their lowest validation loss, the run's best trial first.

A pure decision on Tune's results (anything with ``metrics`` and ``best_checkpoints``), so it is tested without Ray.
Members are whole trials, never two epochs of one trial: neighbouring checkpoints of a trial make nearly the same
forecasts, and averaging them buys little.
"""

from __future__ import annotations

import math
from typing import Any

from cluster.tune.retention import best_loss
from trainables import metrics as M


def trial_id(result: Any) -> str:
    return str((result.metrics or {}).get("trial_id", ""))


def top_trials(results: list[Any], k: int, *, best: Any) -> list[Any]:
    """``best`` and then the next ``k - 1`` trials by lowest validation loss; trials without a finite loss (diverged,
    or never checkpointed) are left out, so fewer than ``k`` may come back."""
    if k < 1:
        raise ValueError(f"ensemble: k = {k}: must be >= 1")
    others = [r for r in results if trial_id(r) != trial_id(best) and math.isfinite(best_loss(r))]
    return [best, *sorted(others, key=best_loss)[: k - 1]]


def best_checkpoint(result: Any) -> tuple[Any, dict[str, Any]]:
    """A trial's checkpoint with the lowest validation loss, and the metrics it was reported with."""
    scored = [(c, m) for c, m in result.best_checkpoints or [] if math.isfinite(_loss(m))]
    if not scored:
        return result.checkpoint, dict(result.metrics or {})
    return min(scored, key=lambda cm: _loss(cm[1]))


def _loss(metrics: dict[str, Any]) -> float:
    value = metrics.get(M.VAL_LOSS, math.inf)
    return float(value) if isinstance(value, (int, float)) else math.inf


__all__ = ["best_checkpoint", "top_trials", "trial_id"]
