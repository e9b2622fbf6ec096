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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.fs as pafs
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)


def _driver_has_history(local: Path) -> bool:
    return local.is_file() and local.stat().st_size > 0


class _KeepDriverHistory(LoggerCallback):
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


class CsvResults(_KeepDriverHistory, CSVLoggerCallback):
    """``progress.csv``: one row per reported result."""


def result_loggers() -> list[LoggerCallback]:
    return [JsonResults(), CsvResults()]


__all__ = ["CsvResults", "JsonResults", "result_loggers"]
