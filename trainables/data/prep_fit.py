"""Forecasting preprocessing, fitting on the training rows: moments, scalers, categories, change features, PCA;
in bounded memory, batch by batch."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trainables.data.holidays import holiday_names
from trainables.data.prep_changes import ChangeFeatures, category_strings, change_names
from trainables.data.prep_config import ROBUST_SAMPLE, ROW, TIME, FittedPrep, ForecastPrepConfig, code_name
from trainables.data.prep_rows import drain
from trainables.data.prep_transform import Transformer


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

    def new_series(self) -> None:
        """The rows that follow belong to another series: change features start afresh (no change is computed
        across two series)."""
        self._changes = ChangeFeatures(self.cfg)

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
    for c, cats in fitted.categories.items():
        names += [code_name(c)] if cfg.encoding(c) == "ordinal" else [f"{c}={cat}" for cat in cats]
    names += [f"{cfg.target}__lag{k}" for k in cfg.lags]
    for w in cfg.rolling:
        names += [f"{cfg.target}__mean{w}", f"{cfg.target}__std{w}"]
    names += change_names(cfg)
    if cfg.calendar:
        names += ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos"]
    if cfg.holidays:
        names += holiday_names(cfg.horizon)
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
