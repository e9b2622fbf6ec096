"""Which checkpoint a (re)started trial continues from, when Tune's view and storage disagree."""

from __future__ import annotations

import re
import tempfile
from typing import Any

import pyarrow.fs as pafs

from trainables.checkpoint import ADOPTED, CHECKPOINT_FILE, CheckpointError, CheckpointPruned, load_checkpoint
from trainables.ray_api import Checkpoint
from trainables.storage import Location

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def newest_written(infos: list[pafs.FileInfo]) -> list[str]:
    """Checkpoint folder names, most recently written first (ties: higher index first).

    Write time, not index, says which is newest: a trial resumed from a stale experiment state numbers its new
    checkpoints from that state's index and overwrites folders the killed run had already written further on.
    """
    latest: dict[str, tuple[int, int]] = {}
    for info in infos:
        parts = info.path.rstrip("/").split("/")
        if len(parts) < 2 or info.type != pafs.FileType.File or parts[-1] != CHECKPOINT_FILE:
            continue
        if (m := CHECKPOINT_DIR.match(parts[-2])) is None:
            continue
        written = int(info.mtime_ns or 0)
        latest[parts[-2]] = max(latest.get(parts[-2], (0, 0)), (written, int(m.group(1))))
    return sorted(latest, key=lambda name: latest[name], reverse=True)


def restore_state(checkpoint: Checkpoint | None, own: Location | None) -> dict[str, Any] | None:
    """The state a (re)started trial continues from: the checkpoint Tune hands it, else its newest written one.

    Tune hands none when its stored snapshot predates the trial's first checkpoint (a driver killed in between), and
    may hand one that retention pruned since (the folder then holds only a marker): in both cases the most recently
    written readable checkpoint in the same folder (the trial's own, or a PBT donor's) is the state to continue
    from. An intact checkpoint is always used as given: a trial on a lost node can outlive its node for a while and
    keep writing checkpoints Tune never accepted (seen here), and those must not be adopted.
    """
    if checkpoint is None:
        return _adopted(_newest_in(own)) if own is not None else None
    try:
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory)
    except CheckpointPruned:
        folder = _parent(checkpoint.path)
        state = _newest_in(Location(uri=folder, fs=checkpoint.filesystem, path=folder))
        if state is None:
            raise CheckpointError(f"checkpoint {checkpoint.path} was pruned and no newer one exists") from None
        return _adopted(state)


def _adopted(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if payload is None else {**payload, ADOPTED: True}


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


def _newest_in(loc: Location) -> dict[str, Any] | None:
    """The state of the most recently written readable checkpoint under ``loc``, or None."""
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    except OSError:
        return None
    for name in newest_written(infos):
        folder = loc.child(name)
        with tempfile.TemporaryDirectory(prefix="lstm-tune-restore-") as local:
            try:
                pafs.copy_files(
                    folder.path, local, source_filesystem=loc.fs, destination_filesystem=pafs.LocalFileSystem()
                )
                return load_checkpoint(local)
            except (OSError, CheckpointError):
                continue  # half-written by a killed trial, or pruned meanwhile: try the one before
    return None


__all__ = ["newest_written", "restore_state"]
