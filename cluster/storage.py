"""Experiment storage on the driver: where an experiment's folders live, and a probe before anything runs."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from trainables.storage import (
    FIRST_CONTACT_S3_ATTEMPTS,
    Location,
    bucket_exists,
    explain,
    read_bytes,
    remove_if_empty,
    resolve,
    write_bytes_atomic,
)


class StorageError(ValueError):
    """Storage is unreachable, read-only, or the credentials are refused."""


@dataclass(frozen=True, kw_only=True)
class ExperimentPaths:
    """The layout of one experiment under ``<storage>/<name>/``."""

    root: Location

    @property
    def data(self) -> Location:
        return self.root.child("data")

    @property
    def tensorboard(self) -> Location:
        return self.root.child("tensorboard")

    @property
    def best_json(self) -> Location:
        return self.root.child("best.json")

    @property
    def best_model(self) -> Location:
        return self.root.child("best_model")

    @property
    def lineage(self) -> Location:
        return self.root.child("pbt_lineage.jsonl")

    @property
    def rungs(self) -> Location:
        return self.root.child("asha_rungs.jsonl")


def experiment_paths(storage: str, name: str, endpoint: str | None = None) -> ExperimentPaths:
    return ExperimentPaths(root=resolve(storage, endpoint=endpoint).child(name))


def check_readable(loc: Location, what: str) -> None:
    """Fail with one line if ``loc`` cannot be reached (endpoint, credentials, bucket)."""
    loc = loc.with_attempts(FIRST_CONTACT_S3_ATTEMPTS)
    try:
        if not bucket_exists(loc):
            raise StorageError(f"{what}: bucket {loc.path.split('/', 1)[0]!r} does not exist ({loc.uri})")
        loc.fs.get_file_info(loc.path)
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(f"{what}: {explain(exc, loc)}") from None


def probe(loc: Location) -> None:
    """Write, list, read back and delete a small object under ``loc``; any failure is one clear error."""
    loc = loc.with_attempts(FIRST_CONTACT_S3_ATTEMPTS)
    marker = loc.child(f".lstm-tune-probe-{uuid.uuid4().hex[:8]}")
    payload = b"lstm-tune storage probe"
    try:
        if not bucket_exists(loc):
            raise StorageError(f"storage: bucket {loc.path.split('/', 1)[0]!r} does not exist ({loc.uri})")
        if loc.is_local:
            os.makedirs(loc.path, exist_ok=True)
        write_bytes_atomic(marker, payload)
        listed = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False))
        if not any(info.path.rstrip("/").endswith(marker.path.rsplit("/", 1)[-1]) for info in listed):
            raise StorageError(f"storage {loc.uri}: a written object does not show in the listing")
        if read_bytes(marker) != payload:
            raise StorageError(f"storage {loc.uri}: an object read back differs from what was written")
        loc.fs.delete_file(marker.path)
        remove_if_empty(loc)
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(f"storage is not writable: {explain(exc, loc)}") from None


__all__ = ["ExperimentPaths", "StorageError", "check_readable", "experiment_paths", "probe"]
