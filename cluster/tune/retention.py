"""Checkpoint retention, while a run goes and after it.

While it runs, :class:`RollingRetention` keeps each trial's best few checkpoints by validation loss and its newest
ones. After it, trials the scheduler stopped early keep checkpoints only if they are among the best, and every trial
keeps its best few; what remains is counted so the summary can say what storage the experiment holds.

Retention never removes a checkpoint folder: it replaces the state inside by a small marker
(:data:`trainables.checkpoint.PRUNED_FILE`). Tune snapshots the experiment state every few seconds at best, so the
snapshot in storage can name a checkpoint that was pruned since; Tune refuses to restore a trial from a path that no
longer exists (seen here: a resumed trial failed four times over "does not exist on storage anymore"), while the
trial reads a marker and restores from its newest written checkpoint instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback

from trainables import metrics as M
from trainables.checkpoint import CHECKPOINT_FILE, PRUNED_FILE
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
    protect: set[str],
    keep_per_trial: int | None = None,
) -> dict[str, int]:
    """Delete checkpoints of pruned trials, and (``keep_per_trial``) each trial's surplus beyond its best few;
    never those in ``protect``, the checkpoints of the exported model. Return what is kept."""
    doomed = [
        c for r in stopped_to_prune(results, max_epochs=max_epochs, keep=keep) for c, _ in r.best_checkpoints or []
    ]
    if keep_per_trial is not None:
        doomed += [c for r in results for c in surplus(r.best_checkpoints or [], keep_per_trial)]
    deleted = 0
    seen: set[str] = set()
    for checkpoint in doomed:
        if checkpoint.path in protect or checkpoint.path in seen:
            continue
        seen.add(checkpoint.path)
        deleted += prune(checkpoint.filesystem, checkpoint.path, reason="after the run")
    kept, size = checkpoint_usage(root)
    return {"kept": kept, "bytes": size, "deleted": deleted}


def prune(fs: pafs.FileSystem, path: str, *, reason: str) -> bool:
    """Replace a checkpoint's files by the pruned marker; True if it held anything to delete.

    The marker is written first, so a driver killed halfway leaves a folder a trial still reads as pruned.
    """
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File and not i.path.endswith("/" + PRUNED_FILE)]
        if not files:
            return False
        with fs.open_output_stream(f"{path.rstrip('/')}/{PRUNED_FILE}") as out:
            out.write(json.dumps({"pruned": True, "by": "lstm-tune retention", "when": reason}).encode())
        for file in files:
            fs.delete_file(file)
        return True
    except OSError:
        return False  # storage refused (an outage, a lost race): the checkpoint stays, costing only space


@dataclass
class _Seen:
    path: str
    loss: float


class RollingRetention(Callback):
    """Prunes a trial's checkpoints as it writes them: keeps its ``keep_best`` best by validation loss (NaN and inf
    count as worst) and its ``keep_latest`` newest, which a restore or a PBT exploit may be reading."""

    def __init__(self, keep_best: int, keep_latest: int = 2) -> None:
        self.keep_best = keep_best
        self.keep_latest = keep_latest
        self._seen: dict[str, list[_Seen]] = {}

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        result = trial.last_result or {}
        loss = result.get(M.VAL_LOSS, math.inf)
        if result.get("checkpoint_dir_name") != checkpoint.path.rstrip("/").rsplit("/", 1)[-1]:
            loss = math.inf  # the result is not this checkpoint's: rank it worst rather than guess
        seen = self._seen.setdefault(trial.trial_id, [])
        seen.append(
            _Seen(checkpoint.path, loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf)
        )
        for item in rolling_surplus(seen, keep_best=self.keep_best, keep_latest=self.keep_latest):
            seen.remove(item)
            prune(checkpoint.filesystem, item.path, reason="during the run")


def rolling_surplus(seen: list[_Seen], *, keep_best: int, keep_latest: int) -> list[_Seen]:
    """Checkpoints (oldest first in ``seen``) that are neither among the newest ``keep_latest`` nor the best
    ``keep_best`` by loss (ties: the newer one is kept)."""
    newest = {id(s) for s in seen[-keep_latest:]} if keep_latest > 0 else set()
    ranked = sorted(range(len(seen)), key=lambda i: (seen[i].loss, -i))
    best = {id(seen[i]) for i in ranked[:keep_best]}
    return [s for s in seen if id(s) not in newest and id(s) not in best]


def checkpoint_usage(root: Location) -> tuple[int, int]:
    """Checkpoint folders under an experiment that still hold a state, and the bytes they hold."""
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=True))
    folders: set[str] = set()
    size = 0
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        parts = info.path.split("/")
        for i, part in enumerate(parts[:-1]):
            if part.startswith("checkpoint_"):
                if parts[-1] == CHECKPOINT_FILE:
                    folders.add("/".join(parts[: i + 1]))
                if parts[-1] != PRUNED_FILE:
                    size += info.size or 0
                break
    return len(folders), size


__all__ = [
    "RollingRetention",
    "checkpoint_usage",
    "prune",
    "prune_stopped_checkpoints",
    "rolling_surplus",
    "stopped_to_prune",
    "surplus",
]
