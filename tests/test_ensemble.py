"""Ensembles of the best trials (``--ensemble K``): which trials, how they are scored, exported and loaded, and the
options' boundaries. No Ray: the choice is a pure function of Tune-like results, the scoring runs on real data."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from torch import nn

from cluster.plan.options import OptionError, RunOptions
from cluster.plan.planning import plan
from cluster.prep.data import bundled_beijing_csv, read_csv_bytes
from cluster.results.ensemble import best_checkpoint, top_trials
from cluster.results.scoring import score_forecasters
from cluster.results.summary import Ensemble, EnsembleMember, Scores, exported_scores, render, summary_from_json
from tests.helpers import forecast_summary
from trainables import metrics as M
from trainables.checkpoint import CheckpointError
from trainables.config import ModelConfig, TrialConfig
from trainables.data.loader import DataHandle, ForecastData, load_forecast_data
from trainables.data.text_loader import TextSplit
from trainables.export import export_model, load_classifier, load_forecaster
from trainables.model import build_classifier
from trainables.storage import read_bytes, resolve, write_bytes_atomic
from trainables.tasks import ForecastTask, mean_probabilities


def result(trial: str, *losses: float) -> SimpleNamespace:
    """A Tune result whose trial reported ``losses`` (one checkpoint each)."""
    checkpoints = [(f"{trial}/ckpt{i}", {M.VAL_LOSS: loss, M.EPOCH: i + 1}) for i, loss in enumerate(losses)]
    return SimpleNamespace(metrics={"trial_id": trial}, best_checkpoints=checkpoints, checkpoint=f"{trial}/last")


def test_top_trials_are_the_best_by_their_lowest_loss_and_the_best_comes_first() -> None:
    a, b, c, d = result("a", 0.5, 0.3), result("b", 0.2), result("c", 0.9, 0.4), result("d", math.nan, math.inf)
    results = [a, b, c, d]
    assert top_trials(results, 1, best=b) == [b]
    assert top_trials(results, 3, best=b) == [b, a, c]
    # The best Tune chose stays first even where another trial ties it.
    assert top_trials([*results, result("e", 0.2)], 2, best=b)[0] is b
    # A trial with no finite loss never joins; fewer than k come back.
    assert top_trials(results, 10, best=b) == [b, a, c]
    with pytest.raises(ValueError, match="k = 0"):
        top_trials(results, 0, best=b)


def test_a_members_checkpoint_is_its_lowest_loss_one() -> None:
    assert best_checkpoint(result("a", 0.5, 0.3, 0.4)) == ("a/ckpt1", {M.VAL_LOSS: 0.3, M.EPOCH: 2})
    assert best_checkpoint(result("a", math.nan, 0.7, math.inf))[0] == "a/ckpt1"
    # Nothing finite to rank: the trial's last checkpoint.
    assert best_checkpoint(result("d", math.nan))[0] == "d/last"


class Constant(nn.Module):
    """Forecasts one scaled value for every window (and checks the window it is handed)."""

    def __init__(self, value: float, window: int) -> None:
        super().__init__()
        self.value, self.window = value, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.window
        return torch.full((x.shape[0], 1), self.value)


def test_the_ensemble_scores_the_mean_forecast_on_the_same_targets(prepared_data: str) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data), ("train", "val", "test"))
    lo, hi, mid = Constant(-0.5, 6), Constant(0.5, 24), Constant(0.0, 12)
    alone = score_forecasters([(mid, 12)], data)["test"]
    pair = score_forecasters([(lo, 6), (hi, 24)], data)["test"]
    # -0.5 and +0.5 average to 0: exactly the middle model's forecasts, on exactly its targets.
    assert pair.count == alone.count and pair.rmse == pytest.approx(alone.rmse, rel=1e-12)
    assert score_forecasters([(mid, 12), (mid, 12)], data)["val"].rmse == pytest.approx(
        score_forecasters([(mid, 12)], data)["val"].rmse, rel=1e-12
    )
    with pytest.raises(ValueError, match="at least one member"):
        score_forecasters([], data)


def test_mean_probabilities_average_the_members_softmax() -> None:
    torch.manual_seed(0)
    models = [build_classifier(ModelConfig(hidden_size=4, embedding_dim=3), vocab_size=20, num_classes=3).eval()]
    models.append(build_classifier(ModelConfig(hidden_size=4, embedding_dim=3), vocab_size=20, num_classes=3).eval())
    split = TextSplit(
        tokens=[np.array(t) for t in ([2, 3, 4], [5, 6], [7])],
        lengths=torch.tensor([3, 2, 1]),
        labels=torch.zeros(3, dtype=torch.long),
    )
    probs = [mean_probabilities([m], split, 3, torch.device("cpu")) for m in models]
    both = mean_probabilities(models, split, 3, torch.device("cpu"))
    assert torch.allclose(both, (probs[0] + probs[1]) / 2) and torch.allclose(both.sum(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="at least one member"):
        mean_probabilities([], split, 3, torch.device("cpu"))


def forecast_payload(data: ForecastData, window: int, seed: int) -> dict[str, Any]:
    """What a trial's checkpoint holds of an untrained forecaster reading ``window`` rows."""
    cfg = TrialConfig.from_flat({"hidden_size": 8, "window": window})
    task = ForecastTask(data, cfg)
    torch.manual_seed(seed)
    model = task.build(cfg)
    return {"model": model.state_dict(), "model_config": task.model_info(cfg), "data_info": task.data_info(cfg)}


def test_an_exported_ensemble_predicts_the_mean_of_its_members(prepared_data: str, tmp_path: Path) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data))
    payloads = [forecast_payload(data, 6, seed=1), forecast_payload(data, 24, seed=2)]
    folders = {}
    for name, chosen in (("first", payloads[:1]), ("second", payloads[1:]), ("both", payloads)):
        folders[name] = resolve(str(tmp_path / name))
        export_model(folders[name], checkpoint_payloads=chosen, fitted=data.fitted)
    both = load_forecaster(folders["both"])
    assert [m.window for m in both.members] == [6, 24] and both.window == 24
    raw = read_csv_bytes(bundled_beijing_csv(), "bundled").iloc[30000:30400].reset_index(drop=True)
    out = both.predict(raw)
    first, second = load_forecaster(folders["first"]).predict(raw), load_forecaster(folders["second"]).predict(raw)
    # Both forecast from the origins the longer window reaches: the 6-hour member's first 18 are not used.
    assert len(first) == len(second) + 18
    first = first[first["origin"].isin(second["origin"])].reset_index(drop=True)
    assert len(out) == len(second) == len(first) > 0 and (out["origin"] == second["origin"]).all()
    mean = (first["forecast"] + second["forecast"]).to_numpy() / 2  # float32 forecasts: equal to 1e-4 of a unit
    assert out["forecast"].to_numpy() == pytest.approx(mean, abs=1e-4)
    assert not (first["forecast"] == second["forecast"]).all(), "the members must differ for the test to mean much"


def test_a_single_model_export_of_format_1_still_loads_and_unknown_formats_are_refused(
    prepared_data: str, tmp_path: Path
) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data))
    payload = forecast_payload(data, 12, seed=0)
    folder = resolve(str(tmp_path / "v2"))
    export_model(folder, checkpoint_payloads=[payload], fitted=data.fitted)
    prep = read_bytes(folder.child("preprocessing.json"))
    v1 = {"format_version": 1, "model": payload["model"], "model_info": payload["model_config"]}
    for version, body in ((1, {**v1, "data_info": payload["data_info"]}), (7, {"format_version": 7, "members": []})):
        old = resolve(str(tmp_path / f"v{version}"))
        buf = io.BytesIO()
        torch.save(body, buf)
        write_bytes_atomic(old.child("model.pt"), buf.getvalue())
        write_bytes_atomic(old.child("preprocessing.json"), prep)
    loaded = load_forecaster(str(tmp_path / "v1"))
    assert len(loaded.members) == 1 and loaded.window == 12
    raw = read_csv_bytes(bundled_beijing_csv(), "bundled").iloc[:300]
    pd.testing.assert_frame_equal(loaded.predict(raw), load_forecaster(folder).predict(raw))
    with pytest.raises(CheckpointError, match="export format 7 is not supported"):
        load_forecaster(str(tmp_path / "v7"))
    with pytest.raises(ValueError, match="no checkpoint to export"):
        export_model(resolve(str(tmp_path / "none")), checkpoint_payloads=[], fitted=data.fitted)
    with pytest.raises(CheckpointError, match="load it with load_forecaster"):
        load_classifier(folder)


@pytest.mark.parametrize(("ensemble", "ok"), [(0, False), (1, True), (64, True), (65, False)])
def test_ensemble_option_bounds(ensemble: int, ok: bool) -> None:
    opts = RunOptions(ensemble=ensemble, num_samples=64)
    if ok:
        opts.validate()
    else:
        with pytest.raises(OptionError, match=f"--ensemble = {ensemble}: must be >= 1"):
            opts.validate()


def test_an_ensemble_larger_than_the_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    plan(RunOptions(num_samples=4, ensemble=4))
    with pytest.raises(OptionError, match=r"--ensemble = 5: more than the 4 trial\(s\) this run makes"):
        plan(RunOptions(num_samples=4, ensemble=5))
    space = tmp_path / "grid.yaml"
    space.write_text("task: forecast\nparams:\n  hidden_size: {distribution: grid, values: [8, 16]}\n")
    plan(RunOptions(space=str(space), num_samples=1, ensemble=2))  # 1 sample x a grid of 2 = 2 trials
    with pytest.raises(OptionError, match=r"--ensemble = 3: more than the 2 trial\(s\)"):
        plan(RunOptions(space=str(space), num_samples=1, ensemble=3))


def test_the_summary_leads_with_the_exported_model_and_reads_back() -> None:
    members = [
        EnsembleMember(trial_id=t, epoch=e, val=Scores(rmse=v), checkpoint=f"c{t}")
        for t, e, v in (("t0", 3, 20.1), ("t1", 4, 20.2))
    ]
    ensemble = Ensemble(members=members, val=Scores(rmse=19.9, mae=11.0), test=Scores(rmse=17.9, mae=9.9))
    for summary, headline in (
        (
            forecast_summary("runs/x", test_rmse=18.2, exported_model="runs/x/best_model"),
            "test RMSE 18.20 vs persistence 20.17: 9.8% better",
        ),
        (
            forecast_summary("runs/x", test_rmse=18.2, ensemble=ensemble, exported_model="runs/x/best_model"),
            "ensemble of the best 2 trials: test RMSE 17.90 vs persistence 20.17: 11.3% better",
        ),
    ):
        buf = io.StringIO()
        render(summary, Console(file=buf, width=200))
        text = buf.getvalue()
        assert headline in text, text
        assert summary_from_json(summary.to_json().encode()) == summary
        raw = json.loads(summary.to_json())
        assert exported_scores(raw)["test"]["rmse"] == summary.exported.test.rmse
    assert "ensemble: t0 (epoch 3), t1 (epoch 4)" in text and "best LSTM (t0, epoch 3)" in text


def test_predict_refuses_words_and_a_wrong_encoding_in_one_line_and_coerces_on_request(
    prepared_data: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    data = load_forecast_data(DataHandle(uri=prepared_data))
    export_model(
        resolve(str(tmp_path / "m")), checkpoint_payloads=[forecast_payload(data, 12, seed=0)], fitted=data.fitted
    )
    rows = read_csv_bytes(bundled_beijing_csv(), "beijing").iloc[-300:].reset_index(drop=True)
    rows["DEWP"] = rows["DEWP"].astype(object)
    rows.loc[200, "DEWP"] = "sensor fault"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    runner = CliRunner()
    refused = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "rows.csv")])
    assert refused.exit_code == 2, refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert "numeric column 'DEWP' holds 1 value(s) that are not numbers" in refused.output
    done = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "rows.csv"), "--coerce"])
    assert done.exit_code == 0, done.output
    (tmp_path / "latin.csv").write_bytes(b"No,year\xf6\n1,2010\n")
    wrong = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "latin.csv")])
    assert wrong.exit_code == 2 and "is not valid utf-8 text (byte 0xf6" in wrong.output
    assert "--encoding latin-1" in wrong.output
