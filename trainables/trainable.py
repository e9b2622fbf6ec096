"""The Tune function trainable: glue between Tune's session and :func:`trainables.loop.run_trial`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from trainables import metrics as M
from trainables.checkpoint import load_checkpoint
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.loop import run_trial
from trainables.ray_api import Checkpoint, get_checkpoint, get_context, report
from trainables.storage import resolve
from trainables.tensorboard import TrialLogger


@dataclass(frozen=True, kw_only=True)
class TrialEnv:
    """Fixed for every trial of an experiment; shipped once through ``tune.with_parameters``."""

    data: DataHandle
    tensorboard_uri: str | None = None
    """Where trial runs write TensorBoard event files (``<experiment>/tensorboard``)."""


class TuneSession:
    """:class:`trainables.loop.TrialSession` backed by Tune's session."""

    def restore(self) -> dict[str, Any] | None:
        checkpoint = get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        # Tune persists the checkpoint to storage before report() returns, so the caller may delete the folder.
        report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir))


def assigned_cpus() -> int:
    """CPUs Ray gave this trial (at least 1), so torch does not oversubscribe the node."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    return max(1, int(resources.get("CPU", 1)))


def pick_device() -> torch.device:
    """CUDA when Ray assigned this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"):
        return torch.device("cuda")
    return torch.device("cpu")


def forecast_trainable(config: dict[str, Any], env: TrialEnv) -> None:
    """Entry point Tune calls for each trial."""
    cfg = TrialConfig.from_flat(config)
    torch.set_num_threads(cfg.limits.threads or assigned_cpus())
    data = load_forecast_data(env.data)
    context = get_context()
    logger = None
    if env.tensorboard_uri:
        logger = TrialLogger(
            resolve(env.tensorboard_uri, endpoint=env.data.endpoint),
            context.get_trial_name(),
            config,
            [M.VAL_LOSS, M.VAL_RMSE, M.VAL_MAE, M.TRAIN_LOSS],
        )
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        run_trial(cfg, data, TuneSession(), device=pick_device(), logger=logger, extra_metrics={M.NODE_ID: node})
    finally:
        if logger is not None:
            logger.close()


__all__ = ["TrialEnv", "TuneSession", "forecast_trainable", "pick_device"]
