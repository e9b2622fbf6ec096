"""Forecasting preprocessing, change features: a column's change since the previous row and the per-row amount of a
running total, computed in a stream (the previous row carried between batches); fitted and applied alike."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.data.prep_config import ForecastPrepConfig


def row_changes(values: np.ndarray, previous: float | None) -> np.ndarray:
    """Each value minus the one before it; NaN for the first row of a series (``previous`` None) and next to gaps."""
    if not len(values):
        return values.astype(np.float64)
    before = np.concatenate([[np.nan if previous is None else previous], values[:-1]])
    out: np.ndarray = values - before
    return out


def running_increments(values: np.ndarray, previous: float | None, restarted: np.ndarray | None = None) -> np.ndarray:
    """Per-row amounts of a running total: the rise since the previous row, or the value itself where the total
    restarted (``restarted``; None: wherever it fell)."""
    change = row_changes(values, previous)
    restart = restarted if restarted is not None else change < 0
    out: np.ndarray = np.where(restart, values, change)
    return out


def category_changed(values: np.ndarray, previous: str | None) -> np.ndarray:
    """Rows whose category differs from the row before; the first row of a series (``previous`` None) never does."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    before = np.concatenate([[values[0] if previous is None else previous], values[:-1]])
    changed: np.ndarray = values != before
    return changed


def category_strings(column: pd.Series) -> np.ndarray:
    """A categorical column as plain strings, a missing category as the empty string."""
    out: np.ndarray = column.astype("string").fillna("").to_numpy(dtype=object)
    return out


def diff_name(column: str) -> str:
    """The feature holding a column's change since the previous row."""
    return f"{column}__diff"


def step_name(column: str) -> str:
    """The feature holding a running total's per-row amount."""
    return f"{column}__step"


def change_names(cfg: ForecastPrepConfig) -> list[str]:
    """The change features of a config, in feature order."""
    return [diff_name(col) for col in cfg.diffs] + [step_name(col) for col, _ in cfg.increments]


class ChangeFeatures:
    """A config's diffs and increments, unscaled, for ordered batches: the previous row is carried between them."""

    def __init__(self, cfg: ForecastPrepConfig) -> None:
        self.cfg = cfg
        self._last: dict[str, float] = {}
        self._last_category: dict[str, str] = {}

    def push(self, numeric: dict[str, np.ndarray], categories: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``numeric`` and ``categories`` hold this batch's columns; NaN marks a change that is not defined."""
        cfg = self.cfg
        out: dict[str, np.ndarray] = {}
        for col in cfg.diffs:
            out[diff_name(col)] = row_changes(numeric[col], self._last.get(col))
        for col, reset in cfg.increments:
            restarted = category_changed(categories[reset], self._last_category.get(reset)) if reset else None
            out[step_name(col)] = running_increments(numeric[col], self._last.get(col), restarted)
        if not any(len(change) for change in out.values()):
            return out  # an empty batch: nothing to carry
        for col in (*cfg.diffs, *(c for c, _ in cfg.increments)):
            self._last[col] = float(numeric[col][-1])
        for _, reset in cfg.increments:
            if reset:
                self._last_category[reset] = str(categories[reset][-1])
        return out
