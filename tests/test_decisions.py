"""Small decisions, tested without Ray: which checkpoint is newest, which stopped trials lose their checkpoints,
what a diverged metric becomes, how progress reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
import pytest

from cluster.tune.progress import ProgressState
from cluster.tune.retention import _Seen, best_loss, rolling_surplus, stopped_to_prune
from trainables import metrics as M
from trainables.loop import usable_loss
from trainables.restore import newest_written


def info(path: str, mtime_ns: int, kind: pafs.FileType = pafs.FileType.File) -> pafs.FileInfo:
    return pafs.FileInfo(path, kind, mtime=mtime_ns / 1e9 if mtime_ns else None, size=1)


def test_newest_written_orders_by_write_time_then_index() -> None:
    t = 1_800_000_000 * 10**9
    infos = [
        info("b/trial/checkpoint_000004/trial_state.pt", t + 9 * 10**9),  # written by the resumed run
        info("b/trial/checkpoint_000005/trial_state.pt", t + 2 * 10**9),  # a stale one of the killed run
        info("b/trial/checkpoint_000006/pruned.json", t + 20 * 10**9),  # no state: never a candidate
        info("b/trial/checkpoint_000002/trial_state.pt", t + 2 * 10**9),
        info("b/trial/checkpoint_000003", t + 30 * 10**9, pafs.FileType.Directory),
        info("b/trial/result.json", t + 40 * 10**9),
        info("b/trial/checkpoint_x/trial_state.pt", t + 50 * 10**9),
    ]
    assert newest_written(infos) == ["checkpoint_000004", "checkpoint_000005", "checkpoint_000002"]
    assert newest_written([]) == []


def seen(*losses: float) -> list[_Seen]:
    return [_Seen(f"c{i}", loss) for i, loss in enumerate(losses)]


def test_rolling_surplus_keeps_best_and_newest() -> None:
    items = seen(0.5, 0.2, 0.9, 0.3, 0.8, 0.7)
    assert [s.path for s in rolling_surplus(items, keep_best=2, keep_latest=2)] == ["c0", "c2"]
    assert [s.path for s in rolling_surplus(items, keep_best=0, keep_latest=0)] == [s.path for s in items]
    assert rolling_surplus(items, keep_best=9, keep_latest=0) == []
    assert rolling_surplus(items, keep_best=0, keep_latest=9) == []
    # NaN/inf became inf: never "best" ahead of a finite loss; equal losses keep the newer one.
    assert [s.path for s in rolling_surplus(seen(math.inf, 0.4, 0.4, math.inf), keep_best=1, keep_latest=1)] == [
        "c0",
        "c1",
    ]


@dataclass
class FakeResult:
    epochs: int
    losses: list[float]
    metrics: dict[str, Any] = field(init=False)
    best_checkpoints: list[tuple[object, dict[str, float]]] = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = {M.EPOCH: self.epochs}
        self.best_checkpoints = [(object(), {M.VAL_LOSS: x}) for x in self.losses]


def test_stopped_trials_ranked_by_best_loss_and_nan_last() -> None:
    finished = FakeResult(10, [0.1])
    good, bad, diverged = FakeResult(2, [0.3, 0.2]), FakeResult(2, [0.5]), FakeResult(1, [math.nan])
    assert best_loss(good) == 0.2 and best_loss(diverged) == math.inf
    results = [finished, bad, diverged, good]
    assert stopped_to_prune(results, max_epochs=10, keep=1) == [bad, diverged]
    assert stopped_to_prune(results, max_epochs=10, keep=0) == [good, bad, diverged]
    assert stopped_to_prune(results, max_epochs=10, keep=5) == []


@pytest.mark.parametrize(
    ("value", "expected"), [(0.5, 0.5), (0.0, 0.0), (math.nan, math.inf), (math.inf, math.inf), (-math.inf, math.inf)]
)
def test_usable_loss(value: float, expected: float) -> None:
    assert usable_loss(value) == expected


def test_progress_line() -> None:
    state = ProgressState(max_epochs=4)
    assert "no result yet" in state.line(0.0)
    state.running |= {"a", "b"}
    state.stopped.add("c")
    assert state.offer("a", {M.VAL_RMSE: 18.5}) and not state.offer("b", {M.VAL_RMSE: 18.6})
    assert not state.offer("b", {M.VAL_RMSE: float("nan")}) and not state.offer("b", {M.EPOCH: 1})
    assert state.line(12.0) == "[    12s] running 2, finished 0, stopped early 1, errored 0 | best val RMSE 18.50 (a)"


def test_progress_line_of_a_classifier_leads_with_accuracy() -> None:
    """Higher is better: a classifier run showed "no result yet" for its whole length when only RMSE counted."""
    state = ProgressState(max_epochs=4)
    assert state.offer("a", {M.VAL_ACCURACY: 0.91, M.VAL_LOSS: 0.3})
    assert not state.offer("b", {M.VAL_ACCURACY: 0.90}) and state.offer("b", {M.VAL_ACCURACY: 0.93})
    assert state.line(5.0).endswith("| best val accuracy 0.9300 (b)")


def test_shards_for_rank_are_disjoint_and_complete() -> None:
    from trainables.data.manifest import ShardInfo
    from trainables.data.shards import shards_for_rank

    shards = tuple(ShardInfo(path=f"train/part-{i:05d}.parquet", rows=1, bytes=1, sha256=str(i)) for i in range(7))
    parts = [shards_for_rank(shards, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert sorted(s.path for p in parts for s in p) == sorted(s.path for s in shards)
    assert parts == [shards_for_rank(shards, r, 3) for r in range(3)], "assignment must be deterministic"
    assert shards_for_rank(shards, 0, 1) == shards
    with pytest.raises(ValueError, match="rank = 3, world_size = 3"):
        shards_for_rank(shards, 3, 3)


def test_surplus_keeps_the_best_few() -> None:
    from cluster.tune.retention import surplus

    items = [
        ("c1", {M.VAL_LOSS: 0.5}),
        ("c2", {M.VAL_LOSS: 0.2}),
        ("c3", {M.VAL_LOSS: math.nan}),
        ("c4", {M.VAL_LOSS: 0.3}),
    ]
    assert surplus(items, 2) == ["c1", "c3"]
    assert surplus(items, 0) == ["c2", "c4", "c1", "c3"]
    assert surplus(items, 9) == []
