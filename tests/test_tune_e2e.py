"""End to end on real Ray and real data: ASHA stops trials, PBT exploits, the best beats persistence,
TensorBoard holds scalars and HParams, and the exported model reproduces the test score from raw rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from cluster.cli import app
from cluster.data import bundled_beijing_csv, bundled_beijing_path, read_csv_bytes
from cluster.experiment import run_experiment
from cluster.options import CheckpointOptions, RunOptions, SchedulerOptions
from cluster.summary import Summary
from trainables import metrics as M
from trainables.data.manifest import read_manifest
from trainables.export import load_forecaster
from trainables.storage import resolve

pytestmark = pytest.mark.ray

QUIET = Console(stderr=True, quiet=True)


@pytest.fixture(scope="module")
def asha_run(ray_local: None, prepared_data: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, Path]:
    storage = tmp_path_factory.mktemp("runs")
    opts = RunOptions(
        storage=str(storage),
        name="asha",
        data=prepared_data,
        num_samples=6,
        max_epochs=4,
        scheduler=SchedulerOptions(kind="asha", grace_period=1, reduction_factor=2),
        checkpoints=CheckpointOptions(num_to_keep=3, keep_stopped=1),
    )
    return run_experiment(opts, console=QUIET), storage / "asha"


@pytest.fixture(scope="module")
def pbt_run(ray_local: None, prepared_data: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, Path]:
    storage = tmp_path_factory.mktemp("runs")
    opts = RunOptions(
        storage=str(storage),
        name="pbt",
        data=prepared_data,
        num_samples=4,
        max_epochs=4,
        scheduler=SchedulerOptions(kind="pbt", perturbation_interval=1, quantile_fraction=0.25),
    )
    return run_experiment(opts, console=QUIET), storage / "pbt"


def test_asha_stops_trials_and_beats_persistence(asha_run: tuple[Summary, Path]) -> None:
    summary, exp = asha_run
    assert summary.trials["total"] == 6 and summary.trials["errored"] == 0
    assert summary.trials["stopped"] >= 1, f"ASHA stopped no trial: {summary.trials}"
    persistence = summary.baselines["persistence"]["test"].rmse
    assert summary.best.test.rmse < persistence, f"best test RMSE {summary.best.test.rmse:.2f} >= {persistence:.2f}"
    assert 15 < persistence < 25, "persistence RMSE on the Beijing test split should be about 20"
    best = json.loads((exp / "best.json").read_text())
    assert best["best"]["test"]["rmse"] == pytest.approx(summary.best.test.rmse)
    assert Path(summary.best.checkpoint).is_dir(), "the best checkpoint must still exist after retention"
    # Retention: of the trials ASHA stopped, only the best one keeps checkpoints; every trial keeps at most its 3
    # best; pruned folders hold only the marker.
    trial_dirs = [d for d in exp.glob("forecast_trainable_*") if d.is_dir()]
    states = {d: list(d.glob("checkpoint_*/trial_state.pt")) for d in trial_dirs}
    stopped = summary.trials["stopped"]
    assert sum(1 for d in trial_dirs if not states[d]) == max(0, stopped - 1)
    assert max(len(v) for v in states.values()) <= 3
    assert summary.checkpoints["kept"] == sum(len(v) for v in states.values())
    assert summary.checkpoints["bytes"] == sum(f.stat().st_size for v in states.values() for f in v) > 0
    for folder in exp.glob("forecast_trainable_*/checkpoint_*"):
        names = sorted(f.name for f in folder.iterdir())
        assert names in (["trial_state.pt"], ["pruned.json"]), f"{folder}: {names}"


def test_pbt_exploits_are_recorded_with_real_trial_ids(pbt_run: tuple[Summary, Path]) -> None:
    summary, exp = pbt_run
    assert summary.trials["total"] == 4 and summary.trials["errored"] == 0
    assert summary.pbt_exploits >= 1, "PBT with perturbation_interval=1 over 4 epochs made no exploit"
    lines = [json.loads(line) for line in (exp / "pbt_lineage.jsonl").read_text().splitlines()]
    assert len(lines) == summary.pbt_exploits
    trial_ids = {p.name.split("_")[2] + "_" + p.name.split("_")[3] for p in exp.glob("forecast_trainable_*")}
    for record in lines:
        assert record["trial"] in trial_ids and record["cloned_from"] in trial_ids
        assert record["trial"] != record["cloned_from"]
        assert set(record["new"]) == {"lr", "weight_decay", "dropout", "grad_clip"}
    global_log = (exp / "pbt_global.txt").read_text().strip().splitlines()
    assert len(global_log) == summary.pbt_exploits, "our lineage and Tune's own PBT log disagree on exploit count"
    assert summary.best.test.rmse < summary.baselines["persistence"]["test"].rmse


def test_tensorboard_holds_scalars_and_hparams(asha_run: tuple[Summary, Path]) -> None:
    _, exp = asha_run
    runs = sorted(p for p in (exp / "tensorboard").iterdir() if p.is_dir())
    assert len(runs) == 6, f"expected one TensorBoard run per trial, found {[p.name for p in runs]}"
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {M.TRAIN_LOSS, M.VAL_LOSS, M.VAL_RMSE, M.VAL_MAE, M.LEARNING_RATE} <= tags, tags
        steps = [e.step for e in acc.Scalars(M.VAL_LOSS)]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 4
        assert all(math.isfinite(e.value) for e in acc.Scalars(M.VAL_RMSE))
        hparams = acc.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in hparams and "_hparams_/experiment" in hparams
        start = hparams["_hparams_/session_start_info"].decode("latin-1")
        for name in ("hidden_size", "lr", "window"):
            assert name in start, f"hparam {name} missing from {run.name}"


def test_exported_model_reproduces_test_score_from_raw_rows(asha_run: tuple[Summary, Path], prepared_data: str) -> None:
    summary, exp = asha_run
    forecaster = load_forecaster(str(exp / "best_model"))
    raw = read_csv_bytes(bundled_beijing_csv(), "bundled")
    forecasts = forecaster.predict(raw)
    truth = pd.DataFrame({"target_time": pd.to_datetime(raw[["year", "month", "day", "hour"]]), "pm2.5": raw["pm2.5"]})
    merged = forecasts.merge(truth, on="target_time")
    # Score exactly what the summary scored: real observations from the test split's first timestamp on.
    start = pd.Timestamp(read_manifest(resolve(prepared_data)).splits["test"].start)
    scored = merged[(merged["target_time"] >= start) & merged["pm2.5"].notna()]
    assert len(scored) > 6000
    rmse = float(np.sqrt(np.mean((scored["forecast"] - scored["pm2.5"]) ** 2)))
    assert rmse == pytest.approx(summary.best.test.rmse, rel=1e-4)

    # The same through the CLI: export to a new folder, predict from the bundled raw CSV file.
    runner = CliRunner()
    out = exp.parent / "exported"
    done = runner.invoke(app, ["export", str(exp), "--out", str(out)])
    assert done.exit_code == 0, done.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["best"]["test"]["rmse"] == pytest.approx(summary.best.test.rmse)
    again = runner.invoke(app, ["export", str(exp), "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
    preds = exp.parent / "preds.csv"
    done = runner.invoke(app, ["predict", str(out), str(bundled_beijing_path()), "--out", str(preds)])
    assert done.exit_code == 0, done.output
    cli_forecasts = pd.read_csv(preds, parse_dates=["origin", "target_time"])
    assert np.allclose(cli_forecasts["forecast"].to_numpy(), forecasts["forecast"].to_numpy(), rtol=1e-6)
    bad = exp.parent / "bad.csv"
    raw.drop(columns=["DEWP"]).to_csv(bad, index=False)
    refused = runner.invoke(app, ["predict", str(out), str(bad)])
    assert refused.exit_code == 2 and "lacks column(s) ['DEWP']" in refused.output
