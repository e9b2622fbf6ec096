"""Metric names, defined once: schedulers, checkpoint scoring, TensorBoard tags and tests all use these."""

from __future__ import annotations

TRAIN_LOSS = "train/loss"
"""Mean training loss (MSE on the scaled target) over the epoch."""
VAL_LOSS = "val/loss"
"""Validation loss (MSE on the scaled target): what the schedulers optimise."""
VAL_RMSE = "val/rmse"
"""Validation RMSE in the target's original units."""
VAL_MAE = "val/mae"
"""Validation MAE in the target's original units."""
VAL_ACCURACY = "val/accuracy"
"""Validation accuracy (classification)."""
VAL_MACRO_F1 = "val/macro_f1"
"""Validation macro-averaged F1 (classification)."""
LEARNING_RATE = "train/lr"
"""Learning rate in effect during the epoch (PBT may change it)."""
EPOCH = "epoch"
"""1-based count of finished epochs; continues across restores."""
SAMPLES_PER_SECOND = "train/samples_per_s"
"""Training throughput of the epoch."""
NODE_ID = "node_id"
WORKERS = "workers"
"""Data-parallel workers of the trial (1: a plain trial)."""
WORKER_GROUP = "worker_group"
"""Placement group id of a data-parallel trial's workers, so the driver can release it when Tune ends the trial."""
TRAIN_SHARDS = "train_shards"
"""The training shards each data-parallel worker read, by rank."""
"""Ray node the epoch ran on."""

SCHEDULER_METRIC = VAL_LOSS
SCHEDULER_MODE = "min"

__all__ = [
    "EPOCH",
    "LEARNING_RATE",
    "NODE_ID",
    "SAMPLES_PER_SECOND",
    "SCHEDULER_METRIC",
    "SCHEDULER_MODE",
    "TRAIN_LOSS",
    "TRAIN_SHARDS",
    "VAL_ACCURACY",
    "VAL_LOSS",
    "VAL_MACRO_F1",
    "VAL_MAE",
    "VAL_RMSE",
    "WORKERS",
    "WORKER_GROUP",
]
