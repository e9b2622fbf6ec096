"""What every preparation shares about its output: a dataset URI is never overwritten unasked, and a failed
preparation leaves nothing behind."""

from __future__ import annotations

from trainables.data.manifest import SPLITS, ShardInfo
from trainables.storage import Location, remove_if_empty


class DatasetExistsError(ValueError):
    """The output URI already holds a prepared dataset."""


def remove_written(dest: Location, shards: list[ShardInfo]) -> None:
    """Delete what a failed preparation wrote (best effort: the original error is what matters)."""
    for shard in shards:
        try:
            dest.fs.delete_file(dest.child(shard.path).path)
        except OSError:
            pass
    for split in SPLITS:
        remove_if_empty(dest.child(split))
    remove_if_empty(dest)


__all__ = ["DatasetExistsError", "remove_written"]
