"""Raw sources read in bounded batches: CSV (plain, .xz, .gz, .bz2), Parquet and JSON Lines, local or on S3."""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import re
from collections.abc import Iterator
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainables.storage import Location, explain, resolve

DEFAULT_BATCH_ROWS = 65_536
BLOCK_BYTES = 1 << 22
"""The CSV reader's block: a row must fit in one, so a longer row restarts the read with blocks 8x larger."""
MAX_BLOCK_BYTES = 1 << 30
"""The largest block tried: a row (one document) longer than this is refused, naming the limit."""
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
    uri: str, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS, encoding: str = "utf-8"
) -> Iterator[pd.DataFrame]:
    """Yield the source as DataFrames of at most ``batch_rows`` rows, in file order; memory stays bounded.
    ``encoding`` is the text encoding of CSV and JSON Lines sources (latin-1, cp1252, ...)."""
    loc = resolve(uri)
    fmt, compression = source_format(uri)
    check_encoding(encoding)
    if columns:
        have = source_columns(uri, encoding=encoding)
        missing = [c for c in columns if c not in have]
        if missing:
            raise SourceError(f"data: column(s) {missing} not in the source {uri}; it has {have}")
    try:
        if fmt == "csv":
            yield from _csv_restarting(loc, compression, columns, batch_rows, encoding)
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
                reader = pd.read_json(f, lines=True, chunksize=batch_rows, dtype=False, encoding=encoding)
                for chunk in reader:
                    yield chunk[columns] if columns else chunk
    except (pa.ArrowInvalid, ValueError, UnicodeDecodeError, EOFError, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, SourceError):
            raise
        raise _parse_error(uri, fmt, encoding, exc) from None


def check_encoding(encoding: str) -> None:
    """An unknown codec is named before anything is read."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise SourceError(
            f"--encoding = {encoding!r}: not a known text encoding (utf-8, latin-1, cp1252, ...)"
        ) from None


def _parse_error(uri: str, fmt: str, encoding: str, exc: BaseException) -> SourceError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, UnicodeDecodeError) or "invalid UTF8" in first or "UTF-8" in first:
        where = (
            f" (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
            if isinstance(exc, UnicodeDecodeError)
            else ""
        )
        return _not_text(f"source {uri}: not valid {encoding} text{where}", encoding)
    fields = re.search(r"Expected (\d+) columns, got (\d+): (.*)", first)
    if fields:
        return SourceError(
            f"source {uri}: a row has {fields[2]} field(s) where the header has {fields[1]} (a cut line, or a "
            f"separator inside an unquoted value): {fields[3][:60]!r}"
        )
    return SourceError(f"source {uri}: cannot parse as {fmt}: {first}")


def _not_text(what: str, encoding: str) -> SourceError:
    return SourceError(f"{what}; name the file's encoding, e.g. --encoding latin-1")


def _csv_restarting(
    loc: Location, compression: str | None, columns: list[str] | None, batch_rows: int, encoding: str
) -> Iterator[pd.DataFrame]:
    """CSV batches; the read restarts, skipping the rows already yielded, when the reader cannot go on:

    - a row longer than the reader's block: larger blocks, so a long document prepares;
    - a value that does not fit the type the reader inferred from the first block (a word far down a numeric
      column): that column is read as text from then on, so the row stage sees the word and refuses it, or makes it
      a gap under ``--coerce``, as it does a word in the first block.
    """
    block, done, as_text = BLOCK_BYTES, 0, set[str]()
    while True:
        try:
            for frame in _csv_batches(loc, compression, columns, batch_rows, encoding, block, as_text, skip=done):
                done += len(frame)
                yield frame
            return
        except pa.ArrowInvalid as exc:
            mistyped = re.search(r"CSV column #(\d+): (?:Row #\d+: )?CSV conversion error", str(exc))
            if mistyped:
                name = _header(loc, compression, encoding)[int(mistyped[1])]
                if name in as_text:
                    raise
                as_text.add(name)
                continue
            if "straddling" not in str(exc):
                raise
            if block >= MAX_BLOCK_BYTES:
                raise SourceError(
                    f"source {loc.uri}: a row after row {done} is longer than {MAX_BLOCK_BYTES >> 20} MiB"
                ) from None
            block = min(block * 8, MAX_BLOCK_BYTES)


def _csv_batches(
    loc: Location,
    compression: str | None,
    columns: list[str] | None,
    batch_rows: int,
    encoding: str,
    block: int,
    as_text: set[str],
    *,
    skip: int = 0,
) -> Iterator[pd.DataFrame]:
    with _open(loc, compression) as f:
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=block, encoding=encoding),
            convert_options=pacsv.ConvertOptions(
                null_values=NA_VALUES,
                strings_can_be_null=True,
                include_columns=columns,
                column_types=dict.fromkeys(as_text, pa.string()),
            ),
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            # The reader types a column binary when its bytes are not valid text in the encoding.
            binary = [f.name for f in batch.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
            if binary:
                raise _not_text(f"source {loc.uri}: column {binary[0]!r} is not valid {encoding} text", encoding)
            if skip:
                dropped = min(skip, batch.num_rows)
                batch, skip = batch.slice(dropped), skip - dropped
            pending.append(batch)
            rows += batch.num_rows
            if rows >= batch_rows:
                yield pa.Table.from_batches(pending).to_pandas()
                pending, rows = [], 0
        if pending and rows:
            yield pa.Table.from_batches(pending).to_pandas()


def _header(loc: Location, compression: str | None, encoding: str) -> list[str]:
    """Every column of a CSV source, in file order (the reader's errors number them so)."""
    with _open(loc, compression) as f:
        return list(pacsv.open_csv(f, read_options=pacsv.ReadOptions(encoding=encoding)).schema.names)


def source_columns(uri: str, *, encoding: str = "utf-8") -> list[str]:
    """Column names, from the first rows only."""
    first = next(iter_batches(uri, batch_rows=16, encoding=encoding), None)
    return [str(c) for c in first.columns] if first is not None else []


def read_all(uri: str, columns: list[str] | None = None, *, encoding: str = "utf-8") -> pd.DataFrame:
    """The whole source in memory (for sources known to be small, such as text corpora)."""
    frames = list(iter_batches(uri, columns=columns, encoding=encoding))
    if not frames:
        raise SourceError(f"source {uri}: no rows")
    return pd.concat(frames, ignore_index=True)


__all__ = ["SourceError", "check_encoding", "iter_batches", "read_all", "source_columns", "source_format"]
