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


def prune_stopped_checkpoints(
    root: Location, results: list[Any], *, max_epochs: int, keep: int, protect: str
) -> dict[str, int]:
    """Delete checkpoints of pruned trials (never ``protect``, the best checkpoint); return what is kept."""
    deleted = 0
    for result in stopped_to_prune(results, max_epochs=max_epochs, keep=keep):
        for checkpoint, _ in result.best_checkpoints or []:
            if checkpoint.path == protect:
                continue
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


__all__ = ["checkpoint_usage", "prune_stopped_checkpoints", "stopped_to_prune"]
