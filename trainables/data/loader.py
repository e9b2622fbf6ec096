"""What a trial holds of the data: a small handle travels to the trial; the arrays are loaded there, once a process."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from trainables.data.budget import budget_bytes, piece_rows, streams
from trainables.data.cache import ShardCache
from trainables.data.handle import DataHandle
from trainables.data.manifest import Manifest, read_manifest
from trainables.data.prep_config import FittedPrep
from trainables.data.shards import read_split, read_split_shards
from trainables.data.stream import SplitStream
from trainables.data.windows import SeriesArrays
from trainables.storage import resolve


@dataclass(frozen=True)
class ForecastData:
    """A prepared forecasting dataset, loaded."""

    manifest: Manifest
    fitted: FittedPrep
    splits: dict[str, SeriesArrays]
    """The splits held in memory (none when streamed)."""
    streams: dict[str, SplitStream] = field(default_factory=dict)
    """A panel larger than the memory budget: each split read a piece of whole series at a time."""

    @property
    def streamed(self) -> bool:
        return bool(self.streams)

    def split(self, name: str) -> SeriesArrays | SplitStream:
        """The split in memory, or its stream."""
        return self.streams[name] if self.streams else self.splits[name]

    @property
    def horizon(self) -> int:
        return self.fitted.config.horizon

    @property
    def n_features(self) -> int:
        return len(self.fitted.feature_names)


_CACHE: dict[tuple[str, str, tuple[str, ...], tuple[int, int] | None, int | None], ForecastData] = {}
_LOCK = threading.Lock()


def load_forecast_data(
    handle: DataHandle, splits: tuple[str, ...] = ("train", "val"), part: tuple[int, int] | None = None
) -> ForecastData:
    """Read and verify the shards of ``splits``; a process (a reused Ray worker) loads each dataset once.

    ``part = (rank, world_size)``: a data-parallel worker reads only its share of the training shards (the other
    splits whole: every worker scores the full validation set, so all take the same early-stopping decisions).

    A panel whose ``splits`` would take more than the handle's memory budget is not loaded: each split becomes a
    :class:`SplitStream` read a piece at a time (a dataset of one series is always loaded whole).
    """
    root = resolve(handle.uri, endpoint=handle.endpoint)
    manifest = read_manifest(root)
    # Keyed by the manifest's content too, so a dataset prepared again at the same URI is not served stale.
    key = (root.uri, manifest.to_json(), splits, part, handle.memory_budget)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        # Local datasets are read in place; remote ones go through the node's shard cache.
        cache = None if root.is_local else ShardCache.default(handle.cache_dir)
        fitted = FittedPrep.from_dict(manifest.preprocessing["fitted"])
        budget = budget_bytes(handle.memory_budget)
        if streams(manifest, splits, budget):
            by_split = {
                split: SplitStream(
                    root=root,
                    manifest=manifest,
                    split=split,
                    feature_names=tuple(fitted.feature_names),
                    piece_rows=piece_rows(budget, len(fitted.feature_names)),
                    cache=cache,
                    part=part if split == "train" else None,
                )
                for split in splits
            }
            data = ForecastData(manifest=manifest, fitted=fitted, splits={}, streams=by_split)
            _CACHE[key] = data
            return data
        arrays = {
            split: SeriesArrays.from_tables(
                read_split_shards(root, manifest, split, cache, part if split == "train" else None),
                fitted.feature_names,
            )
            if part is not None and split == "train"
            else SeriesArrays.from_table(read_split(root, manifest, split, cache), fitted.feature_names)
            for split in splits
        }
        data = ForecastData(manifest=manifest, fitted=fitted, splits=arrays)
        _CACHE[key] = data
        return data


__all__ = ["DataHandle", "ForecastData", "load_forecast_data"]
