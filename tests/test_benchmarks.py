"""The benchmark scripts' own logic (the runs themselves are too long for CI): bars, boundaries, search spaces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmarks.common import DATASETS
from benchmarks.quality import RUNS, verdict
from cluster.cli import app
from cluster.plan.space import param_rules
from cluster.prep.data import BUNDLED_CHANGES, prepare_default
from search_spaces import load_space
from trainables.data.forecast_prep import ForecastPrepConfig
from trainables.data.manifest import read_manifest
from trainables.storage import resolve


def forecast_summary(test_rmse: float, persistence: float = 20.0) -> dict[str, Any]:
    scores = {"rmse": persistence, "mae": 1.0}
    return {
        "task": "forecast",
        "dataset": "beijing-pm25",
        "trials": {"total": 1, "finished": 1, "stopped": 0, "errored": 0},
        "best": {"config": {"hidden_size": 64}, "epoch": 3, "test": {"rmse": test_rmse, "mae": 1.0}},
        "baselines": {"persistence": {"test": scores}, "seasonal_naive": {"test": {"rmse": 80.0, "mae": 50.0}}},
    }


def classify_summary(accuracy: float, majority: float = 0.5) -> dict[str, Any]:
    return {
        "task": "classify",
        "dataset": "r8",
        "trials": {"total": 1, "finished": 1, "stopped": 0, "errored": 0},
        "best": {"config": {}, "epoch": 5, "test": {"accuracy": accuracy, "macro_f1": 0.9}},
        "baselines": {"majority_class": {"test": {"accuracy": majority, "macro_f1": 0.1}}},
    }


@pytest.mark.parametrize(("test_rmse", "passed"), [(18.0, True), (17.9, True), (18.01, False), (20.5, False)])
def test_forecast_bar_is_ten_percent_below_persistence(test_rmse: float, passed: bool) -> None:
    out = verdict(forecast_summary(test_rmse), RUNS["beijing"].threshold)
    assert out["passed"] is passed
    assert out["gain_pct"] == pytest.approx(100 * (20.0 - test_rmse) / 20.0, abs=0.01)
    assert out["winning_config"] == {"hidden_size": 64} and out["persistence_rmse"] == 20.0


def test_an_ensemble_run_is_judged_on_the_exported_ensemble() -> None:
    summary = forecast_summary(18.2)  # the best trial alone: 9% below persistence
    summary["ensemble"] = {"members": [{}, {}, {}], "val": {"rmse": 19.0}, "test": {"rmse": 17.9, "mae": 1.0}}
    out = verdict(summary, RUNS["beijing"].threshold)
    assert out["passed"] is True and out["test_rmse"] == 17.9 and out["best_trial_test_rmse"] == 18.2
    assert out["ensemble"] == 3 and "--ensemble" in RUNS["beijing"].run


@pytest.mark.parametrize(
    ("run", "accuracy", "passed"),
    [("r8", 0.96, True), ("r8", 0.9599, False), ("20ng", 0.70, True), ("20ng", 0.6999, False)],
)
def test_classification_bars_hold_at_their_boundary(run: str, accuracy: float, passed: bool) -> None:
    out = verdict(classify_summary(accuracy), RUNS[run].threshold)
    assert out["passed"] is passed and out["majority_accuracy"] == 0.5


@pytest.mark.parametrize("name", sorted(RUNS))
def test_quality_search_spaces_load_and_match_their_task(name: str) -> None:
    spec = RUNS[name]
    space_path = spec.run[spec.run.index("--space") + 1]
    space = load_space(space_path, param_rules())
    assert space.task == ("classify" if "classify" in spec.prepare else "forecast")
    if spec.vectors_from:
        assert "embeddings" in space.params and not any("test" in s for s in spec.vectors_from)
    assert spec.budget_s < spec.limit_s


def test_beijing_loose_clip_differs_from_the_quality_space_only_in_its_clipping_range() -> None:
    def params(run: str) -> dict[str, Any]:
        spec = RUNS[run]
        return dict(load_space(spec.run[spec.run.index("--space") + 1], param_rules()).params)

    tight, loose = params("beijing"), params("beijing-loose-clip")
    assert tight.keys() == loose.keys()
    assert [k for k in tight if tight[k] != loose[k]] == ["grad_clip"]
    assert (tight["grad_clip"].low, tight["grad_clip"].high) == (0.03, 1.0)
    assert (loose["grad_clip"].low, loose["grad_clip"].high) == (0.5, 2.0)
    assert RUNS["beijing-loose-clip"].run[2:] == RUNS["beijing"].run[2:], "only the space may differ"


def test_beijing_without_changes_differs_from_the_bundled_preparation_only_in_its_change_features(
    tmp_path: Path,
) -> None:
    """The A/B of the quality runs is fair: same columns, policies, scaling and split; no diffs or increments."""
    spec = RUNS["beijing-no-changes"]
    source = DATASETS / spec.sources[0]
    if not source.exists():
        pytest.skip(f"{source} not present")
    out = tmp_path / "plain"
    done = CliRunner().invoke(app, ["data", "prepare", str(source), "--out", str(out), *spec.prepare])
    assert done.exit_code == 0, done.output
    plain = read_manifest(resolve(str(out))).preprocessing["fitted"]
    bundled = prepare_default(resolve(str(tmp_path / "bundled"))).preprocessing["fitted"]
    assert ForecastPrepConfig.from_dict(plain["config"]) == replace(
        ForecastPrepConfig.from_dict(bundled["config"]), diffs=(), increments=()
    )
    changes = [n for n in bundled["feature_names"] if n not in plain["feature_names"]]
    assert changes == ["pm2.5__diff", "DEWP__diff", "TEMP__diff", "PRES__diff", "Iws__step"]
    assert len(changes) == len(BUNDLED_CHANGES["diffs"]) + len(BUNDLED_CHANGES["increments"])
    assert plain["centre"] == bundled["centre"] and plain["scale"] == bundled["scale"]


def test_the_panel_scale_space_keeps_models_small() -> None:
    from benchmarks.panel_scale import SPACE

    space = load_space(str(SPACE), param_rules())
    assert space.task == "forecast"
    assert max(space.params["hidden_size"].values) <= 32 and max(space.params["window"].values) <= 28  # type: ignore[type-var]
    assert space.params["window_norm"].values == (True,), "the rest of forecast-panel is inherited"


def test_the_peak_sampler_sees_the_memory_of_a_process_tree() -> None:
    import os
    import sys

    from benchmarks.panel_scale import measured

    child = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True); print('done')"
    seconds, peaks, out = measured([sys.executable, "-c", parent], dict(os.environ))
    assert out.strip() == "done" and seconds >= 1.5
    assert 300 < peaks[0][0] < 400, peaks[:3]
    assert peaks[0][0] > max(mb for mb, _ in peaks[1:]) + 250, "the child's peak is its own, not its parent's"
