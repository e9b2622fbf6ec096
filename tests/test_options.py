"""Run options: each bound tested just inside and just outside, matched on the option's name."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.plan.options import (
    PACK_ON_CPU,
    CheckpointOptions,
    OptionError,
    ResourceOptions,
    RunOptions,
    SchedulerOptions,
)


def run_opts(**kw: Any) -> RunOptions:
    return RunOptions(**kw)


@pytest.mark.parametrize(
    ("inside", "outside", "match"),
    [
        ({"num_samples": 1}, {"num_samples": 0}, "--num-samples = 0"),
        ({"max_epochs": 2}, {"max_epochs": 0}, "--max-epochs = 0"),
        ({"horizon": 1}, {"horizon": 0}, "--horizon = 0"),
        ({"seed": 0}, {"seed": -1}, "--seed = -1"),
        ({"time_budget_s": 0.5}, {"time_budget_s": 0.0}, "--time-budget-s = 0.0"),
        ({"patience": 0}, {"patience": -1}, "--patience = -1"),
        ({"min_delta": 0.0}, {"min_delta": -0.1}, "--min-delta = -0.1"),
        ({"max_failures": 0}, {"max_failures": -1}, "--max-failures = -1"),
        ({"epoch_samples": 1}, {"epoch_samples": 0}, "--epoch-samples = 0: must be >= 1"),
        ({"name": "a" * 100}, {"name": "a" * 101}, "--name"),
        ({"name": "run-1.b_c"}, {"name": "../escape"}, "--name = '../escape'"),
        ({"search": "grid"}, {"search": "bayes"}, "--search = 'bayes': must be random, grid or tpe"),
        (
            {"search": "tpe", "scheduler": SchedulerOptions(kind="asha")},
            {"search": "tpe", "scheduler": SchedulerOptions(kind="pbt")},
            "--search = 'tpe' with --scheduler pbt",
        ),
        (
            {"max_epochs": 4, "scheduler": SchedulerOptions(grace_period=4)},
            {"max_epochs": 4, "scheduler": SchedulerOptions(grace_period=5)},
            "--grace-period = 5",
        ),
        (
            {"scheduler": SchedulerOptions(grace_period=1)},
            {"scheduler": SchedulerOptions(grace_period=0)},
            "--grace-period = 0",
        ),
        (
            {"scheduler": SchedulerOptions(reduction_factor=2)},
            {"scheduler": SchedulerOptions(reduction_factor=1)},
            "--reduction-factor = 1: must be >= 2",
        ),
        (
            {"max_epochs": 4, "scheduler": SchedulerOptions(kind="pbt", perturbation_interval=3)},
            {"max_epochs": 4, "scheduler": SchedulerOptions(kind="pbt", perturbation_interval=4)},
            "--perturbation-interval = 4",
        ),
        (
            {"scheduler": SchedulerOptions(kind="pbt", quantile_fraction=0.5)},
            {"scheduler": SchedulerOptions(kind="pbt", quantile_fraction=0.51)},
            "--quantile-fraction = 0.51",
        ),
        (
            {"scheduler": SchedulerOptions(kind="pbt", resample_probability=1.0)},
            {"scheduler": SchedulerOptions(kind="pbt", resample_probability=1.01)},
            "--resample-probability",
        ),
        (
            {"scheduler": SchedulerOptions(kind="pbt"), "checkpoints": CheckpointOptions(num_to_keep=3)},
            {"scheduler": SchedulerOptions(kind="pbt"), "checkpoints": CheckpointOptions(num_to_keep=2)},
            "--keep-checkpoints = 2: PBT needs >= 3",
        ),
        (
            {"checkpoints": CheckpointOptions(num_to_keep=1)},
            {"checkpoints": CheckpointOptions(num_to_keep=0)},
            "--keep-checkpoints = 0",
        ),
        (
            {"checkpoints": CheckpointOptions(sync_period_s=1)},
            {"checkpoints": CheckpointOptions(sync_period_s=0)},
            "--sync-period-s = 0: must be >= 1",
        ),
        (
            {"resources": ResourceOptions(cpus_per_trial=0.5)},
            {"resources": ResourceOptions(cpus_per_trial=0)},
            "--cpus-per-trial = 0",
        ),
        (
            {"resources": ResourceOptions(gpus_per_trial=0.25)},
            {"resources": ResourceOptions(gpus_per_trial=-0.25)},
            "--gpus-per-trial = -0.25",
        ),
        (
            {"resources": ResourceOptions(gpus_per_trial=2)},
            {"resources": ResourceOptions(gpus_per_trial=1.5)},
            "--gpus-per-trial = 1.5: above 1 it must be a whole number",
        ),
        (
            {"resources": ResourceOptions(max_concurrent_trials=1)},
            {"resources": ResourceOptions(max_concurrent_trials=0)},
            "--max-concurrent-trials = 0",
        ),
        (
            {"resources": ResourceOptions(pack=1024)},
            {"resources": ResourceOptions(pack=1025)},
            r"--pack = 1025: must be 0 \(off\) or 1..1024",
        ),
        (
            {"resources": ResourceOptions(pack=0)},
            {"resources": ResourceOptions(pack=-1)},
            "--pack = -1",
        ),
        (
            {"resources": ResourceOptions(pack=8, workers_per_trial=1)},
            {"resources": ResourceOptions(pack=8, workers_per_trial=2)},
            "--pack = 8 with --workers-per-trial = 2: a data-parallel trial already fills its GPUs",
        ),
    ],
)
def test_option_boundaries(inside: dict[str, Any], outside: dict[str, Any], match: str) -> None:
    run_opts(**inside).validate()
    with pytest.raises(OptionError, match=match):
        run_opts(**outside).validate()


def test_scheduler_kind_is_checked() -> None:
    with pytest.raises(OptionError, match="--scheduler = 'hyperband'"):
        RunOptions(scheduler=SchedulerOptions(kind="hyperband")).validate()  # type: ignore[arg-type]


def test_resources_must_fit_a_node() -> None:
    fits = ResourceOptions(cpus_per_trial=2)
    fits.check_fits([2.0, 1.0], [])
    with pytest.raises(OptionError, match=r"--cpus-per-trial = 3: no node has that many CPUs \(largest: 2\)"):
        ResourceOptions(cpus_per_trial=3).check_fits([2.0, 1.0], [])
    ResourceOptions(gpus_per_trial=0.5).check_fits([4.0], [1.0])
    with pytest.raises(OptionError, match=r"--gpus-per-trial = 0.5: .*the cluster has no GPU"):
        ResourceOptions(gpus_per_trial=0.5).check_fits([4.0], [])


def test_packing_needs_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PACK_ON_CPU, raising=False)
    ResourceOptions(pack=8).check_fits([16.0], [1.0])
    with pytest.raises(OptionError, match=r"--pack = 8: packing needs a CUDA GPU and the cluster has none.*4-9x"):
        ResourceOptions(pack=8).check_fits([16.0], [])
    monkeypatch.setenv(PACK_ON_CPU, "1")  # tests only
    ResourceOptions(pack=8).check_fits([16.0], [])


def test_data_parallel_resources() -> None:
    for bad in (0, 65):
        with pytest.raises(OptionError, match=f"--workers-per-trial = {bad}: must be 1..64"):
            ResourceOptions(workers_per_trial=bad).validate()
    ResourceOptions(workers_per_trial=64).validate()
    two = ResourceOptions(workers_per_trial=2, cpus_per_trial=1)
    two.check_fits([1.0, 1.0], [])  # one worker per node fits
    with pytest.raises(
        OptionError, match=r"--workers-per-trial = 3 x --cpus-per-trial = 1: 3 CPUs per trial, the cluster has 2"
    ):
        ResourceOptions(workers_per_trial=3).check_fits([1.0, 1.0], [])
    # Trials at once: as many whole worker groups as the cluster holds, never 0, never above the user's cap.
    assert two.concurrency([1.0, 1.0], []) == 1
    assert two.concurrency([8.0, 8.0, 0.0], []) == 8
    assert ResourceOptions(workers_per_trial=2, max_concurrent_trials=3).concurrency([8.0, 8.0], []) == 3
    assert ResourceOptions(workers_per_trial=2, gpus_per_trial=0.5).concurrency([64.0], [1.0, 1.0]) == 2
    assert ResourceOptions(workers_per_trial=4).concurrency([1.0], []) == 1
    assert ResourceOptions(max_concurrent_trials=5).concurrency([1.0], []) == 5
    assert ResourceOptions().concurrency([1.0], []) is None
