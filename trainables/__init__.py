"""What runs inside a trial: the LSTM model, the training loop, data readers and checkpoints.

The names below load on first use (PEP 562): the driver imports light modules of this package (storage, config,
metrics) to validate a run, and that must not pay for torch and Ray before a typo is reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.lazy import lazy_exports

if TYPE_CHECKING:
    from trainables.config import ModelConfig, OptimConfig, RunLimits, TrialConfig, WindowConfig
    from trainables.data.handle import DataHandle
    from trainables.export import Classifier, Forecaster, load_classifier, load_forecaster, load_model
    from trainables.trainable import TrialEnv, forecast_trainable

_HOME = {
    "ModelConfig": "trainables.config",
    "OptimConfig": "trainables.config",
    "RunLimits": "trainables.config",
    "TrialConfig": "trainables.config",
    "WindowConfig": "trainables.config",
    "DataHandle": "trainables.data.handle",
    "Classifier": "trainables.export",
    "Forecaster": "trainables.export",
    "load_classifier": "trainables.export",
    "load_forecaster": "trainables.export",
    "load_model": "trainables.export",
    "TrialEnv": "trainables.trainable",
    "forecast_trainable": "trainables.trainable",
}


__getattr__ = lazy_exports(__name__, _HOME)


__all__ = [
    "Classifier",
    "DataHandle",
    "Forecaster",
    "ModelConfig",
    "OptimConfig",
    "RunLimits",
    "TrialConfig",
    "TrialEnv",
    "WindowConfig",
    "forecast_trainable",
    "load_classifier",
    "load_forecaster",
    "load_model",
]
