"""Schedulers from options. They meet the trainable only through the metric names in ``trainables.metrics``."""

from __future__ import annotations

import json
import time
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from cluster.plan.options import SchedulerOptions
from cluster.plan.storage import read_events as read_lineage
from trainables import metrics as M
from trainables.storage import resolve, write_bytes_atomic
from trainables.tensorboard import write_text_event


class EventLog:
    """A JSON Lines file in the experiment folder, rewritten whole (atomically) at every event, so the record
    survives a killed driver; a resumed experiment continues what is there."""

    def __init__(self, uri: str | None, tensorboard_uri: str | None, tag: str) -> None:
        self.uri = uri
        self.tensorboard_uri = tensorboard_uri
        self.tag = tag
        # Scheduler hooks run on the driver's event loop thread, one at a time: no lock needed.
        self.events: list[dict[str, Any]] = []
        self._loaded = False

    def append(self, record: dict[str, Any], run_name: str, step: int, text: str) -> None:
        if not self._loaded and self.uri:
            self.events = read_lineage(self.uri)
            self._loaded = True
        self.events.append(json.loads(json.dumps(record, default=str)))
        if self.uri:
            body = "".join(json.dumps(e) + "\n" for e in self.events)
            write_bytes_atomic(resolve(self.uri), body.encode())
        if self.tensorboard_uri:
            write_text_event(resolve(self.tensorboard_uri), run_name, self.tag, text, step)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    rows = [f"| {k} | {_short(old.get(k))} | {_short(v)} |" for k, v in new.items()]
    return "| hyperparameter | before | after |\n| --- | --- | --- |\n" + "\n".join(rows)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineagePBT(PopulationBasedTraining):
    """PBT that keeps every exploit as data (who cloned whom, when, old and new values) in ``pbt_lineage.jsonl``,
    and as a text event in the exploiting trial's TensorBoard run, not only as log text."""

    def __init__(self, *, lineage_uri: str | None = None, tensorboard_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lineage_uri = lineage_uri
        self.log = EventLog(lineage_uri, tensorboard_uri, "pbt/exploit")

    @property
    def exploits(self) -> list[dict[str, Any]]:
        return self.log.events

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        old = {k: trial.config.get(k) for k in self._hyperparam_mutations}
        donor = {k: trial_to_clone.config.get(k) for k in self._hyperparam_mutations}
        step = int((trial.last_result or {}).get("training_iteration", 0))
        super()._exploit(tune_controller, trial, trial_to_clone)
        new = {k: trial.config.get(k) for k in self._hyperparam_mutations}
        record = {
            "time": time.time(),
            "step": step,
            "trial": trial.trial_id,
            "cloned_from": trial_to_clone.trial_id,
            "old": old,
            "donor": donor,
            "new": new,
        }
        text = f"epoch {step}: cloned the weights of {trial_to_clone.trial_id}, then explored:\n\n" + _changes(old, new)
        self.log.append(record, str(trial), step, text)


class RecordingASHA(ASHAScheduler):
    """ASHA that records every rung decision (trial, rung, its metric, the rung's cutoff, promoted or stopped) in
    ``asha_rungs.jsonl`` and as a text event in the trial's TensorBoard run.

    It reads ASHA's bracket bookkeeping (``_trial_info``, ``_rungs``), which Ray 2.58 keeps private; the tests
    check the records against the trials' own results, so a Ray upgrade that moves it fails loudly there.
    """

    def __init__(self, *, rungs_uri: str | None = None, tensorboard_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = EventLog(rungs_uri, tensorboard_uri, "asha/rung")

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        pending = self._rung_reached(trial, result)
        action = super().on_trial_result(tune_controller, trial, result)
        if pending is not None:
            rung, cutoff = pending
            decision = "stopped" if action == TrialScheduler.STOP else "promoted"
            value = float(result[str(self._metric)])
            record = {
                "time": time.time(),
                "trial": trial.trial_id,
                "rung": rung,
                "metric": self._metric,
                "value": value,
                "cutoff": cutoff,
                "decision": decision,
            }
            bar = "no cutoff yet (first at this rung)" if cutoff is None else f"cutoff {cutoff:.5g}"
            text = f"rung at epoch {rung}: {self._metric} = {value:.5g}, {bar} -> **{decision}**"
            self.log.append(record, str(trial), rung, text)
        return str(action)

    def _rung_reached(self, trial: Trial, result: dict[str, Any]) -> tuple[int, float | None] | None:
        """(rung, cutoff in metric units) if this result is the trial's first at a rung below max_t."""
        metric, sign = str(self._metric), float(self._metric_op or 1.0)
        iteration, value = result.get(self._time_attr), result.get(metric)
        bracket = getattr(self, "_trial_info", {}).get(trial.trial_id)
        if bracket is None or iteration is None or value is None or iteration >= self._max_t:
            return None
        for milestone, recorded in bracket._rungs:
            if iteration == milestone and trial.trial_id not in recorded:
                cutoff = bracket.cutoff(recorded)
                return int(milestone), None if cutoff is None else float(cutoff) * sign
        return None


def build_scheduler(
    opts: SchedulerOptions,
    *,
    max_epochs: int,
    mutations: dict[str, Any],
    lineage_uri: str | None = None,
    rungs_uri: str | None = None,
    tensorboard_uri: str | None = None,
) -> TrialScheduler:
    """ASHA, PBT or FIFO; metric and mode come from the TuneConfig (``trainables.metrics``)."""
    if opts.kind == "asha":
        return RecordingASHA(
            rungs_uri=rungs_uri,
            tensorboard_uri=tensorboard_uri,
            time_attr="training_iteration",
            max_t=max_epochs,
            grace_period=opts.effective_grace_period(max_epochs),
            reduction_factor=opts.reduction_factor,
            brackets=1,
        )
    if opts.kind == "pbt":
        if not mutations:
            raise ValueError(
                "--scheduler pbt: the search space declares no pbt.mutations; PBT would have nothing to explore"
            )
        return LineagePBT(
            lineage_uri=lineage_uri,
            tensorboard_uri=tensorboard_uri,
            time_attr="training_iteration",
            perturbation_interval=opts.perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=opts.quantile_fraction,
            resample_probability=opts.resample_probability,
            log_config=True,
        )
    return FIFOScheduler()


SCHEDULER_METRIC = M.SCHEDULER_METRIC
SCHEDULER_MODE = M.SCHEDULER_MODE

__all__ = [
    "SCHEDULER_METRIC",
    "SCHEDULER_MODE",
    "EventLog",
    "LineagePBT",
    "RecordingASHA",
    "build_scheduler",
    "read_lineage",
]
