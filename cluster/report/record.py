"""An experiment folder read back for reports and the API: every trial's result history, the summary, the PBT
exploits and ASHA rungs. Reads only files (local or ``s3://``): no Ray, no torch."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from cluster.plan.storage import RESULT_FILE, ExperimentPaths, read_events, round_roots
from trainables import metrics as M
from trainables.storage import Location, read_bytes


@dataclass
class TrialHistory:
    """One trial's results, oldest first."""

    trial_id: str
    results: list[dict[str, Any]]
    round: int = 0
    """0: the experiment's first run; k: its k-th ``extend``."""

    @property
    def epochs(self) -> int:
        return int(self.results[-1].get("training_iteration", 0)) if self.results else 0

    @property
    def seconds(self) -> float:
        """Training time: Tune's time_total_s restarts after a restore, so the per-result times are summed."""
        return float(sum(r.get("time_this_iter_s", 0.0) for r in self.results))

    def series(self, metric: str) -> tuple[list[int], list[float]]:
        pairs = [
            (int(r["training_iteration"]), float(r[metric]))
            for r in self.results
            if isinstance(r.get(metric), (int, float)) and math.isfinite(float(r[metric]))
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass
class ExperimentRecord:
    """An experiment folder, read."""

    uri: str
    name: str
    task: str
    scheduler: str
    max_epochs: int
    trials: list[TrialHistory]
    summary: dict[str, Any] | None
    exploits: list[dict[str, Any]] = field(default_factory=list)
    rungs: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] | None = None
    """Panels: ``series.json`` (each series' test errors; the best and worst series' forecasts)."""

    @property
    def display_metric(self) -> tuple[str, str, bool]:
        """(result key, label, higher is better) of the metric people read: RMSE in units, or accuracy."""
        if self.task == "classify":
            return M.VAL_ACCURACY, "validation accuracy", True
        return M.VAL_RMSE, "validation RMSE (target units)", False

    def best_trial(self) -> TrialHistory | None:
        if self.summary:
            wanted = self.summary["best"]["trial_id"]
            for t in self.trials:
                if t.trial_id == wanted:
                    return t
        scored = [t for t in self.trials if t.series(M.VAL_LOSS)[1]]
        return min(scored, key=lambda t: min(t.series(M.VAL_LOSS)[1]), default=None)


def read_experiment(root: Location) -> ExperimentRecord:
    """Read what ``report`` needs; raises ValueError naming the URI when it is not an lstm-tune experiment."""
    try:
        options = json.loads(read_bytes(ExperimentPaths(root=root).run_record))
    except FileNotFoundError:
        raise ValueError(f"{root.uri}: no lstm_tune.json; not an lstm-tune experiment folder") from None
    try:
        summary: dict[str, Any] | None = json.loads(read_bytes(ExperimentPaths(root=root).best_json))
    except FileNotFoundError:
        summary = None
    trials = [t for number, tune_root in enumerate(round_roots(root)) for t in _histories(tune_root, number)]
    opts = options.get("options", options)
    sched = opts.get("scheduler")
    scheduler = str(sched.get("kind", "?")) if isinstance(sched, dict) else "?"
    return ExperimentRecord(
        uri=root.uri,
        name=root.uri.rstrip("/").rsplit("/", 1)[-1],
        task=str(summary.get("task", "forecast")) if summary else _task_of(trials),
        scheduler=scheduler,
        max_epochs=int(opts.get("max_epochs", max((t.epochs for t in trials), default=0))),
        trials=trials,
        summary=summary,
        exploits=read_events(ExperimentPaths(root=root).lineage.uri),
        rungs=read_events(ExperimentPaths(root=root).rungs.uri),
        series=_optional_json(ExperimentPaths(root=root).series_detail),
    )


def _optional_json(loc: Location) -> Any:
    try:
        return json.loads(read_bytes(loc))
    except FileNotFoundError:
        return None


def _histories(tune_root: Location, number: int) -> list[TrialHistory]:
    """The result histories of one round's trials (each trial folder's ``result.json``), by trial id."""
    infos = tune_root.fs.get_file_info(pafs.FileSelector(tune_root.path, allow_not_found=True))
    trials = []
    for info in infos:
        if info.type != pafs.FileType.Directory:
            continue
        try:
            text = read_bytes(tune_root.child(info.base_name, RESULT_FILE)).decode()
        except FileNotFoundError:
            continue
        results = [json.loads(line) for line in text.splitlines() if line.strip()]
        if results:
            trial = str(results[0].get("trial_id", info.base_name))
            trials.append(TrialHistory(trial_id=trial, results=results, round=number))
    return sorted(trials, key=lambda t: t.trial_id)


def _task_of(trials: list[TrialHistory]) -> str:
    first = trials[0].results[0] if trials and trials[0].results else {}
    return "classify" if M.VAL_ACCURACY in first else "forecast"


__all__ = ["ExperimentRecord", "TrialHistory", "read_experiment"]
