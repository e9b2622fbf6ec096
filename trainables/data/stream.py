"""A panel split read a piece at a time, for datasets larger than a trial's memory budget.

A piece is a group of shards whose rows fit the budget, read through the node cache, held while its windows are used,
then dropped. Shards that share a series (one series larger than ``--shard-rows``) always travel together, so a piece
holds whole series and its windows are exactly those of the split in memory: nothing crosses a series, nothing is
lost at a shard seam.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from trainables.data.cache import ShardCache
from trainables.data.manifest import Manifest, ShardInfo
from trainables.data.shards import read_shard
from trainables.data.windows import SeriesArrays
from trainables.storage import Location


def shard_units(shards: tuple[ShardInfo, ...]) -> list[tuple[ShardInfo, ...]]:
    """Shards grouped so that a series never straddles two groups: a shard whose first series is the previous
    shard's last joins its group."""
    units: list[list[ShardInfo]] = []
    for shard in shards:
        if units and shard.series and units[-1][-1].series and shard.series[0] == units[-1][-1].series[-1]:
            units[-1].append(shard)
        else:
            units.append([shard])
    return [tuple(u) for u in units]


@dataclass(frozen=True)
class SplitStream:
    """One split's pieces; iterate for :class:`SeriesArrays` of whole series, each at most ``piece_rows`` rows (or
    one unit of shards, if a single series is larger)."""

    root: Location
    manifest: Manifest
    split: str
    feature_names: tuple[str, ...]
    piece_rows: int
    cache: ShardCache | None = None
    seed: int | None = None
    """None: the shards in manifest order; else a permutation of the shard groups drawn from this seed."""
    part: tuple[int, int] | None = None
    """``(rank, world_size)``: a data-parallel worker's share, every ``world_size``-th shard group."""

    @property
    def units(self) -> list[tuple[ShardInfo, ...]]:
        units = shard_units(self.manifest.splits[self.split].shards)
        if self.part is None:
            return units
        rank, world = self.part
        mine = units[rank::world]
        if not mine:
            raise ValueError(
                f"data: split {self.split} has {len(units)} shard group(s), too few for {world} data-parallel workers"
            )
        return mine

    def shuffled(self, seed: int) -> SplitStream:
        return replace(self, seed=seed)

    def groups(self) -> list[list[tuple[ShardInfo, ...]]]:
        """The shard groups of each piece, in the order they are read."""
        units = self.units
        if self.seed is not None:
            order = np.random.default_rng(self.seed).permutation(len(units))
            units = [units[i] for i in order]
        pieces: list[list[tuple[ShardInfo, ...]]] = []
        rows = 0
        for unit in units:
            unit_rows = sum(s.rows for s in unit)
            if pieces and rows + unit_rows <= self.piece_rows:
                pieces[-1].append(unit)
                rows += unit_rows
            else:
                pieces.append([unit])
                rows = unit_rows
        return pieces

    def __iter__(self) -> Iterator[SeriesArrays]:
        """The pieces; a consumer should drop each (``del``) before asking for the next, or two are held at once."""
        for group in self.groups():
            yield self._read(group)

    def _read(self, group: list[tuple[ShardInfo, ...]]) -> SeriesArrays:
        tables = [read_shard(self.root, shard, self.cache) for unit in group for shard in unit]
        # The series code changes between groups, so each series is its own stretch (see series_starts). The Arrow
        # tables go when this returns: the arrays are copies.
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return SeriesArrays.from_table(table, list(self.feature_names))


__all__ = ["SplitStream", "shard_units"]
