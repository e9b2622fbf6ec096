"""Forecast quality in original units, for models and for the naive baselines on the very same targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from trainables.data.windows import SeriesArrays, gather, target_mask, target_positions, target_rows


@dataclass(frozen=True, kw_only=True)
class ForecastScores:
    """Errors of one forecaster on one split, over every observed target of steps 1..horizon."""

    loss: float
    """MSE on the scaled target (what training minimises); NaN for baselines."""
    rmse: float
    """Root mean squared error in original units."""
    mae: float
    """Mean absolute error in original units."""
    count: int
    """Targets scored."""
    rmse_by_step: tuple[float, ...] = ()
    """RMSE of step 1, 2, ... horizon ahead (one entry for one-step forecasts)."""
    mase: float | None = None
    """Panels: mean over series of MAE / the series' training seasonal-naive MAE (series with a defined scale)."""
    smape: float | None = None
    """Panels: mean over series of the symmetric MAPE (percent; a target and forecast both 0 count as no error)."""
    series_mae: dict[int, float] = field(default_factory=dict)
    """Panels: MAE per series code, on exactly these targets (what "beats seasonal naive on a series" compares)."""


PanelRows = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per scored cell ``[n, horizon]``: the truth in units, the series code, the series' MASE scale."""


def panel_scores(
    errors: np.ndarray, mask: np.ndarray, panel: PanelRows
) -> tuple[float | None, float | None, dict[int, float]]:
    """MASE and sMAPE as means over series (so a large series does not outweigh a small one), and each series' MAE."""
    truth, codes, naive = panel
    maes: dict[int, float] = {}
    mases: list[float] = []
    smapes: list[float] = []
    for code in np.unique(codes[mask]):
        sel = mask & (codes == code)
        e, y = errors[sel], truth[sel]
        mae = float(np.abs(e).mean())
        maes[int(code)] = mae
        scale = float(naive[sel][0])
        if math.isfinite(scale) and scale > 0:
            mases.append(mae / scale)
        denom = np.abs(y) + np.abs(y + e)
        smapes.append(100.0 * float(np.mean(np.where(denom > 0, 2 * np.abs(e) / np.where(denom > 0, denom, 1.0), 0.0))))
    return (
        float(np.mean(mases)) if mases else None,
        float(np.mean(smapes)) if smapes else None,
        maes,
    )


def _panel_rows(arrays: SeriesArrays, rows: np.ndarray) -> PanelRows | None:
    if arrays.series is None or arrays.naive_scale is None:
        return None
    return arrays.target_raw[rows], arrays.series[rows], arrays.naive_scale[rows]


def masked_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The training loss ``kind`` (mse, mae, huber) over the scored targets only."""
    if kind == "mse":
        return masked_mse(pred, target, mask)
    weights = mask.to(pred.dtype)
    if kind == "mae":
        per = (pred - target).abs()
    elif kind == "huber":
        per = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=1.0)
    else:
        raise ValueError(f"loss = {kind!r}: must be mse, mae or huber")
    return (per * weights).sum() / weights.sum().clamp(min=1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the scored (observed) targets only."""
    weights = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weights).sum() / weights.sum().clamp(min=1.0)


def scores_from_errors(
    errors: np.ndarray, mask: np.ndarray | None = None, scaled_mse: float = math.nan, panel: PanelRows | None = None
) -> ForecastScores:
    """``errors``: ``[n]`` or ``[n, horizon]`` in original units; ``mask`` marks the ones to score; ``panel`` adds
    the per-series figures."""
    errors = errors.reshape(len(errors), -1)
    mask = np.ones(errors.shape, dtype=bool) if mask is None else mask.reshape(errors.shape)
    scored = errors[mask]
    if scored.size == 0:
        raise ValueError("evaluation: no target to score (split shorter than window + horizon?)")
    by_step = tuple(
        float(np.sqrt(np.mean(errors[mask[:, k], k] ** 2))) if mask[:, k].any() else math.nan
        for k in range(errors.shape[1])
    )
    mase, smape, series_mae = panel_scores(errors, mask, panel) if panel is not None else (None, None, {})
    return ForecastScores(
        loss=scaled_mse,
        rmse=float(np.sqrt(np.mean(scored**2))),
        mae=float(np.mean(np.abs(scored))),
        count=int(scored.size),
        rmse_by_step=by_step,
        mase=mase,
        smape=smape,
        series_mae=series_mae,
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
    """Scaled forecasts ``[len(positions), horizon]`` (model in eval mode, on ``device``)."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(positions), batch_size):
        x, _, _ = gather(arrays, positions[start : start + batch_size], window=window, horizon=horizon)
        out.append(model(x.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, horizon)


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
    return evaluate_ensemble(
        [(model, window)],
        arrays,
        horizon=horizon,
        target_centre=target_centre,
        target_scale=target_scale,
        device=device,
    )


def evaluate_ensemble(
    members: Sequence[tuple[nn.Module, int]],
    arrays: SeriesArrays,
    *,
    horizon: int,
    target_centre: float,
    target_scale: float,
    device: torch.device | None = None,
) -> ForecastScores:
    """Score the mean forecast of ``members`` (each a model and the window it reads). Every member forecasts the
    targets that the longest window can reach, so all are scored on the same rows (one member: the model itself)."""
    if not members:
        raise ValueError("evaluation: an ensemble needs at least one member")
    window = max(w for _, w in members)
    positions = target_positions(arrays, window=window, horizon=horizon)
    preds = [predict_scaled(m, arrays, positions, window=w, horizon=horizon, device=device) for m, w in members]
    pred = torch.stack(preds).mean(dim=0) if len(preds) > 1 else preds[0]
    rows = target_rows(positions, horizon)
    mask = target_mask(arrays, rows)
    scaled_mse = float(masked_mse(pred, arrays.target[rows], mask)) if len(positions) else math.nan
    pred_raw = arrays.unscale(pred.double().numpy(), rows.numpy(), target_centre, target_scale)
    errors = pred_raw - arrays.target_raw[rows.numpy()]
    return scores_from_errors(errors, mask.numpy(), scaled_mse, _panel_rows(arrays, rows.numpy()))


def baseline_scores(arrays: SeriesArrays, *, horizon: int, season_steps: int) -> dict[str, ForecastScores]:
    """Persistence (the last value seen, for every step) and seasonal naive (the same phase in the last season
    before the forecast origin), on every scoreable target of steps 1..horizon."""
    seasons_back = -(-horizon // season_steps)  # a season far enough back to lie before the origin
    lag_max = max(horizon, season_steps * seasons_back)
    positions = target_positions(arrays, window=lag_max - horizon + 1, horizon=horizon)
    row_index = target_rows(positions, horizon)
    mask = target_mask(arrays, row_index).numpy()
    rows = row_index.numpy()
    truth = arrays.target_raw[rows]
    origin = positions.numpy() - horizon
    persistence = arrays.target_raw[origin][:, None] - truth
    seasonal = arrays.target_raw[rows - season_steps * seasons_back] - truth
    panel = _panel_rows(arrays, rows)
    return {
        "persistence": scores_from_errors(persistence, mask, panel=panel),
        "seasonal_naive": scores_from_errors(seasonal, mask, panel=panel),
    }


__all__ = [
    "ForecastScores",
    "baseline_scores",
    "evaluate_ensemble",
    "evaluate_model",
    "masked_loss",
    "masked_mse",
    "predict_scaled",
    "scores_from_errors",
]
