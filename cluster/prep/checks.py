"""Suspicious inputs, found on the source's first rows before anything is written: a row-number column (pure
extrapolation on a chronological split) is left out of inferred features, and a column that follows the target
some steps later (a leak) is reported."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cluster.prep.sources import iter_batches
from trainables.data.forecast_prep import ForecastPrepConfig

PROBE_ROWS = 65_536
"""Rows read to look for suspicious columns."""
LEAK_CORRELATION = 0.999
"""A column whose values correlate this well with the target k steps later is reported as a leak."""
MIN_LEAK_SHIFTS = 24
"""Shifts tried: 1 to the larger of this and the horizon."""
MIN_PAIRS = 50


def is_row_number(values: pd.Series) -> bool:
    """Whole numbers that go up by exactly 1 from row to row (``No``, an exported index)."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if len(numbers) < 3 or not np.isfinite(numbers).all() or (numbers != np.round(numbers)).any():
        return False
    return bool((np.diff(numbers) == 1).all())


def row_number_columns(frame: pd.DataFrame, candidates: list[str]) -> list[str]:
    return [c for c in candidates if is_row_number(frame[c])]


def leaks(source: str, cfg: ForecastPrepConfig) -> list[str]:
    """One line per numeric input that matches the target ``k >= 1`` steps ahead on the first rows (per series in
    a panel). Such a column is known only after the fact, unless it is itself a forecast made in advance: the line
    says so, and preparation goes on."""
    frame = next(iter_batches(source, batch_rows=PROBE_ROWS, encoding=cfg.text_encoding), None)
    inputs = [c for c in cfg.numeric if c != cfg.target and frame is not None and c in frame.columns]
    if frame is None or not inputs or cfg.target not in frame.columns or any(k not in frame for k in cfg.series):
        return []  # a missing column is named by the preparation that follows
    groups = [g for _, g in frame.groupby(list(cfg.series), sort=False)] if cfg.series else [frame]
    numbers = [g[[cfg.target, *inputs]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64) for g in groups]
    lines = []
    for j, col in enumerate(inputs, start=1):
        found = _leak_shift(numbers, j, max(cfg.horizon, MIN_LEAK_SHIFTS))
        if found is not None:
            shift, corr, pairs = found
            lines.append(
                f"column {col!r} matches the target {shift} step(s) later (correlation {corr:.4f} over {pairs:,} "
                f"rows): a leak, unless it is known that far ahead; --exclude {col} leaves it out"
            )
    return lines


def _leak_shift(numbers: list[np.ndarray], column: int, shifts: int) -> tuple[int, float, int] | None:
    longest = max(len(n) for n in numbers)
    for k in range(1, min(shifts, longest - MIN_PAIRS) + 1):
        xs = [n[:-k, column] for n in numbers if len(n) > k]
        ys = [n[k:, 0] for n in numbers if len(n) > k]
        x, y = np.concatenate(xs), np.concatenate(ys)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < MIN_PAIRS or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
            continue
        corr = float(np.corrcoef(x[ok], y[ok])[0, 1])
        if corr >= LEAK_CORRELATION:
            return k, corr, int(ok.sum())
    return None


__all__ = ["is_row_number", "leaks", "row_number_columns"]
