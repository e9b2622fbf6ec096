"""Forecast quality in original units, for models and for the naive baselines on the very same targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from trainables.data.windows import SeriesArrays, gather, target_mask, target_positions, target_rows
from trainables.model import point_forecast


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
    pinball: float | None = None
    """Mean pinball (quantile) loss in units over the levels scored, each target and level weighing the same; a point
    forecast stands for every level."""
    coverage: float | None = None
    """Quantile forecasters: the share of targets inside the interval from the lowest to the highest level."""
    interval: float | None = None
    """The interval's nominal coverage (highest level minus lowest): what :attr:`coverage` should come near."""


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


def masked_loss(
    kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, quantiles: tuple[float, ...] = ()
) -> torch.Tensor:
    """The training loss ``kind`` (mse, mae, huber; quantile: ``pred`` is ``[batch, horizon, levels]``) over the
    scored targets only."""
    if kind == "mse":
        return masked_mse(pred, target, mask)
    weights = mask.to(pred.dtype)
    if kind == "mae":
        per = (pred - target).abs()
    elif kind == "huber":
        per = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=1.0)
    elif kind == "quantile":
        if pred.dim() != 3 or pred.shape[-1] != len(quantiles):
            raise ValueError(f"loss = 'quantile': the model forecasts {tuple(pred.shape)}, not one per level")
        per = pinball(pred, target.unsqueeze(-1), torch.tensor(quantiles, dtype=pred.dtype, device=pred.device))
        per = per.mean(dim=-1)
    else:
        raise ValueError(f"loss = {kind!r}: must be mse, mae, huber or quantile")
    return (per * weights).sum() / weights.sum().clamp(min=1.0)


def pinball(pred: torch.Tensor, truth: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The pinball loss of each forecast: ``q * (y - f)`` when under the truth, ``(1 - q) * (f - y)`` when over."""
    diff = truth - pred
    return torch.maximum(levels * diff, (levels - 1) * diff)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the scored (observed) targets only."""
    weights = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weights).sum() / weights.sum().clamp(min=1.0)


def scores_from_errors(
    errors: np.ndarray,
    mask: np.ndarray | None = None,
    scaled_mse: float = math.nan,
    panel: PanelRows | None = None,
    levels: Levels | None = None,
) -> ForecastScores:
    """``errors``: ``[n]`` or ``[n, horizon]`` in original units; ``mask`` marks the ones to score; ``panel`` adds
    the per-series figures; ``levels`` the pinball loss and, with quantile forecasts, the interval's coverage."""
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
    pinball_loss, coverage, interval = level_scores(errors, mask, levels) if levels is not None else (None, None, None)
    return ForecastScores(
        loss=scaled_mse,
        rmse=float(np.sqrt(np.mean(scored**2))),
        mae=float(np.mean(np.abs(scored))),
        count=int(scored.size),
        rmse_by_step=by_step,
        mase=mase,
        smape=smape,
        series_mae=series_mae,
        pinball=pinball_loss,
        coverage=coverage,
        interval=interval,
    )


@dataclass(frozen=True)
class Levels:
    """What a quantile-aware score needs: the levels, and the forecast of each minus the truth ``[n, horizon,
    levels]`` in units (None: a point forecast, which stands for every level)."""

    quantiles: tuple[float, ...]
    errors: np.ndarray | None = None


def level_scores(
    errors: np.ndarray, mask: np.ndarray, levels: Levels
) -> tuple[float | None, float | None, float | None]:
    """Mean pinball loss over masked targets and levels; the lowest-to-highest interval's coverage and nominal
    width (quantile forecasts with two levels or more)."""
    if not levels.quantiles:
        return None, None, None
    q = np.asarray(levels.quantiles, dtype=np.float64)
    by_level = levels.errors if levels.errors is not None else np.repeat(errors[..., None], len(q), axis=-1)
    diff = -by_level[mask]  # truth - forecast, [scored, levels]
    loss = float(np.mean(np.maximum(q * diff, (q - 1) * diff)))
    if levels.errors is None or len(q) < 2:
        return loss, None, None
    inside = (diff[:, 0] >= 0) & (diff[:, -1] <= 0)  # lowest level at or under the truth, highest at or over
    return loss, float(inside.mean()), float(q[-1] - q[0])


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
    """Scaled forecasts ``[len(positions), horizon]``, or ``[..., levels]`` from a quantile forecaster (model in eval
    mode, on ``device``)."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(positions), batch_size):
        x, _, _ = gather(arrays, positions[start : start + batch_size], window=window, horizon=horizon)
        out.append(model(x.to(device)).float().cpu())
    model.train(was_training)
    levels = len(getattr(model, "quantiles", ()))
    return torch.cat(out) if out else torch.empty(0, horizon, *([levels] if levels else []))


def evaluate_model(
    model: nn.Module,
    arrays: SeriesArrays,
    *,
    window: int,
    horizon: int,
    target_centre: float,
    target_scale: float,
    device: torch.device | None = None,
    quantiles: tuple[float, ...] = (),
) -> ForecastScores:
    return evaluate_ensemble(
        [(model, window)],
        arrays,
        horizon=horizon,
        target_centre=target_centre,
        target_scale=target_scale,
        device=device,
        quantiles=quantiles,
    )


def evaluate_ensemble(
    members: Sequence[tuple[nn.Module, int]],
    arrays: SeriesArrays,
    *,
    horizon: int,
    target_centre: float,
    target_scale: float,
    device: torch.device | None = None,
    quantiles: tuple[float, ...] = (),
) -> ForecastScores:
    """Score the mean forecast of ``members`` (each a model and the window it reads). Every member forecasts the
    targets that the longest window can reach, so all are scored on the same rows (one member: the model itself).

    Members that all forecast the same quantile levels are averaged level by level (and scored on those levels);
    otherwise their point forecasts are, and the pinball loss is of that point forecast at ``quantiles``."""
    if not members:
        raise ValueError("evaluation: an ensemble needs at least one member")
    window = max(w for _, w in members)
    positions = target_positions(arrays, window=window, horizon=horizon)
    shared = {tuple(getattr(m, "quantiles", ())) for m, _ in members}
    own = shared.pop() if len(shared) == 1 else ()
    outs = [predict_scaled(m, arrays, positions, window=w, horizon=horizon, device=device) for m, w in members]
    if not own:
        outs = [point_forecast(o, tuple(getattr(m, "quantiles", ()))) for o, (m, _) in zip(outs, members, strict=True)]
    out = torch.stack(outs).mean(dim=0) if len(outs) > 1 else outs[0]
    pred = point_forecast(out, own)
    rows = target_rows(positions, horizon)
    mask = target_mask(arrays, rows)
    scaled_mse = float(masked_mse(pred, arrays.target[rows], mask)) if len(positions) else math.nan
    row_index = rows.numpy()
    truth = arrays.target_raw[row_index]
    errors = arrays.unscale(pred.double().numpy(), row_index, target_centre, target_scale) - truth
    levels = Levels(quantiles or own)
    if own:
        by_level = [
            arrays.unscale(out[..., k].double().numpy(), row_index, target_centre, target_scale)
            for k in range(len(own))
        ]
        levels = Levels(own, np.stack(by_level, axis=-1) - truth[..., None])
    return scores_from_errors(errors, mask.numpy(), scaled_mse, _panel_rows(arrays, row_index), levels)


def baseline_scores(
    arrays: SeriesArrays, *, horizon: int, season_steps: int, quantiles: tuple[float, ...] = ()
) -> dict[str, ForecastScores]:
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
    levels = Levels(quantiles)
    return {
        "persistence": scores_from_errors(persistence, mask, panel=panel, levels=levels),
        "seasonal_naive": scores_from_errors(seasonal, mask, panel=panel, levels=levels),
    }


__all__ = [
    "ForecastScores",
    "Levels",
    "baseline_scores",
    "evaluate_ensemble",
    "evaluate_model",
    "masked_loss",
    "masked_mse",
    "pinball",
    "predict_scaled",
    "scores_from_errors",
]
