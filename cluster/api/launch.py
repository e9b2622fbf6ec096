"""One tuning run after its preflight (:mod:`cluster.api.preflight`): Ray and the Tuner, then the results; and
resuming an experiment."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from rich.console import Console

from cluster.api.preflight import Finished, Ready, preflight, preflight_resume
from cluster.plan.options import RunOptions
from cluster.plan.planning import Plan
from cluster.plan.space import WarmStart, grid_size, warm_start
from cluster.plan.storage import PACKS_FILE, WARM_START_FILE
from cluster.results.finish import finish
from cluster.results.summary import Summary, render
from cluster.tune.packing import PackPlan, fill_line, pack_plan, start_registry, stop_registry
from cluster.tune.progress import ProgressCallback, ProgressHook, restored_output
from cluster.tune.session import ray_session
from cluster.tune.tuner import build_tuner, cluster_capacity, restore_tuner, round_results, trial_env
from trainables import metrics as M
from trainables.storage import exists, read_bytes, resolve, write_bytes_atomic


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
    """Tune what :func:`~cluster.api.preflight.preflight` (or ``preflight_resume``, ``preflight_extend``) checked;
    progress lines go to ``console`` and every trial event to ``hook``."""
    if isinstance(ready, Finished):
        return ready.show(console)
    try:
        return _launch_held(ready, console, hook)
    finally:
        if ready.lease is not None:
            if ready.lease.lost:
                console.print(f"warning: {ready.lease.lost}", highlight=False)
            ready.lease.release()


def _launch_held(ready: Ready, console: Console, hook: ProgressHook | None) -> Summary:
    p, handle, task, opts = ready.plan, ready.data, ready.task, ready.plan.options
    with ray_session(opts.address):
        previous = [round_results(resolve(uri), p, handle, task) for uri in ready.previous]
        capacity = cluster_capacity()
        if opts.resources.pack or not ready.resuming:
            opts.resources.check_fits(*capacity)
        pack = None
        if opts.resources.pack:
            plan = pack_plan(opts.resources, *capacity)
            pack = start_registry(p.paths.root.uri, handle, plan, embeddings_uri=opts.embeddings)
            console.print(_packing(plan), highlight=False)
        if ready.resuming:
            with restored_output(console, hook):
                tuner = restore_tuner(p, handle, task, console, pack)
        else:
            concurrent = opts.resources.concurrency(*capacity)
            if pack is not None:
                concurrent = min(concurrent or plan.members, plan.members)
            opts = replace(opts, resources=replace(opts.resources, max_concurrent_trials=concurrent))
            p = replace(p, options=opts)
            warm = _warm_start(p, previous) if previous else None
            progress = ProgressCallback(console, max_epochs=opts.max_epochs, hook=hook, metric=opts.metric)
            tuner = build_tuner(p, trial_env(p, handle, pack), progress, task, warm)
            console.print(_starting(p, previous, warm), highlight=False)
        grid = tuner.fit()
        if pack is not None:
            _record_packs(p, stop_registry(pack), pack.capacity, console)
        summary = finish(p, [*previous, grid], handle, task, ready.started)
    render(summary, console)
    return summary


def _record_packs(p: Plan, packs: list[dict[str, Any]], capacity: int, console: Console) -> None:
    where = p.paths.root.child(PACKS_FILE)
    launches = json.loads(read_bytes(where)) if exists(where) else []
    write_bytes_atomic(where, json.dumps([*launches, packs], indent=1).encode())
    console.print(fill_line(packs, capacity), highlight=False)


def _packing(plan: PackPlan) -> str:
    where = f"{plan.gpus:g} GPU each" if plan.gpus else "on CPU (tests only: slower than unpacked trials)"
    return f"packing: up to {plan.capacity} trials per pack, {plan.packs} pack(s) at once, {where}"


def _warm_start(p: Plan, previous: list[Any]) -> WarmStart:
    """Every earlier trial that reported, as the new round's searcher history; recorded in the round's folder."""
    finished = [
        (dict(r.config), (r.metrics or {}).get(M.SCHEDULER_METRIC))
        for grid in previous
        for r in grid
        if r.error is None
    ]
    warm = warm_start(p.space, finished)
    record: dict[str, Any] = {
        "searcher": p.options.search,
        "trials": len(warm.points),
        "points": warm.points,
        "rewards": warm.rewards,
    }
    if p.options.search != "tpe":
        record["note"] = "random search is not told of earlier trials; a fresh seed keeps it from repeating them"
    write_bytes_atomic(p.tune_root.child(WARM_START_FILE), json.dumps(record, indent=2).encode())
    return warm


def _starting(p: Plan, previous: list[Any], warm: WarmStart | None) -> str:
    opts = p.options
    if not previous:
        n = opts.num_samples * grid_size(p.space, opts.search)
        return (
            f"tuning {n} trial(s) of {p.space.name} with {opts.scheduler.kind}, up to {opts.max_epochs} epochs "
            f"each; experiment {p.paths.root.uri}"
        )
    before = sum(len(grid) for grid in previous)
    budget = f"up to {opts.time_budget_s:g} s" if opts.time_budget_s else f"{opts.num_samples} more trial(s)"
    told = (
        f"; {opts.search} search told of {len(warm.points)} earlier trial(s)" if warm and opts.search == "tpe" else ""
    )
    return f"extending {p.paths.root.uri} ({before} trial(s) so far) in {p.round}: {budget}{told}"


__all__ = ["launch", "resume_experiment", "run_experiment"]
