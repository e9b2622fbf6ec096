"""A panel's source in parts of whole series: held in memory when it fits the preparation's memory budget, else
partitioned by a hash of the series key into spill files on local disk (Arrow IPC, one pass over the source), each
read back whole when its turn comes. A series never straddles two parts, so every per-series stage can run part by
part with only one part in memory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.prep.sources import DEFAULT_BATCH_ROWS, iter_batches
from trainables.data.forecast_prep import ForecastPrepConfig
from trainables.data.prep_rows import not_numbers, words_error

SPILL_PARTITIONS = 256
"""Parts a spilled panel is cut into: 20 million source rows make parts of about 80,000 rows (a few tens of MB in
memory), and the open spill files stay far below any file-descriptor limit."""
HELD_COST = 4
"""Memory the in-memory path needs per byte of source rows held (pandas' own size of the raw columns): the grouped
series, their row-stage output, the scaled copy and the transformed frame live at once. Measured: 5.6 million births
-like rows (130 bytes each in pandas) peaked at 921 MB, against 271 MB for the process alone."""


@dataclass
class PanelParts:
    """The source's rows, cut into parts that each hold whole series."""

    columns: list[str]
    rows_in: int = 0
    coerced: int = 0
    """Spilled: values that are not numbers made gaps while spilling (the row stage counts them otherwise)."""
    held: pd.DataFrame | None = None
    """The whole source, when it fits the budget (one part)."""
    spill_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def spilled(self) -> bool:
        return self.spill_dir is not None

    def __len__(self) -> int:
        return len(self.files) if self.spilled else 1

    def read(self, part: int) -> pd.DataFrame:
        """Part ``part``'s rows, in source order within each series."""
        if not self.spilled:
            assert self.held is not None
            return self.held
        with pa.memory_map(str(self.files[part])) as source:
            frame: pd.DataFrame = pa.ipc.open_stream(source).read_all().to_pandas()
        return frame


class _Spiller:
    """One IPC stream per partition, opened on its first rows; every batch cast to the first batch's types so that
    the parts read back as the in-memory path would see them."""

    def __init__(self, directory: Path, partitions: int, cfg: ForecastPrepConfig) -> None:
        self.directory, self.partitions, self.series = directory, partitions, cfg.series
        self.numeric = list(cfg.numeric)
        self.coerce = cfg.coerce
        self.coerced = 0
        """Values that are not numbers made gaps (``coerce``): the later passes see them as missing already."""
        self.schema: pa.Schema | None = None
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def add(self, batch: pd.DataFrame, first_row: int) -> None:
        keys = pd.util.hash_pandas_object(batch[list(self.series)].astype(str), index=False).to_numpy()
        part_of = keys % np.uint64(self.partitions)
        table = self._table(batch, first_row)
        order = np.argsort(part_of, kind="stable")
        bounds = np.flatnonzero(np.diff(part_of[order])) + 1
        for chunk in np.split(order, bounds):
            if chunk.size:
                self._writer(int(part_of[chunk[0]])).write_table(table.take(pa.array(chunk)))

    def _table(self, batch: pd.DataFrame, first_row: int) -> pa.Table:
        # Every later stage reads numeric columns this way; done here, a word in a numeric column cannot change the
        # column's type between batches.
        numbers = {}
        for col in self.numeric:
            values, words = not_numbers(batch[col])
            if words.any():
                first = int(np.flatnonzero(words)[0])
                if not self.coerce:
                    raise words_error(
                        col, int(words.sum()), f"the first at row {first_row + first}", batch[col].iloc[first]
                    )
                self.coerced += int(words.sum())
            numbers[col] = values
        batch = batch.assign(**numbers)
        if self.schema is None:
            table = pa.Table.from_pandas(batch, preserve_index=False)
            self.schema = pa.schema([pa.field(f.name, _spill_type(f.type)) for f in table.schema])
        try:
            return pa.Table.from_pandas(batch, schema=self.schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
            column = next((f.name for f in self.schema if not _casts(batch[f.name], f.type)), "a column")
            raise ValueError(
                f"data: column {column!r} changes type near source row {first_row} ({str(exc).splitlines()[0]}); "
                "a panel spilled to disk keeps each column's first type"
            ) from None

    def _writer(self, part: int) -> pa.ipc.RecordBatchStreamWriter:
        if part not in self._writers:
            assert self.schema is not None
            self._writers[part] = pa.ipc.new_stream(str(self.directory / f"part-{part:04d}.arrow"), self.schema)
        return self._writers[part]

    def close(self) -> list[Path]:
        """Close every stream (again: nothing happens); the files written, in partition order."""
        written = sorted(self._writers)
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
        return [self.directory / f"part-{p:04d}.arrow" for p in written]


def _spill_type(t: pa.DataType) -> pa.DataType:
    """A column of nothing but gaps in the first batch becomes text (a later batch decides what it holds)."""
    if pa.types.is_null(t):
        return pa.string()
    return t


def _casts(values: pd.Series, t: pa.DataType) -> bool:
    try:
        pa.Array.from_pandas(values, type=t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError):
        return False
    return True


def _checked(batch: pd.DataFrame, needed: list[str], cfg: ForecastPrepConfig, source: str, first_row: int) -> None:
    missing = [c for c in needed if c not in batch.columns]
    if missing:
        which = "series column" if set(missing) & set(cfg.series) else "column"
        raise ValueError(f"data: {which}(s) {missing} not in the source {source}; it has {list(batch.columns)}")
    for col in cfg.series:
        empty = batch[col].isna().to_numpy()
        if empty.any():
            raise ValueError(f"data.series: column {col!r} is empty at row {first_row + int(np.flatnonzero(empty)[0])}")


@contextmanager
def panel_parts(
    source: str,
    cfg: ForecastPrepConfig,
    budget: int,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    partitions: int = SPILL_PARTITIONS,
    spill_root: str | None = None,
) -> Iterator[PanelParts]:
    """The columns a panel needs, checked, in parts of whole series; the spill files are removed on exit, whatever
    happens."""
    needed = list(dict.fromkeys([*cfg.series, *cfg.time_columns, *cfg.numeric, *cfg.categorical]))
    parts = PanelParts(columns=needed)
    frames: list[pd.DataFrame] = []
    held_bytes = 0
    spiller: _Spiller | None = None
    try:
        for batch in iter_batches(source, batch_rows=batch_rows, encoding=cfg.text_encoding):
            _checked(batch, needed, cfg, source, parts.rows_in)
            batch = batch[needed]
            if spiller is None:
                frames.append(batch)
                held_bytes += int(batch.memory_usage(deep=True, index=False).sum())
                if held_bytes * HELD_COST > budget:
                    parts.spill_dir = Path(tempfile.mkdtemp(prefix="lstm-tune-spill-", dir=spill_root))
                    spiller = _Spiller(parts.spill_dir, partitions, cfg)
                    row = 0
                    for frame in frames:
                        spiller.add(frame, row)
                        row += len(frame)
                    frames = []
            else:
                spiller.add(batch, parts.rows_in)
            parts.rows_in += len(batch)
        if spiller is not None:
            parts.files = spiller.close()
            parts.coerced = spiller.coerced
        elif frames:
            parts.held = pd.concat(frames, ignore_index=True)
        else:
            raise ValueError(f"source {source}: no rows")
        yield parts
    finally:
        if spiller is not None:
            spiller.close()
        if parts.spill_dir is not None:
            shutil.rmtree(parts.spill_dir, ignore_errors=True)


__all__ = ["HELD_COST", "SPILL_PARTITIONS", "PanelParts", "panel_parts"]
