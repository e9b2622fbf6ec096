"""The handle a trial gets instead of the data: where a prepared dataset lives (no torch here: the driver checks
a dataset and builds this before it imports torch or Ray)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DataHandle:
    """Where a prepared dataset lives. Frozen and tiny: it is what Tune ships to every trial."""

    uri: str
    """Dataset root (holding ``manifest.json``): a local path or ``s3://bucket/prefix``."""
    endpoint: str | None = None
    """S3-compatible endpoint, when not AWS; never a credential."""
    cache_dir: str | None = None
    """Node-local shard cache folder (same path on every node); None: LSTM_TUNE_CACHE_DIR or the temp dir."""
    memory_budget: int | None = None
    """Bytes a trial may hold of a panel's splits; a panel larger than this is streamed a piece at a time. None: a
    quarter of the machine's memory."""


__all__ = ["DataHandle"]
