"""Forecast errors summed as they arrive: a split scored in one piece or shard by shard (a panel larger than memory)
gives the same figures, because every figure is a ratio of sums kept here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


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


@dataclass(frozen=True)
class Levels:
    """What a quantile-aware score needs: the levels, and the forecast of each minus the truth ``[n, horizon,
    levels]`` in units (None: a point forecast, which stands for every level)."""

    quantiles: tuple[float, ...]
    errors: np.ndarray | None = None


class ScoreSums:
    """Running sums of one forecaster's errors on one split; :meth:`scores` turns them into :class:`ForecastScores`."""

    def __init__(self) -> None:
        self.count = 0
        self.squared = 0.0
        self.absolute = 0.0
        self.step_squared = np.zeros(0)
        self.step_count = np.zeros(0, dtype=np.int64)
        self.scaled_squared = 0.0
        self.scaled_count = 0
        # per series code: absolute error, targets, sMAPE terms, the MASE scale (NaN: undefined)
        self.series_absolute = np.zeros(0)
        self.series_count = np.zeros(0, dtype=np.int64)
        self.series_smape = np.zeros(0)
        self.series_scale = np.zeros(0)
        self.quantiles: tuple[float, ...] = ()
        self.pinball = 0.0
        self.pinball_count = 0
        self.inside = 0
        self.interval_count = 0

    def add(
        self,
        errors: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        scaled: tuple[float, int] = (0.0, 0),
        panel: PanelRows | None = None,
        levels: Levels | None = None,
    ) -> ScoreSums:
        """``errors``: ``[n]`` or ``[n, horizon]`` in units; ``mask`` marks the scored ones; ``scaled``: the sum of
        squared scaled errors and its count (the training loss's MSE); ``panel`` adds the per-series sums; ``levels``
        the pinball loss and, with quantile forecasts, the interval."""
        errors = errors.reshape(len(errors), -1)
        mask = np.ones(errors.shape, dtype=bool) if mask is None else mask.reshape(errors.shape)
        scored = errors[mask]
        self.count += int(scored.size)
        self.squared += float(np.sum(scored**2))
        self.absolute += float(np.sum(np.abs(scored)))
        width = errors.shape[1]
        if len(self.step_squared) < width:
            self.step_squared = np.pad(self.step_squared, (0, width - len(self.step_squared)))
            self.step_count = np.pad(self.step_count, (0, width - len(self.step_count)))
        self.step_squared[: errors.shape[1]] += np.sum(np.where(mask, errors, 0.0) ** 2, axis=0)
        self.step_count[: errors.shape[1]] += mask.sum(axis=0)
        self.scaled_squared += scaled[0]
        self.scaled_count += scaled[1]
        if panel is not None:
            self._add_panel(errors, mask, panel)
        if levels is not None:
            self._add_levels(errors, mask, levels)
        return self

    def _add_panel(self, errors: np.ndarray, mask: np.ndarray, panel: PanelRows) -> None:
        truth, codes, naive = (a.reshape(errors.shape) for a in panel)
        e, y, c = errors[mask], truth[mask], codes[mask].astype(np.int64)
        if not len(c):
            return
        size = int(c.max()) + 1
        if size > len(self.series_count):
            grow = size - len(self.series_count)
            self.series_absolute = np.pad(self.series_absolute, (0, grow))
            self.series_count = np.pad(self.series_count, (0, grow))
            self.series_smape = np.pad(self.series_smape, (0, grow))
            self.series_scale = np.pad(self.series_scale, (0, grow), constant_values=np.nan)
        denom = np.abs(y) + np.abs(y + e)
        terms = np.where(denom > 0, 2 * np.abs(e) / np.where(denom > 0, denom, 1.0), 0.0)
        self.series_absolute += np.bincount(c, np.abs(e), minlength=len(self.series_count))
        self.series_count += np.bincount(c, minlength=len(self.series_count))
        self.series_smape += np.bincount(c, terms, minlength=len(self.series_count))
        self.series_scale[c] = naive[mask]

    def _add_levels(self, errors: np.ndarray, mask: np.ndarray, levels: Levels) -> None:
        self.quantiles = levels.quantiles
        if not levels.quantiles:
            return
        q = np.asarray(levels.quantiles, dtype=np.float64)
        by_level = levels.errors if levels.errors is not None else np.repeat(errors[..., None], len(q), axis=-1)
        diff = -by_level.reshape(*errors.shape, len(q))[mask]  # truth - forecast, [scored, levels]
        self.pinball += float(np.sum(np.maximum(q * diff, (q - 1) * diff)))
        self.pinball_count += int(diff.size)
        if levels.errors is not None and len(q) >= 2:
            # inside: the lowest level at or under the truth, the highest at or over it
            self.inside += int(np.sum((diff[:, 0] >= 0) & (diff[:, -1] <= 0)))
            self.interval_count += len(diff)

    def scores(self) -> ForecastScores:
        if self.count == 0:
            raise ValueError("evaluation: no target to score (split shorter than window + horizon?)")
        by_step = tuple(
            float(np.sqrt(s / n)) if n else math.nan for s, n in zip(self.step_squared, self.step_count, strict=True)
        )
        seen = np.flatnonzero(self.series_count)
        series_mae = {int(c): float(self.series_absolute[c] / self.series_count[c]) for c in seen}
        scales = self.series_scale[seen]
        defined = np.isfinite(scales) & (scales > 0)
        maes = self.series_absolute[seen] / self.series_count[seen]
        return ForecastScores(
            loss=self.scaled_squared / self.scaled_count if self.scaled_count else math.nan,
            rmse=math.sqrt(self.squared / self.count),
            mae=self.absolute / self.count,
            count=self.count,
            rmse_by_step=by_step,
            mase=float(np.mean(maes[defined] / scales[defined])) if defined.any() else None,
            # a series is seen only where panel rows were added: without them, no per-series figure
            smape=float(np.mean(100.0 * self.series_smape[seen] / self.series_count[seen])) if len(seen) else None,
            series_mae=series_mae,
            pinball=self.pinball / self.pinball_count if self.pinball_count else None,
            coverage=self.inside / self.interval_count if self.interval_count else None,
            interval=float(self.quantiles[-1] - self.quantiles[0]) if self.interval_count else None,
        )


def scores_from_errors(
    errors: np.ndarray,
    mask: np.ndarray | None = None,
    scaled_mse: float = math.nan,
    panel: PanelRows | None = None,
    levels: Levels | None = None,
) -> ForecastScores:
    """One piece of errors scored at once (see :meth:`ScoreSums.add`); ``scaled_mse`` is reported as the loss."""
    return ScoreSums().add(errors, mask, scaled=(scaled_mse, 1), panel=panel, levels=levels).scores()


__all__ = ["ForecastScores", "Levels", "PanelRows", "ScoreSums", "scores_from_errors"]
