"""Forecasting preprocessing, rows: time, order, duplicates, gaps and dropped rows, streamed in batches."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trainables.data.prep_config import ROW, TIME, ForecastPrepConfig, step_of


def parse_time(df: pd.DataFrame, cfg: ForecastPrepConfig, first_row: int) -> pd.Series:
    """The time of each row, from the time column(s); a row whose time does not parse is an error naming it."""
    with warnings.catch_warnings():
        # pandas warns when it cannot infer one format from the first value; every row is parsed and checked anyway.
        warnings.filterwarnings("ignore", "Could not infer format", UserWarning)
        ts = _to_time(df, cfg)
    if ts.isna().any():
        cols = list(cfg.time_columns)
        bad = int(np.flatnonzero(ts.isna().to_numpy())[0])
        shown = {c: df[c].iloc[bad] for c in cols}
        if all(pd.isna(v) for v in shown.values()):
            raise ValueError(f"data: row {first_row + bad} has no time (empty {cols})")
        raise ValueError(f"data: row {first_row + bad} has an invalid time {shown} in {cols}")
    return ts.astype("datetime64[ns]")


def _to_time(df: pd.DataFrame, cfg: ForecastPrepConfig) -> pd.Series:
    cols = list(cfg.time_columns)
    if len(cols) == 1:
        return pd.to_datetime(df[cols[0]].astype("string"), format=cfg.time_format, errors="coerce")
    if set(cols) <= {"year", "month", "day", "hour", "minute", "second"}:
        return pd.to_datetime(df[cols].rename(columns=str), errors="coerce")
    joined = df[cols[0]].astype("string")
    for c in cols[1:]:
        joined = joined + " " + df[c].astype("string")
    return pd.to_datetime(joined, format=cfg.time_format, errors="coerce")


def not_numbers(given: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64, mask of the given values that are not numbers: words, ``1,234``); a missing marker
    already read as missing is not in the mask."""
    values = pd.to_numeric(given, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    return values, np.isnan(values) & given.notna().to_numpy()


def words_error(col: str, count: int, where: str, example: object) -> ValueError:
    """The refusal of a numeric column holding values that are not numbers (without ``--coerce``)."""
    return ValueError(
        f"data: numeric column {col!r} holds {count} value(s) that are not numbers, {where}: {str(example)[:40]!r}; "
        "--coerce makes them gaps (empty, NA and ? are gaps already)"
    )


class RowStream:
    """Turns source batches into time-ordered, de-duplicated, gap-filled rows numbered by ``__row__``."""

    def __init__(self, cfg: ForecastPrepConfig, *, check_columns: bool = True) -> None:
        self.cfg = cfg
        self.check_columns = check_columns
        self.rows_in = 0
        self.rows_out = 0
        self.duplicates = 0
        self.gaps_filled = 0
        self.dropped = 0
        self.non_finite = 0
        """Infinite values made gaps (``non_finite = "missing"``)."""
        self.coerced = 0
        """Values that are not numbers made gaps in numeric columns (``coerce``)."""
        self._held = pd.DataFrame()
        self._last_time: pd.Timestamp | None = None
        self._step = step_of(cfg.frequency) if cfg.frequency else None
        self._drop_columns = [c for c in cfg.numeric if cfg.policy(c) == "drop"]

    @property
    def needed_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.cfg.time_columns, *self.cfg.numeric, *self.cfg.categorical]))

    def push(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self.check_columns:
            missing = [c for c in self.needed_columns if c not in batch.columns]
            if missing:
                raise ValueError(f"data: column(s) {missing} not in the source; it has {list(batch.columns)}")
            self.check_columns = False
        frame = batch[self.needed_columns].copy()
        frame.insert(0, TIME, parse_time(frame, self.cfg, self.rows_in).to_numpy())
        self._check_numbers(frame)
        self.rows_in += len(frame)
        frame = pd.concat([self._held, frame], ignore_index=True) if len(self._held) else frame
        if len(frame) == 0:
            return frame
        # The last timestamp may continue in the next batch: hold its rows back until then.
        last = frame[TIME].iloc[-1]
        tail = frame[TIME] == last
        self._held = frame[tail]
        return self._emit(frame[~tail])

    def _check_numbers(self, frame: pd.DataFrame) -> None:
        """A numeric column's values must be numbers: ``inf``/``-inf`` are refused (the default) or made gaps, and
        so is a word (refused unless ``coerce``); the source's missing markers (empty, NA, ?) are gaps already."""
        for col in self.cfg.numeric:
            values, words = not_numbers(frame[col])
            if words.any():
                self._words(col, frame, words)
            infinite = np.isinf(values)
            if infinite.any():
                self._infinite(col, frame, infinite)
                values[infinite] = np.nan
            if words.any() or infinite.any():
                frame[col] = values

    def _where(self, frame: pd.DataFrame, mask: np.ndarray) -> tuple[int, str]:
        first = int(np.flatnonzero(mask)[0])
        return first, f"the first at row {self.rows_in + first} (time {frame[TIME].iloc[first]})"

    def _words(self, col: str, frame: pd.DataFrame, words: np.ndarray) -> None:
        if self.cfg.coerce:
            self.coerced += int(words.sum())
            return
        first, where = self._where(frame, words)
        raise words_error(col, int(words.sum()), where, frame[col].iloc[first])

    def _infinite(self, col: str, frame: pd.DataFrame, infinite: np.ndarray) -> None:
        if self.cfg.non_finite == "error":
            _, where = self._where(frame, infinite)
            raise ValueError(
                f"data: column {col!r} holds {int(infinite.sum())} infinite value(s) in source rows "
                f"{self.rows_in}-{self.rows_in + len(frame) - 1}, {where}; --non-finite missing makes them gaps"
            )
        self.non_finite += int(infinite.sum())

    def finish(self) -> pd.DataFrame:
        held, self._held = self._held, pd.DataFrame()
        return self._emit(held) if len(held) else held

    def _emit(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame) == 0:
            return frame
        times = frame[TIME]
        if self._last_time is not None and times.iloc[0] <= self._last_time:
            raise ValueError(
                f"data: time goes backwards at {times.iloc[0]} (after {self._last_time}); sort the source by time"
            )
        if not times.is_monotonic_increasing:
            bad = int(np.flatnonzero(np.diff(times.to_numpy()) < np.timedelta64(0))[0]) + 1
            raise ValueError(f"data: time goes backwards at {times.iloc[bad]}; sort the source by time")
        frame = self._dedupe(frame)
        frame = self._fill_gaps(frame)
        if self._drop_columns:
            keep = frame[self._drop_columns].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
            self.dropped += int((~keep).sum())
            frame = frame[keep]
        if len(frame):
            self._last_time = frame[TIME].iloc[-1]
        frame = frame.reset_index(drop=True)
        frame.insert(1, ROW, np.arange(self.rows_out, self.rows_out + len(frame), dtype=np.int64))
        self.rows_out += len(frame)
        return frame

    def _dedupe(self, frame: pd.DataFrame) -> pd.DataFrame:
        dup = frame[TIME].duplicated(keep=False)
        if not dup.any():
            return frame
        count = int(frame[TIME].duplicated().sum())
        policy = self.cfg.duplicates
        if policy == "error":
            raise ValueError(
                f"data: duplicate timestamp {frame[TIME][dup].iloc[0]} ({count} duplicate rows in this batch); "
                "choose --duplicates first|last|mean"
            )
        self.duplicates += count
        if policy in ("first", "last"):
            return frame.drop_duplicates(TIME, keep=policy)
        numeric = [c for c in self.cfg.numeric if c in frame.columns]
        agg: dict[str, Any] = {c: "mean" for c in numeric}
        agg.update({c: "first" for c in frame.columns if c not in numeric and c != TIME})
        converted = frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in numeric})
        return converted.groupby(TIME, sort=True, as_index=False).agg(agg)

    def _fill_gaps(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self._step is None:
            return frame
        start = self._last_time + self._step if self._last_time is not None else frame[TIME].iloc[0]
        grid = pd.date_range(start, frame[TIME].iloc[-1], freq=self._step)
        if len(grid) == len(frame):
            return frame
        off_grid = ~frame[TIME].isin(grid)
        if off_grid.any():
            raise ValueError(
                f"data: timestamp {frame[TIME][off_grid].iloc[0]} is not on the --frequency {self.cfg.frequency} grid"
            )
        self.gaps_filled += len(grid) - len(frame)
        return frame.set_index(TIME).reindex(grid).rename_axis(TIME).reset_index()


class _Stage(Protocol):
    def push(self, frame: pd.DataFrame) -> pd.DataFrame: ...
    def finish(self) -> pd.DataFrame: ...


def drain(stage: _Stage, frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Feed frames through a stateful stage (push each, then finish), yielding the non-empty outputs."""
    for frame in frames:
        out = stage.push(frame)
        if len(out):
            yield out
    out = stage.finish()
    if len(out):
        yield out


def stream_rows(batches: Iterable[pd.DataFrame], stream: RowStream) -> Iterator[pd.DataFrame]:
    return drain(stream, batches)
