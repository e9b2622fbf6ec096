"""Prepared data: the manifest, Parquet shards, forecasting preprocessing and windowing.

Names load on first use (PEP 562), as in :mod:`trainables`: reading a manifest must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.lazy import lazy_exports

if TYPE_CHECKING:
    from trainables.data.forecast_prep import FittedPrep, ForecastPrepConfig
    from trainables.data.handle import DataHandle
    from trainables.data.loader import ForecastData, load_forecast_data
    from trainables.data.manifest import Manifest, ManifestError, read_manifest
    from trainables.data.shards import ShardError

_HOME = {
    "FittedPrep": "trainables.data.forecast_prep",
    "ForecastPrepConfig": "trainables.data.forecast_prep",
    "DataHandle": "trainables.data.handle",
    "ForecastData": "trainables.data.loader",
    "load_forecast_data": "trainables.data.loader",
    "Manifest": "trainables.data.manifest",
    "ManifestError": "trainables.data.manifest",
    "read_manifest": "trainables.data.manifest",
    "ShardError": "trainables.data.shards",
}


__getattr__ = lazy_exports(__name__, _HOME)


__all__ = [
    "DataHandle",
    "FittedPrep",
    "ForecastData",
    "ForecastPrepConfig",
    "Manifest",
    "ManifestError",
    "ShardError",
    "load_forecast_data",
    "read_manifest",
]
