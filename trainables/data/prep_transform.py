"""Forecasting preprocessing, transforming rows with what was fitted: fill, scale, encode, engineer, carrying fill and
lag state across batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trainables.data.holidays import holiday_features
from trainables.data.prep_changes import ChangeFeatures, category_strings
from trainables.data.prep_config import (
    MAX_INTERPOLATE_HOLD,
    OBSERVED,
    ROW,
    TARGET,
    TARGET_RAW,
    TIME,
    FittedPrep,
    ForecastPrepConfig,
    code_name,
    step_of,
)
from trainables.data.prep_rows import RowStream, drain, stream_rows


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
            if cfg.encoding(col) == "ordinal":
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
        if cfg.holidays and cfg.frequency:
            cols.update(holiday_features(frame[TIME], cfg.holidays, step_of(cfg.frequency), cfg.horizon))
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
