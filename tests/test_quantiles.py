"""Quantile forecasts: the pinball loss, models that forecast each level without crossing, the interval's coverage,
the pinball metric for point forecasts, `--quantiles` at its boundaries, and predict's interval columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import cluster
from benchmarks.panel_data import PanelSpec, chunks
from cluster.cli import app
from cluster.plan.options import OptionError, RunOptions
from trainables import metrics as M
from trainables.config import ModelConfig, RunLimits, TrialConfig
from trainables.data.windows import SeriesArrays
from trainables.evaluate import evaluate_ensemble, masked_loss, pinball
from trainables.model import build_model, median_index, point_forecast
from trainables.scores import Levels, scores_from_errors
from trainables.tasks import model_quantiles, selected


def test_the_pinball_loss_weighs_under_and_over_forecasts_by_the_level() -> None:
    levels = torch.tensor([0.1, 0.9])
    truth = torch.tensor([[10.0]])
    under, over = torch.tensor([[8.0, 8.0]]), torch.tensor([[12.0, 12.0]])
    assert pinball(under, truth, levels)[0].tolist() == pytest.approx([0.2, 1.8])  # q * (y - f)
    assert pinball(over, truth, levels)[0].tolist() == pytest.approx([1.8, 0.2])  # (1 - q) * (f - y)
    assert pinball(torch.tensor([[10.0, 10.0]]), truth, levels).tolist() == [[0.0, 0.0]]


def test_the_quantile_loss_is_the_mean_pinball_over_levels_and_scored_targets() -> None:
    pred = torch.tensor([[[0.0, 1.0, 2.0]], [[0.0, 0.0, 0.0]]])  # [batch 2, horizon 1, levels 3]
    target = torch.tensor([[1.0], [100.0]])
    mask = torch.tensor([[True], [False]])  # the second target was not observed: it never counts
    # row 1: levels 0.1, 0.5, 0.9 at errors y - f = 1, 0, -1 -> 0.1, 0, 0.1
    assert float(masked_loss("quantile", pred, target, mask, (0.1, 0.5, 0.9))) == pytest.approx(0.2 / 3)
    with pytest.raises(ValueError, match="not one per level"):
        masked_loss("quantile", pred, target, mask, (0.1, 0.9))


@pytest.mark.parametrize("head", ["linear", "decoder"])
@pytest.mark.parametrize("level_gain", [False, True])
def test_a_quantile_model_forecasts_every_level_in_order(head: str, level_gain: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, head=head, level_gain=level_gain)
    model = build_model(cfg, n_features=3, target_index=0, horizon=4, quantiles=(0.1, 0.5, 0.9))
    with torch.no_grad():  # spread the outputs so that unsorted levels would cross
        for p in model.parameters():
            p.mul_(5.0)
    out = model(torch.randn(32, 6, 3))
    assert out.shape == (32, 4, 3)
    assert (out.diff(dim=-1) >= 0).all(), "levels never cross"
    assert torch.equal(point_forecast(out, model.quantiles), out[..., 1])
    point = build_model(cfg, n_features=3, target_index=0, horizon=4)
    assert point(torch.randn(2, 6, 3)).shape == (2, 4)


@pytest.mark.parametrize(("levels", "index"), [((0.1, 0.5, 0.9), 1), ((0.05, 0.95), 0), ((0.6,), 0), ((), 0)])
def test_the_point_forecast_is_the_level_nearest_the_median(levels: tuple[float, ...], index: int) -> None:
    assert median_index(levels) == index


def test_coverage_counts_targets_inside_the_outer_levels() -> None:
    # 4 targets; forecast minus truth at levels (0.1, 0.9): inside when lower <= 0 <= upper
    by_level = np.array([[-1.0, 1.0], [0.5, 2.0], [-2.0, -0.1], [0.0, 0.0]])[:, None, :]
    scores = scores_from_errors(by_level[..., 0], levels=Levels((0.1, 0.9), by_level))
    assert scores.coverage == pytest.approx(0.5) and scores.interval == pytest.approx(0.8)
    # pinball: row 1 0.1*1 + 0.1*1; row 2 0.9*0.5 + 0.1*2; row 3 0.1*2 + 0.9*0.1; row 4 0 -> over 8 cells
    assert scores.pinball == pytest.approx((0.2 + 0.65 + 0.29) / 8)
    # a point forecast stands for every level: a pinball loss but no interval
    point = scores_from_errors(np.array([[1.0], [-1.0]]), levels=Levels((0.1, 0.9)))
    assert point.pinball is not None and (point.coverage, point.interval) == (None, None)
    # pinball at 0.5 of a point forecast is half its MAE
    assert scores_from_errors(np.array([[2.0], [-4.0]]), levels=Levels((0.5,))).pinball == pytest.approx(1.5)


def test_a_quantile_model_trained_on_noise_covers_its_nominal_interval() -> None:
    """Gaussian noise around a level: the trained 10% and 90% levels must hold about 80% of unseen targets."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = 6000
    values = rng.normal(0.0, 1.0, rows).astype(np.float32)
    arrays = SeriesArrays(
        features=torch.from_numpy(values[:, None]),
        target=torch.from_numpy(values),
        target_raw=values.astype(np.float64) * 3.0 + 50.0,
        observed=torch.ones(rows, dtype=torch.bool),
        context=torch.zeros(rows, dtype=torch.bool),
    )
    cfg = TrialConfig.from_flat({"loss": "quantile", "hidden_size": 8, "quantiles": "0.1,0.5,0.9", "lr": 0.01})
    model = build_model(cfg.model, n_features=1, target_index=0, quantiles=model_quantiles(cfg))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    train = 4000
    for _ in range(300):
        ends = torch.randint(8, train, (128,))
        x = arrays.features[ends.unsqueeze(1) - torch.arange(8, 0, -1)]
        y = arrays.target[ends].unsqueeze(1)
        loss = masked_loss("quantile", model(x), y, torch.ones_like(y, dtype=torch.bool), cfg.limits.levels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out = SeriesArrays(
        features=arrays.features[train:],
        target=arrays.target[train:],
        target_raw=arrays.target_raw[train:],
        observed=arrays.observed[train:],
        context=arrays.context[train:],
    )
    scores = evaluate_ensemble([(model, 8)], held_out, horizon=1, target_centre=50.0, target_scale=3.0)
    assert scores.interval == pytest.approx(0.8)
    assert scores.coverage is not None and 0.74 <= scores.coverage <= 0.86, scores.coverage
    reported = selected(scores, "pinball")
    assert reported[M.VAL_LOSS] == reported[M.VAL_PINBALL] == scores.pinball
    assert reported[M.VAL_COVERAGE] == scores.coverage


def test_a_point_forecasters_pinball_is_reported_at_the_runs_levels() -> None:
    values = np.linspace(0.0, 1.0, 50, dtype=np.float32)
    arrays = SeriesArrays(
        features=torch.from_numpy(values[:, None]),
        target=torch.from_numpy(values),
        target_raw=values.astype(np.float64),
        observed=torch.ones(50, dtype=torch.bool),
        context=torch.zeros(50, dtype=torch.bool),
    )
    model = build_model(ModelConfig(hidden_size=4), n_features=1, target_index=0)
    scores = evaluate_ensemble(
        [(model, 4)], arrays, horizon=1, target_centre=0.0, target_scale=1.0, quantiles=(0.1, 0.5, 0.9)
    )
    assert scores.pinball is not None and scores.coverage is None
    assert scores.pinball == pytest.approx(scores.mae / 2, rel=0.3), "levels symmetric about 0.5: near MAE / 2"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0,0.5", "strictly between 0 and 1"),
        ("0.5,1", "strictly between 0 and 1"),
        ("0.9,0.1", "ascending"),
        ("0.5,0.5", "no repeats"),
        ("", "numbers separated by commas"),
        ("a,b", "numbers separated by commas"),
    ],
)
def test_quantiles_outside_the_open_unit_interval_or_out_of_order_are_refused(raw: str, message: str) -> None:
    with pytest.raises(OptionError, match=message) as info:
        RunOptions(quantiles=raw)
    assert f"--quantiles = {raw!r}" in str(info.value)


def test_quantiles_read_from_a_string_or_a_sequence() -> None:
    assert RunOptions(quantiles="0.05, 0.5,0.95").quantiles == (0.05, 0.5, 0.95)
    assert RunOptions(quantiles=[0.25, 0.75]).quantiles == (0.25, 0.75)
    assert RunLimits(quantiles="0.1,0.9").levels == (0.1, 0.9)
    assert model_quantiles(TrialConfig.from_flat({"loss": "mse", "quantiles": "0.1,0.9"})) == ()


def _panel_source(tmp_path: Path) -> Path:
    frame = pd.concat(list(chunks(PanelSpec(series=8, days=300, seed=3))), ignore_index=True)
    path = tmp_path / "panel.csv"
    frame.drop(columns=["region"]).to_csv(path, index=False)
    return path


@pytest.mark.ray
def test_a_quantile_run_reports_coverage_and_predicts_intervals(tmp_path: Path) -> None:
    source = _panel_source(tmp_path)
    cluster.prepare(
        str(source),
        str(tmp_path / "data"),
        series_column=["series"],
        time_columns="date",
        target="value",
        features="value",
        season_length=7,
        max_window=14,
        horizon=3,
        frequency="1D",
    )
    space: dict[str, Any] = {
        "task": "forecast",
        "params": {"loss": {"distribution": "choice", "values": ["quantile"]}, "window": 14, "hidden_size": 16},
    }
    result = cluster.run(
        data=str(tmp_path / "data"),
        storage=str(tmp_path / "runs"),
        name="q",
        space=space,
        metric="pinball",
        quantiles="0.1,0.5,0.9",
        num_samples=1,
        max_epochs=2,
        scheduler="fifo",
    )
    s = result.summary
    assert s is not None and s.trials["finished"] == 1
    test = s.exported.test
    assert test.interval == pytest.approx(0.8) and test.coverage is not None and 0.0 < test.coverage <= 1.0
    assert test.pinball is not None and s.baselines["seasonal_naive"]["test"].pinball is not None
    history = result.history()
    assert (history["val/loss"] == history["val/pinball"]).all() and history["val/coverage"].between(0, 1).all()
    rows = pd.read_csv(source)
    rows = rows[rows["series"].isin(rows["series"].unique()[:2])].groupby("series").tail(40)
    forecasts = result.model.predict(rows)
    assert {"q0.1", "q0.5", "q0.9"} <= set(forecasts.columns)
    assert (forecasts["q0.1"] <= forecasts["q0.5"]).all() and (forecasts["q0.5"] <= forecasts["q0.9"]).all()
    assert np.allclose(forecasts["forecast"], forecasts["q0.5"])
    shown = CliRunner().invoke(app, ["experiments", "show", str(tmp_path / "runs" / "q")])
    assert shown.exit_code == 0, shown.output
    assert "80% interval covered" in shown.output
