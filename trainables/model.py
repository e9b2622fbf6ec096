"""The LSTM forecaster: a pure function of its config; it knows nothing of training or Tune."""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import ModelConfig


class LSTMForecaster(nn.Module):
    """Stacked LSTM over a window of rows; the last layer's final state feeds a linear head.

    With ``residual`` the head predicts the change from the last observed (scaled) target, so an untrained model
    starts at the persistence forecast instead of at zero.
    """

    def __init__(self, cfg: ModelConfig, *, n_features: int, target_index: int) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"model.n_features = {n_features}: must be >= 1")
        if not 0 <= target_index < n_features:
            raise ValueError(f"model.target_index = {target_index}: must be in [0, {n_features})")
        self.residual = cfg.residual
        self.target_index = target_index
        self.lstm = nn.LSTM(
            input_size=n_features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        out: torch.Tensor = self.head(self.head_dropout(h[-1])).squeeze(-1)
        if self.residual:
            out = out + x[:, -1, self.target_index]
        return out


def build_model(cfg: ModelConfig, *, n_features: int, target_index: int) -> LSTMForecaster:
    return LSTMForecaster(cfg, n_features=n_features, target_index=target_index)


def set_dropout(model: LSTMForecaster, p: float) -> None:
    """Apply a (possibly PBT-mutated) dropout to a built model; nn.LSTM reads ``dropout`` at every forward."""
    if model.lstm.num_layers > 1:
        model.lstm.dropout = p
    model.head_dropout.p = p


__all__ = ["LSTMForecaster", "build_model", "set_dropout"]
