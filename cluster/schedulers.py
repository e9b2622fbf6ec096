"""Schedulers from options. They meet the trainable only through the metric names in ``trainables.metrics``."""

from __future__ import annotations

import json
import time
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from cluster.options import SchedulerOptions
from trainables import metrics as M
from trainables.storage import read_bytes, resolve, write_bytes_atomic


def read_lineage(uri: str) -> list[dict[str, Any]]:
    """The exploit records of an experiment (empty if it had none)."""
    try:
        text = read_bytes(resolve(uri)).decode()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class LineagePBT(PopulationBasedTraining):
    """PBT that keeps every exploit as data (who cloned whom, when, old and new values), not only as log text.

    Each exploit is written to ``lineage_uri`` at once, so the record survives a killed driver; a resumed
    experiment appends to what is there.
    """

    def __init__(self, *, lineage_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lineage_uri = lineage_uri
        # Scheduler hooks run on the driver's event loop thread, one at a time: no lock needed.
        self.exploits: list[dict[str, Any]] = []
        self._loaded = False

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        old = {k: trial.config.get(k) for k in self._hyperparam_mutations}
        donor = {k: trial_to_clone.config.get(k) for k in self._hyperparam_mutations}
        step = (trial.last_result or {}).get("training_iteration", 0)
        super()._exploit(tune_controller, trial, trial_to_clone)
        record = {
            "time": time.time(),
            "step": int(step),
            "trial": trial.trial_id,
            "cloned_from": trial_to_clone.trial_id,
            "old": old,
            "donor": donor,
            "new": {k: trial.config.get(k) for k in self._hyperparam_mutations},
        }
        if not self._loaded and self.lineage_uri:
            self.exploits = read_lineage(self.lineage_uri)  # after a resume: continue the file
            self._loaded = True
        self.exploits.append(json.loads(json.dumps(record, default=str)))
        if self.lineage_uri:
            text = "".join(json.dumps(e) + "\n" for e in self.exploits)
            write_bytes_atomic(resolve(self.lineage_uri), text.encode())


def build_scheduler(
    opts: SchedulerOptions, *, max_epochs: int, mutations: dict[str, Any], lineage_uri: str | None = None
) -> TrialScheduler:
    """ASHA, PBT or FIFO; metric and mode come from the TuneConfig (``trainables.metrics``)."""
    if opts.kind == "asha":
        return ASHAScheduler(
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

__all__ = ["SCHEDULER_METRIC", "SCHEDULER_MODE", "LineagePBT", "build_scheduler", "read_lineage"]
