"""The manifest of a prepared dataset: schema, fitted preprocessing, splits and shards with checksums.

It is the contract between data preparation (run once, on the driver) and every trial that reads the data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from trainables.storage import Location, read_bytes, write_bytes_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")

Role = Literal[
    "time",
    "feature",
    "target",
    "target_raw",
    "observed",
    "context",
    "series",
    "target_centre",
    "target_scale",
    "naive_scale",
]
Split = Literal["train", "val", "test"]


class ManifestError(ValueError):
    """A manifest is missing, unreadable or of an unsupported format."""


@dataclass(frozen=True, kw_only=True)
class ColumnInfo:
    """One column of the shards."""

    name: str
    role: Role
    dtype: str
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One Parquet shard, relative to the dataset root."""

    path: str
    rows: int
    bytes: int
    sha256: str
    series: tuple[str, ...] = ()
    """Panels: the keys of the series whose rows the shard holds (whole series, unless one alone is larger than a
    shard: then its rows continue in the next shard)."""


@dataclass(frozen=True, kw_only=True)
class SplitInfo:
    """A chronological split. Val and test start with ``context_rows`` rows of the previous split (inputs only)."""

    rows: int
    """Rows that belong to the split (context excluded)."""
    context_rows: int
    """Leading rows copied from the previous split so every window length up to this fits; never a target."""
    start: str
    """First timestamp of the split proper (ISO 8601)."""
    end: str
    """Last timestamp (ISO 8601)."""
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Everything a trial, an export or ``data inspect`` needs to know about a prepared dataset."""

    format_version: int
    task: Literal["forecast", "classify"]
    name: str
    source: dict[str, Any]
    """Where the raw data came from: name, sha256, rows."""
    columns: tuple[ColumnInfo, ...]
    preprocessing: dict[str, Any]
    """Every fitted parameter (scalers, categories, fill values) and the options that produced them."""
    task_params: dict[str, Any]
    """Task facts trials need: target, horizon, season length, maximum window."""
    splits: dict[str, SplitInfo] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "feature"]

    @property
    def max_window(self) -> int:
        return int(self.task_params["max_window"])

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: format_version = {version!r}; this lstm-tune reads format_version {FORMAT_VERSION}"
            )
        try:
            splits = {
                name: SplitInfo(
                    **{
                        **s,
                        "shards": tuple(
                            ShardInfo(**{**sh, "series": tuple(sh.get("series", ()))}) for sh in s["shards"]
                        ),
                    }
                )
                for name, s in raw["splits"].items()
            }
            return cls(
                format_version=version,
                task=raw["task"],
                name=raw["name"],
                source=raw["source"],
                columns=tuple(ColumnInfo(**c) for c in raw["columns"]),
                preprocessing=raw["preprocessing"],
                task_params=raw["task_params"],
                splits=splits,
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"{where}: malformed manifest ({exc})") from None


def read_manifest(root: Location) -> Manifest:
    loc = root.child(MANIFEST_NAME)
    try:
        text = read_bytes(loc).decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{loc.uri}: no manifest; prepare the data first (lstm-tune run does it for the default)"
        ) from None
    except OSError as exc:
        raise ManifestError(f"{loc.uri}: cannot read the manifest: {exc}") from None
    return Manifest.from_json(text, loc.uri)


def write_manifest(root: Location, manifest: Manifest) -> None:
    """Written last, after every shard: a dataset without a manifest is incomplete and is never read."""
    write_bytes_atomic(root.child(MANIFEST_NAME), manifest.to_json().encode("utf-8"))


__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SPLITS",
    "ColumnInfo",
    "Manifest",
    "ManifestError",
    "ShardInfo",
    "SplitInfo",
    "read_manifest",
    "write_manifest",
]
