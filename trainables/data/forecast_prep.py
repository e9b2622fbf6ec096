"""Forecasting preprocessing: fitted on the training split only, applied the same way to any rows, in batches.

Data preparation streams a source through :class:`RowStream` (time, order, duplicates, gaps, dropped rows) and
:class:`Transformer` (fill, scale, encode, engineer); the exported model's ``predict`` runs raw rows through the very
same two objects, so prediction sees exactly what training saw. Both keep a little state between batches (the last
observation for forward fill, a tail for lags and rolling windows), which is what lets a source larger than memory
stream through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

TIME = "timestamp"
ROW = "__row__"
TARGET = "__target__"
TARGET_RAW = "__target_raw__"
OBSERVED = "__observed__"
CONTEXT = "__context__"
CATEGORICAL_ENCODINGS = ("onehot", "ordinal")


def code_name(column: str) -> str:
    """The feature holding a categorical column's ordinal code."""
    return f"{column}__code"


MissingPolicy = Literal["ffill", "mean", "zero", "interpolate", "mask", "drop"]
MISSING_POLICIES: tuple[str, ...] = ("ffill", "mean", "zero", "interpolate", "mask", "drop")
ScalerKind = Literal["standard", "minmax", "robust", "none"]
DuplicatePolicy = Literal["error", "first", "last", "mean"]
MAX_INTERPOLATE_HOLD = 100_000
"""Rows an interpolating column may wait for its next observation before falling back to forward fill."""
ROBUST_SAMPLE = 200_000
"""Values per column kept (reservoir sample) to estimate median and IQR in bounded memory."""


@dataclass(frozen=True, kw_only=True)
class ForecastPrepConfig:
    """How raw rows become model inputs; recorded in the manifest."""

    time_columns: tuple[str, ...] = ("year", "month", "day", "hour")
    """One column holding the time, or several assembled into it (year/month/day/hour, or e.g. Date and Time)."""
    time_format: str | None = None
    """strftime format of the (space-joined) time column(s), e.g. ``%d/%m/%Y %H:%M:%S``; None: inferred."""
    target: str = "pm2.5"
    """Column to forecast; it is an input too (its past)."""
    numeric: tuple[str, ...] = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir")
    """Numeric input columns (the target among them)."""
    categorical: tuple[str, ...] = ("cbwd",)
    """Categorical input columns, encoded with the categories seen in training."""
    categorical_encoding: str = "onehot"
    """``onehot``: a 0/1 feature per category; ``ordinal``: one integer code per column (0 for a category not seen
    in training, 1..K otherwise) that the model turns into a learned embedding."""
    missing: MissingPolicy = "ffill"
    """Default policy for missing numeric values: ffill (last observation; training mean before the first), mean
    (training mean), zero, interpolate (linear between neighbours: uses the next observation), mask (training mean
    plus a 0/1 indicator feature), drop (remove the row)."""
    missing_columns: tuple[tuple[str, str], ...] = ()
    """Per-column overrides of ``missing``, as (column, policy) pairs."""
    scaler: ScalerKind = "standard"
    """Scaling of numeric columns, fitted on the training split only."""
    calendar: bool = True
    """Add hour-of-day, day-of-week and day-of-year as sin/cos pairs."""
    lags: tuple[int, ...] = ()
    """Extra features: the target ``k`` rows back, for each k (beyond what the window shows, e.g. 168)."""
    rolling: tuple[int, ...] = ()
    """Extra features: mean and standard deviation of the target over the last ``w`` rows, for each w."""
    diffs: tuple[str, ...] = ()
    """Extra features: the change since the previous row of each of these numeric columns, divided by the change's
    standard deviation in training. Scaled by the level's spread, an hour's change of PM2.5 or pressure is a few
    hundredths of a unit, too small a signal for the network to pick out."""
    increments: tuple[tuple[str, str], ...] = ()
    """Extra features from running totals, as (column, reset column) pairs: the amount added since the previous row,
    or the value itself where the total restarted, which is where the reset column's category changed (Beijing's
    ``Iws`` is wind speed cumulated since the wind direction last changed) or, with an empty reset column, where the
    total fell. Divided by the increment's standard deviation in training."""
    pca: int = 0
    """If > 0, replace the non-target numeric inputs by this many principal components fitted on training rows."""
    frequency: str | None = None
    """Expected spacing (pandas offset such as ``1h``, ``1min``); gaps become rows with missing values."""
    duplicates: DuplicatePolicy = "error"
    """Rows sharing a timestamp: error, keep the first, keep the last, or average them."""
    horizon: int = 1
    """Steps ahead to forecast (1 = next hour for hourly data)."""
    season_length: int = 24
    """Steps in one season, for the seasonal-naive baseline (24 for hourly data)."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Chronological train/val/test fractions."""
    max_window: int = 168
    """Longest window trials may use; val and test carry this much context from the previous split."""

    def policy(self, column: str) -> str:
        return dict(self.missing_columns).get(column, self.missing)

    def validate(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"data.horizon = {self.horizon}: must be >= 1")
        if self.season_length < 1:
            raise ValueError(f"data.season_length = {self.season_length}: must be >= 1")
        if self.max_window < 1:
            raise ValueError(f"data.max_window = {self.max_window}: must be >= 1")
        if len(self.split) != 3 or any(f <= 0 for f in self.split) or not math.isclose(sum(self.split), 1.0):
            raise ValueError(f"data.split = {self.split}: three positive fractions summing to 1, e.g. 0.7,0.15,0.15")
        if not self.time_columns:
            raise ValueError("data.time_columns: name the time column, or the columns it is assembled from")
        if self.target not in self.numeric:
            raise ValueError(f"data.target = {self.target!r}: must also be one of data.numeric {list(self.numeric)}")
        if self.categorical_encoding not in CATEGORICAL_ENCODINGS:
            raise ValueError(
                f"data.categorical_encoding = {self.categorical_encoding!r}: must be one of "
                f"{', '.join(CATEGORICAL_ENCODINGS)}"
            )
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"data: column(s) {sorted(overlap)} are both numeric and categorical")
        for column, policy in ((None, self.missing), *self.missing_columns):
            if policy not in MISSING_POLICIES:
                key = f"data.missing[{column}]" if column else "data.missing"
                raise ValueError(f"{key} = {policy!r}: must be one of {', '.join(MISSING_POLICIES)}")
            if column is not None and column not in self.numeric:
                raise ValueError(f"data.missing[{column}]: {column!r} is not a numeric column {list(self.numeric)}")
        if self.policy(self.target) == "drop":
            raise ValueError(
                f"data.missing[{self.target}] = 'drop': the target's gaps are masked as targets already; "
                "use ffill, mean, zero, interpolate or mask for its role as an input"
            )
        for k in (*self.lags, *self.rolling):
            if k < 1:
                raise ValueError(f"data.lags/rolling: {k} must be >= 1")
        self._validate_changes()
        if self.pca < 0 or self.pca > max(len(self.numeric) - 1, 0):
            raise ValueError(
                f"data.pca = {self.pca}: must be between 0 and the number of non-target numeric columns "
                f"({len(self.numeric) - 1})"
            )
        if self.scaler not in ("standard", "minmax", "robust", "none"):
            raise ValueError(f"data.scaler = {self.scaler!r}: must be standard, minmax, robust or none")
        if self.duplicates not in ("error", "first", "last", "mean"):
            raise ValueError(f"data.duplicates = {self.duplicates!r}: must be error, first, last or mean")
        if self.frequency is not None:
            try:
                _step_of(self.frequency)
            except (ValueError, TypeError):
                raise ValueError(
                    f"data.frequency = {self.frequency!r}: not a fixed pandas offset such as 1h or 1min"
                ) from None

    def _validate_changes(self) -> None:
        for col in self.diffs:
            if col not in self.numeric:
                raise ValueError(f"data.diffs: {col!r} is not a numeric column; allowed: {', '.join(self.numeric)}")
        if len(set(self.diffs)) != len(self.diffs):
            raise ValueError(f"data.diffs = {list(self.diffs)}: a column is named twice")
        for col, reset in self.increments:
            if col not in self.numeric:
                raise ValueError(
                    f"data.increments: {col!r} is not a numeric column; allowed: {', '.join(self.numeric)}"
                )
            if reset and reset not in self.categorical:
                allowed = ", ".join(self.categorical) or "none declared"
                raise ValueError(
                    f"data.increments[{col}]: reset column {reset!r} is not a categorical column ({allowed}); "
                    "leave it empty to detect a restart where the total falls"
                )
        columns = [col for col, _ in self.increments]
        if len(set(columns)) != len(columns):
            raise ValueError(f"data.increments: {columns} names a column twice")

    @property
    def history_rows(self) -> int:
        """Rows before a row that its lag, rolling and change features read; a row with fewer before it gets those
        features filled in (0), which is why ``predict`` forecasts only after this many rows."""
        changes = 1 if self.diffs or self.increments else 0
        return max(*self.lags, *(w - 1 for w in self.rolling), changes, 0)

    @property
    def context_rows(self) -> int:
        """History a val/test target needs: the longest window plus the horizon, and one season for the baseline."""
        return max(self.max_window + self.horizon - 1, self.season_steps)

    @property
    def season_steps(self) -> int:
        """Lag of the seasonal-naive forecast: the same phase of the latest season seen at forecast time."""
        return self.season_length * math.ceil(self.horizon / self.season_length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ForecastPrepConfig:
        cfg = dict(raw)
        for key in ("time_columns", "numeric", "categorical", "split", "lags", "rolling", "diffs"):
            cfg[key] = tuple(cfg.get(key, ()))
        for key in ("missing_columns", "increments"):
            cfg[key] = tuple((str(a), str(b)) for a, b in cfg.get(key, ()))
        return cls(**cfg)


@dataclass(frozen=True, kw_only=True)
class FittedPrep:
    """Parameters learned from the training split; with the config they define the transformation."""

    config: ForecastPrepConfig
    centre: dict[str, float]
    """Per numeric column: mean (standard), minimum (minmax), median (robust) of the training split."""
    scale: dict[str, float]
    """Per numeric column: standard deviation, range or interquartile range of the training split."""
    fill: dict[str, float]
    """Per numeric column: the training mean, for gaps before the first observation and for mean/mask."""
    categories: dict[str, list[str]] = field(default_factory=dict)
    """Per categorical column: categories seen in training (others encode as all zeros)."""
    indicators: list[str] = field(default_factory=list)
    """Numeric columns that get a 0/1 "was missing" feature: the target, and columns with the mask policy."""
    pca_columns: list[str] = field(default_factory=list)
    """Columns PCA replaces (scaled), in order."""
    pca_components: list[list[float]] = field(default_factory=list)
    """``[k, len(pca_columns)]`` projection fitted on training rows."""
    pca_explained: list[float] = field(default_factory=list)
    """Fraction of variance each component explains on training rows."""
    change_scale: dict[str, float] = field(default_factory=dict)
    """Per change feature (``col__diff``, ``col__step``): the standard deviation it is divided by, from training."""
    feature_names: list[str] = field(default_factory=list)
    step_seconds: float = 3600.0
    """Spacing of the series in seconds (median step of the source)."""

    @property
    def target_index(self) -> int:
        """Position of the (scaled, filled) target among the features, for the residual head."""
        return self.feature_names.index(self.config.target)

    @property
    def categorical_codes(self) -> tuple[tuple[int, int], ...]:
        """Ordinal encoding: (feature index, codes incl. 0 for unseen) of each categorical column; else empty."""
        if self.config.categorical_encoding != "ordinal":
            return ()
        return tuple((self.feature_names.index(code_name(c)), len(cats) + 1) for c, cats in self.categories.items())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FittedPrep:
        return cls(
            config=ForecastPrepConfig.from_dict(raw["config"]),
            centre={k: float(v) for k, v in raw["centre"].items()},
            scale={k: float(v) for k, v in raw["scale"].items()},
            fill={k: float(v) for k, v in raw["fill"].items()},
            categories={k: list(v) for k, v in raw["categories"].items()},
            indicators=list(raw["indicators"]),
            pca_columns=list(raw.get("pca_columns", [])),
            pca_components=[list(map(float, r)) for r in raw.get("pca_components", [])],
            pca_explained=list(map(float, raw.get("pca_explained", []))),
            change_scale={k: float(v) for k, v in raw.get("change_scale", {}).items()},
            feature_names=list(raw["feature_names"]),
            step_seconds=float(raw.get("step_seconds", 3600.0)),
        )


# --------------------------------------------------------------------------------------------------------------------
# Rows: time, order, duplicates, gaps, dropped rows


def _step_of(frequency: str) -> pd.Timedelta:
    """A fixed step from a pandas offset alias (1h, 15min); calendar offsets such as 1M have no fixed length."""
    return pd.Timedelta(frequency if frequency[0].isdigit() else f"1{frequency}")


def _parse_time(df: pd.DataFrame, cfg: ForecastPrepConfig, first_row: int) -> pd.Series:
    cols = list(cfg.time_columns)
    if len(cols) == 1:
        ts = pd.to_datetime(df[cols[0]].astype("string"), format=cfg.time_format, errors="coerce")
    elif set(cols) <= {"year", "month", "day", "hour", "minute", "second"}:
        ts = pd.to_datetime(df[cols].rename(columns=str), errors="coerce")
    else:
        joined = df[cols[0]].astype("string")
        for c in cols[1:]:
            joined = joined + " " + df[c].astype("string")
        ts = pd.to_datetime(joined, format=cfg.time_format, errors="coerce")
    if ts.isna().any():
        bad = int(np.flatnonzero(ts.isna().to_numpy())[0])
        shown = {c: df[c].iloc[bad] for c in cols}
        raise ValueError(f"data: row {first_row + bad} has an invalid time {shown} in {cols}")
    return ts.astype("datetime64[ns]")


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
        self._held = pd.DataFrame()
        self._last_time: pd.Timestamp | None = None
        self._step = _step_of(cfg.frequency) if cfg.frequency else None
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
        frame.insert(0, TIME, _parse_time(frame, self.cfg, self.rows_in).to_numpy())
        self.rows_in += len(frame)
        frame = pd.concat([self._held, frame], ignore_index=True) if len(self._held) else frame
        if len(frame) == 0:
            return frame
        # The last timestamp may continue in the next batch: hold its rows back until then.
        last = frame[TIME].iloc[-1]
        tail = frame[TIME] == last
        self._held = frame[tail]
        return self._emit(frame[~tail])

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


# --------------------------------------------------------------------------------------------------------------------
# Fitting on training rows


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


@dataclass
class _Moments:
    """Streaming mean, variance, min, max and a reservoir sample of one column (Welford / Chan)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    sample: list[float] = field(default_factory=list)
    seen: int = 0

    def add(self, values: np.ndarray, rng: np.random.Generator, keep_sample: bool) -> None:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        n_b, mean_b = values.size, float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        delta = mean_b - self.mean
        total = self.n + n_b
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta**2 * self.n * n_b / total
        self.n = total
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        if keep_sample:
            self._reservoir(values, rng)
        self.seen += values.size

    def _reservoir(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """Algorithm R, vectorised: a uniform sample of everything seen, in bounded memory."""
        room = max(0, ROBUST_SAMPLE - len(self.sample))
        self.sample.extend(values[:room].tolist())
        rest = values[room:]
        if rest.size:
            counts = np.arange(self.seen + room + 1, self.seen + values.size + 1)
            slots = (rng.random(rest.size) * counts).astype(np.int64)
            hit = slots < ROBUST_SAMPLE
            for slot, value in zip(slots[hit], rest[hit], strict=True):
                self.sample[int(slot)] = float(value)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else 0.0


class Fitter:
    """Accumulates training-split statistics batch by batch."""

    def __init__(self, cfg: ForecastPrepConfig, train_rows: int) -> None:
        self.cfg = cfg
        self.train_rows = train_rows
        self.moments = {c: _Moments() for c in cfg.numeric}
        self.categories: dict[str, set[str]] = {c: set() for c in cfg.categorical}
        self.steps: list[np.ndarray] = []
        self._rng = np.random.default_rng(0)
        self._changes = ChangeFeatures(cfg)
        self.change_moments = {name: _Moments() for name in change_names(cfg)}

    def add(self, rows: pd.DataFrame) -> None:
        train = rows[rows[ROW] < self.train_rows]
        if len(train) == 0:
            return
        if len(self.steps) < 8:
            self.steps.append(np.diff(train[TIME].to_numpy()).astype("timedelta64[ns]").astype(np.int64))
        numeric: dict[str, np.ndarray] = {}
        for col in self.cfg.numeric:
            values = pd.to_numeric(train[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            numeric[col] = values
            self.moments[col].add(values, self._rng, keep_sample=self.cfg.scaler == "robust")
        for col in self.cfg.categorical:
            self.categories[col].update(str(v) for v in train[col].dropna().unique())
        if self.change_moments:
            # Raw values: a change next to a missing observation is NaN and left out of the statistics.
            categories = {reset: category_strings(train[reset]) for _, reset in self.cfg.increments if reset}
            for name, values in self._changes.push(numeric, categories).items():
                self.change_moments[name].add(values, self._rng, keep_sample=False)

    def fitted(self) -> FittedPrep:
        cfg = self.cfg
        centre: dict[str, float] = {}
        scale: dict[str, float] = {}
        fill: dict[str, float] = {}
        for col, m in self.moments.items():
            if m.n == 0:
                raise ValueError(f"data: numeric column {col!r} has no value in the training split")
            fill[col] = m.mean
            if cfg.scaler == "standard":
                centre[col], scale[col] = m.mean, m.std
            elif cfg.scaler == "minmax":
                centre[col], scale[col] = m.lo, m.hi - m.lo
            elif cfg.scaler == "robust":
                q1, med, q3 = np.quantile(np.asarray(m.sample), [0.25, 0.5, 0.75])
                centre[col], scale[col] = float(med), float(q3 - q1)
            else:
                centre[col], scale[col] = 0.0, 1.0
            if not scale[col] > 0:
                scale[col] = 1.0  # a constant column carries no information; keep it finite
        change_scale = {name: m.std if m.std > 0 else 1.0 for name, m in self.change_moments.items()}
        steps = np.concatenate(self.steps) if self.steps else np.array([], dtype=np.int64)
        step_seconds = float(np.median(steps)) / 1e9 if steps.size else 3600.0
        indicators = [c for c in cfg.numeric if c == cfg.target or cfg.policy(c) == "mask"]
        pca_columns = [c for c in cfg.numeric if c != cfg.target] if cfg.pca else []
        base = FittedPrep(
            config=cfg,
            centre=centre,
            scale=scale,
            fill=fill,
            categories={c: sorted(v) for c, v in self.categories.items()},
            indicators=indicators,
            pca_columns=pca_columns,
            change_scale=change_scale,
            step_seconds=step_seconds,
        )
        return _with_feature_names(base)


def _with_feature_names(fitted: FittedPrep) -> FittedPrep:
    cfg = fitted.config
    names: list[str] = []
    for col in cfg.numeric:
        if col not in fitted.pca_columns:
            names.append(col)
    names += [f"pc{i + 1}" for i in range(cfg.pca)] if fitted.pca_columns else []
    names += [f"{c}__missing" for c in fitted.indicators]
    if cfg.categorical_encoding == "ordinal":
        names += [code_name(c) for c in fitted.categories]
    else:
        names += [f"{c}={cat}" for c, cats in fitted.categories.items() for cat in cats]
    names += [f"{cfg.target}__lag{k}" for k in cfg.lags]
    for w in cfg.rolling:
        names += [f"{cfg.target}__mean{w}", f"{cfg.target}__std{w}"]
    names += change_names(cfg)
    if cfg.calendar:
        names += ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos"]
    return FittedPrep(**{**fitted.__dict__, "feature_names": names})


def fit_pca(fitted: FittedPrep, train_batches: Iterable[pd.DataFrame]) -> FittedPrep:
    """Principal components of the scaled, filled non-target inputs, from a streaming covariance of training rows."""
    k, cols = fitted.config.pca, fitted.pca_columns
    transformer = Transformer(fitted, apply_pca=False)
    n, total, outer = 0, np.zeros(len(cols)), np.zeros((len(cols), len(cols)))
    for frame in drain(transformer, train_batches):
        x = frame[cols].to_numpy(np.float64)
        n += len(x)
        total += x.sum(axis=0)
        outer += x.T @ x
    if n < 2:
        raise ValueError("data.pca: fewer than 2 training rows")
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:k]
    explained = values[order] / max(values.sum(), 1e-12)
    components = vectors[:, order].T
    return FittedPrep(
        **{
            **fitted.__dict__,
            "pca_components": components.tolist(),
            "pca_explained": [float(e) for e in explained],
        }
    )


# --------------------------------------------------------------------------------------------------------------------
# Transforming rows


class Transformer:
    """Applies a :class:`FittedPrep` to ordered row batches, carrying fill and lag state across batches."""

    def __init__(self, fitted: FittedPrep, *, apply_pca: bool = True) -> None:
        self.fitted = fitted
        self.cfg = fitted.config
        self.apply_pca = apply_pca and bool(fitted.pca_components)
        self._carry: dict[str, float] = {}
        self._interp = [c for c in self.cfg.numeric if self.cfg.policy(c) == "interpolate"]
        self._held = pd.DataFrame()
        history = max((*self.cfg.lags, *self.cfg.rolling), default=0)
        self._history = history
        self._tail = np.zeros(0, dtype=np.float64)
        self._changes = ChangeFeatures(self.cfg)

    def push(self, rows: pd.DataFrame) -> pd.DataFrame:
        frame = pd.concat([self._held, rows], ignore_index=True) if len(self._held) else rows.reset_index(drop=True)
        cut = len(frame)
        for col in self._interp:
            valid = np.flatnonzero(pd.to_numeric(frame[col], errors="coerce").notna().to_numpy())
            cut = min(cut, int(valid[-1]) + 1 if valid.size else 0)
        if len(frame) - cut > MAX_INTERPOLATE_HOLD:
            cut = len(frame)  # a gap this long falls back to forward fill rather than holding memory
        self._held = frame.iloc[cut:]
        return self._transform(frame.iloc[:cut]) if cut else frame.iloc[:0]

    def finish(self) -> pd.DataFrame:
        held, self._held = self._held, pd.DataFrame()
        return self._transform(held) if len(held) else held

    def _filled(self, col: str, raw: pd.Series) -> pd.Series:
        policy = self.cfg.policy(col)
        mean = self.fitted.fill[col]
        if policy in ("mean", "mask"):
            return raw.fillna(mean)
        if policy == "zero":
            return raw.fillna(0.0)
        carry = self._carry.get(col)
        if policy == "interpolate":
            series = pd.concat([pd.Series([carry if carry is not None else np.nan]), raw], ignore_index=True)
            filled = series.interpolate(method="linear", limit_area="inside").iloc[1:]
            filled.index = raw.index
            return filled.ffill().fillna(carry if carry is not None else mean)
        # ffill (and drop, whose rows are gone already)
        return raw.ffill().fillna(carry if carry is not None else mean)

    def _transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        cfg, fitted = self.cfg, self.fitted
        frame = frame.reset_index(drop=True)
        cols: dict[str, Any] = {}
        scaled: dict[str, pd.Series] = {}
        filled_values: dict[str, np.ndarray] = {}
        raw_target = pd.to_numeric(frame[cfg.target], errors="coerce").astype("float64")
        filled_target = None
        for col in cfg.numeric:
            raw = raw_target if col == cfg.target else pd.to_numeric(frame[col], errors="coerce").astype("float64")
            filled = self._filled(col, raw)
            if len(filled):
                self._carry[col] = float(filled.iloc[-1])
            if col == cfg.target:
                filled_target = filled
            filled_values[col] = filled.to_numpy(dtype=np.float64)
            scaled[col] = (filled - fitted.centre[col]) / fitted.scale[col]
        for col in cfg.numeric:
            if col not in fitted.pca_columns or not self.apply_pca:
                cols[col] = scaled[col]
        if self.apply_pca:
            x = np.column_stack([scaled[c].to_numpy() for c in fitted.pca_columns])
            projected = x @ np.asarray(fitted.pca_components).T
            for i in range(projected.shape[1]):
                cols[f"pc{i + 1}"] = projected[:, i]
        for col in fitted.indicators:
            cols[f"{col}__missing"] = pd.to_numeric(frame[col], errors="coerce").isna().astype("float64")
        for col, cats in fitted.categories.items():
            values = frame[col].astype("string")
            if cfg.categorical_encoding == "ordinal":
                codes = {cat: float(i + 1) for i, cat in enumerate(cats)}
                cols[code_name(col)] = values.map(codes).astype("float64").fillna(0.0).to_numpy()
                continue
            for cat in cats:
                cols[f"{col}={cat}"] = (values == cat).fillna(False).astype("float64")
        if cfg.lags or cfg.rolling:
            history = np.concatenate([self._tail, scaled[cfg.target].to_numpy()])
            offset = len(self._tail)
            series = pd.Series(history)
            for k in cfg.lags:
                cols[f"{cfg.target}__lag{k}"] = series.shift(k).fillna(0.0).to_numpy()[offset:]
            for w in cfg.rolling:
                roll = series.rolling(w, min_periods=1)
                cols[f"{cfg.target}__mean{w}"] = roll.mean().to_numpy()[offset:]
                cols[f"{cfg.target}__std{w}"] = roll.std(ddof=0).fillna(0.0).to_numpy()[offset:]
            self._tail = history[-self._history :]
        if len(frame) and (cfg.diffs or cfg.increments):
            categories = {reset: category_strings(frame[reset]) for _, reset in cfg.increments if reset}
            for name, change in self._changes.push(filled_values, categories).items():
                # The first row of a series has no change to show: 0, as lags before the start are 0.
                cols[name] = np.nan_to_num(change / fitted.change_scale[name], nan=0.0)
        if cfg.calendar:
            ts = frame[TIME].dt
            hour = ts.hour.astype("float64") + ts.minute.astype("float64") / 60.0
            for name, value, period in (
                ("hour", hour, 24.0),
                ("dow", ts.day_of_week.astype("float64"), 7.0),
                ("doy", ts.day_of_year.astype("float64") - 1, 365.25),
            ):
                angle = 2.0 * np.pi * value / period
                cols[f"{name}_sin"] = np.sin(angle)
                cols[f"{name}_cos"] = np.cos(angle)
        features = pd.DataFrame(cols, index=frame.index)
        expected = fitted.feature_names if self.apply_pca or not fitted.pca_columns else None
        if expected is not None and list(features.columns) != expected:
            raise ValueError("data: features differ from the fitted ones (columns or categories changed)")
        out = features.astype("float32")
        out.insert(0, TIME, frame[TIME].to_numpy())
        out.insert(1, ROW, frame[ROW].to_numpy() if ROW in frame.columns else np.arange(len(frame)))
        out[TARGET] = scaled[cfg.target].astype("float32").to_numpy()
        out[TARGET_RAW] = filled_target.to_numpy() if filled_target is not None else np.nan
        out[OBSERVED] = raw_target.notna().to_numpy()
        return out


def transform_frame(raw: pd.DataFrame, fitted: FittedPrep) -> pd.DataFrame:
    """Raw rows (one frame, any order is refused) -> model inputs, exactly as data preparation produced them."""
    stream = RowStream(fitted.config)
    return pd.concat(list(drain(Transformer(fitted), stream_rows([raw], stream))), ignore_index=True)


def split_bounds(n_rows: int, cfg: ForecastPrepConfig) -> tuple[int, int]:
    """End of train and end of val, as row counts."""
    train_end = round(n_rows * cfg.split[0])
    val_end = round(n_rows * (cfg.split[0] + cfg.split[1]))
    return train_end, val_end


def unscale_target(values: np.ndarray, fitted: FittedPrep) -> np.ndarray:
    """Scaled target -> original units."""
    col = fitted.config.target
    out: np.ndarray = values * fitted.scale[col] + fitted.centre[col]
    return out


__all__ = [
    "CONTEXT",
    "MISSING_POLICIES",
    "OBSERVED",
    "ROW",
    "TARGET",
    "TARGET_RAW",
    "TIME",
    "ChangeFeatures",
    "FittedPrep",
    "Fitter",
    "ForecastPrepConfig",
    "RowStream",
    "Transformer",
    "category_changed",
    "change_names",
    "drain",
    "fit_pca",
    "row_changes",
    "running_increments",
    "split_bounds",
    "stream_rows",
    "transform_frame",
    "unscale_target",
]
