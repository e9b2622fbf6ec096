"""Experiments already in storage: list them, show one (status, trial counts, best so far)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs as pafs

from cluster.storage import ExperimentPaths, StorageError, check_readable
from trainables import metrics as M
from trainables.storage import Location, exists, read_bytes, resolve


@dataclass(frozen=True, kw_only=True)
class ExperimentInfo:
    """What ``experiments list/show`` prints."""

    name: str
    uri: str
    status: str
    """finished (best.json written), or incomplete (interrupted or still running)."""
    trials: dict[str, int]
    """Trial count per Tune status (TERMINATED, RUNNING, PAUSED, ERROR, PENDING)."""
    best_val_rmse: float
    best_trial: str
    test_rmse: float | None = None
    persistence_test_rmse: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_experiment(loc: Location) -> bool:
    return exists(loc.child("tuner.pkl"))


def describe(loc: Location) -> ExperimentInfo:
    """Read an experiment's state from storage without starting Ray."""
    from ray.tune import ExperimentAnalysis

    if not is_experiment(loc):
        raise StorageError(f"{loc.uri}: no experiment here (tuner.pkl missing)")
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)  # trials that never reported are expected in an interrupted run
    try:
        analysis = ExperimentAnalysis(
            loc.uri if loc.is_local else loc.path,
            storage_filesystem=None if loc.is_local else loc.fs,
            default_metric=M.VAL_LOSS,
            default_mode="min",
        )
    finally:
        tune_logger.setLevel(level)
    counts: dict[str, int] = {}
    best, best_trial = math.inf, ""
    for trial in analysis.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    for trial_id, frame in analysis.trial_dataframes.items():
        if M.VAL_RMSE in frame and len(frame):
            value = float(frame[M.VAL_RMSE].min())
            if value < best:
                best, best_trial = value, trial_id
    paths = ExperimentPaths(root=loc)
    test = persistence = None
    status = "incomplete"
    if exists(paths.best_json):
        status = "finished"
        summary = json.loads(read_bytes(paths.best_json))
        test = summary["best"]["test"]["rmse"]
        persistence = summary["baselines"]["persistence"]["test"]["rmse"]
    return ExperimentInfo(
        name=loc.path.rstrip("/").rsplit("/", 1)[-1],
        uri=loc.uri,
        status=status,
        trials=counts,
        best_val_rmse=best,
        best_trial=best_trial,
        test_rmse=test,
        persistence_test_rmse=persistence,
    )


def list_experiments(storage: str) -> list[ExperimentInfo]:
    root = resolve(storage)
    check_readable(root, "experiments")
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=False, allow_not_found=True))
    out = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == pafs.FileType.Directory:
            child = root.child(info.path.rstrip("/").rsplit("/", 1)[-1])
            if is_experiment(child):
                out.append(describe(child))
    return out


__all__ = ["ExperimentInfo", "describe", "list_experiments"]
