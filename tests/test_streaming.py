"""Panels larger than a trial's memory budget: read a piece of whole series at a time. A full streamed pass visits
every training window once, streamed scores equal in-memory scores, and the budget option is checked at its edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import cluster
from benchmarks.panel_data import PanelSpec, chunks
from cluster.plan.options import OptionError, RunOptions, parse_bytes
from trainables.config import TrialConfig
from trainables.data.budget import piece_rows, row_bytes
from trainables.data.handle import DataHandle
from trainables.data.loader import ForecastData, load_forecast_data
from trainables.data.manifest import ShardInfo
from trainables.data.stream import shard_units
from trainables.data.windows import SeriesArrays, target_positions
from trainables.evaluate import baseline_scores, evaluate_model
from trainables.scores import Levels, ScoreSums, scores_from_errors
from trainables.tasks import ForecastTask

WINDOW, HORIZON = 14, 3
SMALL = 2**18  # 256 KiB: under a thousand rows a piece


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A generated panel (ragged starts, missing values) in many small shards, one series larger than a shard."""
    tmp = tmp_path_factory.mktemp("stream")
    frame = pd.concat(list(chunks(PanelSpec(series=40, days=400, seed=5))), ignore_index=True)
    source = tmp / "panel.csv"
    frame.drop(columns=["region"]).to_csv(source, index=False)
    out = tmp / "prepared"
    cluster.prepare(
        str(source),
        str(out),
        series_column=["series"],
        time_columns="date",
        target="value",
        features="value",
        season_length=7,
        max_window=WINDOW,
        horizon=HORIZON,
        frequency="1D",
        shard_rows=250,
    )
    return str(out)


def _both(uri: str) -> tuple[ForecastData, ForecastData]:
    splits = ("train", "val", "test")
    whole = load_forecast_data(DataHandle(uri=uri), splits)
    streamed = load_forecast_data(DataHandle(uri=uri, memory_budget=SMALL), splits)
    assert not whole.streamed and streamed.streamed
    return whole, streamed


def _windows(arrays: SeriesArrays) -> list[tuple[int, int]]:
    """Each training window as (series code, its target row's offset in the series)."""
    assert arrays.series is not None
    positions = target_positions(arrays, window=WINDOW, horizon=HORIZON).numpy()
    codes = arrays.series[positions]
    first = {int(c): int(np.argmax(arrays.series == c)) for c in np.unique(codes)}
    return [(int(c), int(p) - first[int(c)]) for c, p in zip(codes, positions, strict=True)]


def test_shards_that_share_a_series_travel_together() -> None:
    def shard(*series: str) -> ShardInfo:
        return ShardInfo(path="p", rows=1, bytes=1, sha256="", series=series)

    units = shard_units((shard("a", "b"), shard("b"), shard("b", "c"), shard("d"), shard("e", "f")))
    assert [[s.series for s in u] for u in units] == [[("a", "b"), ("b",), ("b", "c")], [("d",)], [("e", "f")]]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_streamed_pass_visits_every_window_exactly_once(prepared: str, split: str) -> None:
    whole, streamed = _both(prepared)
    stream = streamed.streams[split].shuffled(3)
    pieces = list(stream)
    assert len(pieces) > 3, "the budget must force several pieces"
    assert max(len(p) for p in pieces) <= max(stream.piece_rows, max(sum(s.rows for s in u) for u in stream.units))
    seen = [w for piece in pieces for w in _windows(piece)]
    expected = _windows(whole.splits[split])
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == set(expected)


def test_a_series_larger_than_a_shard_keeps_every_window_when_streamed(prepared: str) -> None:
    _, streamed = _both(prepared)
    spanning = [u for u in streamed.streams["train"].units if len(u) > 1]
    assert spanning, "the fixture must hold a series longer than --shard-rows"


def test_a_streamed_epoch_trains_on_every_window_or_exactly_the_samples_asked(prepared: str) -> None:
    whole, streamed = _both(prepared)
    cfg = TrialConfig.from_flat({"window": WINDOW, "hidden_size": 4, "batch_size": 256})
    total = len(target_positions(whole.splits["train"], window=WINDOW, horizon=HORIZON))
    task = ForecastTask(streamed, cfg)
    model = task.build(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    assert task.train_epoch(model, optimizer, cfg, seed=1, device=torch.device("cpu")).samples == total
    assert task.train_epoch(model, optimizer, cfg, seed=2, device=torch.device("cpu"), samples=777).samples == 777
    assert task.train_epoch(model, optimizer, cfg, seed=3, device=torch.device("cpu"), samples=10**9).samples == total


def test_streamed_scores_equal_in_memory_scores(prepared: str) -> None:
    whole, streamed = _both(prepared)
    cfg = TrialConfig.from_flat({"window": WINDOW, "hidden_size": 4})
    torch.manual_seed(0)
    model = ForecastTask(whole, cfg).build(cfg)
    target = whole.fitted.config.target
    kwargs: dict[str, Any] = {
        "window": WINDOW,
        "horizon": HORIZON,
        "target_centre": whole.fitted.centre[target],
        "target_scale": whole.fitted.scale[target],
        "quantiles": (0.1, 0.5, 0.9),
    }
    for split in ("val", "test"):
        a = evaluate_model(model, whole.splits[split], **kwargs)
        b = evaluate_model(model, streamed.streams[split], **kwargs)
        assert a.count == b.count
        for name in ("loss", "rmse", "mae", "mase", "smape", "pinball"):
            assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9), name
        assert b.rmse_by_step == pytest.approx(a.rmse_by_step, rel=1e-9)
        assert b.series_mae.keys() == a.series_mae.keys()
        base_a = baseline_scores(whole.splits[split], horizon=HORIZON, season_steps=7)
        base_b = baseline_scores(streamed.streams[split], horizon=HORIZON, season_steps=7)
        assert base_b["seasonal_naive"].mase == pytest.approx(base_a["seasonal_naive"].mase, rel=1e-9)


def test_score_sums_in_pieces_equal_one_piece() -> None:
    rng = np.random.default_rng(0)
    n, h = 500, 3
    errors = rng.normal(size=(n, h))
    mask = rng.random((n, h)) > 0.1
    codes = np.repeat(np.arange(10), n // 10)[:, None].repeat(h, axis=1)
    truth = rng.uniform(1, 50, size=(n, h))
    naive = (codes + 1.0).astype(float)
    by_level = errors[..., None] + np.array([-1.0, 0.0, 1.0])
    levels = Levels((0.1, 0.5, 0.9), by_level)
    one = scores_from_errors(errors, mask, panel=(truth, codes, naive), levels=levels)
    sums = ScoreSums()
    for rows in np.array_split(np.arange(n), [50, 250, 251]):
        part = Levels(levels.quantiles, by_level[rows])
        sums.add(
            errors[rows], mask[rows], scaled=(np.nan, 1), panel=(truth[rows], codes[rows], naive[rows]), levels=part
        )
    many = sums.scores()
    for name in ("rmse", "mae", "mase", "smape", "pinball", "coverage"):
        assert getattr(many, name) == pytest.approx(getattr(one, name), rel=1e-12), name
    assert many.series_mae == pytest.approx(one.series_mae, rel=1e-12)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("1.5GB", 1_500_000_000), ("800MiB", 800 * 2**20), (2**20, 2**20), ("2 gib", 2 * 2**30)],
)
def test_memory_budgets_read_with_or_without_a_unit(raw: Any, expected: int | None) -> None:
    assert parse_bytes(raw, "--memory-budget") == expected
    assert RunOptions(memory_budget=raw).memory_budget == expected


@pytest.mark.parametrize("raw", ["1.5 GBs", "lots", "-1GB", "1048575", "0"])
def test_a_budget_that_is_not_a_size_of_at_least_one_mib_is_refused(raw: str) -> None:
    with pytest.raises(OptionError, match=f"--memory-budget = {raw!r}"):
        RunOptions(memory_budget=raw)


def test_a_piece_fits_the_budget_with_room_for_its_copies() -> None:
    assert piece_rows(SMALL, 10) * row_bytes(10) <= SMALL < (piece_rows(SMALL, 10) + 1) * row_bytes(10)
    assert piece_rows(1, 10) == 1


@pytest.mark.ray
def test_a_streamed_panel_tunes_scores_and_exports(prepared: str, tmp_path: Path) -> None:
    result = cluster.run(
        data=prepared,
        storage=str(tmp_path / "runs"),
        name="streamed",
        space={"task": "forecast", "params": {"window": WINDOW, "hidden_size": 8, "loss": "mae"}},
        metric="mase",
        memory_budget="1MiB",
        num_samples=2,
        max_epochs=2,
        epoch_samples=2048,
        scheduler="fifo",
    )
    s = result.summary
    assert s is not None and s.trials["finished"] == 2
    assert s.exported.test.mase is not None and s.series is not None and s.series["count"] == 40
    history = result.history()
    assert history["val/mase"].notna().all()
    assert set(history.groupby("trial_id")["epoch"].max()) == {2}
