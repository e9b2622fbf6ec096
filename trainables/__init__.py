"""What runs inside a trial: the LSTM model, the training loop, data readers and checkpoints."""

from trainables.config import ModelConfig, OptimConfig, RunLimits, TrialConfig, WindowConfig
from trainables.data.loader import DataHandle
from trainables.export import Forecaster, load_forecaster
from trainables.trainable import TrialEnv, forecast_trainable

__all__ = [
    "DataHandle",
    "Forecaster",
    "ModelConfig",
    "OptimConfig",
    "RunLimits",
    "TrialConfig",
    "TrialEnv",
    "WindowConfig",
    "forecast_trainable",
    "load_forecaster",
]
