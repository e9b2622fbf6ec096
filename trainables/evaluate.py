"""Forecast quality in original units, for models and for the naive baselines on the very same targets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables.data.windows import SeriesArrays, gather, target_positions


@dataclass(frozen=True, kw_only=True)
class ForecastScores:
    """Errors of one forecaster on one split."""

    loss: float
    """MSE on the scaled target (what training minimises); NaN for baselines."""
    rmse: float
    """Root mean squared error in original units."""
    mae: float
    """Mean absolute error in original units."""
    count: int
    """Targets scored."""


def scores_from_errors(errors: np.ndarray, scaled_mse: float = math.nan) -> ForecastScores:
    if errors.size == 0:
        raise ValueError("evaluation: no target to score (split shorter than window + horizon?)")
    return ForecastScores(
        loss=scaled_mse,
        rmse=float(np.sqrt(np.mean(errors**2))),
        mae=float(np.mean(np.abs(errors))),
        count=int(errors.size),
    )


@torch.no_grad()
def predict_scaled(
    model: nn.Module,
    arrays: SeriesArrays,
    positions: torch.Tensor,
    *,
    window: int,
    horizon: int,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Scaled forecasts for the targets at ``positions`` (model in eval mode, on ``device``)."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(positions), batch_size):
        x, _ = gather(arrays, positions[start : start + batch_size], window=window, horizon=horizon)
        out.append(model(x.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluate_model(
    model: nn.Module,
    arrays: SeriesArrays,
    *,
    window: int,
    horizon: int,
    target_centre: float,
    target_scale: float,
    device: torch.device | None = None,
) -> ForecastScores:
    positions = target_positions(arrays, window=window, horizon=horizon)
    pred = predict_scaled(model, arrays, positions, window=window, horizon=horizon, device=device)
    scaled_mse = float(torch.mean((pred - arrays.target[positions]) ** 2)) if len(positions) else math.nan
    pred_raw = pred.double().numpy() * target_scale + target_centre
    return scores_from_errors(pred_raw - arrays.target_raw[positions.numpy()], scaled_mse)


def baseline_scores(arrays: SeriesArrays, *, horizon: int, season_steps: int) -> dict[str, ForecastScores]:
    """Persistence (last value seen) and seasonal naive (same phase one season back), on every scoreable target."""
    lag_max = max(horizon, season_steps)
    positions = target_positions(arrays, window=1, horizon=lag_max).numpy()
    truth = arrays.target_raw[positions]
    return {
        "persistence": scores_from_errors(arrays.target_raw[positions - horizon] - truth),
        "seasonal_naive": scores_from_errors(arrays.target_raw[positions - season_steps] - truth),
    }


__all__ = ["ForecastScores", "baseline_scores", "evaluate_model", "predict_scaled", "scores_from_errors"]
