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
from dataclasses import asdict
from typing import Any, Protocol

import torch
from torch import nn

from trainables import metrics as M
from trainables.checkpoint import TrainState, restore_rng, save_checkpoint
from trainables.config import TrialConfig
from trainables.data.loader import ForecastData
from trainables.data.windows import SeriesArrays, gather, target_positions
from trainables.evaluate import evaluate_model
from trainables.model import LSTMForecaster, build_model, l1_penalty, set_dropout
from trainables.tensorboard import TrialLogger


class TrialSession(Protocol):
    """What the loop needs from its host (Tune, or a test)."""

    def restore(self) -> dict[str, Any] | None:
        """The payload of the checkpoint to resume from, or None for a fresh start."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        """Publish one epoch's metrics together with its checkpoint."""
        ...


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


def apply_hyperparameters(model: LSTMForecaster, optimizer: torch.optim.Optimizer, cfg: TrialConfig) -> None:
    """Make the config's values the live ones. After a PBT restore the donor's optimiser state carries the donor's
    learning rate and weight decay; the (mutated) values of this trial's config must win."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.optim.lr
        group["weight_decay"] = cfg.optim.weight_decay
    set_dropout(model, cfg.model.dropout, cfg.model.input_dropout)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    arrays: SeriesArrays,
    positions: torch.Tensor,
    cfg: TrialConfig,
    *,
    horizon: int,
    epoch_seed: int,
    device: torch.device,
) -> tuple[float, int]:
    """One pass over the training targets in a seeded order; returns mean loss and optimiser steps."""
    model.train()
    order = positions[torch.randperm(len(positions), generator=torch.Generator().manual_seed(epoch_seed))]
    total, count, steps = 0.0, 0, 0
    loss_fn = nn.MSELoss()
    for start in range(0, len(order), cfg.optim.batch_size):
        batch = order[start : start + cfg.optim.batch_size]
        x, y = gather(arrays, batch, window=cfg.window.window, horizon=horizon)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        total_loss = loss + cfg.optim.l1 * l1_penalty(model) if cfg.optim.l1 > 0 else loss
        total_loss.backward()
        if cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        total += float(loss.detach()) * len(batch)
        count += len(batch)
        steps += 1
    return (total / count if count else math.nan), steps


def run_trial(
    cfg: TrialConfig,
    data: ForecastData,
    session: TrialSession,
    *,
    device: torch.device,
    logger: TrialLogger | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> TrainState:
    """Train one configuration until ``max_epochs`` (or until the scheduler stops the process)."""
    horizon = data.horizon
    fitted = data.fitted
    window = cfg.window.window
    if window > data.manifest.max_window:
        raise ValueError(f"window = {window}: the dataset was prepared for windows up to {data.manifest.max_window}")
    seed = trial_seed(cfg)
    torch.manual_seed(seed)
    random.seed(seed)

    model = build_model(cfg.model, n_features=data.n_features, target_index=fitted.target_index).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    state = TrainState()
    payload = session.restore()
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state = TrainState(**payload["state"])
        restore_rng(payload)
    apply_hyperparameters(model, optimizer, cfg)

    train, val = data.splits["train"], data.splits["val"]
    positions = target_positions(train, window=window, horizon=horizon)
    if len(positions) == 0:
        raise ValueError(f"window = {window}: the training split has no target with that much history")
    target = fitted.config.target
    model_info = {"config": asdict(cfg.model), "n_features": data.n_features, "target_index": fitted.target_index}
    data_info = {"window": window, "horizon": horizon, "dataset": data.manifest.name}

    for epoch in range(state.epoch + 1, cfg.limits.max_epochs + 1):
        started = time.perf_counter()
        train_loss, steps = train_epoch(
            model, optimizer, train, positions, cfg, horizon=horizon, epoch_seed=seed + 7919 * epoch, device=device
        )
        elapsed = time.perf_counter() - started
        scores = evaluate_model(
            model,
            val,
            window=window,
            horizon=horizon,
            target_centre=fitted.centre[target],
            target_scale=fitted.scale[target],
            device=device,
        )
        state.epoch, state.step = epoch, state.step + steps
        val_loss = usable_loss(scores.loss)
        state.best_val_loss, state.bad_epochs = early_stopping(
            state.best_val_loss, state.bad_epochs, val_loss, cfg.limits.min_delta
        )
        report = {
            M.EPOCH: epoch,
            M.TRAIN_LOSS: usable_loss(train_loss),
            M.VAL_LOSS: val_loss,
            M.VAL_RMSE: usable_loss(scores.rmse),
            M.VAL_MAE: usable_loss(scores.mae),
            M.LEARNING_RATE: optimizer.param_groups[0]["lr"],
            M.SAMPLES_PER_SECOND: len(positions) / elapsed if elapsed > 0 else 0.0,
            **(extra_metrics or {}),
        }
        if logger is not None:
            logger.log(report, epoch)
        with tempfile.TemporaryDirectory(prefix="lstm-tune-ckpt-") as ckpt_dir:
            save_checkpoint(
                ckpt_dir, model=model, optimizer=optimizer, state=state, model_config=model_info, data_info=data_info
            )
            session.report(report, ckpt_dir)
        if not math.isfinite(train_loss):
            break  # diverged: reported as +inf so schedulers rank it last; more epochs cannot help
        if cfg.limits.patience and state.bad_epochs >= cfg.limits.patience:
            break  # early stopping inside the trial, alongside whatever the scheduler decides
    return state


__all__ = [
    "TrialSession",
    "apply_hyperparameters",
    "early_stopping",
    "run_trial",
    "train_epoch",
    "trial_seed",
    "usable_loss",
]
