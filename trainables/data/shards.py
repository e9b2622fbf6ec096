"""Parquet shards: written with their checksums, read back only if the checksum still matches."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.data.manifest import Manifest, ShardInfo
from trainables.storage import Location, read_bytes, write_bytes_atomic


class ShardError(ValueError):
    """A shard is missing or its bytes do not match the manifest."""


def write_shards(root: Location, split: str, table: pa.Table, shard_rows: int) -> tuple[ShardInfo, ...]:
    """Write ``table`` as ``split/part-NNNNN.parquet`` files of at most ``shard_rows`` rows."""
    if shard_rows < 1:
        raise ValueError(f"data.shard_rows = {shard_rows}: must be >= 1")
    shards: list[ShardInfo] = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        part = table.slice(start, shard_rows)
        buf = io.BytesIO()
        pq.write_table(part, buf, compression="zstd")
        data = buf.getvalue()
        rel = f"{split}/part-{index:05d}.parquet"
        write_bytes_atomic(root.child(rel), data)
        shards.append(ShardInfo(path=rel, rows=part.num_rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return tuple(shards)


def read_shard(root: Location, shard: ShardInfo) -> pa.Table:
    """Fetch one shard and verify it; a missing or altered shard is an error naming it."""
    loc = root.child(shard.path)
    try:
        data = read_bytes(loc)
    except FileNotFoundError:
        raise ShardError(f"shard {loc.uri} is missing (listed in the manifest)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard.sha256 or len(data) != shard.bytes:
        raise ShardError(
            f"shard {loc.uri} is corrupt: sha256 {digest[:12]}... ({len(data)} bytes), "
            f"manifest says {shard.sha256[:12]}... ({shard.bytes} bytes)"
        )
    return pq.read_table(pa.BufferReader(data))


def read_split(root: Location, manifest: Manifest, split: str) -> pa.Table:
    info = manifest.splits[split]
    tables = [read_shard(root, shard) for shard in info.shards]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def verify_all(root: Location, manifest: Manifest) -> None:
    """Check every shard before any trial starts (the driver's fail-fast)."""
    for info in manifest.splits.values():
        for shard in info.shards:
            read_shard(root, shard)


__all__ = ["ShardError", "read_shard", "read_split", "verify_all", "write_shards"]
