"""Raw sources read in bounded batches: CSV (plain, .xz, .gz, .bz2), Parquet and JSON Lines, local or on S3."""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Iterator
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainables.storage import Location, explain, resolve

DEFAULT_BATCH_ROWS = 65_536
NA_VALUES = ["NA", "?", "", "NaN", "nan", "null", "NULL"]


class SourceError(ValueError):
    """A source cannot be found, opened or parsed."""


def source_format(uri: str) -> tuple[str, str | None]:
    """(format, compression) from the file name: csv|parquet|jsonl and xz|gz|bz2|None."""
    name = uri.lower()
    compression = None
    for suffix, codec in ((".xz", "xz"), (".gz", "gz"), (".bz2", "bz2")):
        if name.endswith(suffix):
            compression, name = codec, name[: -len(suffix)]
    for suffix, fmt in ((".csv", "csv"), (".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(suffix):
            return fmt, compression
    raise SourceError(f"source {uri}: unknown format; expected .csv (optionally .xz/.gz/.bz2), .parquet or .jsonl")


def _open(loc: Location, compression: str | None) -> IO[bytes]:
    try:
        raw: Any = loc.fs.open_input_stream(loc.path)
    except FileNotFoundError:
        raise SourceError(f"source {loc.uri}: no such file") from None
    except OSError as exc:
        raise SourceError(f"source: {explain(exc, loc)}") from None
    if compression == "xz":
        return lzma.open(raw)
    if compression == "gz":
        return gzip.open(raw)  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.open(raw)
    return raw  # type: ignore[no-any-return]


def _open_seekable(loc: Location) -> Any:
    try:
        return loc.fs.open_input_file(loc.path)
    except FileNotFoundError:
        raise SourceError(f"source {loc.uri}: no such file") from None
    except OSError as exc:
        raise SourceError(f"source: {explain(exc, loc)}") from None


def iter_batches(
    uri: str, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    """Yield the source as DataFrames of at most ``batch_rows`` rows, in file order; memory stays bounded."""
    loc = resolve(uri)
    fmt, compression = source_format(uri)
    if columns:
        have = source_columns(uri)
        missing = [c for c in columns if c not in have]
        if missing:
            raise SourceError(f"data: column(s) {missing} not in the source {uri}; it has {have}")
    try:
        if fmt == "csv":
            yield from _csv_batches(loc, compression, columns, batch_rows)
        elif fmt == "parquet":
            if compression:
                raise SourceError(f"source {uri}: compress Parquet inside the file, not around it")
            # Parquet's footer is at the end: a seekable file (ranged reads on S3), never a plain stream.
            with _open_seekable(loc) as f:
                pf = pq.ParquetFile(f)
                for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                    yield batch.to_pandas()
        else:
            with _open(loc, compression) as f:
                reader = pd.read_json(f, lines=True, chunksize=batch_rows, dtype=False)
                for chunk in reader:
                    yield chunk[columns] if columns else chunk
    except (pa.ArrowInvalid, ValueError, UnicodeDecodeError, EOFError, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, SourceError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"source {uri}: cannot parse as {fmt}: {first}") from None


def _csv_batches(
    loc: Location, compression: str | None, columns: list[str] | None, batch_rows: int
) -> Iterator[pd.DataFrame]:
    with _open(loc, compression) as f:
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(
                null_values=NA_VALUES, strings_can_be_null=True, include_columns=columns
            ),
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= batch_rows:
                yield pa.Table.from_batches(pending).to_pandas()
                pending, rows = [], 0
        if pending:
            yield pa.Table.from_batches(pending).to_pandas()


def source_columns(uri: str) -> list[str]:
    """Column names, from the first rows only."""
    first = next(iter_batches(uri, batch_rows=16), None)
    return [str(c) for c in first.columns] if first is not None else []


def read_all(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The whole source in memory (for sources known to be small, such as text corpora)."""
    frames = list(iter_batches(uri, columns=columns))
    if not frames:
        raise SourceError(f"source {uri}: no rows")
    return pd.concat(frames, ignore_index=True)


__all__ = ["SourceError", "iter_batches", "read_all", "source_columns", "source_format"]
