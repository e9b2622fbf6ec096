"""Forecasting preprocessing: fit on the training split only, apply the same way to any rows.

Both data preparation and the exported model's ``predict`` call :func:`transform`, so raw rows at prediction time go
through exactly what training saw. Missing inputs are forward-filled (only the past is used: interpolation would leak
the next observation into the window) and flagged by an indicator feature; rows whose target was missing are never
used as targets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

TIME = "timestamp"
TARGET = "__target__"
TARGET_RAW = "__target_raw__"
OBSERVED = "__observed__"
CONTEXT = "__context__"


@dataclass(frozen=True, kw_only=True)
class ForecastPrepConfig:
    """How raw rows become model inputs; recorded in the manifest."""

    time_columns: tuple[str, ...] = ("year", "month", "day", "hour")
    """Columns assembled into the timestamp (or one column holding it)."""
    target: str = "pm2.5"
    """Column to forecast."""
    numeric: tuple[str, ...] = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir")
    """Numeric input columns (the target among them: its past is an input)."""
    categorical: tuple[str, ...] = ("cbwd",)
    """Categorical input columns, one-hot encoded with categories seen in training."""
    missing: Literal["ffill"] = "ffill"
    """Missing inputs: carry the last observation forward (leading gaps take the training mean) and add an indicator."""
    scaler: Literal["standard", "minmax", "none"] = "standard"
    """Scaling of numeric columns, fitted on the training split only."""
    calendar: bool = True
    """Add hour-of-day, day-of-week and day-of-year as sin/cos pairs."""
    horizon: int = 1
    """Steps ahead to forecast (1 = next hour for hourly data)."""
    season_length: int = 24
    """Steps in one season, for the seasonal-naive baseline (24 for hourly data)."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Chronological train/val/test fractions."""
    max_window: int = 168
    """Longest window trials may use; val and test carry this much context from the previous split."""

    def validate(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"data.horizon = {self.horizon}: must be >= 1")
        if self.season_length < 1:
            raise ValueError(f"data.season_length = {self.season_length}: must be >= 1")
        if self.max_window < 1:
            raise ValueError(f"data.max_window = {self.max_window}: must be >= 1")
        if len(self.split) != 3 or any(f <= 0 for f in self.split) or not math.isclose(sum(self.split), 1.0):
            raise ValueError(f"data.split = {self.split}: three positive fractions summing to 1, e.g. 0.7,0.15,0.15")
        if self.target not in self.numeric:
            raise ValueError(f"data.target = {self.target!r}: must also be one of data.numeric {list(self.numeric)}")

    @property
    def context_rows(self) -> int:
        """History a val/test target needs: the longest window plus the horizon, and one season for the baseline."""
        return max(self.max_window + self.horizon - 1, self.season_steps)

    @property
    def season_steps(self) -> int:
        """Lag of the seasonal-naive forecast: the same phase of the latest season seen at forecast time."""
        return self.season_length * math.ceil(self.horizon / self.season_length)


@dataclass(frozen=True, kw_only=True)
class FittedPrep:
    """Parameters learned from the training split; with the config they define :func:`transform`."""

    config: ForecastPrepConfig
    centre: dict[str, float]
    """Per numeric column: mean (standard) or minimum (minmax) of the training split."""
    scale: dict[str, float]
    """Per numeric column: standard deviation or range of the training split."""
    fill: dict[str, float]
    """Per numeric column: the training mean, for gaps before the first observation."""
    categories: dict[str, list[str]] = field(default_factory=dict)
    """Per categorical column: categories seen in training (others encode as all zeros)."""
    indicators: list[str] = field(default_factory=list)
    """Numeric columns that get a 0/1 "was missing" feature: the target, and any column with gaps in training."""
    feature_names: list[str] = field(default_factory=list)

    @property
    def target_index(self) -> int:
        """Position of the (scaled, filled) target among the features, for the residual head."""
        return self.feature_names.index(self.config.target)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FittedPrep:
        cfg = dict(raw["config"])
        for key in ("time_columns", "numeric", "categorical", "split"):
            cfg[key] = tuple(cfg[key])
        return cls(
            config=ForecastPrepConfig(**cfg),
            centre={k: float(v) for k, v in raw["centre"].items()},
            scale={k: float(v) for k, v in raw["scale"].items()},
            fill={k: float(v) for k, v in raw["fill"].items()},
            categories={k: list(v) for k, v in raw["categories"].items()},
            indicators=list(raw["indicators"]),
            feature_names=list(raw["feature_names"]),
        )


def assemble_time(df: pd.DataFrame, cfg: ForecastPrepConfig) -> pd.DataFrame:
    """Add the timestamp column, sort by it, and refuse duplicate timestamps."""
    missing = [c for c in (*cfg.time_columns, *cfg.numeric, *cfg.categorical) if c not in df.columns]
    if missing:
        raise ValueError(f"data: column(s) {missing} not in the source; it has {list(df.columns)}")
    if len(cfg.time_columns) == 1:
        ts = pd.to_datetime(df[cfg.time_columns[0]], errors="coerce")
    else:
        parts = {name: df[col] for name, col in zip(("year", "month", "day", "hour"), cfg.time_columns, strict=False)}
        ts = pd.to_datetime(pd.DataFrame(parts), errors="coerce")
    if ts.isna().any():
        bad = int(ts.isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"data: row {bad} has an invalid timestamp in {list(cfg.time_columns)}")
    out = df.assign(**{TIME: ts}).sort_values(TIME, kind="stable").reset_index(drop=True)
    dup = out[TIME].duplicated()
    if dup.any():
        raise ValueError(f"data: duplicate timestamp {out[TIME][dup].iloc[0]} ({int(dup.sum())} duplicates)")
    return out


def split_bounds(n_rows: int, cfg: ForecastPrepConfig) -> tuple[int, int]:
    """End of train and end of val, as row counts."""
    train_end = round(n_rows * cfg.split[0])
    val_end = round(n_rows * (cfg.split[0] + cfg.split[1]))
    return train_end, val_end


def fit(train: pd.DataFrame, cfg: ForecastPrepConfig) -> FittedPrep:
    """Learn scaling, fill values and categories from the training split alone."""
    centre: dict[str, float] = {}
    scale: dict[str, float] = {}
    fill: dict[str, float] = {}
    for col in cfg.numeric:
        values = pd.to_numeric(train[col], errors="coerce").astype("float64")
        if values.notna().sum() == 0:
            raise ValueError(f"data: numeric column {col!r} has no value in the training split")
        fill[col] = float(values.mean())
        if cfg.scaler == "standard":
            centre[col], scale[col] = float(values.mean()), float(values.std(ddof=0))
        elif cfg.scaler == "minmax":
            centre[col], scale[col] = float(values.min()), float(values.max() - values.min())
        else:
            centre[col], scale[col] = 0.0, 1.0
        if not scale[col] > 0:
            scale[col] = 1.0  # a constant column carries no information; keep it finite
    categories = {col: sorted(str(v) for v in train[col].dropna().unique()) for col in cfg.categorical}
    indicators = [c for c in cfg.numeric if c == cfg.target or pd.to_numeric(train[c], errors="coerce").isna().any()]
    fitted = FittedPrep(config=cfg, centre=centre, scale=scale, fill=fill, categories=categories, indicators=indicators)
    names = list(_feature_frame(train.head(0), fitted).columns)
    return FittedPrep(
        config=cfg,
        centre=centre,
        scale=scale,
        fill=fill,
        categories=categories,
        indicators=indicators,
        feature_names=names,
    )


def _feature_frame(df: pd.DataFrame, fitted: FittedPrep) -> pd.DataFrame:
    cfg = fitted.config
    cols: dict[str, Any] = {}
    for col in cfg.numeric:
        raw = pd.to_numeric(df[col], errors="coerce").astype("float64")
        filled = raw.ffill().fillna(fitted.fill[col])
        cols[col] = (filled - fitted.centre[col]) / fitted.scale[col]
    for col in fitted.indicators:
        cols[f"{col}__missing"] = pd.to_numeric(df[col], errors="coerce").isna().astype("float64")
    for col, cats in fitted.categories.items():
        values = df[col].astype("string")
        for cat in cats:
            cols[f"{col}={cat}"] = (values == cat).fillna(False).astype("float64")
    if cfg.calendar:
        ts = df[TIME].dt
        for name, value, period in (
            ("hour", ts.hour, 24.0),
            ("dow", ts.day_of_week, 7.0),
            ("doy", ts.day_of_year - 1, 365.25),
        ):
            angle = 2.0 * np.pi * value.astype("float64") / period
            cols[f"{name}_sin"] = np.sin(angle)
            cols[f"{name}_cos"] = np.cos(angle)
    return pd.DataFrame(cols, index=df.index)


def transform(df: pd.DataFrame, fitted: FittedPrep) -> pd.DataFrame:
    """Time-sorted rows -> features (float32), scaled target, raw target and observed flag, in that order."""
    features = _feature_frame(df, fitted)
    if fitted.feature_names and list(features.columns) != fitted.feature_names:
        raise ValueError("data: features differ from the fitted ones (columns or categories changed)")
    cfg = fitted.config
    raw_target = pd.to_numeric(df[cfg.target], errors="coerce").astype("float64")
    out = features.astype("float32")
    out.insert(0, TIME, df[TIME].to_numpy())
    out[TARGET] = features[cfg.target].astype("float32")
    out[TARGET_RAW] = raw_target.ffill().fillna(fitted.fill[cfg.target])
    out[OBSERVED] = raw_target.notna()
    return out


def unscale_target(values: np.ndarray, fitted: FittedPrep) -> np.ndarray:
    """Scaled target -> original units."""
    col = fitted.config.target
    return values * fitted.scale[col] + fitted.centre[col]


__all__ = [
    "CONTEXT",
    "OBSERVED",
    "TARGET",
    "TARGET_RAW",
    "TIME",
    "FittedPrep",
    "ForecastPrepConfig",
    "assemble_time",
    "fit",
    "split_bounds",
    "transform",
    "unscale_target",
]
