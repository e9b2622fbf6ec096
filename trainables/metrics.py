"""Metric names, defined once: schedulers, checkpoint scoring, TensorBoard tags and tests all use these."""

from __future__ import annotations

TRAIN_LOSS = "train/loss"
"""Mean training loss (MSE on the scaled target) over the epoch."""
VAL_LOSS = "val/loss"
"""The validation figure trials are selected on (lower is better): the scaled MSE by default, or what ``--metric``
names (``val/rmse``, ``val/mae``, ``val/mase``, ``val/smape``, ``val/pinball``); a classifier's cross-entropy. Schedulers, checkpoint
retention, early stopping, the best trial and the ensemble all read it."""
VAL_SCALED_MSE = "val/scaled_mse"
"""MSE on the scaled target (what ``loss = mse`` trains on); ``val/loss`` unless ``--metric`` names another figure."""
VAL_RMSE = "val/rmse"
"""Validation RMSE in the target's original units."""
VAL_MAE = "val/mae"
"""Validation MAE in the target's original units."""
VAL_MASE = "val/mase"
"""Panels: mean over series of each series' MAE divided by its training split's seasonal-naive MAE (scale-free)."""
VAL_SMAPE = "val/smape"
"""Panels: mean over series of each series' symmetric MAPE, in percent."""
VAL_PINBALL = "val/pinball"
"""Mean pinball loss in the target's units over the run's quantile levels (a point forecast stands for each level)."""
VAL_COVERAGE = "val/coverage"
"""Quantile forecasters: share of validation targets inside the lowest-to-highest level interval."""
VAL_ACCURACY = "val/accuracy"
"""Validation accuracy (classification)."""
VAL_MACRO_F1 = "val/macro_f1"
"""Validation macro-averaged F1 (classification)."""
GRAD_NORM = "train/grad_norm"
"""Mean global gradient norm before clipping over the epoch's steps: compare it with ``grad_clip``."""
CLIPPED = "train/clipped"
"""Share of the epoch's steps whose gradient ``grad_clip`` scaled down (0: clipping never bound)."""
LEARNING_RATE = "train/lr"
"""Learning rate in effect during the epoch (PBT may change it)."""
EPOCH = "epoch"
"""1-based count of finished epochs; continues across restores."""
SAMPLES_PER_SECOND = "train/samples_per_s"
"""Training throughput of the epoch."""
WALL_CLOCK = "time/unix"
"""Unix time the epoch's result was produced: lets the driver and benchmarks put results from many trials on one
clock (Tune's own ``timestamp`` is whole seconds)."""
TRAIN_SECONDS = "time/train_s"
"""Wall seconds of the epoch's training steps."""
TRAIN_CPU_SECONDS = "time/train_cpu_s"
"""CPU seconds (all threads of the process) spent in the epoch's training steps."""
EVAL_SECONDS = "time/eval_s"
"""Wall seconds of the epoch's validation pass."""
STARTUP_PROCESS = "startup/process_s"
"""First trial of a worker process only: process start until the trainable was entered (Ray worker boot, imports).
0 in a reused worker."""
STARTUP_DATA = "startup/data_s"
"""Loading (or finding already loaded) the dataset; near 0 when this process already holds it."""
STARTUP_BUILD = "startup/build_s"
"""Windowing, model build and restore: the trainable's set-up until its first training step."""
STARTUP_TOTAL = "startup/total_s"
"""Process, data and build together: what the trial cost before it trained at all."""
STARTUP_METRICS = (STARTUP_PROCESS, STARTUP_DATA, STARTUP_BUILD, STARTUP_TOTAL)
REPLAYED = "replayed"
"""Present (1) only in a result published a second time: a trial restored from a checkpoint Tune never saw, with no
epoch left to train, publishes that checkpoint's result again; result histories that already hold it skip it."""
NODE_ID = "node_id"
"""Ray node the epoch ran on."""
DEVICE = "device"
"""Where the trial computed: ``cpu``, or ``cuda:N`` with the GPU's name."""
GPU_MEMORY_CAP = "gpu/memory_cap_gib"
"""GPU trials with a fractional share only: the CUDA memory the trial may allocate (its share of the card)."""
GPU_MEMORY_PEAK = "gpu/max_allocated_gib"
"""GPU trials only: peak CUDA memory the trial's tensors held so far."""
WORKERS = "workers"
"""Data-parallel workers of the trial (1: a plain trial)."""
WORKER_GROUP = "worker_group"
"""Placement group id of a data-parallel trial's workers, so the driver can release it when Tune ends the trial."""
TRAIN_SHARDS = "train_shards"
"""The training shards each data-parallel worker read, by rank."""
PACK = "pack/name"
"""Packed trials only: the pack that trained the epoch (``<run>/<shape>/<n>``)."""
PACK_JOIN = "pack/join"
"""Packed trials only, on the first epoch after (re)joining: fresh, checkpoint, in place (a PBT donor's slot
copied on the device) or kept (its own slot, untouched since its checkpoint)."""
PACK_MEMBERS = "pack/members"
"""Packed trials only: members trained in the epoch's round."""
PACK_ROUND = "pack/round"
"""Packed trials only: the pack's round counter."""
PACK_SAMPLES_PER_SECOND = "pack/samples_per_s"
"""Packed trials only: training samples per second summed over every member of the round (the device's throughput;
``train/samples_per_s`` is one member's share of the round's time)."""

SCHEDULER_METRIC = VAL_LOSS
SCHEDULER_MODE = "min"

SCHEDULE_KEYS = ("lr", "weight_decay", "l1", "grad_clip", "dropout", "input_dropout")
"""Hyperparameters PBT may change: logged every epoch as ``schedule/<name>`` so the schedule is a line."""


__all__ = [
    "CLIPPED",
    "DEVICE",
    "EPOCH",
    "EVAL_SECONDS",
    "GPU_MEMORY_CAP",
    "GPU_MEMORY_PEAK",
    "GRAD_NORM",
    "LEARNING_RATE",
    "NODE_ID",
    "PACK",
    "PACK_JOIN",
    "PACK_MEMBERS",
    "PACK_ROUND",
    "PACK_SAMPLES_PER_SECOND",
    "REPLAYED",
    "SAMPLES_PER_SECOND",
    "SCHEDULER_METRIC",
    "SCHEDULER_MODE",
    "SCHEDULE_KEYS",
    "STARTUP_BUILD",
    "STARTUP_DATA",
    "STARTUP_METRICS",
    "STARTUP_PROCESS",
    "STARTUP_TOTAL",
    "TRAIN_CPU_SECONDS",
    "TRAIN_LOSS",
    "TRAIN_SECONDS",
    "TRAIN_SHARDS",
    "VAL_ACCURACY",
    "VAL_COVERAGE",
    "VAL_LOSS",
    "VAL_MACRO_F1",
    "VAL_MAE",
    "VAL_MASE",
    "VAL_PINBALL",
    "VAL_RMSE",
    "VAL_SCALED_MSE",
    "VAL_SMAPE",
    "WALL_CLOCK",
    "WORKERS",
    "WORKER_GROUP",
]
