"""Experiments already in storage: list them, show one (status, trial counts, best so far)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs as pafs

from cluster.plan.storage import ExperimentPaths, StorageError, check_readable, is_experiment, round_roots
from cluster.results.summary import detail_lines, exported_scores, summary_from_json
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
    retries: dict[str, int]
    """Trials Tune restarted from a checkpoint after a failure (a lost node, an error): trial id -> how many times."""
    metric: str
    """The validation figure ``best_val`` is: val/rmse (forecasting, lower is better) or val/accuracy (classifying)."""
    best_val: float | None
    """Best ``metric`` any trial reported so far; None before any trial reported."""
    best_trial: str
    best_val_rmse: float | None = None
    test_rmse: float | None = None
    persistence_test_rmse: float | None = None
    test_accuracy: float | None = None
    majority_test_accuracy: float | None = None
    details: tuple[str, ...] = ()
    """Finished forecasters: a panel's MASE/sMAPE line and a quantile forecaster's interval line, as the run's
    summary printed them."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def _classifies(self) -> bool:
        return self.metric == M.VAL_ACCURACY

    def _figure(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.4f} accuracy" if self._classifies else f"{value:.2f} RMSE"

    def best_cell(self) -> str:
        """``experiments list``'s best-so-far column: ``18.95 RMSE`` or ``0.9381 accuracy``."""
        return self._figure(self.best_val)

    def test_cell(self) -> str:
        """``experiments list``'s test column: the best model's test figure, once finished."""
        return self._figure(self.test_accuracy if self._classifies else self.test_rmse)

    def best_line(self) -> str:
        """``best so far: val RMSE 18.95 (trial)``: the figure the experiment is tuned on."""
        if self.best_val is None:
            return "best so far: no trial has reported yet"
        value, label = self._figure(self.best_val).split(" ")
        return f"best so far: val {label} {value} ({self.best_trial})"

    def test_line(self) -> str | None:
        """The best model on the test split next to its naive baseline, once the experiment has finished."""
        if self.test_rmse is not None and self.persistence_test_rmse is not None:
            return f"best model test RMSE {self.test_rmse:.2f} vs persistence {self.persistence_test_rmse:.2f}"
        if self.test_accuracy is not None and self.majority_test_accuracy is not None:
            return (
                f"best model test accuracy {self.test_accuracy:.4f} vs majority class {self.majority_test_accuracy:.4f}"
            )
        return None


@dataclass(frozen=True, kw_only=True)
class TrialState:
    """One trial as Tune's experiment state records it."""

    trial_id: str
    status: str
    """Tune's status: TERMINATED, ERROR, RUNNING, PAUSED or PENDING."""
    restarts: int
    """Times Tune restarted it from a checkpoint after a failure."""
    config: dict[str, Any]
    round: int = 0
    """0: the experiment's first run; k: its k-th ``extend``."""


def _analyses(loc: Location) -> list[Any]:
    """Tune's analysis of each round of the experiment: its first run, then each extension."""
    if not is_experiment(loc):
        raise StorageError(f"{loc.uri}: no experiment here (tuner.pkl missing)")
    return [_analysis(r) for r in round_roots(loc)]


def _analysis(loc: Location) -> Any:
    from ray.tune import ExperimentAnalysis

    if not is_experiment(loc):
        raise StorageError(f"{loc.uri}: no experiment here (tuner.pkl missing)")
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)  # trials that never reported are expected in an interrupted run
    try:
        return ExperimentAnalysis(
            loc.uri if loc.is_local else loc.path,
            storage_filesystem=None if loc.is_local else loc.fs,
            default_metric=M.VAL_LOSS,
            default_mode="min",
        )
    finally:
        tune_logger.setLevel(level)


def trial_states(loc: Location) -> list[TrialState]:
    """Every trial of an experiment in storage, by trial id (reads Tune's state; starts no Ray instance)."""
    return [
        TrialState(
            trial_id=t.trial_id,
            status=t.status,
            restarts=int(t.num_failures or 0),
            config=dict(t.config or {}),
            round=number,
        )
        for number, analysis in enumerate(_analyses(loc))
        for t in sorted(analysis.trials, key=lambda t: t.trial_id)
    ]


def describe(loc: Location) -> ExperimentInfo:
    """Read an experiment's state from storage without starting Ray."""
    analyses = _analyses(loc)
    counts: dict[str, int] = {}
    retries: dict[str, int] = {}
    for trial in (t for a in analyses for t in a.trials):
        counts[trial.status] = counts.get(trial.status, 0) + 1
        if trial.num_failures:
            retries[trial.trial_id] = int(trial.num_failures)
    frames = {trial: frame for a in analyses for trial, frame in a.trial_dataframes.items()}
    metric, best, best_trial = _best_so_far(frames)
    paths = ExperimentPaths(root=loc)
    status = "incomplete"
    scores: dict[str, float | None] = {}
    details: tuple[str, ...] = ()
    if exists(paths.best_json):
        status = "finished"
        raw = read_bytes(paths.best_json)
        scores = _test_scores(json.loads(raw))
        summary = summary_from_json(raw)
        details = tuple(detail_lines(summary)) if summary.task == "forecast" else ()
    return ExperimentInfo(
        name=loc.path.rstrip("/").rsplit("/", 1)[-1],
        uri=loc.uri,
        status=status,
        trials=counts,
        retries=retries,
        metric=metric,
        best_val=best,
        best_trial=best_trial,
        best_val_rmse=best if metric == M.VAL_RMSE else None,
        details=details,
        **scores,
    )


def _best_so_far(frames: dict[str, Any]) -> tuple[str, float | None, str]:
    """(metric, best value, trial id) over every result reported: the lowest val RMSE of a forecaster, else the
    highest val accuracy of a classifier."""
    classify = any(M.VAL_ACCURACY in f for f in frames.values()) and not any(M.VAL_RMSE in f for f in frames.values())
    metric = M.VAL_ACCURACY if classify else M.VAL_RMSE
    best: float | None = None
    best_trial = ""
    for trial_id, frame in frames.items():
        if metric not in frame or not len(frame):
            continue
        column = frame[metric].dropna()
        if not len(column):
            continue
        value = float(column.max() if classify else column.min())
        if best is None or (value > best if classify else value < best):
            best, best_trial = value, trial_id
    return metric, best, best_trial


def _test_scores(summary: dict[str, Any]) -> dict[str, float | None]:
    """The exported model's test figure (an ensemble's, if the run made one) and its baseline's from ``best.json``."""
    test, baselines = exported_scores(summary)["test"], summary["baselines"]
    if summary.get("task") == "classify":
        return {
            "test_accuracy": test.get("accuracy"),
            "majority_test_accuracy": baselines.get("majority_class", {}).get("test", {}).get("accuracy"),
        }
    return {
        "test_rmse": test.get("rmse"),
        "persistence_test_rmse": baselines.get("persistence", {}).get("test", {}).get("rmse"),
    }


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


__all__ = ["ExperimentInfo", "TrialState", "describe", "list_experiments", "trial_states"]
