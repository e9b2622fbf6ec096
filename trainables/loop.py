"""The training loop of one trial, top to bottom: restore, then per epoch train, evaluate, report and checkpoint.

It talks to Tune only through a :class:`TrialSession`, so tests can drive it without Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from trainables import metrics as M
from trainables.checkpoint import ADOPTED, TrainState, restore_rng, save_checkpoint
from trainables.config import TrialConfig
from trainables.data.loader import ForecastData
from trainables.data.text_loader import TextData
from trainables.device import memory_metrics
from trainables.model import LSTMClassifier, LSTMForecaster, set_dropout
from trainables.optim import AdamW
from trainables.tasks import task_for
from trainables.tensorboard import TrialLogger, schedule_scalars

if TYPE_CHECKING:
    from trainables.ddp import DataParallel


class TrialSession(Protocol):
    """What the loop needs from its host (Tune, or a test)."""

    def restore(self) -> dict[str, Any] | None:
        """The payload of the checkpoint to resume from, or None for a fresh start."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        """Publish one epoch's metrics together with its checkpoint."""
        ...


@dataclass(frozen=True)
class Startup:
    """What a trial spent before :func:`run_trial` was called; reported with its first epoch."""

    entered: float
    """``time.perf_counter()`` when the trainable was entered."""
    process_s: float = 0.0
    """Worker process start until ``entered`` (first trial of a process; 0 in a reused worker)."""
    data_s: float = 0.0
    """Loading the dataset (near 0 when the process already holds it)."""

    def metrics(self, first_step: float) -> dict[str, float]:
        """The start-up metrics, given ``time.perf_counter()`` just before the first training step."""
        build = max(0.0, first_step - self.entered - self.data_s)
        return {
            M.STARTUP_PROCESS: self.process_s,
            M.STARTUP_DATA: self.data_s,
            M.STARTUP_BUILD: build,
            M.STARTUP_TOTAL: self.process_s + (first_step - self.entered),
        }


def trial_seed(cfg: TrialConfig) -> int:
    """A seed per configuration: trials differ from each other, and a rerun or a resume repeats exactly.

    Run limits (max_epochs, threads) stay out: resuming with a larger budget must replay the same data order.
    """
    hyper = {**asdict(cfg.model), **asdict(cfg.optim), **asdict(cfg.window)}
    text = json.dumps(hyper, sort_keys=True, default=str)
    base_seed = cfg.limits.seed
    return (base_seed * 1_000_003 + int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)) % (2**31)


def usable_loss(value: float) -> float:
    """NaN or inf (a diverged trial) becomes +inf, which every scheduler ranks last and can still sort."""
    return value if math.isfinite(value) else math.inf


def early_stopping(best: float, bad_epochs: int, loss: float, min_delta: float) -> tuple[float, int]:
    """New (best loss, epochs without improvement) after an epoch with ``loss``."""
    if loss < best - min_delta:
        return loss, 0
    return min(best, loss), bad_epochs + 1


def apply_hyperparameters(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrialConfig) -> None:
    """Make the config's values the live ones. After a PBT restore the donor's optimiser state carries the donor's
    learning rate and weight decay; the (mutated) values of this trial's config must win."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.optim.lr
        group["weight_decay"] = cfg.optim.weight_decay
    if isinstance(model, (LSTMForecaster, LSTMClassifier)):
        set_dropout(model, cfg.model.dropout, cfg.model.input_dropout)


def epoch_lr(cfg: TrialConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch``."""
    return cfg.optim.lr * cfg.optim.lr_decay ** (epoch - 1)


def run_trial(
    cfg: TrialConfig,
    data: ForecastData | TextData,
    session: TrialSession,
    *,
    device: torch.device,
    logger: TrialLogger | None = None,
    extra_metrics: dict[str, Any] | None = None,
    embeddings_uri: str | None = None,
    parallel: DataParallel | None = None,
    startup: Startup | None = None,
) -> TrainState:
    """Train one configuration until ``max_epochs`` (or until the scheduler stops the process).

    With ``parallel`` this process is one worker of a data-parallel trial: it trains a DDP-wrapped copy on its own
    shards, every worker scores the same validation set (so all stop together), and only rank 0 reports.
    """
    task = task_for(data, cfg, embeddings_uri)
    seed = trial_seed(cfg)
    torch.manual_seed(seed)
    random.seed(seed)

    model = task.build(cfg).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen pretrained embeddings stay out
    optimizer = AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    state = TrainState()
    payload = session.restore()
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state = TrainState(**payload["state"])
        restore_rng(payload)
    apply_hyperparameters(model, optimizer, cfg)
    model_info, data_info = task.model_info(cfg), task.data_info(cfg)
    training = parallel.wrap(model, device) if parallel is not None else model
    rank = parallel.rank if parallel is not None else 0
    first_epoch = state.epoch + 1
    # An epoch's samples are the trial's, not each worker's: a data-parallel trial splits them over its workers.
    world = parallel.world_size if parallel is not None else 1
    epoch_samples = -(-cfg.limits.epoch_samples // world)

    if payload is not None and payload.get(ADOPTED) and payload.get("report") and trial_done(state, cfg):
        # A checkpoint found in storage, not handed by Tune, with nothing left to train: its trial wrote it and was
        # cut off (a killed driver) before Tune took its result. Publish that result again, or Tune ends the trial on
        # an older one and counts it as stopped early.
        replay = {**payload["report"], **(extra_metrics or {}), M.WALL_CLOCK: time.time(), M.REPLAYED: 1}
        if parallel is None or parallel.reports:
            _report(session, replay, model, optimizer, state, model_info, data_info)
        return state

    for epoch in range(first_epoch, cfg.limits.max_epochs + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        startup_metrics = startup.metrics(started) if startup is not None and epoch == first_epoch else {}
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        with parallel.uneven(training) if parallel is not None else nullcontext():
            stats = task.train_epoch(
                training, optimizer, cfg, seed + 7919 * epoch + 104_729 * rank, device, samples=epoch_samples
            )
        if parallel is not None:
            stats = parallel.reduce(stats)
        elapsed, train_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        scores = task.evaluate(model, cfg, device)
        eval_s = time.perf_counter() - started - elapsed
        state.epoch, state.step = epoch, state.step + stats.steps
        val_loss = usable_loss(scores[M.VAL_LOSS])
        state.best_val_loss, state.bad_epochs = early_stopping(
            state.best_val_loss, state.bad_epochs, val_loss, cfg.limits.min_delta
        )
        report = {
            M.EPOCH: epoch,
            M.TRAIN_LOSS: usable_loss(stats.loss),
            M.GRAD_NORM: usable_loss(stats.grad_norm),
            M.CLIPPED: stats.clipped,
            **{k: v if k != M.VAL_LOSS else val_loss for k, v in scores.items()},
            M.LEARNING_RATE: optimizer.param_groups[0]["lr"],
            M.SAMPLES_PER_SECOND: stats.samples / elapsed if elapsed > 0 else 0.0,
            M.TRAIN_SECONDS: elapsed,
            M.TRAIN_CPU_SECONDS: train_cpu,
            M.EVAL_SECONDS: eval_s,
            **memory_metrics(device),
            **startup_metrics,
            **(extra_metrics or {}),
        }
        if logger is not None:
            logger.log({**report, **schedule_scalars(cfg.to_flat())}, epoch)
        report[M.WALL_CLOCK] = time.time()  # after TensorBoard: a Unix time is no curve to plot
        if parallel is None or parallel.reports:
            _report(session, report, model, optimizer, state, model_info, data_info)
        if not math.isfinite(stats.loss):
            break  # diverged: reported as +inf so schedulers rank it last; more epochs cannot help
        if trial_done(state, cfg):
            break  # early stopping inside the trial, alongside whatever the scheduler decides
    return state


def trial_done(state: TrainState, cfg: TrialConfig) -> bool:
    """Whether a trial in ``state`` has no epoch left: its budget is spent, or early stopping ran out of patience."""
    return state.epoch >= cfg.limits.max_epochs or bool(cfg.limits.patience and state.bad_epochs >= cfg.limits.patience)


def _report(
    session: TrialSession,
    report: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    model_info: dict[str, Any],
    data_info: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory(prefix="lstm-tune-ckpt-") as ckpt_dir:
        save_checkpoint(
            ckpt_dir,
            model=model,
            optimizer=optimizer,
            state=state,
            model_config=model_info,
            data_info=data_info,
            report=report,
        )
        session.report(report, ckpt_dir)


__all__ = [
    "Startup",
    "TrialSession",
    "apply_hyperparameters",
    "early_stopping",
    "epoch_lr",
    "run_trial",
    "trial_done",
    "trial_seed",
    "usable_loss",
]
