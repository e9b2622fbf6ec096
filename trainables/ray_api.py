"""The only module that imports Ray's trainable-side API. Ray moves these names between releases; pin them here.

Ray 2.58: inside a Tune function trainable, ``ray.tune.report`` / ``ray.tune.get_checkpoint`` / ``ray.tune.Checkpoint``
and ``ray.tune.get_context`` are the supported calls (the ``ray.train`` ones warn when used from Tune).
"""

from __future__ import annotations

from typing import Any

from ray.tune import Checkpoint, get_checkpoint, get_context, report


def train_worker_context() -> Any:
    """Inside a Ray Train worker (a data-parallel trial's worker): its rank and world size (Ray Train V2)."""
    import ray.train

    return ray.train.get_context()


__all__ = ["Checkpoint", "get_checkpoint", "get_context", "report", "train_worker_context"]
