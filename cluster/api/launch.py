"""One tuning run after its preflight (:mod:`cluster.api.preflight`): Ray and the Tuner, then the results; and
resuming an experiment."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from cluster.api.preflight import Finished, Ready, preflight, preflight_resume
from cluster.plan.options import RunOptions
from cluster.plan.space import grid_size
from cluster.results.finish import finish
from cluster.results.summary import Summary, render
from cluster.tune.progress import ProgressCallback, ProgressHook, restored_output
from cluster.tune.tuner import build_tuner, cluster_capacity, ray_session, restore_tuner, trial_env


def run_experiment(opts: RunOptions, console: Console | None = None, *, resume_if_exists: bool = False) -> Summary:
    """The whole ``lstm-tune run``: everything is checked before the first trial starts."""
    console = console or Console(stderr=True, soft_wrap=True)
    return launch(preflight(opts, console, resume_if_exists=resume_if_exists), console)


def resume_experiment(uri: str, console: Console | None = None, *, address: str | None = None) -> Summary:
    """Finish an interrupted experiment: unfinished trials continue from their last checkpoint, errored ones are
    retried from theirs. A finished experiment is left alone and its summary printed again."""
    console = console or Console(stderr=True, soft_wrap=True)
    return launch(preflight_resume(uri, console, address=address), console)


def launch(ready: Ready | Finished, console: Console, hook: ProgressHook | None = None) -> Summary:
    """Tune what :func:`~cluster.api.preflight.preflight` or :func:`~cluster.api.preflight.preflight_resume` checked;
    progress lines go to ``console`` and every trial event to ``hook``."""
    if isinstance(ready, Finished):
        return ready.show(console)
    p, handle, task, opts = ready.plan, ready.data, ready.task, ready.plan.options
    with ray_session(opts.address):
        if ready.resuming:
            with restored_output(console, hook):
                tuner = restore_tuner(p, handle, task, console)
        else:
            capacity = cluster_capacity()
            opts.resources.check_fits(*capacity)
            opts = replace(
                opts, resources=replace(opts.resources, max_concurrent_trials=opts.resources.concurrency(*capacity))
            )
            p = replace(p, options=opts)
            progress = ProgressCallback(console, max_epochs=opts.max_epochs, hook=hook)
            tuner = build_tuner(p, trial_env(p, handle), progress, task)
            n = opts.num_samples * grid_size(p.space, opts.search)
            console.print(
                f"tuning {n} trial(s) of {p.space.name} with {opts.scheduler.kind}, up to {opts.max_epochs} epochs "
                f"each; experiment {p.paths.root.uri}",
                highlight=False,
            )
        summary = finish(p, tuner.fit(), handle, task, ready.started)
    render(summary, console)
    return summary


__all__ = ["launch", "resume_experiment", "run_experiment"]
