"""Panels: many series of one kind (``--series-column``), prepared for one global model.

Every series goes through the single-series stages with state of its own (time order, duplicates, gaps, fills, lags,
change features never reach from one series into the next), is split at cut-off times shared by all series (no
series' test period is another's training period), is scaled by its own training rows when ``scale_per_series``,
and lands in shards that hold whole series. Series too short for the longest window are dropped and counted.

A source larger than the memory budget is cut into parts of whole series first (``cluster/prep/spill.py``), and
every pass (cut-offs, fitting, writing) takes one part at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.plan.storage import probe
from cluster.prep.output import remove_written
from cluster.prep.sources import DEFAULT_BATCH_ROWS
from cluster.prep.spill import SPILL_PARTITIONS, PanelParts, panel_parts
from trainables.data.budget import budget_bytes
from trainables.data.forecast_prep import (
    CONTEXT,
    NAIVE_SCALE,
    OBSERVED,
    ROW,
    SERIES,
    TARGET,
    TARGET_CENTRE,
    TARGET_RAW,
    TARGET_SCALE,
    TIME,
    FittedPrep,
    Fitter,
    ForecastPrepConfig,
    RowStream,
    Transformer,
    drain,
    parse_time,
    series_key,
    series_statistic,
)
from trainables.data.manifest import (
    FORMAT_VERSION,
    SPLITS,
    ColumnInfo,
    Manifest,
    ShardInfo,
    SplitInfo,
    write_manifest,
)
from trainables.data.shards import write_shard
from trainables.storage import Location

log = logging.getLogger(__name__)

DROP_REASONS = ("shorter than the longest window", "no validation rows", "no test rows")
SHOWN_DROPPED = 20
"""Dropped series named in the manifest per reason (all are counted)."""


@dataclass
class _Series:
    key: str
    rows: pd.DataFrame | None
    """After the row stage: in time order, de-duplicated, gap-filled; ``__row__`` counts from 0 in the series. None
    between passes when the panel is spilled."""
    part: int = 0
    length: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    train: int = 0
    val: int = 0
    test: int = 0
    centre: dict[str, float] | None = None
    scale: dict[str, float] | None = None
    non_finite: int = 0
    """Infinite values made gaps (``non_finite = "missing"``)."""
    coerced: int = 0
    """Values that are not numbers made gaps (``coerce``)."""
    naive_mae: float = float("nan")
    """In-sample seasonal-naive MAE of the target on the training rows (units): what MASE divides by."""


def split_series(raw: pd.DataFrame, cfg: ForecastPrepConfig, part: int = 0) -> list[_Series]:
    """Each series of ``raw`` (whole series only) through its own row stage; errors name the series."""
    out: list[_Series] = []
    for values, group in raw.groupby(list(cfg.series), sort=True):
        key = series_key(values if isinstance(values, tuple) else (values,))
        if len(group) == 1:
            raise ValueError(f"data: series {key!r} has one row; a series needs history and targets")
        _check_static(group, cfg, key)
        stream = RowStream(cfg, check_columns=False)
        try:
            ordered = _resolve_duplicates(group.reset_index(drop=True), cfg, key, int(group.index[0]))
            rows = pd.concat([*drain(stream, [ordered])], ignore_index=True)
        except ValueError as exc:
            raise ValueError(f"data: series {key!r}: {str(exc).removeprefix('data: ')}") from None
        times = rows[TIME]
        out.append(
            _Series(
                key=key,
                rows=rows,
                part=part,
                length=len(rows),
                first=times.iloc[0],
                last=times.iloc[-1],
                non_finite=stream.non_finite,
                coerced=stream.coerced,
            )
        )
    return out


class _Rows:
    """The row stage's output, part by part: computed once and kept for a panel held in memory; recomputed from
    the spill file on each pass otherwise (cheaper in memory than a second copy on disk, and the row stage is
    deterministic), onto the same ``_Series`` records."""

    def __init__(self, parts: PanelParts, cfg: ForecastPrepConfig) -> None:
        self.parts, self.cfg = parts, cfg
        self.records: dict[str, _Series] = {}

    def load(self, part: int) -> list[_Series]:
        if not self.parts.spilled and self.records:
            return list(self.records.values())
        found = []
        for fresh in split_series(self.parts.read(part), self.cfg, part):
            record = self.records.setdefault(fresh.key, fresh)
            record.rows = fresh.rows
            found.append(record)
        return found

    def release(self, series: list[_Series]) -> None:
        if self.parts.spilled:
            for s in series:
                s.rows = None


def _check_static(group: pd.DataFrame, cfg: ForecastPrepConfig, key: str) -> None:
    """A static covariate holds one value through a series (a value that changes is a time-varying input: list it
    in ``--categorical`` alone)."""
    for col in cfg.static:
        if col in cfg.series:
            continue
        values = group[col].dropna().unique()
        if len(values) > 1:
            raise ValueError(
                f"data.static: column {col!r} changes within series {key!r} ({values[0]!r}, {values[1]!r}); a "
                "static covariate is constant per series (list a time-varying column in --categorical only)"
            )


def _resolve_duplicates(group: pd.DataFrame, cfg: ForecastPrepConfig, key: str, first_row: int) -> pd.DataFrame:
    """A series' rows with its repeated times brought together for the duplicate policy (a source may repeat a
    (series, time) pair anywhere in the series: births repeats a day a few rows later). Time must still go forward
    through the rows whose time is not repeated: a series out of order for any other reason is refused, not
    sorted."""
    times = parse_time(group, cfg, first_row)
    repeated = times.duplicated(keep=False)
    if not repeated.any():
        return group
    if cfg.duplicates == "error":
        first = times[repeated].iloc[0]
        raise ValueError(
            f"duplicate time {first} ({int(times.duplicated().sum())} repeated rows in this series); choose "
            "--duplicates first|last|mean"
        )
    single = times[~repeated].to_numpy()
    back = np.flatnonzero(np.diff(single) < np.timedelta64(0))
    if back.size:
        raise ValueError(f"time goes backwards at {pd.Timestamp(single[back[0] + 1])}; sort the series by time")
    return group.iloc[np.argsort(times.to_numpy(), kind="stable")].reset_index(drop=True)


def cut_offs(times: np.ndarray, cfg: ForecastPrepConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The first validation and the first test time, shared by every series: the split fractions of the panel's
    distinct timestamps (``times``, sorted and unique)."""
    n = len(times)
    train_end = round(n * cfg.split[0])
    val_end = round(n * (cfg.split[0] + cfg.split[1]))
    if not 0 < train_end < val_end < n:
        raise ValueError(f"data: {n} distinct times are too few for split {cfg.split}")
    return pd.Timestamp(times[train_end]), pd.Timestamp(times[val_end])


def assign_splits(series: list[_Series], cuts: tuple[pd.Timestamp, pd.Timestamp]) -> None:
    for s in series:
        assert s.rows is not None
        times = s.rows[TIME].to_numpy()
        s.train = int((times < cuts[0].to_datetime64()).sum())
        s.test = int((times >= cuts[1].to_datetime64()).sum())
        s.val = len(times) - s.train - s.test


def drop_reason(s: _Series, cfg: ForecastPrepConfig) -> str | None:
    if s.train <= cfg.context_rows:
        return DROP_REASONS[0]
    if s.val < 1:
        return DROP_REASONS[1]
    if s.test < 1:
        return DROP_REASONS[2]
    return None


def naive_mae(s: _Series, cfg: ForecastPrepConfig) -> float:
    """Mean absolute change over one season within the training rows, where both ends were observed; NaN if there
    is no such pair or the series never changes (MASE is then undefined for it)."""
    assert s.rows is not None
    values = pd.to_numeric(s.rows[cfg.target].iloc[: s.train], errors="coerce").to_numpy(dtype=np.float64)
    m = cfg.season_length
    if len(values) <= m:
        return float("nan")
    changes = np.abs(values[m:] - values[:-m])
    changes = changes[np.isfinite(changes)]
    return float(changes.mean()) if changes.size and changes.mean() > 0 else float("nan")


def scale_series(s: _Series, cfg: ForecastPrepConfig) -> pd.DataFrame:
    """The series' numeric columns centred and scaled by its own training rows (nothing else is looked at). The
    statistics are fitted on the first call (the fitting pass) and reused on the next (the writing pass)."""
    assert s.rows is not None
    out = s.rows.copy()
    fit = s.centre is None or s.scale is None
    centres, scales = ({}, {}) if fit else (s.centre or {}, s.scale or {})
    for col in cfg.numeric:
        values = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if fit:
            centres[col], scales[col] = series_statistic(values[: s.train], cfg.scaler)
        out[col] = (values - centres[col]) / scales[col]
    s.centre, s.scale = centres, scales
    return out


class _SeriesSink:
    """A split's shards: whole series per shard, a shard closed when the next series would overflow it; a series
    larger than a shard alone continues in the next one."""

    def __init__(self, root: Location, split: str, shard_rows: int) -> None:
        self.root, self.split, self.shard_rows = root, split, shard_rows
        self.written: list[ShardInfo] = []
        self._frames: list[pd.DataFrame] = []
        self._keys: list[str] = []
        self._rows = 0

    def add(self, key: str, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        if self._rows and self._rows + len(frame) > self.shard_rows:
            self._flush()
        for start in range(0, len(frame), self.shard_rows):
            piece = frame.iloc[start : start + self.shard_rows]
            self._frames.append(piece)
            self._keys.append(key)
            self._rows += len(piece)
            if self._rows >= self.shard_rows:
                self._flush()

    def close(self) -> None:
        if self._rows:
            self._flush()

    def _flush(self) -> None:
        frame = pd.concat(self._frames, ignore_index=True).drop(columns=[ROW])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        info = write_shard(self.root, self.split, len(self.written), table)
        self.written.append(dataclasses.replace(info, series=tuple(dict.fromkeys(self._keys))))
        self._frames, self._keys, self._rows = [], [], 0


def _transformed(s: _Series, scaled: pd.DataFrame, fitted: FittedPrep, code: int) -> pd.DataFrame:
    """The series through the shared transformation (fresh fill/lag state), back in target units where it counts."""
    frame = pd.concat([*drain(Transformer(fitted), [scaled])], ignore_index=True)
    target = fitted.config.target
    c_s, s_s = (s.centre or {}).get(target, 0.0), (s.scale or {}).get(target, 1.0)
    c_g, s_g = fitted.centre[target], fitted.scale[target]
    frame[TARGET_RAW] = frame[TARGET_RAW].to_numpy() * s_s + c_s
    frame[TARGET_SCALE] = s_g * s_s
    frame[TARGET_CENTRE] = c_g * s_s + c_s
    frame[SERIES] = np.int32(code)
    frame[NAIVE_SCALE] = s.naive_mae
    return frame


def prepare_panel(
    source: str,
    cfg: ForecastPrepConfig,
    dest: Location,
    *,
    name: str,
    source_info: dict[str, Any] | None = None,
    shard_rows: int,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    memory_budget: int | None = None,
    partitions: int = SPILL_PARTITIONS,
) -> Manifest:
    """Prepare a panel (``cfg.series`` set) from ``source`` into ``dest``; the caller has checked ``dest``. A source
    whose rows would take more than ``memory_budget`` (default: a quarter of RAM) is spilled to local disk in
    ``partitions`` parts of whole series first."""
    probe(dest)
    budget = budget_bytes(memory_budget)
    with panel_parts(source, cfg, budget, batch_rows=batch_rows, partitions=partitions) as parts:
        if parts.spilled:
            log.info("panel spilled to %d parts under %s (memory budget %d bytes)", len(parts), parts.spill_dir, budget)
        rows = _Rows(parts, cfg)
        cuts = cut_offs(_distinct_times(rows), cfg)
        kept, dropped, fitted = _fit(rows, cfg, cuts)
        sinks = {split: _SeriesSink(dest, split, shard_rows) for split in SPLITS}
        try:
            _write(rows, cfg, kept, fitted, sinks)
            manifest = _manifest(
                cfg,
                fitted,
                kept,
                dropped,
                sinks,
                cuts,
                name,
                source,
                source_info,
                parts.rows_in,
                {
                    "non_finite": sum(s.non_finite for s in rows.records.values()),
                    "coerced": parts.coerced + sum(s.coerced for s in rows.records.values()),
                },
            )
            write_manifest(dest, manifest)
        except BaseException:
            remove_written(dest, [shard for sink in sinks.values() for shard in sink.written])
            raise
    return manifest


def _distinct_times(rows: _Rows) -> np.ndarray:
    """Pass 1: every series through its row stage (its errors raised here, before anything is written), and the
    panel's distinct times."""
    times = np.array([], dtype="datetime64[ns]")
    for part in range(len(rows.parts)):
        found = rows.load(part)
        times = np.union1d(times, np.concatenate([s.rows[TIME].to_numpy() for s in found if s.rows is not None]))
        rows.release(found)
    return times


def _fit(
    rows: _Rows, cfg: ForecastPrepConfig, cuts: tuple[pd.Timestamp, pd.Timestamp]
) -> tuple[list[_Series], dict[str, list[str]], FittedPrep]:
    """Pass 2: splits, the series kept and why the others are dropped, per-series scaling and MASE scale, and the
    shared preprocessing fitted on every kept series' training rows."""
    dropped: dict[str, list[str]] = {r: [] for r in DROP_REASONS}
    kept: list[_Series] = []
    fitter = Fitter(cfg, train_rows=np.iinfo(np.int64).max)
    total = 0
    for part in range(len(rows.parts)):
        found = rows.load(part)
        total += len(found)
        assign_splits(found, cuts)
        for s in found:
            reason = drop_reason(s, cfg)
            if reason is not None:
                dropped[reason].append(s.key)
                continue
            kept.append(s)
            scaled = scale_series(s, cfg) if cfg.scale_per_series else s.rows
            assert scaled is not None
            s.naive_mae = naive_mae(s, cfg)
            fitter.new_series()
            fitter.add(scaled.iloc[: s.train])
        rows.release(found)
    if not kept:
        raise ValueError(
            f"data: every one of the {total} series is too short: a series needs more than "
            f"{cfg.context_rows} training rows (max_window {cfg.max_window}, horizon {cfg.horizon}, season "
            f"{cfg.season_steps}) before {cuts[0].isoformat()}, and rows after it"
        )
    return kept, dropped, fitter.fitted()


def _write(
    rows: _Rows, cfg: ForecastPrepConfig, kept: list[_Series], fitted: FittedPrep, sinks: dict[str, _SeriesSink]
) -> None:
    """Pass 3: each kept series transformed and written, its training, validation and test rows to their splits
    (val and test with the series' own context)."""
    code_of = {s.key: code for code, s in enumerate(kept)}
    context = cfg.context_rows
    for part in range(len(rows.parts)):
        found = rows.load(part)
        for s in found:
            if s.key not in code_of:
                continue
            scaled = scale_series(s, cfg) if cfg.scale_per_series else s.rows
            assert scaled is not None
            frame = _transformed(s, scaled, fitted, code_of[s.key])
            bounds = {
                "train": (0, s.train, 0),
                "val": (s.train, s.train + s.val, context),
                "test": (s.train + s.val, len(frame), context),
            }
            for split, (start, end, ctx) in bounds.items():
                piece = frame.iloc[max(start - ctx, 0) : end].copy()
                piece[CONTEXT] = np.arange(max(start - ctx, 0), end) < start
                sinks[split].add(s.key, piece)
        rows.release(found)
    for sink in sinks.values():
        sink.close()


def _manifest(
    cfg: ForecastPrepConfig,
    fitted: FittedPrep,
    kept: list[_Series],
    dropped: dict[str, list[str]],
    sinks: dict[str, _SeriesSink],
    cuts: tuple[pd.Timestamp, pd.Timestamp],
    name: str,
    source: str,
    source_info: dict[str, Any] | None,
    rows_in: int,
    changed: dict[str, int],
) -> Manifest:
    lengths = np.array([s.length for s in kept])
    times = {
        "train": (min(s.first for s in kept if s.first is not None), cuts[0]),
        "val": (cuts[0], cuts[1]),
        "test": (cuts[1], max(s.last for s in kept if s.last is not None)),
    }
    splits = {
        split: SplitInfo(
            rows=sum({"train": s.train, "val": s.val, "test": s.test}[split] for s in kept),
            context_rows=0 if split == "train" else cfg.context_rows,
            start=pd.Timestamp(times[split][0]).isoformat(),
            end=pd.Timestamp(times[split][1]).isoformat(),
            shards=tuple(sinks[split].written),
        )
        for split in SPLITS
    }
    target = cfg.target
    columns = (
        ColumnInfo(name=TIME, role="time", dtype="timestamp[ns]", description="row time"),
        *(ColumnInfo(name=f, role="feature", dtype="float32") for f in fitted.feature_names),
        ColumnInfo(name=TARGET, role="target", dtype="float32", description=f"{target}, scaled"),
        ColumnInfo(name=TARGET_RAW, role="target_raw", dtype="float64", description=f"{target}, original units"),
        ColumnInfo(name=OBSERVED, role="observed", dtype="bool", description=f"{target} was observed"),
        ColumnInfo(name=CONTEXT, role="context", dtype="bool", description="history from the previous split"),
        ColumnInfo(name=SERIES, role="series", dtype="int32", description="series code (task_params.series.keys)"),
        ColumnInfo(name=TARGET_CENTRE, role="target_centre", dtype="float64", description="unscaling, per row"),
        ColumnInfo(name=TARGET_SCALE, role="target_scale", dtype="float64", description="unscaling, per row"),
        ColumnInfo(name=NAIVE_SCALE, role="naive_scale", dtype="float64", description="the series' MASE scale"),
    )
    return Manifest(
        format_version=FORMAT_VERSION,
        task="forecast",
        name=name,
        source={
            **(source_info or {"uri": source}),
            "rows_in": rows_in,
            "rows": int(lengths.sum()),
            **changed,
        },
        columns=columns,
        preprocessing={
            "fitted": fitted.to_dict(),
            "series_scaling": {
                s.key: {c: [s.centre[c], s.scale[c]] for c in cfg.numeric} for s in kept if s.centre and s.scale
            },
            "created": datetime.now(timezone.utc).isoformat(),
        },
        task_params={
            "target": target,
            "horizon": cfg.horizon,
            "season_length": cfg.season_length,
            "season_steps": cfg.season_steps,
            "max_window": cfg.max_window,
            "step_seconds": fitted.step_seconds,
            "series": {
                "columns": list(cfg.series),
                "count": len(kept),
                "keys": [s.key for s in kept],
                "rows": {
                    "min": int(lengths.min()),
                    "median": float(np.median(lengths)),
                    "max": int(lengths.max()),
                },
                "cut_offs": [cuts[0].isoformat(), cuts[1].isoformat()],
                "naive_mae": [None if np.isnan(s.naive_mae) else s.naive_mae for s in kept],
                "dropped": {reason: len(keys) for reason, keys in dropped.items() if keys},
                "dropped_series": {reason: keys[:SHOWN_DROPPED] for reason, keys in dropped.items() if keys},
            },
        },
        splits=splits,
    )


__all__ = ["DROP_REASONS", "cut_offs", "prepare_panel", "split_series"]
