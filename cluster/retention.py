"""Checkpoint retention after a run: trials the scheduler stopped early keep checkpoints only if they are among the
best; what remains is counted so the summary can say what storage the experiment holds."""

from __future__ import annotations

import math
from typing import Any

import pyarrow.fs as pafs

from trainables import metrics as M
from trainables.storage import Location


def best_loss(result: Any) -> float:
    losses = [m.get(M.VAL_LOSS, math.inf) for _, m in (result.best_checkpoints or [])]
    finite = [x for x in losses if isinstance(x, (int, float)) and math.isfinite(x)]
    return min(finite) if finite else math.inf


def stopped_to_prune(results: list[Any], *, max_epochs: int, keep: int) -> list[Any]:
    """Stopped-early trials ranked by their best validation loss; all but the best ``keep``."""
    stopped = [r for r in results if int((r.metrics or {}).get(M.EPOCH, 0)) < max_epochs]
    return sorted(stopped, key=best_loss)[keep:]


def surplus(checkpoints: list[tuple[Any, dict[str, Any]]], keep: int) -> list[Any]:
    """Checkpoints beyond the ``keep`` best by validation loss (NaN and inf count as worst)."""

    def loss(item: tuple[Any, dict[str, Any]]) -> float:
        value = item[1].get(M.VAL_LOSS, math.inf)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return [c for c, _ in sorted(checkpoints, key=loss)[keep:]]


def prune_stopped_checkpoints(
    root: Location,
    results: list[Any],
    *,
    max_epochs: int,
    keep: int,
    protect: str,
    keep_per_trial: int | None = None,
) -> dict[str, int]:
    """Delete checkpoints of pruned trials, and (``keep_per_trial``) each trial's surplus beyond its best few;
    never ``protect``, the experiment's best checkpoint. Return what is kept."""
    doomed = [
        c for r in stopped_to_prune(results, max_epochs=max_epochs, keep=keep) for c, _ in r.best_checkpoints or []
    ]
    if keep_per_trial is not None:
        doomed += [c for r in results for c in surplus(r.best_checkpoints or [], keep_per_trial)]
    deleted = 0
    seen: set[str] = set()
    for checkpoint in doomed:
        if checkpoint.path == protect or checkpoint.path in seen:
            continue
        seen.add(checkpoint.path)
        try:
            checkpoint.filesystem.delete_dir(checkpoint.path)
            deleted += 1
        except OSError:
            pass  # already gone (a retried deletion, a lost race): nothing to keep either way
    kept, size = checkpoint_usage(root)
    return {"kept": kept, "bytes": size, "deleted": deleted}


def checkpoint_usage(root: Location) -> tuple[int, int]:
    """Checkpoint folders under an experiment and the bytes they hold."""
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=True))
    folders: set[str] = set()
    size = 0
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        parts = info.path.split("/")
        for i, part in enumerate(parts[:-1]):
            if part.startswith("checkpoint_"):
                folders.add("/".join(parts[: i + 1]))
                size += info.size or 0
                break
    return len(folders), size


__all__ = ["checkpoint_usage", "prune_stopped_checkpoints", "stopped_to_prune", "surplus"]
