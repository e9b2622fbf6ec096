"""Parquet shards: written with their checksums, read back only if the checksum still matches."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainables.data.cache import ShardCache, ShardError, fetch_verified
from trainables.data.manifest import Manifest, ShardInfo
from trainables.storage import Location, write_bytes_atomic

FETCH_THREADS = 8
"""Shards fetched at once from object storage by one reader."""


def check_finite(table: pa.Table, where: str) -> None:
    """The last check before a shard is written: no infinity anywhere, and NaN only where it has a meaning: a target
    not observed (``__observed__`` masks it), a series whose MASE scale is undefined (it never changes)."""
    # Here, not at the top: the command line checks its options without pandas, which prep_config imports.
    from trainables.data.prep_config import NAIVE_SCALE, TARGET_RAW

    may_be_missing = {TARGET_RAW, NAIVE_SCALE}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not pa.types.is_floating(column.type):
            continue
        bad = pc.is_inf(column)
        if name not in may_be_missing:
            bad = pc.or_(bad, pc.is_nan(column))
        count = pc.sum(bad).as_py() or 0
        if count:
            raise ValueError(f"data: column {name!r} of {where} would hold {count} non-finite value(s); not written")


def write_shard(root: Location, split: str, index: int, table: pa.Table) -> ShardInfo:
    """Write ``table`` as ``split/part-NNNNN.parquet`` and return its manifest entry, once every float in it is
    finite (:func:`check_finite`)."""
    rel = f"{split}/part-{index:05d}.parquet"
    check_finite(table, f"{root.child(rel).uri}")
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    write_bytes_atomic(root.child(rel), data)
    return ShardInfo(path=rel, rows=table.num_rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def write_shards(root: Location, split: str, table: pa.Table, shard_rows: int) -> tuple[ShardInfo, ...]:
    """Write ``table`` as shards of at most ``shard_rows`` rows."""
    if shard_rows < 1:
        raise ValueError(f"data.shard_rows = {shard_rows}: must be >= 1")
    starts = range(0, max(table.num_rows, 1), shard_rows)
    return tuple(write_shard(root, split, i, table.slice(start, shard_rows)) for i, start in enumerate(starts))


def read_shard(root: Location, shard: ShardInfo, cache: ShardCache | None = None) -> pa.Table:
    """One shard as a table, verified; through the node's cache when one is given."""
    data = cache.get(root, shard) if cache is not None else fetch_verified(root, shard)
    return pq.read_table(pa.BufferReader(data))


def read_split(
    root: Location,
    manifest: Manifest,
    split: str,
    cache: ShardCache | None = None,
    part: tuple[int, int] | None = None,
) -> pa.Table:
    """A split's shards as one table; ``part = (rank, world_size)`` reads only that data-parallel worker's share."""
    tables = read_split_shards(root, manifest, split, cache, part)
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def read_split_shards(
    root: Location,
    manifest: Manifest,
    split: str,
    cache: ShardCache | None = None,
    part: tuple[int, int] | None = None,
) -> list[pa.Table]:
    """A split's shards (``part``: one worker's share), one table each, in order."""
    info = manifest.splits[split]
    shards = info.shards if part is None else shards_for_rank(info.shards, *part)
    if not shards:
        raise ValueError(
            f"data: split {split} has {len(info.shards)} shard(s), too few for {part[1] if part else 1} data-parallel "
            "workers; prepare the data with a smaller --shard-rows"
        )
    if root.is_local or len(shards) < 2:
        return [read_shard(root, shard, cache) for shard in shards]
    # Object storage serves shards in parallel; order is kept by map().
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(shards))) as pool:
        return list(pool.map(lambda shard: read_shard(root, shard, cache), shards))


def verify_all(root: Location, manifest: Manifest, cache: ShardCache | None = None) -> None:
    """Check every shard before any trial starts (the driver's fail-fast). Through the node's cache when given,
    so the trials that run on the driver's node find the shards there instead of fetching them again."""
    for info in manifest.splits.values():
        for shard in info.shards:
            if cache is not None:
                cache.get(root, shard)
            else:
                fetch_verified(root, shard)


def shards_for_rank(shards: tuple[ShardInfo, ...], rank: int, world_size: int) -> tuple[ShardInfo, ...]:
    """The shards a data-parallel worker reads: round-robin by position, so every rank gets a fixed, disjoint share
    and together they read each shard exactly once."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank = {rank}, world_size = {world_size}: need 0 <= rank < world_size")
    return tuple(shard for i, shard in enumerate(shards) if i % world_size == rank)


__all__ = [
    "ShardError",
    "read_shard",
    "read_split",
    "read_split_shards",
    "shards_for_rank",
    "verify_all",
    "write_shard",
    "write_shards",
]
