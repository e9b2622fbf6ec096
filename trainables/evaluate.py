"""Forecast quality in original units, for models and for the naive baselines on the very same targets."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from trainables.data.windows import SeriesArrays, gather, target_mask, target_positions, target_rows
from trainables.model import levels_of, mean_forecast, point_forecast
from trainables.scores import ForecastScores, Levels, PanelRows, ScoreSums, scores_from_errors


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
    levels = len(levels_of(model))
    return torch.cat(out) if out else torch.empty(0, horizon, *([levels] if levels else []))


EVAL_CHUNK = 32768
"""Forecast positions scored at a time."""

Split = SeriesArrays | Iterable[SeriesArrays]
"""A split in memory, or its pieces one at a time (a streamed panel: whole series per piece)."""


def pieces(split: Split) -> Iterable[SeriesArrays]:
    return (split,) if isinstance(split, SeriesArrays) else split


def evaluate_model(
    model: nn.Module,
    arrays: Split,
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
    arrays: Split,
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
    otherwise their point forecasts are, and the pinball loss is of that point forecast at ``quantiles``. A streamed
    split is scored piece by piece into one :class:`ScoreSums`: the figures equal those of the split in one piece."""
    if not members:
        raise ValueError("evaluation: an ensemble needs at least one member")
    sums = ScoreSums()
    for piece in pieces(arrays):
        _add_ensemble(sums, members, piece, horizon, (target_centre, target_scale), device, quantiles)
        del piece  # before the next piece is read
    return sums.scores()


def _add_ensemble(
    sums: ScoreSums,
    members: Sequence[tuple[nn.Module, int]],
    arrays: SeriesArrays,
    horizon: int,
    centre_scale: tuple[float, float],
    device: torch.device | None,
    quantiles: tuple[float, ...],
) -> None:
    window = max(w for _, w in members)
    every = target_positions(arrays, window=window, horizon=horizon)
    # In chunks: the per-target arrays below (rows, masks, errors per level) would otherwise be many times the split.
    for start in range(0, len(every), EVAL_CHUNK):
        _add_positions(
            sums, members, arrays, every[start : start + EVAL_CHUNK], horizon, centre_scale, device, quantiles
        )


def _add_positions(
    sums: ScoreSums,
    members: Sequence[tuple[nn.Module, int]],
    arrays: SeriesArrays,
    positions: torch.Tensor,
    horizon: int,
    centre_scale: tuple[float, float],
    device: torch.device | None,
    quantiles: tuple[float, ...],
) -> None:
    outs = [predict_scaled(m, arrays, positions, window=w, horizon=horizon, device=device) for m, w in members]
    out, own = mean_forecast(outs, [levels_of(m) for m, _ in members])
    pred = point_forecast(out, own)
    rows = target_rows(positions, horizon)
    mask = target_mask(arrays, rows)
    # float64 sums, so a split scored piece by piece gives the figure it gives in one piece
    scaled_errors = pred.double() - arrays.target[rows].double()
    scaled = (float((scaled_errors**2 * mask.double()).sum()), int(mask.sum()))
    row_index = rows.numpy()
    truth = arrays.target_raw[row_index]

    def units(scaled_out: torch.Tensor) -> np.ndarray:
        return arrays.unscale(scaled_out.double().numpy(), row_index, *centre_scale)

    levels = Levels(quantiles or own)
    if own:
        by_level = np.stack([units(out[..., k]) for k in range(len(own))], axis=-1) - truth[..., None]
        levels = Levels(own, by_level)
    sums.add(units(pred) - truth, mask.numpy(), scaled=scaled, panel=_panel_rows(arrays, row_index), levels=levels)


def baseline_scores(
    arrays: Split, *, horizon: int, season_steps: int, quantiles: tuple[float, ...] = ()
) -> dict[str, ForecastScores]:
    """Persistence (the last value seen, for every step) and seasonal naive (the same phase in the last season
    before the forecast origin), on every scoreable target of steps 1..horizon."""
    seasons_back = -(-horizon // season_steps)  # a season far enough back to lie before the origin
    lag_max = max(horizon, season_steps * seasons_back)
    sums = {"persistence": ScoreSums(), "seasonal_naive": ScoreSums()}
    levels = Levels(quantiles)
    for piece in pieces(arrays):
        positions = target_positions(piece, window=lag_max - horizon + 1, horizon=horizon)
        row_index = target_rows(positions, horizon)
        mask = target_mask(piece, row_index).numpy()
        rows = row_index.numpy()
        truth = piece.target_raw[rows]
        origin = positions.numpy() - horizon
        panel = _panel_rows(piece, rows)
        persistence = piece.target_raw[origin][:, None] - truth
        seasonal = piece.target_raw[rows - season_steps * seasons_back] - truth
        sums["persistence"].add(persistence, mask, scaled=(math.nan, 1), panel=panel, levels=levels)
        sums["seasonal_naive"].add(seasonal, mask, scaled=(math.nan, 1), panel=panel, levels=levels)
        del piece, panel, truth  # before the next piece is read
    return {name: s.scores() for name, s in sums.items()}


__all__ = [
    "ForecastScores",
    "Levels",
    "ScoreSums",
    "Split",
    "baseline_scores",
    "evaluate_ensemble",
    "evaluate_model",
    "masked_loss",
    "masked_mse",
    "pieces",
    "pinball",
    "predict_scaled",
    "scores_from_errors",
]
