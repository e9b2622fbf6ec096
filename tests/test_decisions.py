"""Small decisions, tested without Ray: which checkpoint is newest, which stopped trials lose their checkpoints,
what a diverged metric becomes, how progress reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster.progress import ProgressState
from cluster.retention import best_loss, stopped_to_prune
from trainables import metrics as M
from trainables.loop import usable_loss
from trainables.trainable import latest_checkpoint_dir


def test_latest_checkpoint_dir() -> None:
    assert latest_checkpoint_dir([]) is None
    assert latest_checkpoint_dir(["result.json", "events.out"]) is None
    assert latest_checkpoint_dir(["checkpoint_000002", "checkpoint_000010", "checkpoint_000009"]) == "checkpoint_000010"
    assert latest_checkpoint_dir(["checkpoint_x", "checkpoint_000001.tmp", "checkpoint_000001"]) == "checkpoint_000001"


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
    state.best_rmse, state.best_trial = 18.5, "a"
    assert state.line(12.0) == "[    12s] running 2, finished 0, stopped early 1, errored 0 | best val RMSE 18.50 (a)"


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
    from cluster.retention import surplus

    items = [
        ("c1", {M.VAL_LOSS: 0.5}),
        ("c2", {M.VAL_LOSS: 0.2}),
        ("c3", {M.VAL_LOSS: math.nan}),
        ("c4", {M.VAL_LOSS: 0.3}),
    ]
    assert surplus(items, 2) == ["c1", "c3"]
    assert surplus(items, 0) == ["c2", "c4", "c1", "c3"]
    assert surplus(items, 9) == []
