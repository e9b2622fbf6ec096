"""Tune's per-trial result files (``result.json``, ``progress.csv``), kept whole when a trial restarts.

The driver writes them in its staging folder and uploads that folder to storage every ``--sync-period-s``. Tune's
loggers, when a trial restarts, handle the stored copy in two ways that lose history:

- a trial restarted by the same driver (a lost node, an error, a PBT exploit) gets the stored copy over the driver's
  own, so every result since the last upload vanished: seen here after a node loss, a trial's ``result.json`` in S3
  began at epoch 3. Within one driver its own file is the complete one, and is kept.
- a new driver (``lstm-tune resume`` on another machine) fetches the stored copy only for trials its restored
  snapshot names a checkpoint for; the others (restored from their newest written checkpoint, see
  :mod:`trainables.restore`) started an empty file that the next upload wrote over the stored history. The stored
  copy is fetched whenever the driver has none.

A trial restored from a checkpoint Tune never saw, with nothing left to train, publishes that checkpoint's result
again (marked :data:`trainables.metrics.REPLAYED`); a history whose last row is that epoch already has it.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

from cluster.plan.storage import PROGRESS_FILE, RESULT_FILE
from trainables import metrics as M

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)


def _driver_has_history(local: Path) -> bool:
    return local.is_file() and local.stat().st_size > 0


def last_json_epoch(path: Path) -> int | None:
    """The epoch of the last result in a ``result.json`` (None: no file, no rows, or a row without an epoch)."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        return int(json.loads(lines[-1])[M.EPOCH]) if lines else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def last_csv_epoch(path: Path) -> int | None:
    """The epoch of the last row of a ``progress.csv`` (None: no file, no rows, or no epoch column)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return int(float(rows[-1][M.EPOCH])) if rows else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _KeepDriverHistory(LoggerCallback):
    file_name = ""

    def _last_epoch(self, path: Path) -> int | None:
        raise NotImplementedError

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if result.get(M.REPLAYED) and trial.local_path is not None:
            if self._last_epoch(Path(trial.local_path, self.file_name)) == result.get(M.EPOCH):
                return
        super().log_trial_result(iteration, trial, result)

    def _restore_from_remote(self, file_name: str, trial: Trial) -> None:
        storage, folder = trial.storage, trial.local_path
        if storage is None or folder is None or _driver_has_history(Path(folder, file_name)):
            return
        try:
            pafs.copy_files(
                f"{storage.trial_fs_path}/{file_name}",
                str(Path(folder, file_name)),
                source_filesystem=storage.storage_filesystem,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except FileNotFoundError:
            pass  # a trial that never reported
        except OSError as exc:  # storage unreachable: the trial goes on; its history restarts here
            logger.warning("could not fetch %s of trial %s from storage: %s", file_name, trial.trial_id, exc)


class JsonResults(_KeepDriverHistory, JsonLoggerCallback):
    """``result.json``: one JSON object per reported result."""

    file_name = RESULT_FILE

    def _last_epoch(self, path: Path) -> int | None:
        return last_json_epoch(path)


class CsvResults(_KeepDriverHistory, CSVLoggerCallback):
    """``progress.csv``: one row per reported result."""

    file_name = PROGRESS_FILE

    def _last_epoch(self, path: Path) -> int | None:
        return last_csv_epoch(path)


def result_loggers() -> list[LoggerCallback]:
    return [JsonResults(), CsvResults()]


__all__ = ["CsvResults", "JsonResults", "last_csv_epoch", "last_json_epoch", "result_loggers"]
