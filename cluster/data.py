"""Data preparation on the driver: raw rows -> fitted preprocessing -> Parquet shards + manifest, written once."""

from __future__ import annotations

import hashlib
import lzma
from dataclasses import replace
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import pandas as pd
import pyarrow as pa

from trainables.data.forecast_prep import (
    CONTEXT,
    OBSERVED,
    TARGET,
    TARGET_RAW,
    TIME,
    ForecastPrepConfig,
    assemble_time,
    fit,
    split_bounds,
    transform,
)
from trainables.data.manifest import (
    FORMAT_VERSION,
    ColumnInfo,
    Manifest,
    ManifestError,
    SplitInfo,
    read_manifest,
    write_manifest,
)
from trainables.data.shards import write_shards
from trainables.storage import Location

DEFAULT_DATASET = "beijing-pm25"
DEFAULT_SHARD_ROWS = 8192


def bundled_beijing_csv() -> bytes:
    """The Beijing PM2.5 CSV shipped inside the package (CC BY 4.0; see cluster/datasets/ATTRIBUTION.md)."""
    blob = (resources.files("cluster") / "datasets" / "beijing_pm25_hourly.csv.xz").read_bytes()
    return lzma.decompress(blob)


def read_csv_bytes(data: bytes, name: str) -> pd.DataFrame:
    import io

    try:
        return pd.read_csv(io.BytesIO(data), na_values=["NA", "?", ""], keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"data: {name} is not a readable CSV: {str(exc).splitlines()[0]}") from None


def _split_table(frame: pd.DataFrame, start: int, end: int, context: int) -> pa.Table:
    lo = max(0, start - context)
    part = frame.iloc[lo:end].copy()
    part[CONTEXT] = [i < start for i in range(lo, end)]
    return pa.Table.from_pandas(part, preserve_index=False)


def prepare_forecast(
    raw: pd.DataFrame,
    cfg: ForecastPrepConfig,
    dest: Location,
    *,
    name: str,
    source: dict[str, Any],
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> Manifest:
    """Fit on the training split, transform every row, write shards per split, then the manifest (last)."""
    cfg.validate()
    df = assemble_time(raw, cfg)
    n = len(df)
    train_end, val_end = split_bounds(n, cfg)
    if train_end <= cfg.context_rows or val_end - train_end < 1 or n - val_end < 1:
        raise ValueError(f"data: {n} rows are too few for split {cfg.split} with max_window {cfg.max_window}")
    fitted = fit(df.iloc[:train_end], cfg)
    frame = transform(df, fitted)
    bounds = {
        "train": (0, train_end, 0),
        "val": (train_end, val_end, cfg.context_rows),
        "test": (val_end, n, cfg.context_rows),
    }
    splits: dict[str, SplitInfo] = {}
    for split, (start, end, context) in bounds.items():
        table = _split_table(frame, start, end, context)
        shards = write_shards(dest, split, table, shard_rows)
        splits[split] = SplitInfo(
            rows=end - start,
            context_rows=min(context, start),
            start=pd.Timestamp(df[TIME].iloc[start]).isoformat(),
            end=pd.Timestamp(df[TIME].iloc[end - 1]).isoformat(),
            shards=shards,
        )
    step = pd.Timedelta(df[TIME].diff().median())
    columns = (
        ColumnInfo(name=TIME, role="time", dtype="timestamp[ns]", description="row time"),
        *(ColumnInfo(name=f, role="feature", dtype="float32") for f in fitted.feature_names),
        ColumnInfo(name=TARGET, role="target", dtype="float32", description=f"{cfg.target}, scaled"),
        ColumnInfo(
            name=TARGET_RAW,
            role="target_raw",
            dtype="float64",
            description=f"{cfg.target}, original units, forward-filled",
        ),
        ColumnInfo(name=OBSERVED, role="observed", dtype="bool", description=f"{cfg.target} was observed (not filled)"),
        ColumnInfo(
            name=CONTEXT, role="context", dtype="bool", description="history from the previous split; never a target"
        ),
    )
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        task="forecast",
        name=name,
        source={**source, "rows": n, "missing_target": int(df[cfg.target].isna().sum())},
        columns=columns,
        preprocessing={"fitted": fitted.to_dict(), "created": datetime.now(timezone.utc).isoformat()},
        task_params={
            "target": cfg.target,
            "horizon": cfg.horizon,
            "season_length": cfg.season_length,
            "season_steps": cfg.season_steps,
            "max_window": cfg.max_window,
            "step_seconds": float(step.total_seconds()),
        },
        splits=splits,
    )
    write_manifest(dest, manifest)
    return manifest


def prepare_default(dest: Location, *, horizon: int = 1, max_window: int = 168) -> Manifest:
    """Prepare the bundled Beijing PM2.5 data at ``dest`` unless an identical preparation is already there."""
    cfg = replace(ForecastPrepConfig(), horizon=horizon, max_window=max_window)
    try:
        existing = read_manifest(dest)
        fitted_cfg = existing.preprocessing["fitted"]["config"]
        if fitted_cfg["horizon"] == horizon and fitted_cfg["max_window"] == max_window:
            return existing
    except ManifestError:
        pass
    data = bundled_beijing_csv()
    source = {"name": "beijing_pm25_hourly.csv (bundled)", "sha256": hashlib.sha256(data).hexdigest()}
    return prepare_forecast(
        read_csv_bytes(data, "beijing_pm25_hourly.csv"), cfg, dest, name=DEFAULT_DATASET, source=source
    )


__all__ = ["DEFAULT_DATASET", "bundled_beijing_csv", "prepare_default", "prepare_forecast", "read_csv_bytes"]
