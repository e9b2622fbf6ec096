"""Forecasting preprocessing, what it is: the configuration (recorded in the manifest), the parameters fitted on the
training split, and the column names the other stages share."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

TIME = "timestamp"
ROW = "__row__"
TARGET = "__target__"
TARGET_RAW = "__target_raw__"
OBSERVED = "__observed__"
CONTEXT = "__context__"
SERIES = "__series__"
"""Panels: the series a row belongs to, as an integer code (the manifest maps codes to keys)."""
TARGET_CENTRE = "__target_centre__"
TARGET_SCALE = "__target_scale__"
"""Panels: per row, what turns the scaled target back into units (``scaled * scale + centre``); each series has its
own when it is scaled per series."""
SERIES_KEY_SEPARATOR = "|"
NAIVE_SCALE = "__naive_scale__"
"""Panels: per row, its series' in-sample seasonal-naive MAE on the training split (units): MASE divides by it."""
CATEGORICAL_ENCODINGS = ("onehot", "ordinal")


def code_name(column: str) -> str:
    """The feature holding a categorical column's ordinal code."""
    return f"{column}__code"


MissingPolicy = Literal["ffill", "mean", "zero", "interpolate", "mask", "drop"]
MISSING_POLICIES: tuple[str, ...] = ("ffill", "mean", "zero", "interpolate", "mask", "drop")
ScalerKind = Literal["standard", "minmax", "robust", "none"]
DuplicatePolicy = Literal["error", "first", "last", "mean"]
NonFinitePolicy = Literal["error", "missing"]
MAX_INTERPOLATE_HOLD = 100_000
"""Rows an interpolating column may wait for its next observation before falling back to forward fill."""
ROBUST_SAMPLE = 200_000
"""Values per column kept (reservoir sample) to estimate median and IQR in bounded memory."""


def series_key(values: tuple[Any, ...]) -> str:
    """A series' name from its key columns' values (``CA``, or ``store 4|product 17``)."""
    return SERIES_KEY_SEPARATOR.join(str(v) for v in values)


def series_statistic(values: np.ndarray, scaler: str) -> tuple[float, float]:
    """(centre, scale) of one series' column by the scaler's statistic over its observed values; a constant or empty
    column scales by 1 (it carries no information, and stays finite)."""
    observed = values[np.isfinite(values)]
    if not observed.size or scaler == "none":
        return 0.0, 1.0
    if scaler == "minmax":
        centre, scale = float(observed.min()), float(observed.max() - observed.min())
    elif scaler == "robust":
        q1, med, q3 = np.quantile(observed, [0.25, 0.5, 0.75])
        centre, scale = float(med), float(q3 - q1)
    else:
        centre, scale = float(observed.mean()), float(observed.std())
    return centre, scale if scale > 0 else 1.0


def step_of(frequency: str) -> pd.Timedelta:
    """A fixed step from a pandas offset alias (1h, 15min); calendar offsets such as 1M have no fixed length."""
    import pandas as pd  # here: a trial reads the fitted preparation without paying for pandas

    return pd.Timedelta(frequency if frequency[0].isdigit() else f"1{frequency}")


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
    holidays: str | None = None
    """A public-holiday calendar (``US``): 0/1 features for the row's day and for each of the next ``horizon``
    steps, which the calendar knows in advance (needs ``frequency``)."""
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
    non_finite: NonFinitePolicy = "error"
    """``inf`` or ``-inf`` in a numeric column: ``error`` (refuse, naming the column, the count and the first row) or
    ``missing`` (a gap, handled by the column's missing-value policy; the count is printed)."""
    text_encoding: str = "utf-8"
    """Text encoding of a CSV or JSON Lines source (latin-1, cp1252, ...); bytes that do not decode are refused,
    naming the file and the offset."""
    coerce: bool = False
    """A value in a numeric column that is not a number (a word, ``1,234``): refused with one line naming the
    column, the count and the first row (False), or made a gap like a missing value (True; the count is printed)."""
    horizon: int = 1
    """Steps ahead to forecast (1 = next hour for hourly data)."""
    season_length: int = 24
    """Steps in one season, for the seasonal-naive baseline (24 for hourly data)."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Chronological train/val/test fractions."""
    max_window: int = 168
    """Longest window trials may use; val and test carry this much context from the previous split."""
    series: tuple[str, ...] = ()
    """Panels: the column(s) whose combination names a series (``state``; ``store,product``). Empty: one series."""
    scale_per_series: bool = True
    """Panels: scale each series' numeric columns by that series' own training rows (with ``scaler``'s statistic)
    before the shared preprocessing, so series of very different size train one model alike."""
    static: tuple[str, ...] = ()
    """Panels: static covariates, columns constant within a series (a series column may be one: the series'
    identity). Each is also listed in ``categorical`` and is always a learned embedding, whatever
    ``categorical_encoding`` says, with code 0 for a value training never saw: a new series still forecasts."""

    @property
    def is_panel(self) -> bool:
        return bool(self.series)

    def encoding(self, column: str) -> str:
        """How a categorical column is encoded: a static column is always an embedding (ordinal codes), so that a
        panel of thousands of series does not become thousands of 0/1 features."""
        return "ordinal" if column in self.static else self.categorical_encoding

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
        if self.non_finite not in ("error", "missing"):
            raise ValueError(f"data.non_finite = {self.non_finite!r}: must be error or missing")
        self._validate_series()
        if self.holidays is not None:
            from trainables.data.holidays import HOLIDAY_CALENDARS

            if self.holidays not in HOLIDAY_CALENDARS:
                raise ValueError(f"data.holidays = {self.holidays!r}: must be one of {', '.join(HOLIDAY_CALENDARS)}")
            if self.frequency is None:
                raise ValueError("data.holidays: needs data.frequency (--frequency 1D), the step the leads look ahead")
        if self.frequency is not None:
            try:
                step_of(self.frequency)
            except (ValueError, TypeError):
                raise ValueError(
                    f"data.frequency = {self.frequency!r}: not a fixed pandas offset such as 1h or 1min"
                ) from None

    def _validate_series(self) -> None:
        if self.static and not self.series:
            raise ValueError(f"data.static = {list(self.static)}: static covariates need a panel (data.series)")
        if not self.series:
            return
        if len(set(self.series)) != len(self.series):
            raise ValueError(f"data.series = {list(self.series)}: a column is named twice")
        if len(set(self.static)) != len(self.static):
            raise ValueError(f"data.static = {list(self.static)}: a column is named twice")
        for col in self.static:
            if col not in self.categorical:
                raise ValueError(f"data.static: {col!r} must also be a categorical column {list(self.categorical)}")
        for col in self.series:
            role = (
                "numeric"
                if col in self.numeric
                else "categorical"
                if col in self.categorical and col not in self.static
                else "time"
                if col in self.time_columns
                else None
            )
            if role:
                raise ValueError(
                    f"data.series: {col!r} is also a {role} column; a series column is only a key, or a static "
                    "covariate (data.static)"
                )
        if self.pca:
            raise ValueError("data.pca: not available for panels (data.series) yet; leave it 0")

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
        for key in ("time_columns", "numeric", "categorical", "split", "lags", "rolling", "diffs", "series", "static"):
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
        """(feature index, codes incl. 0 for unseen) of each categorical column encoded as ordinal codes (static
        columns always are): the model embeds these."""
        cfg = self.config
        return tuple(
            (self.feature_names.index(code_name(c)), len(cats) + 1)
            for c, cats in self.categories.items()
            if cfg.encoding(c) == "ordinal"
        )

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
