"""Schedulers from options. They meet the trainable only through the metric names in ``trainables.metrics``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from cluster.plan.options import SchedulerOptions
from cluster.plan.storage import read_events as read_lineage
from cluster.plan.storage import read_state
from trainables import metrics as M
from trainables.storage import resolve, write_bytes_atomic
from trainables.tensorboard import write_text_event

log = logging.getLogger(__name__)


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
        # Storage may be down (an S3 outage longer than the client's retries): a scheduler callback that raised
        # would stop Tune. The log is rewritten whole at every event, so the next write that succeeds is complete.
        try:
            if self.uri:
                body = "".join(json.dumps(e) + "\n" for e in self.events)
                write_bytes_atomic(resolve(self.uri), body.encode())
            if self.tensorboard_uri:
                write_text_event(resolve(self.tensorboard_uri), run_name, self.tag, text, step)
        except OSError as exc:
            log.warning("could not write %s (kept in memory, written with the next event): %s", self.uri, exc)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    rows = [f"| {k} | {_short(old.get(k))} | {_short(v)} |" for k, v in new.items()]
    return "| hyperparameter | before | after |\n| --- | --- | --- |\n" + "\n".join(rows)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineagePBT(PopulationBasedTraining):
    """PBT that keeps every exploit as data (who cloned whom, when, old and new values) in ``pbt_lineage.jsonl``,
    and as a text event in the exploiting trial's TensorBoard run, not only as log text.

    Its population bookkeeping survives the driver: each trial's state at its last perturbation check (score, time)
    is kept in ``pbt_state.json``, and a resumed experiment's scheduler, which Ray rebuilds empty
    (ray-project/ray#30838), reads it back as Tune re-adds each trial, with the trial's newest checkpoint as what a
    weaker trial would clone. Quantiles, the next perturbation time and the exploit due at the kill are then what
    they were.
    """

    def __init__(
        self,
        *,
        lineage_uri: str | None = None,
        state_uri: str | None = None,
        tensorboard_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lineage_uri = lineage_uri
        self.state_uri = state_uri
        self.log = EventLog(lineage_uri, tensorboard_uri, "pbt/exploit")
        self._saved: dict[str, dict[str, Any]] | None = None
        self.restored: list[str] = []
        """Trials whose bookkeeping was read back on resume."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An experiment's tuner.pkl holds the scheduler as it was pickled: one from before the restore has none of
        # its attributes.
        state.setdefault("state_uri", None)
        state.setdefault("_saved", None)
        state.setdefault("restored", [])
        self.__dict__.update(state)

    @property
    def exploits(self) -> list[dict[str, Any]]:
        return self.log.events

    def _saved_states(self) -> dict[str, dict[str, Any]]:
        if self._saved is None:
            self._saved = read_state(self.state_uri) if self.state_uri else {}
        return self._saved

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        saved = self._saved_states().get(trial.trial_id)
        if saved is None:
            return
        state = self._trial_state[trial]
        state.last_score = float(saved["score"])
        state.last_train_time = int(saved["time"])
        state.last_perturbation_time = int(saved["perturbed"])
        state.last_result = {self._time_attr: int(saved["time"]), str(self._metric): float(saved["value"])}
        # What a weaker trial clones: the newest checkpoint Tune restored for it (at or after the last check).
        state.last_checkpoint = trial.checkpoint
        self.restored.append(trial.trial_id)

    def _save_trial_state(self, state: Any, time: int, result: dict[str, Any], trial: Trial) -> Any:
        score = super()._save_trial_state(state, time, result, trial)
        saved = self._saved_states()
        saved[trial.trial_id] = {
            "time": int(time),
            "score": float(score),
            "value": float(result[str(self._metric)]),
            # A check runs only when it is due, and sets the perturbation time to this time.
            "perturbed": int(time),
        }
        if self.state_uri:
            try:
                write_bytes_atomic(resolve(self.state_uri), json.dumps(saved, indent=1).encode())
            except OSError as exc:  # storage down: written whole with the next check
                log.warning("could not write %s: %s", self.state_uri, exc)
        return score

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
        self._recorded: dict[str, list[dict[str, Any]]] | None = None
        self._stopped_at: dict[str, int] = {}
        self.restored: list[str] = []
        """Trials whose rungs were read back on resume."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An experiment's tuner.pkl holds the scheduler as it was pickled: one from before the restore has none of
        # its attributes.
        state.setdefault("_recorded", None)
        state.setdefault("_stopped_at", {})
        state.setdefault("restored", [])
        self.__dict__.update(state)

    def _recorded_events(self) -> dict[str, list[dict[str, Any]]]:
        if self._recorded is None:
            self._recorded = {}
            for event in read_lineage(self.log.uri) if self.log.uri else []:
                self._recorded.setdefault(str(event["trial"]), []).append(event)
        return self._recorded

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        """Ray rebuilds a resumed experiment's scheduler empty (ray-project/ray#30838): as Tune re-adds each trial,
        its recorded rung values go back into the bracket, so cutoffs are what they were before the driver was lost.
        Only this round's trials are re-added, so an earlier round's rungs stay out."""
        super().on_trial_add(tune_controller, trial)
        events = self._recorded_events().get(trial.trial_id)
        if not events:
            return
        bracket = self._trial_info[trial.trial_id]
        sign = float(self._metric_op or 1.0)
        for event in events:
            for milestone, recorded in bracket._rungs:
                if int(milestone) == int(event["rung"]):
                    recorded[trial.trial_id] = sign * float(event["value"])
            if event["decision"] == "stopped":
                self._stopped_at[trial.trial_id] = int(event["rung"])
        self.restored.append(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        stopped = self._stopped_at.get(trial.trial_id)
        iteration = result.get(self._time_attr)
        if stopped is not None and iteration is not None and iteration >= stopped:
            # Stopped at this rung before the driver was lost, but Tune's snapshot did not show it yet: the trial
            # replays its epochs to the rung, and the decision stands.
            return str(TrialScheduler.STOP)
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
    pbt_state_uri: str | None = None,
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
            state_uri=pbt_state_uri,
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
