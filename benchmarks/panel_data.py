"""A synthetic panel of daily series with the structure real panels have, written in bounded memory.

    python3 -m benchmarks.panel_data --series 10000 --days 2000 --out panel.parquet     # ~20 M rows
    python3 -m benchmarks.panel_data --series 2000 --days 730 --out panel.csv.gz

Each series ``s{i:06d}`` (with a ``region`` key of 20 values, a second series column) has its own level spanning three
orders of magnitude (log-normal), a linear trend, a weekly and a yearly cycle of its own amplitude and phase, noise
proportional to its level, a start date drawn from the first half of the range for a quarter of the series (ragged
starts), missing values (about 1% of rows, some in runs of a week), and a few level shifts. Counts are non-negative
integers, as births or sales are. The same seed gives the same panel, chunk size or not.

Scale is the point (issue 20: panels larger than a worker's memory), so series are generated and written a chunk at a
time; the writer never holds more than one chunk. Real data comes first where it exists: the births panel in
``../shared/datasets`` is 51 series; this is for thousands to tens of thousands.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REGIONS = 20
MISSING_SHARE = 0.01
RAGGED_SHARE = 0.25


@dataclass(frozen=True, kw_only=True)
class PanelSpec:
    """What to generate."""

    series: int = 1000
    """Number of series."""
    days: int = 730
    """Days from the common start to the common end (ragged series start later)."""
    start: str = "2015-01-01"
    seed: int = 0
    chunk_series: int = 500
    """Series generated and written at a time (the writer's memory bound)."""

    def validate(self) -> None:
        if self.series < 1:
            raise ValueError(f"--series = {self.series}: must be >= 1")
        if self.days < 14:
            raise ValueError(f"--days = {self.days}: must be >= 14 (two weeks: a weekly cycle and a forecast)")
        if self.chunk_series < 1:
            raise ValueError(f"--chunk-series = {self.chunk_series}: must be >= 1")

    @property
    def max_rows(self) -> int:
        return self.series * self.days


def _series_frame(spec: PanelSpec, index: int, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """One series, from its own generator (seeded by the panel seed and the series index: chunking changes nothing)."""
    rng = np.random.default_rng([spec.seed, index])
    days = len(dates)
    first = int(rng.integers(0, days // 2)) if rng.random() < RAGGED_SHARE else 0
    t = np.arange(days - first, dtype=np.float64)
    level = float(np.exp(rng.normal(4.0, 1.2)))  # about 2 to 3,000 a day
    trend = level * rng.normal(0.0, 0.15) / 365.0
    weekday = dates[first:].day_of_week.to_numpy()
    weekly = rng.normal(0.0, 0.12, size=7)
    weekly -= weekly.mean()
    yearly_amp = rng.uniform(0.0, 0.25)
    phase = rng.uniform(0.0, 2 * np.pi)
    yearly = yearly_amp * np.sin(2 * np.pi * dates[first:].day_of_year.to_numpy() / 365.25 + phase)
    shifts = np.zeros(days - first)
    for at in rng.integers(0, days - first, size=rng.poisson(0.5)):
        shifts[at:] += rng.normal(0.0, 0.2)
    mean = np.maximum(level + trend * t, level * 0.05) * np.exp(weekly[weekday] + yearly + shifts)
    noise = rng.normal(0.0, 0.05 + 1.0 / np.sqrt(np.maximum(mean, 1.0)), size=days - first)
    values = np.maximum(np.round(mean * (1.0 + noise)), 0.0)
    missing = rng.random(days - first) < MISSING_SHARE * 0.7
    for at in rng.integers(0, days - first, size=rng.poisson(MISSING_SHARE * 0.3 * (days - first) / 7)):
        missing[at : at + 7] = True
    observed = np.where(missing, np.nan, values)
    return pd.DataFrame(
        {
            "series": f"s{index:06d}",
            "region": f"r{index % REGIONS:02d}",
            "date": dates[first:].strftime("%Y-%m-%d"),
            "value": observed,
        }
    )


def chunks(spec: PanelSpec) -> Iterator[pd.DataFrame]:
    """The panel, ``chunk_series`` whole series at a time, series by series, each in date order."""
    spec.validate()
    dates = pd.date_range(spec.start, periods=spec.days, freq="D")
    for first in range(0, spec.series, spec.chunk_series):
        last = min(first + spec.chunk_series, spec.series)
        yield pd.concat([_series_frame(spec, i, dates) for i in range(first, last)], ignore_index=True)


SCHEMA = pa.schema([("series", pa.string()), ("region", pa.string()), ("date", pa.string()), ("value", pa.float64())])


def write(spec: PanelSpec, out: Path) -> int:
    """Write the panel to ``out`` (``.parquet``, ``.csv`` or ``.csv.gz``); returns the rows written."""
    spec.validate()
    if not out.name.endswith((".parquet", ".csv", ".csv.gz")):
        raise ValueError(f"--out {out}: write .parquet, .csv or .csv.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _write(spec, out)
    except BaseException:
        out.unlink(missing_ok=True)  # never half a panel
        raise


def _write(spec: PanelSpec, out: Path) -> int:
    name = out.name
    rows = 0
    if name.endswith(".parquet"):
        with pq.ParquetWriter(out, SCHEMA, compression="zstd") as writer:
            for frame in chunks(spec):
                writer.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False))
                rows += len(frame)
        return rows
    with pa.output_stream(str(out), compression="gzip" if name.endswith(".gz") else None) as stream:
        writer = pacsv.CSVWriter(stream, SCHEMA)
        for frame in chunks(spec):
            writer.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False))
            rows += len(frame)
        writer.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.panel_data", description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=PanelSpec.series)
    parser.add_argument("--days", type=int, default=PanelSpec.days)
    parser.add_argument("--start", default=PanelSpec.start)
    parser.add_argument("--seed", type=int, default=PanelSpec.seed)
    parser.add_argument("--chunk-series", type=int, default=PanelSpec.chunk_series)
    parser.add_argument("--out", type=Path, required=True, help=".parquet, .csv or .csv.gz")
    args = parser.parse_args(argv)
    spec = PanelSpec(
        series=args.series, days=args.days, start=args.start, seed=args.seed, chunk_series=args.chunk_series
    )
    started = time.monotonic()
    try:
        rows = write(spec, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    took = time.monotonic() - started
    size = args.out.stat().st_size
    print(
        f"{rows:,} rows of {spec.series:,} series -> {args.out} ({size / 1e6:.1f} MB) in {took:.1f} s ({rows / took:,.0f} rows/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
