"""One tuning run after its preflight (:mod:`cluster.preflight`): Ray, the Tuner, scoring and exporting the best;
and resuming an experiment."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import ray
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, SyncConfig, TuneConfig, Tuner
from rich.console import Console

from cluster.ensemble import best_checkpoint, top_trials, trial_id
from cluster.loggers import result_loggers
from cluster.options import RunOptions
from cluster.plan import Plan
from cluster.preflight import Finished, Ready, preflight, preflight_resume
from cluster.progress import ProgressCallback
from cluster.retention import RollingRetention, prune_stopped_checkpoints
from cluster.schedulers import build_scheduler, read_lineage
from cluster.scoring import score_classify, score_forecast
from cluster.space import grid_size, search_algorithm, to_mutations, to_param_space
from cluster.summary import BestTrial, Ensemble, EnsembleMember, Scores, Summary, render
from cluster.worker_groups import WorkerGroupReaper
from trainables import metrics as M
from trainables.data.handle import DataHandle
from trainables.export import export_model
from trainables.storage import write_bytes_atomic
from trainables.trainable import TrialEnv, classify_trainable, forecast_trainable


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for the duration of a run: joined or started, and shut down again only if this run started it."""
    started = connect(address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Join a cluster (``--address``, else ``RAY_ADDRESS``) or start a private local one; True if we started Ray."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **common)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**common)
    else:
        # "local" never joins a stale cluster left in the temp dir by a killed run.
        ray.init(address="local", include_dashboard=False, **common)
    return True


def cluster_capacity() -> tuple[list[float], list[float]]:
    cpus, gpus = [], []
    for node in ray.nodes():
        if node.get("Alive"):
            res = node.get("Resources", {})
            cpus.append(float(res.get("CPU", 0)))
            gpus.append(float(res.get("GPU", 0)))
    return cpus, [g for g in gpus if g > 0]


def trainable_for(opts: RunOptions, env: TrialEnv, task: str) -> Any:
    function = classify_trainable if task == "classify" else forecast_trainable
    res = opts.resources
    if res.workers_per_trial > 1:
        # The trial only coordinates its Ray Train workers, which reserve the CPUs and GPUs themselves. Tune refuses
        # an empty request, so the trial holds a little memory instead of a CPU a worker could use.
        env = replace(
            env,
            workers_per_trial=res.workers_per_trial,
            cpus_per_worker=res.cpus_per_trial,
            gpus_per_worker=res.gpus_per_trial,
        )
        return tune.with_resources(tune.with_parameters(function, env=env), {"cpu": 0, "memory": 64 * 2**20})
    return tune.with_resources(
        tune.with_parameters(function, env=env), {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    )


def build_tuner(p: Plan, env: TrialEnv, progress: ProgressCallback, task: str) -> Tuner:
    opts = p.options
    param_space = {
        **to_param_space(p.space, opts.search),
        "max_epochs": opts.max_epochs,
        "seed": opts.seed,
        "patience": opts.patience,
        "min_delta": opts.min_delta,
        "epoch_samples": opts.epoch_samples or 0,
    }
    trainable = trainable_for(opts, env, task)
    scheduler = build_scheduler(
        opts.scheduler,
        max_epochs=opts.max_epochs,
        mutations=to_mutations(p.space),
        lineage_uri=p.paths.lineage.uri,
        rungs_uri=p.paths.rungs.uri,
        tensorboard_uri=p.paths.tensorboard.uri,
    )
    root = p.paths.root
    storage_path, _, _ = root.path.rpartition("/")
    # Tune would add a tensorboardX logger that writes HParams only at trial end; trials write their own.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Our progress lines and summary replace Tune's own console tables.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = Tuner(
        trainable,
        param_space=param_space,
        tune_config=TuneConfig(
            metric=M.SCHEDULER_METRIC,
            mode=M.SCHEDULER_MODE,
            scheduler=scheduler,
            num_samples=opts.num_samples,
            time_budget_s=opts.time_budget_s,
            search_alg=search_algorithm(opts.search, opts.seed, opts.resources.max_concurrent_trials),
            # Reused workers keep their process, imports and the loaded dataset between trials. Not for data-parallel
            # trials: a second TorchTrainer run in a reused trial process never got its workers (seen here).
            reuse_actors=opts.resources.reuse_workers and opts.resources.workers_per_trial == 1,
        ),
        run_config=RunConfig(
            name=p.name,
            storage_path=storage_path,
            storage_filesystem=None if root.is_local else root.fs,
            checkpoint_config=CheckpointConfig(
                # Tune's own retention deletes checkpoint folders its last stored snapshot may still name (a resume
                # then fails the trial); RollingRetention prunes without removing folders (see cluster.retention).
                num_to_keep=None,
                checkpoint_score_attribute=M.VAL_LOSS,
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=opts.max_failures),
            # What a lost driver loses: the results and the snapshot since the last upload (Tune's default, 300 s).
            sync_config=SyncConfig(sync_period=opts.checkpoints.sync_period_s),
            callbacks=[
                *result_loggers(),
                progress,
                RollingRetention(keep_best=opts.checkpoints.num_to_keep),
                WorkerGroupReaper(),
            ],
            verbose=0,
        ),
    )
    return tuner


def run_experiment(opts: RunOptions, console: Console | None = None, *, resume_if_exists: bool = False) -> Summary:
    """The whole ``lstm-tune run``: everything is checked before the first trial starts."""
    console = console or Console(stderr=True, soft_wrap=True)
    return launch(preflight(opts, console, resume_if_exists=resume_if_exists), console)


def resume_experiment(uri: str, console: Console | None = None, *, address: str | None = None) -> Summary:
    """Finish an interrupted experiment: unfinished trials continue from their last checkpoint, errored ones are
    retried from theirs. A finished experiment is left alone and its summary printed again."""
    console = console or Console(stderr=True, soft_wrap=True)
    return launch(preflight_resume(uri, console, address=address), console)


def launch(ready: Ready | Finished, console: Console) -> Summary:
    """Tune what :func:`~cluster.preflight.preflight` or :func:`~cluster.preflight.preflight_resume` checked."""
    if isinstance(ready, Finished):
        return ready.show(console)
    p, handle, task, opts = ready.plan, ready.data, ready.task, ready.plan.options
    with ray_session(opts.address):
        if ready.resuming:
            tuner = restore_tuner(p, handle, task, console)
        else:
            capacity = cluster_capacity()
            opts.resources.check_fits(*capacity)
            opts = replace(
                opts, resources=replace(opts.resources, max_concurrent_trials=opts.resources.concurrency(*capacity))
            )
            p = replace(p, options=opts)
            tuner = build_tuner(p, trial_env(p, handle), ProgressCallback(console, max_epochs=opts.max_epochs), task)
            n = opts.num_samples * grid_size(p.space, opts.search)
            console.print(
                f"tuning {n} trial(s) of {p.space.name} with {opts.scheduler.kind}, up to {opts.max_epochs} epochs "
                f"each; experiment {p.paths.root.uri}",
                highlight=False,
            )
        summary = finish(p, tuner.fit(), handle, task, ready.started)
    render(summary, console)
    return summary


def trial_env(p: Plan, handle: DataHandle) -> TrialEnv:
    return TrialEnv(
        data=handle,
        tensorboard_uri=p.paths.tensorboard.uri,
        experiment_uri=p.paths.root.uri,
        embeddings_uri=p.options.embeddings,
    )


def restore_tuner(p: Plan, handle: DataHandle, task: str, console: Console) -> Tuner:
    root = p.paths.root
    console.print(f"resuming {root.uri}", highlight=False)
    return Tuner.restore(
        root.uri if root.is_local else root.path,
        trainable=trainable_for(p.options, trial_env(p, handle), task),
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=None if root.is_local else root.fs,
    )


def finish(p: Plan, results: Any, handle: DataHandle, task: str, started: float) -> Summary:
    """Score, export, prune, and write ``best.json`` (its presence marks the experiment finished)."""
    summary = summarize(p, results, handle, time.monotonic() - started, task)
    write_bytes_atomic(p.paths.best_json, summary.to_json().encode())
    return summary


def summarize(p: Plan, results: Any, handle: DataHandle, wall_time: float, task: str = "forecast") -> Summary:
    opts = p.options
    ok = [r for r in results if r.error is None and r.metrics]
    errored = [r for r in results if r.error is not None]
    if not ok:
        first = errored[0].error if errored else "no trial reported a result"
        raise RuntimeError(f"every trial failed; first error: {first}")
    finished = sum(1 for r in ok if int(r.metrics.get(M.EPOCH, 0)) >= opts.max_epochs)
    best = results.get_best_result(metric=M.VAL_LOSS, mode="min", scope="all", filter_nan_and_inf=True)
    chosen = [(r, *best_checkpoint(r)) for r in top_trials(ok, opts.ensemble, best=best)]
    checkpoint = chosen[0][1]
    notes: list[str] = []
    if len(chosen) < opts.ensemble:
        notes.append(
            f"ensemble: {len(chosen)} of the {opts.ensemble} trials asked for; the others reported no usable result"
        )
    checkpoints = [c for _, c, _ in chosen]
    scored = score_classify(checkpoints, handle) if task == "classify" else score_forecast(checkpoints, handle)
    ensemble = _ensemble(chosen, scored.ensemble, task) if scored.ensemble is not None else None
    export_model(p.paths.best_model, checkpoint_payloads=scored.payloads, fitted=scored.fitted)
    retention = prune_stopped_checkpoints(
        p.paths.root,
        ok,
        max_epochs=opts.max_epochs,
        keep=opts.checkpoints.keep_stopped,
        protect={c.path for _, c, _ in chosen},
        keep_per_trial=opts.checkpoints.num_to_keep,
    )
    fixed = ("max_epochs", "seed", "patience", "min_delta", "epoch_samples")
    return Summary(
        experiment=p.paths.root.uri,
        task=task,
        scheduler=opts.scheduler.kind,
        search_space=p.space.name,
        dataset=scored.dataset,
        target=scored.target,
        horizon=scored.horizon,
        trials={"total": len(results), "finished": finished, "stopped": len(ok) - finished, "errored": len(errored)},
        best=BestTrial(
            trial_id=trial_id(best),
            config={k: v for k, v in best.config.items() if k not in fixed},
            epoch=int(scored.payloads[0]["state"]["epoch"]),
            val=scored.best["val"],
            test=scored.best["test"],
            checkpoint=checkpoint.path,
        ),
        baselines=scored.baselines,
        wall_time_s=wall_time,
        pbt_exploits=len(read_lineage(p.paths.lineage.uri)),
        exported_model=p.paths.best_model.uri,
        checkpoints=retention,
        notes=notes,
        ensemble=ensemble,
    )


def _ensemble(chosen: list[tuple[Any, Any, dict[str, Any]]], scores: dict[str, Scores], task: str) -> Ensemble:
    def member_val(metrics: dict[str, Any]) -> Scores:
        if task == "classify":
            return Scores(accuracy=metrics.get(M.VAL_ACCURACY), macro_f1=metrics.get(M.VAL_MACRO_F1))
        return Scores(rmse=metrics.get(M.VAL_RMSE), mae=metrics.get(M.VAL_MAE))

    members = [
        EnsembleMember(trial_id=trial_id(r), epoch=int(m.get(M.EPOCH, 0)), val=member_val(m), checkpoint=c.path)
        for r, c, m in chosen
    ]
    return Ensemble(members=members, val=scores["val"], test=scores["test"])


__all__ = [
    "connect",
    "launch",
    "resume_experiment",
    "run_experiment",
    "summarize",
]
