"""Prepared data: the manifest, Parquet shards, forecasting preprocessing and windowing."""

from trainables.data.forecast_prep import FittedPrep, ForecastPrepConfig
from trainables.data.loader import DataHandle, ForecastData, load_forecast_data
from trainables.data.manifest import Manifest, ManifestError, read_manifest
from trainables.data.shards import ShardError

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
