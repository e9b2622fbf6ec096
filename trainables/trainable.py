"""The Tune function trainable: glue between Tune's session and :func:`trainables.loop.run_trial`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from trainables import metrics as M
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, ForecastData, load_forecast_data
from trainables.data.text_loader import TextData, load_text_data
from trainables.device import Placement, placement, trial_device
from trainables.loop import Startup, run_trial
from trainables.member import PackEnv, run_member
from trainables.ray_api import Checkpoint, get_checkpoint, get_context, report
from trainables.restore import restore_state
from trainables.storage import Location, resolve, wait_until_reachable
from trainables.tensorboard import TrialLogger


@dataclass(frozen=True, kw_only=True)
class TrialEnv:
    """Fixed for every trial of an experiment; shipped once through ``tune.with_parameters``."""

    data: DataHandle
    tensorboard_uri: str | None = None
    """Where trial runs write TensorBoard event files (``<experiment>/tensorboard``)."""
    experiment_uri: str | None = None
    """The experiment folder in storage; a trial looks there for its own checkpoints when Tune hands it none."""
    embeddings_uri: str | None = None
    """Pretrained word vectors (word2vec/GloVe text format) for text trials with embeddings frozen|finetune."""
    workers_per_trial: int = 1
    """Above 1: the trial drives a data-parallel Ray Train run (:mod:`trainables.parallel`)."""
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    pack: PackEnv | None = None
    """Set: the trial is a member of a pack (``--pack``); a pack actor trains it (:mod:`trainables.member`)."""


class TuneSession:
    """:class:`trainables.loop.TrialSession` backed by Tune's session."""

    def __init__(self, trial_storage: Location | None = None) -> None:
        self.trial_storage = trial_storage

    def restore(self) -> dict[str, Any] | None:
        return restore_state(get_checkpoint(), self.trial_storage)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        # Tune persists the checkpoint to storage before report() returns, so the caller may delete the folder.
        # An outage longer than the S3 client's retries would fail that upload and the trial: wait it out first.
        if self.trial_storage is not None:
            wait_until_reachable(self.trial_storage, say=lambda line: print(line, flush=True))
        report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir))


FORECAST_TAGS = [M.VAL_LOSS, M.VAL_RMSE, M.VAL_MAE, M.TRAIN_LOSS]
CLASSIFY_TAGS = [M.VAL_LOSS, M.VAL_ACCURACY, M.VAL_MACRO_F1, M.TRAIN_LOSS]


def _trial_storage(env: TrialEnv) -> Location | None:
    if not env.experiment_uri:
        return None
    trial_dir = os.path.basename(get_context().get_trial_dir().rstrip("/"))
    return resolve(env.experiment_uri, endpoint=env.data.endpoint).child(trial_dir)


def _run_parallel(config: dict[str, Any], env: TrialEnv, task: str, tags: list[str]) -> None:
    """A data-parallel trial: restore as any trial does, then drive the workers (:mod:`trainables.parallel`)."""
    from ray.util.queue import Queue

    from trainables.parallel import WorkerSpec, payload_bytes, run_data_parallel

    payload = restore_state(get_checkpoint(), _trial_storage(env))
    spec = WorkerSpec(
        flat_config=config,
        task=task,
        env=env,
        payload=payload_bytes(payload),
        queue=Queue(maxsize=1, actor_options={"num_cpus": 0}),
        trial_name=get_context().get_trial_name(),
        cpus_per_worker=max(1, int(env.cpus_per_worker)),
        tags=tags,
    )
    run_data_parallel(
        spec,
        workers=env.workers_per_trial,
        gpus_per_worker=env.gpus_per_worker,
        report=report,
        checkpoint_type=Checkpoint,
    )


def forecast_trainable(config: dict[str, Any], env: TrialEnv) -> None:
    """Entry point Tune calls for each forecasting trial."""
    _trial(config, env, "forecast")


def classify_trainable(config: dict[str, Any], env: TrialEnv) -> None:
    """Entry point Tune calls for each text-classification trial."""
    _trial(config, env, "classify")


_PROCESS_USED = False
"""Set by the first trial of this worker process: later ones (a reused worker) paid no process start-up."""


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where that cannot be read)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _trial(config: dict[str, Any], env: TrialEnv, task: str) -> None:
    global _PROCESS_USED
    entered = time.perf_counter()
    process_s = 0.0 if _PROCESS_USED else process_age_s()
    _PROCESS_USED = True
    tags = CLASSIFY_TAGS if task == "classify" else FORECAST_TAGS
    cfg = TrialConfig.from_flat(config)
    if env.workers_per_trial > 1:
        _run_parallel(config, env, task, tags)
        return
    if env.pack is not None:
        _run_member(cfg, config, env, env.pack, tags)
        return
    place = placement()
    # Threads first: loading the data already computes.
    torch.set_num_threads(cfg.limits.threads or place.cpus)
    loading = time.perf_counter()
    data: ForecastData | TextData = load_text_data(env.data) if task == "classify" else load_forecast_data(env.data)
    startup = Startup(entered=entered, process_s=process_s, data_s=time.perf_counter() - loading)
    _run(cfg, place, config, env, data, tags, startup)


def _run(
    cfg: TrialConfig,
    place: Placement,
    config: dict[str, Any],
    env: TrialEnv,
    data: ForecastData | TextData,
    tags: list[str],
    startup: Startup,
) -> None:
    import ray

    node = ray.get_runtime_context().get_node_id()
    trial_storage = _trial_storage(env)
    with _trial_logger(env, config, tags) as logger, trial_device(place, cfg.optim.batch_size) as (device, placed):
        run_trial(
            cfg,
            data,
            TuneSession(trial_storage),
            device=device,
            logger=logger,
            extra_metrics={M.NODE_ID: node, **placed},
            embeddings_uri=env.embeddings_uri,
            startup=startup,
        )


@contextmanager
def _trial_logger(env: TrialEnv, config: dict[str, Any], tags: list[str]) -> Iterator[TrialLogger | None]:
    """The trial's TensorBoard run (none without a TensorBoard folder), closed however the trial ends."""
    logger = None
    if env.tensorboard_uri:
        uri = resolve(env.tensorboard_uri, endpoint=env.data.endpoint)
        logger = TrialLogger(uri, get_context().get_trial_name(), config, tags)
    try:
        yield logger
    finally:
        if logger is not None:
            logger.close()


def _run_member(cfg: TrialConfig, config: dict[str, Any], env: TrialEnv, pack: PackEnv, tags: list[str]) -> None:
    """A packed trial: no data and no model in this process, only its pack's rounds, reported as its epochs."""
    import ray

    with _trial_logger(env, config, tags) as logger:
        run_member(
            cfg,
            config,
            pack,
            TuneSession(_trial_storage(env)),
            member=get_context().get_trial_id(),
            logger=logger,
            extra_metrics={M.NODE_ID: ray.get_runtime_context().get_node_id()},
        )


__all__ = [
    "TrialEnv",
    "TuneSession",
    "classify_trainable",
    "forecast_trainable",
]
