"""Data preparation on the driver: source -> fitted preprocessing -> Parquet shards + manifest, written once.

Forecasting sources stream through in batches (memory stays bounded whatever the source's size): one pass counts
rows, one fits statistics on the training rows only, one (with PCA) fits the projection, one writes the shards. The
manifest is written last; if anything fails, what was written is removed, so a URI never holds half a dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import pandas as pd
import pyarrow as pa

from cluster.plan.storage import probe
from cluster.prep.output import DatasetExistsError, remove_written
from cluster.prep.panel import prepare_panel
from cluster.prep.sources import DEFAULT_BATCH_ROWS, check_encoding, iter_batches
from trainables.data.forecast_prep import (
    CONTEXT,
    OBSERVED,
    ROW,
    TARGET,
    TARGET_RAW,
    TIME,
    Fitter,
    ForecastPrepConfig,
    RowStream,
    Transformer,
    drain,
    fit_pca,
    split_bounds,
    stream_rows,
)
from trainables.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    ColumnInfo,
    Manifest,
    ManifestError,
    ShardInfo,
    SplitInfo,
    read_manifest,
    write_manifest,
)
from trainables.data.shards import write_shard
from trainables.storage import Location, exists

DEFAULT_DATASET = "beijing-pm25"
DEFAULT_SHARD_ROWS = 8192


def bundled_beijing_path() -> str:
    """The Beijing PM2.5 CSV shipped inside the package (CC BY 4.0; see cluster/datasets/ATTRIBUTION.md)."""
    return str(resources.files("cluster") / "datasets" / "beijing_pm25_hourly.csv.xz")


def bundled_beijing_csv() -> bytes:
    import lzma

    with open(bundled_beijing_path(), "rb") as f:
        return lzma.decompress(f.read())


def read_csv_bytes(data: bytes, name: str, encoding: str = "utf-8") -> pd.DataFrame:
    import io

    check_encoding(encoding)
    try:
        return pd.read_csv(io.BytesIO(data), na_values=["NA", "?", ""], keep_default_na=True, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"data: {name} is not valid {encoding} text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "name its encoding, e.g. --encoding latin-1"
        ) from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"data: {name} is not a readable CSV: {str(exc).splitlines()[0]}") from None


def file_sha256(uri: str) -> str:
    """Checksum of a source, streamed (recorded in the manifest as provenance)."""
    from trainables.storage import resolve

    loc = resolve(uri)
    digest = hashlib.sha256()
    with loc.fs.open_input_stream(loc.path) as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _ShardSink:
    """Buffers one split's rows and writes a shard whenever ``shard_rows`` are buffered."""

    root: Location
    split: str
    shard_rows: int
    written: list[ShardInfo] = field(default_factory=list)
    _frames: list[pd.DataFrame] = field(default_factory=list)
    _rows: int = 0

    def add(self, frame: pd.DataFrame) -> None:
        if len(frame):
            self._frames.append(frame)
            self._rows += len(frame)
        while self._rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def close(self) -> None:
        while self._rows:
            self._flush(min(self._rows, self.shard_rows))

    def _flush(self, rows: int) -> None:
        frame = pd.concat(self._frames, ignore_index=True)
        head, rest = frame.iloc[:rows], frame.iloc[rows:]
        self._frames, self._rows = ([rest] if len(rest) else []), len(rest)
        table = pa.Table.from_pandas(head.drop(columns=[ROW]), preserve_index=False)
        self.written.append(write_shard(self.root, self.split, len(self.written), table))


@dataclass
class PrepareReport:
    """What preparation saw, for the manifest and the CLI."""

    rows_in: int = 0
    rows: int = 0
    duplicates: int = 0
    gaps_filled: int = 0
    dropped: int = 0
    non_finite: int = 0
    """Infinite values made gaps (``--non-finite missing``)."""
    coerced: int = 0
    """Values that are not numbers made gaps in numeric columns (``--coerce``)."""
    missing_values: dict[str, int] = field(default_factory=dict)
    """Per numeric column: values missing in the source (after gaps were filled with empty rows)."""


def _rows(source: str, cfg: ForecastPrepConfig, batch_rows: int, stream: RowStream) -> Iterator[pd.DataFrame]:
    batches = iter_batches(source, columns=stream.needed_columns, batch_rows=batch_rows, encoding=cfg.text_encoding)
    return stream_rows(batches, stream)


def _until(frames: Iterator[pd.DataFrame], end_row: int) -> Iterator[pd.DataFrame]:
    """Rows with ``__row__ < end_row``; stops reading the source once past it."""
    for frame in frames:
        yield frame[frame[ROW] < end_row]
        if int(frame[ROW].iloc[-1]) >= end_row - 1:
            return


def prepare_forecast(
    source: str,
    cfg: ForecastPrepConfig,
    dest: Location,
    *,
    name: str,
    source_info: dict[str, Any] | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    overwrite: bool = False,
    memory_budget: int | None = None,
) -> Manifest:
    """Prepare a forecasting dataset from ``source`` (local or s3://) into ``dest``. A single series streams through
    in batches whatever its size; a panel larger than ``memory_budget`` is spilled to local disk by series first."""
    cfg.validate()
    if shard_rows < 1:
        raise ValueError(f"data.shard_rows = {shard_rows}: must be >= 1")
    probe(dest)
    if exists(dest.child(MANIFEST_NAME)) and not overwrite:
        raise DatasetExistsError(f"{dest.uri} already holds a prepared dataset; use --overwrite to replace it")
    if cfg.is_panel:
        return prepare_panel(
            source,
            cfg,
            dest,
            name=name,
            source_info=source_info,
            shard_rows=shard_rows,
            batch_rows=batch_rows,
            memory_budget=memory_budget,
        )

    counting = RowStream(cfg)
    n = 0
    missing = dict.fromkeys(cfg.numeric, 0)
    for frame in _rows(source, cfg, batch_rows, counting):
        n += len(frame)
        for col in cfg.numeric:
            missing[col] += int(pd.to_numeric(frame[col], errors="coerce").isna().sum())
    report = PrepareReport(
        missing_values=missing,
        rows_in=counting.rows_in,
        rows=n,
        duplicates=counting.duplicates,
        gaps_filled=counting.gaps_filled,
        dropped=counting.dropped,
        non_finite=counting.non_finite,
        coerced=counting.coerced,
    )
    train_end, val_end = split_bounds(n, cfg)
    if train_end <= cfg.context_rows or val_end - train_end < 1 or n - val_end < 1:
        raise ValueError(
            f"data: {n} rows are too few for split {cfg.split} with max_window {cfg.max_window} "
            f"(the training split needs more than {cfg.context_rows} rows)"
        )

    fitter = Fitter(cfg, train_end)
    for frame in _until(_rows(source, cfg, batch_rows, RowStream(cfg)), train_end):
        fitter.add(frame)
    fitted = fitter.fitted()
    if cfg.pca:
        fitted = fit_pca(fitted, _until(_rows(source, cfg, batch_rows, RowStream(cfg)), train_end))

    bounds = {
        "train": (0, train_end, 0),
        "val": (train_end, val_end, cfg.context_rows),
        "test": (val_end, n, cfg.context_rows),
    }
    sinks = {split: _ShardSink(dest, split, shard_rows) for split in SPLITS}
    times: dict[str, list[str]] = {split: ["", ""] for split in SPLITS}
    try:
        transformer = Transformer(fitted)
        frames = _rows(source, cfg, batch_rows, RowStream(cfg))
        for frame in drain(transformer, frames):
            rows = frame[ROW].to_numpy()
            for split, (start, end, context) in bounds.items():
                mask = (rows >= start - context) & (rows < end)
                if not mask.any():
                    continue
                part = frame[mask].copy()
                part[CONTEXT] = part[ROW].to_numpy() < start
                own = part[~part[CONTEXT]]
                if len(own):
                    times[split][0] = times[split][0] or pd.Timestamp(own[TIME].iloc[0]).isoformat()
                    times[split][1] = pd.Timestamp(own[TIME].iloc[-1]).isoformat()
                sinks[split].add(part)
        for sink in sinks.values():
            sink.close()
        splits = {
            split: SplitInfo(
                rows=end - start,
                context_rows=min(context, start),
                start=times[split][0],
                end=times[split][1],
                shards=tuple(sinks[split].written),
            )
            for split, (start, end, context) in bounds.items()
        }
        columns = (
            ColumnInfo(name=TIME, role="time", dtype="timestamp[ns]", description="row time"),
            *(ColumnInfo(name=f, role="feature", dtype="float32") for f in fitted.feature_names),
            ColumnInfo(name=TARGET, role="target", dtype="float32", description=f"{cfg.target}, scaled"),
            ColumnInfo(
                name=TARGET_RAW, role="target_raw", dtype="float64", description=f"{cfg.target}, original units, filled"
            ),
            ColumnInfo(name=OBSERVED, role="observed", dtype="bool", description=f"{cfg.target} was observed"),
            ColumnInfo(name=CONTEXT, role="context", dtype="bool", description="history from the previous split"),
        )
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            task="forecast",
            name=name,
            source={**(source_info or {"uri": source}), **report.__dict__},
            columns=columns,
            preprocessing={"fitted": fitted.to_dict(), "created": datetime.now(timezone.utc).isoformat()},
            task_params={
                "target": cfg.target,
                "horizon": cfg.horizon,
                "season_length": cfg.season_length,
                "season_steps": cfg.season_steps,
                "max_window": cfg.max_window,
                "step_seconds": fitted.step_seconds,
            },
            splits=splits,
        )
        write_manifest(dest, manifest)
    except BaseException:
        remove_written(dest, [s for sink in sinks.values() for s in sink.written])
        raise
    return manifest


BUNDLED_CHANGES: dict[str, Any] = {
    "diffs": ("pm2.5", "DEWP", "TEMP", "PRES"),
    "increments": (("Iws", "cbwd"),),
}
"""Change features of the bundled data: the hour's change of PM2.5 and the weather, and the hour's wind speed
(``Iws`` is cumulated since the direction last changed). The Beijing quality run reaches test RMSE 17.99 and 18.24
with them, 18.92 and 18.59 without (seeds 0 and 1, same space and budget); see README, Quality runs."""


def prepare_default(dest: Location, *, horizon: int = 1, max_window: int = 168) -> Manifest:
    """Prepare the bundled Beijing PM2.5 data at ``dest`` unless an identical preparation is already there."""
    cfg = ForecastPrepConfig(horizon=horizon, max_window=max_window, **BUNDLED_CHANGES)
    try:
        existing = read_manifest(dest)
        if ForecastPrepConfig.from_dict(existing.preprocessing["fitted"]["config"]) == cfg:
            return existing
    except ManifestError:
        pass
    path = bundled_beijing_path()
    info = {"name": "beijing_pm25_hourly.csv (bundled)", "sha256_xz": file_sha256(path)}
    return prepare_forecast(path, cfg, dest, name=DEFAULT_DATASET, source_info=info, overwrite=True)


__all__ = [
    "BUNDLED_CHANGES",
    "DEFAULT_DATASET",
    "DatasetExistsError",
    "PrepareReport",
    "bundled_beijing_csv",
    "bundled_beijing_path",
    "prepare_default",
    "prepare_forecast",
    "read_csv_bytes",
]
