"""Data-parallel trials: each Tune trial a Ray Train ``TorchTrainer`` of 2 CPU workers (DDP over gloo) on disjoint
training shards, scheduled by ASHA like any trial, and training like the single-process loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cluster.api.launch import run_experiment
from cluster.plan.options import ResourceOptions, RunOptions, SchedulerOptions
from tests.helpers import DirSession
from trainables import metrics as M
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.data.manifest import read_manifest
from trainables.loop import run_trial
from trainables.storage import resolve

pytestmark = pytest.mark.ray
QUIET = Console(stderr=True, quiet=True)


def test_two_worker_trials_under_asha(ray_local: None, prepared_data: str, tmp_path: Path) -> None:
    summary = run_experiment(
        RunOptions(
            storage=str(tmp_path),
            name="ddp",
            data=prepared_data,
            num_samples=2,
            max_epochs=2,
            scheduler=SchedulerOptions(kind="asha", grace_period=1, reduction_factor=2),
            resources=ResourceOptions(workers_per_trial=2),
        ),
        console=QUIET,
    )
    assert summary.trials["errored"] == 0 and summary.trials["total"] == 2, summary.trials
    assert summary.best.test.rmse < summary.baselines["persistence"]["test"].rmse * 1.1
    all_shards = {s.path for s in read_manifest(resolve(prepared_data)).splits["train"].shards}
    results = {}
    for result_file in sorted(tmp_path.glob("ddp/forecast_trainable_*/result.json")):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        results[result_file.parent.name] = lines
        for r in lines:
            assert r[M.WORKERS] == 2 and r[M.DEVICE] == "cpu"
            assert 0 < r[M.GRAD_NORM] < float("inf") and 0 <= r[M.CLIPPED] <= 1, "gradient norm reduced over ranks"
            rank0, rank1 = (set(s) for s in r[M.TRAIN_SHARDS])
            assert rank0 and rank1 and not rank0 & rank1, f"ranks read overlapping shards: {r[M.TRAIN_SHARDS]}"
            assert rank0 | rank1 == all_shards
    assert len(results) == 2
    # One 2-worker trial fits the 2 CPUs at a time: the second starts after the first has ended.
    spans = sorted((r[0]["timestamp"] - r[0]["time_this_iter_s"], r[-1]["timestamp"]) for r in results.values())
    assert spans[1][0] >= spans[0][1] - 1, f"trials overlapped: {spans}"
    # The checkpoint Tune holds is a normal trial checkpoint: the best one scores as the summary says.
    assert Path(summary.best.checkpoint, "trial_state.pt").is_file()

    # Same configuration and seed in the plain loop (one process, all shards): the same quality within tolerance.
    name, lines = next(iter(results.items()))
    config = lines[-1]["config"]
    single = DirSession(str(tmp_path / "single"))
    run_trial(
        TrialConfig.from_flat(config),
        load_forecast_data(DataHandle(uri=prepared_data)),
        single,
        device=torch.device("cpu"),
    )
    dp_loss = [r[M.VAL_LOSS] for r in lines]
    one_loss = [r[M.VAL_LOSS] for r in single.reports][: len(dp_loss)]
    print(f"\ndata-parallel {name}: val loss by epoch {dp_loss}; single process {one_loss}")
    for dp, one in zip(dp_loss, one_loss, strict=True):
        assert dp == pytest.approx(one, rel=0.15), (dp_loss, one_loss)
