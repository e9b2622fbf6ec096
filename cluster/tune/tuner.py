"""Ray and the Tuner: join or start Ray, wrap the trainable with its resources, and build (or restore) the Tuner
with the scheduler, the searcher and the driver's callbacks."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import ray
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, SyncConfig, TuneConfig, Tuner
from rich.console import Console

from cluster.plan.options import RunOptions
from cluster.plan.planning import Plan
from cluster.plan.space import WarmStart, round_seed, search_algorithm, to_mutations, to_param_space
from cluster.plan.storage import extension_number
from cluster.tune.loggers import result_loggers
from cluster.tune.progress import ProgressCallback
from cluster.tune.retention import RollingRetention
from cluster.tune.schedulers import build_scheduler
from cluster.tune.worker_groups import WorkerGroupReaper
from trainables import metrics as M
from trainables.data.handle import DataHandle
from trainables.member import PackEnv
from trainables.storage import Location
from trainables.trainable import TrialEnv, classify_trainable, forecast_trainable


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
        env = replace(
            env,
            workers_per_trial=res.workers_per_trial,
            cpus_per_worker=res.cpus_per_trial,
            gpus_per_worker=res.gpus_per_trial,
        )
    if res.workers_per_trial > 1 or env.pack is not None:
        # The trial only coordinates: its Ray Train workers (data-parallel), or its pack (--pack; how many run at
        # once is --max-concurrent-trials, set to the packs' slots), hold the CPUs and GPUs. Tune refuses an empty
        # request, so the trial holds a little memory instead of a CPU a worker could use.
        return tune.with_resources(tune.with_parameters(function, env=env), {"cpu": 0, "memory": 64 * 2**20})
    return tune.with_resources(
        tune.with_parameters(function, env=env), {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    )


def build_tuner(p: Plan, env: TrialEnv, progress: ProgressCallback, task: str, warm: WarmStart | None = None) -> Tuner:
    """A new Tune experiment at ``p.tune_root``; ``warm``: earlier rounds' trials for the searcher (``extend``)."""
    opts = p.options
    round_number = extension_number(p.round) if p.round else 0
    param_space = {
        **to_param_space(p.space, opts.search),
        "max_epochs": opts.max_epochs,
        "seed": opts.seed,
        "patience": opts.patience,
        "min_delta": opts.min_delta,
        "epoch_samples": opts.epoch_samples or 0,
        "metric": opts.metric,
        # A string: Tune's searchers and the HParams plugin take scalars; RunLimits reads it back.
        "quantiles": ",".join(f"{q:g}" for q in opts.quantiles),
    }
    trainable = trainable_for(opts, env, task)
    scheduler = build_scheduler(
        opts.scheduler,
        max_epochs=opts.max_epochs,
        mutations=to_mutations(p.space),
        lineage_uri=p.paths.lineage.uri,
        rungs_uri=p.paths.rungs.uri,
        pbt_state_uri=p.paths.pbt_state.uri,
        tensorboard_uri=p.paths.tensorboard.uri,
    )
    root = p.paths.root
    # Tune writes <storage_path>/<name>: the experiment itself, or an extension round's folder inside it.
    storage_path, _, name = p.tune_root.path.rpartition("/")
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
            search_alg=search_algorithm(
                opts.search, round_seed(opts.seed, round_number or 0), opts.resources.max_concurrent_trials, warm
            ),
            # Reused workers keep their process, imports and the loaded dataset between trials. Not for data-parallel
            # trials: a second TorchTrainer run in a reused trial process never got its workers (seen here).
            reuse_actors=opts.resources.reuse_workers and opts.resources.workers_per_trial == 1,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=None if root.is_local else root.fs,
            checkpoint_config=CheckpointConfig(
                # Tune's own retention deletes checkpoint folders its last stored snapshot may still name (a resume
                # then fails the trial); RollingRetention prunes without removing folders (see cluster.tune.retention).
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


def trial_env(p: Plan, handle: DataHandle, pack: PackEnv | None = None) -> TrialEnv:
    return TrialEnv(
        data=handle,
        tensorboard_uri=p.paths.tensorboard.uri,
        experiment_uri=p.paths.root.uri,
        embeddings_uri=p.options.embeddings,
        pack=pack,
    )


def restore_tuner(p: Plan, handle: DataHandle, task: str, console: Console, pack: PackEnv | None = None) -> Tuner:
    root = p.tune_root
    console.print(f"resuming {root.uri}", highlight=False)
    return Tuner.restore(
        root.uri if root.is_local else root.path,
        trainable=trainable_for(p.options, trial_env(p, handle, pack), task),
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=None if root.is_local else root.fs,
    )


def round_results(root: Location, p: Plan, handle: DataHandle, task: str) -> Any:
    """The ResultGrid of a finished round of the experiment (its first run, or an extension), read from storage."""
    tuner = Tuner.restore(
        root.uri if root.is_local else root.path,
        trainable=trainable_for(p.options, trial_env(p, handle), task),
        storage_filesystem=None if root.is_local else root.fs,
    )
    return tuner.get_results()


__all__ = [
    "build_tuner",
    "cluster_capacity",
    "restore_tuner",
    "round_results",
    "trainable_for",
    "trial_env",
]
