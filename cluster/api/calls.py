"""The public calls: what every ``lstm-tune`` command does, as typed Python functions.

Silent by default (``progress=True`` prints the CLI's progress lines and summary table to stderr); bad input raises a
``ValueError`` subclass naming the option (:class:`~cluster.plan.options.OptionError`,
:class:`~search_spaces.SearchSpaceError`, :class:`~cluster.plan.storage.StorageError`, ...) before anything starts,
which the CLI turns into exit code 2. Every check, the data preparation and the storage probe run before torch and
Ray are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console

from cluster.api.result import ExperimentResult
from cluster.plan.options import RunOptions, options_from_flat

if TYPE_CHECKING:
    from cluster.api.preflight import Finished, Ready
    from cluster.results.experiments import ExperimentInfo
    from cluster.tune.progress import ProgressHook
    from trainables.export import Classifier, Forecaster


def _console(progress: bool | Console) -> Console:
    if isinstance(progress, Console):
        return progress
    return Console(stderr=True, soft_wrap=True) if progress else Console(quiet=True)


def _launch(ready: Ready | Finished, console: Console, hook: ProgressHook | None) -> ExperimentResult:
    from cluster.api.preflight import Finished

    if isinstance(ready, Finished):
        ready.show(console)  # nothing to run: torch and Ray stay unloaded
        return ExperimentResult(uri=ready.uri, summary=ready.summary)
    import importlib

    from cluster.tune.session import ray_session

    # The modules that build the Tuner and score the results (torch, Tune) import while Ray starts.
    with ray_session(ready.plan.options.address, meanwhile=lambda: importlib.import_module("cluster.api.launch")):
        from cluster.api.launch import launch

        summary = launch(ready, console, hook)
    return ExperimentResult(uri=summary.experiment, summary=summary)


def run(
    options: RunOptions | None = None,
    /,
    *,
    progress: bool | Console = False,
    on_progress: ProgressHook | None = None,
    resume_if_exists: bool = False,
    **overrides: Any,
) -> ExperimentResult:
    """Tune, score the best trial(s) on the test split beside the naive baselines, and export the model.

    ``options`` and ``overrides`` use ``lstm-tune run``'s names (``num_samples=8, scheduler="pbt",
    storage="s3://bucket/exp"``); overrides win. ``space`` may be a preset name, a YAML path or a dict in the same
    schema. ``on_progress`` receives a :class:`~cluster.tune.progress.ProgressEvent` after every trial event.
    An existing experiment of the same name is refused unless ``resume_if_exists`` (then it is resumed, or, if
    finished, returned as it is).
    """
    from cluster.api.preflight import preflight

    opts = options_from_flat(overrides, base=options)
    console = _console(progress)
    return _launch(preflight(opts, console, resume_if_exists=resume_if_exists), console, on_progress)


def resume(
    uri: str,
    *,
    address: str | None = None,
    progress: bool | Console = False,
    on_progress: ProgressHook | None = None,
) -> ExperimentResult:
    """Finish an interrupted experiment (``<storage>/<name>``): unfinished trials continue from their newest
    checkpoints, errored ones are retried; a finished experiment is returned as it is."""
    from cluster.api.preflight import preflight_resume

    console = _console(progress)
    return _launch(preflight_resume(uri, console, address=address), console, on_progress)


def extend(
    uri: str,
    *,
    num_samples: int | None = None,
    time_budget_s: float | None = None,
    address: str | None = None,
    progress: bool | Console = False,
    on_progress: ProgressHook | None = None,
) -> ExperimentResult:
    """More trials for a finished experiment, in the same folder: ``num_samples`` more, or as many as fit in
    ``time_budget_s`` seconds (or both: whichever ends first). The new round's searcher is warm-started from every
    earlier trial that reported (TPE counts them as its own history; random search draws from a fresh seed, so it
    does not propose them again), and the summary, the ensemble and the exported model are recomputed over all
    trials. Each round's Tune experiment is the folder ``extend-N``; an interrupted extension is finished by
    :func:`resume`."""
    from cluster.api.preflight import preflight_extend

    console = _console(progress)
    ready = preflight_extend(uri, console, num_samples=num_samples, time_budget_s=time_budget_s, address=address)
    return _launch(ready, console, on_progress)


def load_experiment(uri: str) -> ExperimentResult:
    """An experiment already in storage, finished or not, without running anything."""
    return ExperimentResult.open(uri)


def list_experiments(storage: str = "./runs") -> list[ExperimentInfo]:
    """The experiments under a storage folder or ``s3://`` prefix: status, trial counts, best so far."""
    from cluster.results.experiments import list_experiments as listed

    return listed(storage)


def load_model(uri: str) -> Forecaster | Classifier:
    """An exported model: a model folder (``lstm-tune export``, ``<experiment>/best_model``) or an experiment's."""
    from cluster.plan.storage import ExperimentPaths, is_experiment
    from trainables.export import load_model as load
    from trainables.storage import resolve

    root = resolve(uri)
    return load(ExperimentPaths(root=root).best_model if is_experiment(root) else root)


def export(uri: str, out: str) -> dict[str, object]:
    """Copy a finished experiment's model and a model card (``model_card.json``) to a new folder or prefix."""
    from cluster.results.export import export_best

    return export_best(uri, out)


__all__ = [
    "export",
    "extend",
    "list_experiments",
    "load_experiment",
    "load_model",
    "resume",
    "run",
]
