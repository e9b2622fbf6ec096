"""lstm-tune's driver side, and its public Python API.

>>> import cluster
>>> result = cluster.run(num_samples=8, scheduler="asha", storage="./runs", name="pm25")
>>> result.summary.best.test.rmse, result.trials(), result.history()
>>> result.model.predict(raw_rows)
>>> cluster.extend("runs/pm25", num_samples=8)       # more trials, same folder; the summary covers all of them

The names below load on first use (PEP 562): ``import cluster`` stays light, and a call checks its input before torch
and Ray are imported. Subpackages, in the order data flows (each imports only those before it): ``plan``, ``prep``,
``tune``, ``results``, ``report``, then ``api`` and ``remote``, then ``cli`` on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.lazy import lazy_exports

if TYPE_CHECKING:
    from cluster.api.calls import export, extend, list_experiments, load_experiment, load_model, resume, run
    from cluster.api.result import ExperimentResult
    from cluster.plan.options import CheckpointOptions, OptionError, ResourceOptions, RunOptions, SchedulerOptions
    from cluster.plan.storage import StorageError
    from cluster.prep.prepare import inspect, prepare
    from cluster.results.experiments import ExperimentInfo
    from cluster.results.summary import BestTrial, Ensemble, Scores, Summary
    from cluster.tune.progress import ProgressEvent
    from search_spaces import SearchSpaceError

_HOME = {
    "run": "cluster.api.calls",
    "resume": "cluster.api.calls",
    "load_experiment": "cluster.api.calls",
    "list_experiments": "cluster.api.calls",
    "load_model": "cluster.api.calls",
    "export": "cluster.api.calls",
    "extend": "cluster.api.calls",
    "prepare": "cluster.prep.prepare",
    "inspect": "cluster.prep.prepare",
    "ExperimentResult": "cluster.api.result",
    "ExperimentInfo": "cluster.results.experiments",
    "RunOptions": "cluster.plan.options",
    "SchedulerOptions": "cluster.plan.options",
    "ResourceOptions": "cluster.plan.options",
    "CheckpointOptions": "cluster.plan.options",
    "OptionError": "cluster.plan.options",
    "StorageError": "cluster.plan.storage",
    "SearchSpaceError": "search_spaces",
    "Summary": "cluster.results.summary",
    "BestTrial": "cluster.results.summary",
    "Ensemble": "cluster.results.summary",
    "Scores": "cluster.results.summary",
    "ProgressEvent": "cluster.tune.progress",
}

__getattr__ = lazy_exports(__name__, _HOME)

__all__ = [
    "BestTrial",
    "CheckpointOptions",
    "Ensemble",
    "ExperimentInfo",
    "ExperimentResult",
    "OptionError",
    "ProgressEvent",
    "ResourceOptions",
    "RunOptions",
    "SchedulerOptions",
    "Scores",
    "SearchSpaceError",
    "StorageError",
    "Summary",
    "export",
    "extend",
    "inspect",
    "list_experiments",
    "load_experiment",
    "load_model",
    "prepare",
    "resume",
    "run",
]
