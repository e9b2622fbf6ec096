"""End to end on real Ray and real data: ASHA stops trials (every rung decision recorded), PBT exploits (recorded and
in TensorBoard), the best beats persistence, TensorBoard holds HParams while the run is going, the report draws
every plot, and the exported model reproduces the test score from raw rows."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from cluster.api.launch import run_experiment
from cluster.cli import app
from cluster.plan.options import CheckpointOptions, RunOptions, SchedulerOptions
from cluster.prep.data import bundled_beijing_csv, bundled_beijing_path, read_csv_bytes
from cluster.results.summary import Summary
from trainables import metrics as M
from trainables.data.manifest import read_manifest
from trainables.export import load_forecaster
from trainables.storage import resolve

pytestmark = pytest.mark.ray

QUIET = Console(stderr=True, quiet=True)


class LiveWatcher:
    """Polls an experiment's TensorBoard folder while the run is going, with TensorBoard's own reader, and keeps
    the first moment a trial's run showed HParams, then scalars, before that trial (and the run) had finished."""

    def __init__(self, exp: Path) -> None:
        self.exp = exp
        self.hparams_while_running: dict[str, Any] | None = None
        self.scalars_while_running: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> LiveWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        board = self.exp / "tensorboard"
        while not self._stop.is_set() and self.scalars_while_running is None:
            for run in sorted(board.iterdir()) if board.is_dir() else []:
                acc = EventAccumulator(str(run))
                acc.Reload()
                # Checked after reading: the run and the trial must still be going when the events were seen.
                trial_done = any('"done": true' in f.read_text() for f in self.exp.glob(f"{run.name}*/result.json"))
                if (self.exp / "best.json").exists() or trial_done:
                    continue
                seen = {"run": run.name, "at": time.time()}
                if self.hparams_while_running is None and "_hparams_/session_start_info" in acc.PluginTagToContent(
                    "hparams"
                ):
                    self.hparams_while_running = seen
                if self.hparams_while_running is not None and M.VAL_LOSS in acc.Tags()["scalars"]:
                    self.scalars_while_running = seen
                    break
            self._stop.wait(0.5)


@pytest.fixture(scope="module")
def asha_run(
    ray_local: None, prepared_data: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Summary, Path, LiveWatcher]:
    storage = tmp_path_factory.mktemp("runs")
    opts = RunOptions(
        storage=str(storage),
        name="asha",
        data=prepared_data,
        num_samples=6,
        max_epochs=4,
        scheduler=SchedulerOptions(kind="asha", grace_period=1, reduction_factor=2),
        checkpoints=CheckpointOptions(num_to_keep=3, keep_stopped=1),
        ensemble=3,  # the export (and predict) is the mean forecast of the best 3 trials
    )
    with LiveWatcher(storage / "asha") as watcher:
        summary = run_experiment(opts, console=QUIET)
    return summary, storage / "asha", watcher


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


def test_asha_stops_trials_and_beats_persistence(asha_run: tuple[Summary, Path, LiveWatcher]) -> None:
    summary, exp, _ = asha_run
    assert summary.trials["total"] == 6 and summary.trials["errored"] == 0
    assert summary.trials["stopped"] >= 1, f"ASHA stopped no trial: {summary.trials}"
    persistence = summary.baselines["persistence"]["test"].rmse
    assert summary.best.test.rmse < persistence, f"best test RMSE {summary.best.test.rmse:.2f} >= {persistence:.2f}"
    assert 15 < persistence < 25, "persistence RMSE on the Beijing test split should be about 20"
    best = json.loads((exp / "best.json").read_text())
    assert best["best"]["test"]["rmse"] == pytest.approx(summary.best.test.rmse)
    assert Path(summary.best.checkpoint).is_dir(), "the best checkpoint must still exist after retention"
    # The ensemble: the best trial first, then the next two by validation loss, each at its best epoch.
    assert summary.ensemble is not None
    members = summary.ensemble.members
    assert members[0].trial_id == summary.best.trial_id and members[0].checkpoint == summary.best.checkpoint
    assert len({m.trial_id for m in members}) == 3
    best_val, last_epoch = {}, {}
    for f in exp.glob("forecast_trainable_*/result.json"):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        best_val[lines[0]["trial_id"]] = min(line[M.VAL_RMSE] for line in lines)
        last_epoch[lines[0]["trial_id"]] = max(line[M.EPOCH] for line in lines)
    ranked = sorted(best_val, key=best_val.__getitem__)
    assert [m.trial_id for m in members] == ranked[:3], f"members are not the best 3 by val RMSE: {best_val}"
    assert [m.val.rmse for m in members] == pytest.approx([best_val[m.trial_id] for m in members])
    assert best["ensemble"]["test"]["rmse"] == pytest.approx(summary.ensemble.test.rmse)
    assert summary.ensemble.test.rmse < persistence, f"ensemble {summary.ensemble.test.rmse:.2f} >= {persistence:.2f}"
    # Retention: of the trials ASHA stopped, only the best one keeps checkpoints, and the ensemble's members keep
    # the checkpoint they were taken from; every trial keeps at most its 3 best; pruned folders hold only the marker.
    trial_dirs = [d for d in exp.glob("forecast_trainable_*") if d.is_dir()]
    states = {d: list(d.glob("checkpoint_*/trial_state.pt")) for d in trial_dirs}
    for m in members:
        assert Path(m.checkpoint, "trial_state.pt").is_file(), f"member {m.trial_id}'s checkpoint was pruned"
    stopped = [t for t in ranked if last_epoch[t] < 4]
    kept = set(stopped[:1]) | {m.trial_id for m in members}
    assert sum(1 for d in trial_dirs if not states[d]) == len([t for t in stopped if t not in kept])
    assert max(len(v) for v in states.values()) <= 3
    assert summary.checkpoints["kept"] == sum(len(v) for v in states.values())
    assert summary.checkpoints["bytes"] == sum(f.stat().st_size for v in states.values() for f in v) > 0
    for folder in exp.glob("forecast_trainable_*/checkpoint_*"):
        names = sorted(f.name for f in folder.iterdir())
        assert names in (["trial_state.pt"], ["pruned.json"]), f"{folder}: {names}"


def test_experiments_show_and_list_a_finished_forecaster(asha_run: tuple[Summary, Path, LiveWatcher]) -> None:
    """Read back from storage alone: status, trial counts, the lowest val RMSE any trial reported, the test figures."""
    summary, exp, _ = asha_run
    shown = CliRunner().invoke(app, ["experiments", "show", str(exp), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    reported = [
        json.loads(line)[M.VAL_RMSE]
        for f in exp.glob("forecast_trainable_*/result.json")
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    assert info["status"] == "finished" and info["metric"] == M.VAL_RMSE
    assert info["trials"] == {"TERMINATED": 6} and info["retries"] == {}
    assert info["best_val"] == info["best_val_rmse"] == pytest.approx(min(reported))
    assert info["test_rmse"] == pytest.approx(summary.exported.test.rmse), "the exported model's (the ensemble's)"
    persistence = summary.baselines["persistence"]["test"].rmse
    assert info["persistence_test_rmse"] == pytest.approx(persistence) and info["test_accuracy"] is None
    text = CliRunner().invoke(app, ["experiments", "show", str(exp)]).output
    assert f"best so far: val RMSE {min(reported):.2f}" in text and f"vs persistence {persistence:.2f}" in text, text
    listed = CliRunner().invoke(app, ["experiments", "list", str(exp.parent)]).output
    assert "asha" in listed and f"{summary.exported.test.rmse:.2f} RMSE" in listed, listed


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


def test_tensorboard_holds_scalars_and_hparams(asha_run: tuple[Summary, Path, LiveWatcher]) -> None:
    _, exp, watcher = asha_run
    # While the run was going, with TensorBoard's own reader: a running trial's HParams, then its scalars.
    assert watcher.hparams_while_running is not None, "no HParams seen before the run finished"
    assert watcher.scalars_while_running is not None, "no streamed scalars seen before the run finished"
    runs = sorted(p for p in (exp / "tensorboard").iterdir() if p.is_dir())
    assert len(runs) == 6, f"expected one TensorBoard run per trial, found {[p.name for p in runs]}"
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {M.TRAIN_LOSS, M.VAL_LOSS, M.VAL_RMSE, M.VAL_MAE, M.LEARNING_RATE, M.GRAD_NORM, M.CLIPPED} <= tags, tags
        steps = [e.step for e in acc.Scalars(M.VAL_LOSS)]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 4
        assert all(math.isfinite(e.value) for e in acc.Scalars(M.VAL_RMSE))
        hparams = acc.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in hparams and "_hparams_/experiment" in hparams
        start = hparams["_hparams_/session_start_info"].decode("latin-1")
        for name in ("hidden_size", "lr", "window"):
            assert name in start, f"hparam {name} missing from {run.name}"
        assert {"schedule/lr", "schedule/dropout", "schedule/weight_decay"} <= tags


def test_asha_rung_decisions_match_what_trials_did(asha_run: tuple[Summary, Path, LiveWatcher]) -> None:
    summary, exp, _ = asha_run
    rungs = [json.loads(line) for line in (exp / "asha_rungs.jsonl").read_text().splitlines()]
    results = {
        d.name.split("_")[2] + "_" + d.name.split("_")[3]: [
            json.loads(line) for line in (d / "result.json").read_text().splitlines()
        ]
        for d in exp.glob("forecast_trainable_*")
        if d.is_dir()
    }
    assert {r["rung"] for r in rungs} <= {1, 2}, "grace 1, reduction 2, 4 epochs: rungs at epochs 1 and 2"
    for r in rungs:
        history = results[r["trial"]]
        at_rung = next(x for x in history if x["training_iteration"] == r["rung"])
        assert r["value"] == pytest.approx(at_rung[M.VAL_LOSS])
        last = history[-1]["training_iteration"]
        assert (last == r["rung"]) if r["decision"] == "stopped" else (last > r["rung"]), r
        if r["cutoff"] is not None:
            assert (r["value"] > r["cutoff"]) == (r["decision"] == "stopped"), r
    assert sum(r["decision"] == "stopped" for r in rungs) == summary.trials["stopped"]
    assert sum(1 for r in rungs if r["rung"] == 1) == len(results), "every trial reaches the first rung"
    texts = EventAccumulator(str(exp / "tensorboard" / next(iter((exp / "tensorboard").iterdir())).name))
    texts.Reload()
    assert "asha/rung/text_summary" in texts.Tags()["tensors"]


def test_pbt_lineage_is_in_tensorboard(pbt_run: tuple[Summary, Path]) -> None:
    """Every exploit is a text event in the exploiting trial's run, naming the donor; the schedule scalars follow
    the configuration each epoch really trained with (Tune's result.json holds the epochs since the last restore)."""
    summary, exp = pbt_run
    lineage = [json.loads(line) for line in (exp / "pbt_lineage.jsonl").read_text().splitlines()]
    seen = 0
    for run in (exp / "tensorboard").iterdir():
        acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        assert {"schedule/lr", "schedule/weight_decay"} <= set(tags["scalars"])
        trial = run.name.split("_")[2] + "_" + run.name.split("_")[3]
        mine = [e for e in lineage if e["trial"] == trial]
        texts = acc.Tensors("pbt/exploit/text_summary") if "pbt/exploit/text_summary" in tags["tensors"] else []
        assert len(texts) == len(mine)
        for event in texts:
            text = event.tensor_proto.string_val[0].decode()
            assert any(e["step"] == event.step and e["cloned_from"] in text for e in mine), text
        seen += len(texts)
        trained = [json.loads(line) for line in next(exp.glob(f"{run.name}*/result.json")).read_text().splitlines()]
        logged = [(e.step, e.value) for e in acc.Scalars("schedule/lr")]  # float32 in the event file
        for row in trained:
            lr, step = row["config"]["lr"], row["training_iteration"]
            assert any(s == step and v == pytest.approx(lr, rel=1e-6) for s, v in logged), (step, lr, logged)
    assert seen == summary.pbt_exploits == len(lineage)


@pytest.mark.parametrize("which", ["asha_run", "pbt_run"])
def test_report_draws_every_plot(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import matplotlib.image

    exp = request.getfixturevalue(which)[1]
    done = CliRunner().invoke(app, ["report", str(exp), "--out", str(tmp_path / "report")])
    assert done.exit_code == 0, done.output
    expected = {
        "learning_curves.png",
        "best_so_far.png",
        "asha_rungs.png" if which == "asha_run" else "pbt_lineage.png",
    }
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert expected | {"report.md"} <= files
    for name in expected:
        path = tmp_path / "report" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(str(path))[..., :3]
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
        assert colours > 50, f"{name}: {colours} colours; the plot is (nearly) empty"
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Best model" in text and "test RMSE" in text and "trial-hours" in text
    assert ("## ASHA rungs" in text) == (which == "asha_run") and ("## PBT exploits" in text) == (which == "pbt_run")


def test_exported_model_reproduces_test_score_from_raw_rows(
    asha_run: tuple[Summary, Path, LiveWatcher], prepared_data: str
) -> None:
    summary, exp, _ = asha_run
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
    assert summary.ensemble is not None and len(forecaster.members) == 3
    assert rmse == pytest.approx(summary.ensemble.test.rmse, rel=1e-4), "predict is the mean of the 3 members"

    # The same through the CLI: export to a new folder, predict from the bundled raw CSV file.
    runner = CliRunner()
    out = exp.parent / "exported"
    done = runner.invoke(app, ["export", str(exp), "--out", str(out)])
    assert done.exit_code == 0, done.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["ensemble"]["test"]["rmse"] == pytest.approx(summary.ensemble.test.rmse)
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


def test_reused_workers_start_trials_without_process_or_data_cost(asha_run: tuple[Summary, Path, LiveWatcher]) -> None:
    """6 trials on 2 CPUs with reused workers: at most 2 processes paid the start-up; the others began training within
    a fraction of a second, and every epoch says where its time went."""
    _, exp, _ = asha_run
    firsts, rows = [], []
    for d in exp.glob("forecast_trainable_*/result.json"):
        history = [json.loads(line) for line in d.read_text().splitlines()]
        rows += history
        firsts.append(history[0])
    fresh = [r for r in firsts if r[M.STARTUP_PROCESS] > 0]
    assert 1 <= len(fresh) <= 2 and len(firsts) == 6
    for r in fresh:
        assert r[M.STARTUP_TOTAL] >= r[M.STARTUP_PROCESS] + r[M.STARTUP_DATA]
    for r in firsts:
        if r[M.STARTUP_PROCESS] == 0:
            assert r[M.STARTUP_DATA] < 0.05 and r[M.STARTUP_TOTAL] < 0.5, r  # dataset and imports already there
    assert all(M.STARTUP_TOTAL not in r for r in rows if r not in firsts)
    for r in rows:
        assert 0 < r[M.TRAIN_CPU_SECONDS] and 0 < r[M.TRAIN_SECONDS] and 0 < r[M.EVAL_SECONDS] < r[M.TRAIN_SECONDS]
        assert r[M.DEVICE] == "cpu" and M.GPU_MEMORY_PEAK not in r and M.GPU_MEMORY_CAP not in r
        assert abs(r[M.WALL_CLOCK] - r["timestamp"]) < 2


def test_tpe_search_proposes_configurations_inside_the_space(
    ray_local: None, prepared_data: str, tmp_path: Path
) -> None:
    """--search tpe: Optuna's sampler behind Tune; past its 10 random start-up trials it proposes from the model.
    Every configuration stays inside the space and keeps the run's fixed values."""
    opts = RunOptions(
        storage=str(tmp_path),
        name="tpe",
        data=prepared_data,
        search="tpe",
        num_samples=12,
        max_epochs=1,
        seed=3,
        scheduler=SchedulerOptions(kind="asha", grace_period=1),
    )
    summary = run_experiment(opts, console=QUIET)
    assert summary.trials["total"] == 12 and summary.trials["errored"] == 0
    configs = [json.loads((d / "params.json").read_text()) for d in (tmp_path / "tpe").glob("forecast_trainable_*")]
    assert len(configs) == 12
    for c in configs:
        assert c["hidden_size"] in (16, 32, 64) and 1e-3 <= c["lr"] <= 1e-2 and c["window"] in (12, 24)
        assert c["max_epochs"] == 1 and c["seed"] == 3
    assert len({round(c["lr"], 12) for c in configs}) == 12, "every trial a new configuration"
    assert summary.best.test.rmse < summary.baselines["persistence"]["test"].rmse * 1.2
