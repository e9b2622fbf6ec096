"""The driver side: where and how trials run (CLI, Tuner and schedulers, storage, data preparation)."""

from cluster.options import (
    CheckpointOptions,
    OptionError,
    ResourceOptions,
    RunOptions,
    SchedulerOptions,
)

__all__ = ["CheckpointOptions", "OptionError", "ResourceOptions", "RunOptions", "SchedulerOptions"]
