"""The Tune function trainable: glue between Tune's session and :func:`trainables.loop.run_trial`."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import torch

from trainables import metrics as M
from trainables.checkpoint import CheckpointError, load_checkpoint
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, ForecastData, load_forecast_data
from trainables.data.text_loader import TextData, load_text_data
from trainables.loop import run_trial
from trainables.ray_api import Checkpoint, get_checkpoint, get_context, report
from trainables.storage import Location, resolve
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


CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def latest_checkpoint_dir(names: list[str]) -> str | None:
    """The newest ``checkpoint_NNNNNN`` among folder names (by index), or None."""
    numbered = [(int(m.group(1)), n) for n in names if (m := CHECKPOINT_DIR.match(n))]
    return max(numbered)[1] if numbered else None


class TuneSession:
    """:class:`trainables.loop.TrialSession` backed by Tune's session."""

    def __init__(self, trial_storage: Location | None = None) -> None:
        self.trial_storage = trial_storage

    def restore(self) -> dict[str, Any] | None:
        checkpoint = get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                return load_checkpoint(directory)
        # A driver killed between a checkpoint upload and its next experiment-state snapshot leaves checkpoints Tune
        # does not know about: resume from the newest one in this trial's own folder rather than from epoch 1.
        return self._latest_in_storage()

    def _latest_in_storage(self) -> dict[str, Any] | None:
        loc = self.trial_storage
        if loc is None:
            return None
        try:
            infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False, allow_not_found=True))
        except OSError:
            return None
        names = [i.path.rstrip("/").rsplit("/", 1)[-1] for i in infos if i.type == pafs.FileType.Directory]
        while (name := latest_checkpoint_dir(names)) is not None:
            names.remove(name)
            folder = loc.child(name)
            with tempfile.TemporaryDirectory(prefix="lstm-tune-restore-") as local:
                try:
                    pafs.copy_files(
                        folder.path, local, source_filesystem=loc.fs, destination_filesystem=pafs.LocalFileSystem()
                    )
                    return load_checkpoint(local)
                except (OSError, CheckpointError):
                    continue  # a half-written checkpoint of the killed run: try the one before
        return None

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
    """Entry point Tune calls for each forecasting trial."""
    cfg = TrialConfig.from_flat(config)
    torch.set_num_threads(cfg.limits.threads or assigned_cpus())
    _run(cfg, config, env, load_forecast_data(env.data), [M.VAL_LOSS, M.VAL_RMSE, M.VAL_MAE, M.TRAIN_LOSS])


def classify_trainable(config: dict[str, Any], env: TrialEnv) -> None:
    """Entry point Tune calls for each text-classification trial."""
    cfg = TrialConfig.from_flat(config)
    torch.set_num_threads(cfg.limits.threads or assigned_cpus())
    _run(cfg, config, env, load_text_data(env.data), [M.VAL_LOSS, M.VAL_ACCURACY, M.VAL_MACRO_F1, M.TRAIN_LOSS])


def _run(
    cfg: TrialConfig, config: dict[str, Any], env: TrialEnv, data: ForecastData | TextData, tags: list[str]
) -> None:
    context = get_context()
    logger = None
    if env.tensorboard_uri:
        logger = TrialLogger(
            resolve(env.tensorboard_uri, endpoint=env.data.endpoint), context.get_trial_name(), config, tags
        )
    import ray

    node = ray.get_runtime_context().get_node_id()
    trial_storage = None
    if env.experiment_uri:
        trial_dir = os.path.basename(context.get_trial_dir().rstrip("/"))
        trial_storage = resolve(env.experiment_uri, endpoint=env.data.endpoint).child(trial_dir)
    try:
        run_trial(
            cfg,
            data,
            TuneSession(trial_storage),
            device=pick_device(),
            logger=logger,
            extra_metrics={M.NODE_ID: node},
            embeddings_uri=env.embeddings_uri,
        )
    finally:
        if logger is not None:
            logger.close()


__all__ = [
    "TrialEnv",
    "TuneSession",
    "classify_trainable",
    "forecast_trainable",
    "latest_checkpoint_dir",
    "pick_device",
]
