"""Node-local shard cache: each shard is fetched from storage at most once per node, whatever the trials.

Entries are named by the shard's sha256, so identical shards of different experiments share one file and a changed
shard can never be served stale. Concurrent trials on a node coordinate through a per-entry file lock; the fetched
bytes are verified, written to a temporary file and renamed into place, so a reader never sees a partial file. The
cache is bounded: least recently used entries are evicted past ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass

from trainables.data.manifest import ShardInfo
from trainables.storage import Location, disk_full, read_bytes

CACHE_DIR_ENV = "LSTM_TUNE_CACHE_DIR"
CACHE_MAX_BYTES_ENV = "LSTM_TUNE_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 20 * 1024**3
FETCH_LOG = "fetches.jsonl"
log = logging.getLogger(__name__)
_FULL_WARNED: list[bool] = []
"""The full-disk warning is given once per process."""


class ShardError(ValueError):
    """A shard is missing or its bytes do not match the manifest."""


@dataclass(frozen=True, kw_only=True)
class ShardCache:
    """A folder of verified shards on this node."""

    directory: str
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def default(cls, directory: str | None = None) -> ShardCache:
        directory = (
            directory or os.environ.get(CACHE_DIR_ENV) or os.path.join(tempfile.gettempdir(), "lstm-tune-shards")
        )
        max_bytes = int(os.environ.get(CACHE_MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
        return cls(directory=directory, max_bytes=max_bytes)

    def path_of(self, shard: ShardInfo) -> str:
        return os.path.join(self.directory, f"{shard.sha256}.parquet")

    def get(self, root: Location, shard: ShardInfo) -> bytes:
        """The shard's verified bytes, from the cache or fetched once (under the entry's lock)."""
        os.makedirs(self.directory, exist_ok=True)
        path = self.path_of(shard)
        data = self._read_if_present(path, shard)
        if data is not None:
            return data
        with open(f"{path}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read_if_present(path, shard)  # another trial fetched it while we waited
                if data is not None:
                    return data
                data = fetch_verified(root, shard)
                if not self._store(path, data):
                    return data  # the node's disk is full: served from memory, uncached
                self._log_fetch(root, shard)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._evict(keep=path)
        return data

    def _store(self, path: str, data: bytes) -> bool:
        """Keep a fetched shard; False (and a warning, once) when the cache's disk is full: trials go on reading
        shards from storage instead of failing, and nothing half-written stays in the cache."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".fetch-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if not disk_full(exc):
                raise
            if not _FULL_WARNED:
                _FULL_WARNED.append(True)
                log.warning("shard cache %s: no space left on the device; reading shards uncached", self.directory)
            return False
        return True

    def _read_if_present(self, path: str, shard: ShardInfo) -> bytes | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if len(data) != shard.bytes:
            return None  # a foreign or damaged file: fetch again under the lock
        os.utime(path)  # recency for eviction
        return data

    def _log_fetch(self, root: Location, shard: ShardInfo) -> None:
        record = {
            "time": time.time(),
            "pid": os.getpid(),
            "uri": root.child(shard.path).uri,
            "sha256": shard.sha256,
            "bytes": shard.bytes,
        }
        with open(os.path.join(self.directory, FETCH_LOG), "a") as f:
            f.write(json.dumps(record) + "\n")

    def _evict(self, keep: str) -> None:
        entries = []
        for name in os.listdir(self.directory):
            if name.endswith(".parquet"):
                full = os.path.join(self.directory, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, full))
        total = sum(size for _, size, _ in entries)
        for _, size, full in sorted(entries):
            if total <= self.max_bytes:
                break
            if full != keep:
                try:
                    os.remove(full)
                    total -= size
                except FileNotFoundError:
                    pass

    def fetched_bytes(self) -> int:
        """Bytes fetched from storage into this cache (what the cache log recorded)."""
        total = 0
        try:
            with open(os.path.join(self.directory, FETCH_LOG)) as f:
                for line in f:
                    total += int(json.loads(line).get("bytes", 0))
        except FileNotFoundError:
            pass
        return total

    def fetch_count(self) -> dict[str, int]:
        """Fetches from storage per shard sha256 (what the cache log recorded)."""
        counts: dict[str, int] = {}
        try:
            with open(os.path.join(self.directory, FETCH_LOG)) as f:
                for line in f:
                    sha = json.loads(line)["sha256"]
                    counts[sha] = counts.get(sha, 0) + 1
        except FileNotFoundError:
            pass
        return counts


def fetch_verified(root: Location, shard: ShardInfo) -> bytes:
    """GET one shard from storage and check it against the manifest; errors name the shard."""
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
    return data


__all__ = ["CACHE_DIR_ENV", "CACHE_MAX_BYTES_ENV", "ShardCache", "ShardError", "fetch_verified"]
