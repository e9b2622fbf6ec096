"""What runs inside a trial: the LSTM model, the training loop, data readers and checkpoints."""

from trainables.config import ModelConfig, OptimConfig, RunLimits, TrialConfig, WindowConfig
from trainables.data.loader import DataHandle
from trainables.export import Classifier, Forecaster, load_classifier, load_forecaster, load_model
from trainables.trainable import TrialEnv, forecast_trainable

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
