"""The benchmark suite's code (benchmarks/suite.py and its parts): the arithmetic on boundaries, and a tiny smoke of
every part that fits CI. The figures themselves come from full runs, never from tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import Curve, best_so_far, spread, target_for
from benchmarks.cpu_share import account
from benchmarks.suite import summary_markdown
from benchmarks.tuning import BEIJING, analyse
from tests.conftest import SHARED_DATASETS
from trainables import metrics as M


def test_best_so_far_keeps_improvements_only_and_stops_at_the_budget() -> None:
    points = [(3.0, 20.0), (1.0, 25.0), (2.0, 26.0), (4.0, float("nan")), (5.0, 19.0), (9.0, 10.0)]
    curve = best_so_far(points, "min", until=8.0)
    assert curve.times == [1.0, 3.0, 5.0] and curve.values == [25.0, 20.0, 19.0]
    assert curve.final() == 19.0
    up = best_so_far([(1.0, 0.5), (2.0, 0.4), (3.0, 0.9)], "max", until=3.0)
    assert up.values == [0.5, 0.9]


@pytest.mark.parametrize(
    ("mode", "value", "reached"),
    [("min", 20.4, True), ("min", 20.41, False), ("max", 0.882, True), ("max", 0.8819, False)],
)
def test_time_to_target_at_the_two_percent_boundary(mode: str, value: float, reached: bool) -> None:
    best = 20.0 if mode == "min" else 0.9
    target = target_for(best, mode)
    assert target == pytest.approx(20.4 if mode == "min" else 0.882)
    curve = Curve([7.0], [value])
    assert (curve.time_to(target, mode) == 7.0) is reached


def test_spread_counts_runs_that_never_got_there() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3, "missing": 1}
    assert spread([None])["median"] is None


def curves(asha: list[tuple[float, float]], random: list[tuple[float, float]]) -> dict[str, dict[int, Curve]]:
    flat = [(50.0, 30.0)]
    return {
        "asha": {0: best_so_far(asha, "min", 90)},
        "pbt": {0: best_so_far(flat, "min", 90)},
        "random": {0: best_so_far(random, "min", 90)},
        "optuna": {0: best_so_far([(5.0, 21.0)], "min", 90)},
    }


def test_headline_ratios() -> None:
    trials = {m: {0: 3} for m in ("asha", "pbt", "random", "optuna")}
    out = analyse(BEIJING, curves([(10.0, 20.0)], [(40.0, 20.3)]), trials, 90)
    assert out["best_found"] == 20.0 and out["target"] == pytest.approx(20.4)
    assert out["headlines"]["asha_ttt_over_random"]["per_seed"] == [pytest.approx(10 / 40)]
    # Optuna's 21.0 against ASHA's 20.0: ours 4.76% better at equal wall clock.
    assert out["headlines"]["asha_vs_optuna_gain"]["per_seed"] == [pytest.approx(1 / 21)]
    assert out["methods"]["asha"]["trials_per_seed"] == {"0": 3}
    assert out["methods"]["pbt"]["reached"] == 0 and out["methods"]["asha"]["reached"] == 1
    # Random search never reaching the target within the budget: the ratio is bounded by ASHA's time over the budget.
    bounded = analyse(BEIJING, curves([(10.0, 20.0)], [(40.0, 25.0)]), trials, 90)
    assert bounded["headlines"]["asha_ttt_over_random"]["per_seed"] == [pytest.approx(10 / 90)]


def result(t: float, trial: str, train_cpu: float, startup: dict[str, float] | None = None) -> dict[str, Any]:
    row = {
        M.WALL_CLOCK: t,
        M.TRAIN_SECONDS: 1.0,
        M.TRAIN_CPU_SECONDS: train_cpu,
        M.EVAL_SECONDS: 0.1,
        "trial_id": trial,
    }
    return row | (startup or {})


def test_cpu_accounting_splits_the_window() -> None:
    fresh = {M.STARTUP_TOTAL: 3.9, M.STARTUP_PROCESS: 2.9, M.STARTUP_DATA: 0.1, M.STARTUP_BUILD: 0.9}
    reused = {M.STARTUP_TOTAL: 0.0, M.STARTUP_PROCESS: 0.0, M.STARTUP_DATA: 0.0, M.STARTUP_BUILD: 0.0}
    rows = [
        result(105.0, "a", 1.0, fresh),  # trial a started at 105 - 1 - 0.1 - 3.9 = 100
        result(106.1, "a", 1.0),
        result(107.2, "b", 1.0, reused),  # b started at 106.1 on a's worker
        result(110.0, "b", 1.0),
    ]
    out = account(rows, launched=95.0, exited=112.0, cpus=1)
    assert out["before_first_trial_s"] == pytest.approx(5.0) and out["window_s"] == pytest.approx(10.0)
    assert out["train_share_of_window"] == pytest.approx(0.4) and out["train_share_of_command"] == pytest.approx(4 / 17)
    assert out["startup_share_of_window"] == pytest.approx(0.39) and out["eval_share_of_window"] == pytest.approx(0.04)
    assert out["fresh_process_trials"] == 1 and out["startup_fresh"]["process_s"] == 2.9
    assert out["startup_reused"]["total_s"] == 0.0 and out["trials"] == 2


def test_summary_renders_every_part_present() -> None:
    trials = {m: {0: 3} for m in ("asha", "pbt", "random", "optuna")}
    results = {
        "mode": "quick",
        "wall_s": 120.0,
        "machine": {"date": "today", "cpus": 2, "platform": "linux", "python": "3.11", "torch": "2"},
        "tuning": {"beijing": analyse(BEIJING, curves([(10.0, 20.0)], [(40.0, 20.3)]), trials, 90)},
        "startup": {
            "launches": 5,
            "plain_median_s": 3.0,
            "lstm_tune_median_s": 6.6,
            "ratio": 2.2,
            "lstm_tune_cold_s": 8,
        },
    }
    text = summary_markdown(results)
    assert "| `lstm-tune run` (bundled data, 2 trials, local Ray) | 6.60 s | 2.20 |" in text
    assert "asha time-to-target / random's: median 0.25" in text and "| optuna | 21.0000" in text
    assert "asha vs Optuna at equal wall clock" in text
    assert "scheduling" not in text.lower()


def test_optuna_suggestions_follow_the_search_space_file() -> None:
    import optuna

    from benchmarks.optuna_driver import sample_config
    from cluster.plan.space import param_rules
    from search_spaces import load_space

    space = load_space("forecast-small", param_rules())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        config = sample_config(study.ask(), space)
        assert config["hidden_size"] in (16, 32, 64) and config["window"] in (12, 24)
        assert 1e-3 <= config["lr"] <= 1e-2 and 0.0 <= config["dropout"] <= 0.3
        assert set(config) == set(space.params)


@pytest.mark.integration
def test_optuna_driver_runs_the_trial_code_until_its_deadline(prepared_data: str, tmp_path: Path) -> None:
    from benchmarks.tuning import run_optuna

    budget = 12.0
    run = run_optuna(BEIJING, Path(prepared_data), seed=0, workdir=tmp_path, budget_s=budget)
    rows = run["rows"]
    assert rows, "no epoch reported within the deadline"
    assert all(r["time/unix"] <= run["launched"] + budget for r in rows)
    assert all(0 < r["val/rmse"] < 200 for r in rows) and {r["epoch"] for r in rows} >= {1}


@pytest.mark.ray
def test_overhead_parts_smoke(ray_local: None, prepared_data: str, tmp_path: Path) -> None:
    from benchmarks.overhead import MODEL_SIZES, bare_loop, scheduling, tune_trial

    small = MODEL_SIZES["small"]
    bare = bare_loop(prepared_data, small, epochs=2)
    tune = tune_trial(prepared_data, small, epochs=3, workdir=tmp_path)
    assert bare["samples"] == pytest.approx(tune["samples"], rel=1e-6)  # the same windows
    assert tune["step_samples_per_s"] > 0 and bare["epoch_samples_per_s"] > 0
    lines: list[str] = []
    rows = scheduling([2], iterations=1, work_s=0.2, workdir=tmp_path, log=lines.append)
    assert rows[0]["errors"] == 0 and rows[0]["wall_s"] >= rows[0]["ideal_s"] and lines


@pytest.mark.integration
@pytest.mark.skipif(
    not (SHARED_DATASETS / "household_power_minute.csv.xz").exists(), reason="../shared/datasets not present"
)
def test_scaling_smoke(tmp_path: Path) -> None:
    from benchmarks.scaling import measure

    started = time.perf_counter()
    rows = measure([0.002], tmp_path, log=lambda line: None)
    assert rows[0]["rows"] == round(2_075_259 * 0.002)
    assert rows[0]["train_windows"] > 0 and rows[0]["peak_rss_mb"] > 50
    assert rows[0]["prepare_s"] + rows[0]["epoch_s"] < time.perf_counter() - started
    json.dumps(rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--only", "tuning,nope"], "--only: unknown part(s) ['nope']; allowed: startup, tuning, cpu, scaling"),
        (["--seeds", "0,x"], "--seeds = '0,x': comma-separated integers"),
        (["--quick", "--smoke"], "not allowed with argument"),
        (["--methods", "asha,hyperopt"], "--methods: unknown method(s) ['hyperopt']; allowed: asha, asha-tpe"),
        (["--datasets", "beijing,mnist"], "--datasets: unknown dataset(s) ['mnist']; allowed: beijing, r8"),
        (["--merge", "/nonexistent/results.json"], "--merge /nonexistent/results.json: [Errno 2]"),
    ],
)
def test_bench_command_refuses_bad_arguments_before_running_anything(args: list[str], needle: str) -> None:
    from tests.test_cli import cli

    done = cli("bench", *args, timeout=60)
    assert done.returncode == 2 and needle in done.stderr and "lstm-tune bench" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.integration
def test_startup_part_times_both_launches_to_their_first_result(tmp_path: Path) -> None:
    """One cold and one warm launch of each (about 30 s): the part's code, not the machine's figures."""
    from benchmarks.startup import measure

    lines: list[str] = []
    r = measure(1, tmp_path, lines.append)
    assert len(r["plain_s"]) == len(r["lstm_tune_s"]) == 1
    assert (
        0 < r["plain_median_s"] < r["lstm_tune_median_s"]
        and r["ratio"] == r["lstm_tune_median_s"] / r["plain_median_s"]
    )
    assert r["lstm_tune_cold_s"] > 0 and any("best val RMSE" in line for line in lines)
