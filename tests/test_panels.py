"""Panels (many series, one model): preparation per series, shared cut-offs, per-series scaling fitted on training
rows only, shards of whole series, windows that never cross series, and the bad inputs a panel can hold."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cluster
from benchmarks.panel_data import PanelSpec, chunks
from cluster.cli import app
from tests.conftest import SHARED_DATASETS
from trainables.data.forecast_prep import CONTEXT, SERIES, TIME
from trainables.data.manifest import read_manifest
from trainables.data.prep_config import FittedPrep
from trainables.data.prep_transform import transform_frame
from trainables.data.shards import read_split
from trainables.data.windows import SeriesArrays, target_positions, target_rows
from trainables.storage import resolve

BIRTHS = SHARED_DATASETS / "us_births_by_state_daily.csv.xz"
OPTIONS: dict[str, Any] = {
    "series_column": ["series"],
    "time_columns": "date",
    "target": "value",
    "features": "value",
    "season_length": 7,
    "max_window": 14,
    "horizon": 3,
    "frequency": "1D",
    "shard_rows": 2000,
}


def _panel_csv(tmp_path: Path, name: str = "panel.csv", **spec: Any) -> Path:
    frame = pd.concat(list(chunks(PanelSpec(**{"series": 12, "days": 240, "seed": 1, **spec}))), ignore_index=True)
    path = tmp_path / name
    frame.drop(columns=["region"]).to_csv(path, index=False)
    return path


def _prepare(source: Path, out: Path, **options: Any) -> Any:
    return cluster.prepare(str(source), str(out), **{**OPTIONS, **options})


def _arrays(out: Path, split: str) -> SeriesArrays:
    manifest = read_manifest(resolve(str(out)))
    names = manifest.preprocessing["fitted"]["feature_names"]
    return SeriesArrays.from_table(read_split(resolve(str(out)), manifest, split), names)


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small generated panel (ragged starts, missing values) and its preparation."""
    tmp = tmp_path_factory.mktemp("panel")
    source = _panel_csv(tmp)
    out = tmp / "prepared"
    _prepare(source, out)
    return source, out


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize(("window", "horizon"), [(1, 1), (7, 3), (14, 3), (5, 2)])
def test_windows_never_cross_series_or_a_cut_off(
    panel: tuple[Path, Path], split: str, window: int, horizon: int
) -> None:
    _, out = panel
    arrays = _arrays(out, split)
    manifest = read_manifest(resolve(str(out)))
    table = read_split(resolve(str(out)), manifest, split).to_pandas()
    codes = table[SERIES].to_numpy()
    times = table[TIME].to_numpy()
    context = table[CONTEXT].to_numpy()
    positions = target_positions(arrays, window=window, horizon=min(horizon, 3))
    assert len(positions) > 0
    h = min(horizon, 3)
    rows = target_rows(positions, h).numpy()
    first_input = positions.numpy() - h - window + 1
    assert (first_input >= 0).all()
    span = [codes[first_input], codes[rows[:, -1]]]
    assert (span[0] == span[1]).all(), "a window reaches into another series"
    for k in range(window + h):  # every row a window or its targets touch is of one series
        assert (codes[positions.numpy() - k] == codes[positions.numpy()]).all()
    cut_offs = manifest.task_params["series"]["cut_offs"]
    scored = rows[~context[rows]]
    if split == "val":
        assert (times[scored] >= np.datetime64(cut_offs[0])).all() and (
            times[scored] < np.datetime64(cut_offs[1])
        ).all()
    if split == "test":
        assert (times[scored] >= np.datetime64(cut_offs[1])).all()
    if split == "train":
        assert (times[rows.reshape(-1)] < np.datetime64(cut_offs[0])).all()


def test_every_training_window_of_a_series_is_drawn_once(panel: tuple[Path, Path]) -> None:
    """Positions are exactly the rows with a full window of their own series behind them and an observed target."""
    _, out = panel
    arrays = _arrays(out, "train")
    positions = set(target_positions(arrays, window=7, horizon=1).tolist())
    starts = [*arrays.segment_starts, len(arrays)]
    expected = set()
    observed = arrays.observed.numpy() & ~arrays.context.numpy()
    for a, b in itertools.pairwise(starts):
        expected |= {p for p in range(a + 7, b) if observed[p]}
    assert positions == expected
    assert len(arrays.segment_starts) == read_manifest(resolve(str(out))).task_params["series"]["count"]


def test_per_series_scaling_is_fitted_on_training_rows_only(tmp_path: Path, panel: tuple[Path, Path]) -> None:
    source, out = panel
    before = read_manifest(resolve(str(out)))
    changed = pd.read_csv(source)
    cut = before.task_params["series"]["cut_offs"][0][:10]
    late = (changed["series"] == "s000000") & (changed["date"] >= cut)
    changed.loc[late, "value"] = changed.loc[late, "value"] * 100 + 1000
    again = tmp_path / "changed.csv"
    changed.to_csv(again, index=False)
    after = _prepare(again, tmp_path / "prepared")
    assert after.preprocessing["series_scaling"] == before.preprocessing["series_scaling"]
    assert json.loads(json.dumps(after.preprocessing["fitted"])) == json.loads(
        json.dumps(before.preprocessing["fitted"])
    )
    train_before = _arrays(out, "train")
    train_after = _arrays(tmp_path / "prepared", "train")
    assert np.array_equal(train_before.features.numpy(), train_after.features.numpy())
    # and the scale is the series' own: a series 100x larger scales to the same features
    scaling = before.preprocessing["series_scaling"]
    centres = [v["value"][0] for v in scaling.values()]
    assert max(centres) / min(centres) > 10, "the generated series differ in level; each has its own centre"


def test_scores_are_in_the_targets_units_per_series(panel: tuple[Path, Path]) -> None:
    _, out = panel
    arrays = _arrays(out, "val")
    assert arrays.target_scale is not None and arrays.target_centre is not None
    rows = np.arange(len(arrays))
    back = arrays.unscale(arrays.target.double().numpy(), rows, 0.0, 1.0)
    observed = arrays.observed.numpy()
    assert np.allclose(back[observed], arrays.target_raw[observed], rtol=1e-4, atol=1e-3)


def test_panel_scores_are_means_over_series() -> None:
    from trainables.evaluate import scores_from_errors

    # two series: 2 targets each; series 0 errors 1 and 3 (MAE 2, scale 4), series 1 errors 10 and 10 (MAE 10, scale 5)
    errors = np.array([[1.0], [-3.0], [10.0], [-10.0]])
    truth = np.array([[10.0], [10.0], [100.0], [100.0]])
    codes = np.array([[0], [0], [1], [1]])
    scale = np.array([[4.0], [4.0], [5.0], [5.0]])
    s = scores_from_errors(errors, None, panel=(truth, codes, scale))
    assert s.series_mae == {0: 2.0, 1: 10.0}
    assert s.mase == pytest.approx((2.0 / 4.0 + 10.0 / 5.0) / 2)
    smape0 = 100 * np.mean([2 * 1 / (10 + 11), 2 * 3 / (10 + 7)])
    smape1 = 100 * np.mean([2 * 10 / (100 + 110), 2 * 10 / (100 + 90)])
    assert s.smape == pytest.approx((smape0 + smape1) / 2)
    assert s.mae == pytest.approx(6.0), "MAE stays pooled over targets"
    undefined = scores_from_errors(errors, None, panel=(truth, codes, np.full((4, 1), np.nan)))
    assert undefined.mase is None and undefined.smape is not None


def test_the_mase_scale_is_the_training_seasonal_naive_mae(panel: tuple[Path, Path]) -> None:
    source, out = panel
    manifest = read_manifest(resolve(str(out)))
    series = manifest.task_params["series"]
    cut = series["cut_offs"][0][:10]
    raw = pd.read_csv(source)
    for key, scale in zip(series["keys"], series["naive_mae"], strict=True):
        values = raw[(raw["series"] == key) & (raw["date"] < cut)]["value"].to_numpy()
        changes = np.abs(values[7:] - values[:-7])
        assert scale == pytest.approx(np.nanmean(changes), rel=1e-9), key


def test_ragged_and_short_series_are_dropped_and_counted(tmp_path: Path) -> None:
    frame = pd.concat(list(chunks(PanelSpec(series=6, days=240, seed=2))), ignore_index=True).drop(columns=["region"])
    late = frame[frame["series"] == "s000005"].iloc[-40:]  # starts after the first cut-off
    short = frame[frame["series"] == "s000004"].iloc[-80:]  # starts shortly before it: 8 training rows
    frame = pd.concat([frame[~frame["series"].isin(["s000004", "s000005"])], short, late], ignore_index=True)
    source = tmp_path / "ragged.csv"
    frame.to_csv(source, index=False)
    manifest = _prepare(source, tmp_path / "out")
    series = manifest.task_params["series"]
    assert series["count"] == 4
    assert series["dropped"] == {"shorter than the longest window": 2}
    assert sorted(series["dropped_series"]["shorter than the longest window"]) == ["s000004", "s000005"]
    assert series["rows"]["min"] < series["rows"]["max"] or series["rows"]["min"] == 240


def test_a_series_larger_than_a_shard_spans_shards_and_keeps_its_windows(tmp_path: Path) -> None:
    source = _panel_csv(tmp_path, series=3, days=400)
    whole = _prepare(source, tmp_path / "whole", shard_rows=100_000)
    split = _prepare(source, tmp_path / "split", shard_rows=97)
    assert len(whole.splits["train"].shards) == 1
    assert len(split.splits["train"].shards) > 3
    assert all(len(s.series) >= 1 for s in split.splits["train"].shards)
    for name in ("train", "val", "test"):
        a, b = _arrays(tmp_path / "whole", name), _arrays(tmp_path / "split", name)
        assert a.segment_starts == b.segment_starts
        assert target_positions(a, window=14, horizon=3).tolist() == target_positions(b, window=14, horizon=3).tolist()


def test_shards_hold_whole_series(panel: tuple[Path, Path]) -> None:
    _, out = panel
    manifest = read_manifest(resolve(str(out)))
    seen: dict[str, list[int]] = {}
    for split in ("train", "val", "test"):
        for i, shard in enumerate(manifest.splits[split].shards):
            for key in shard.series:
                seen.setdefault(f"{split}/{key}", []).append(i)
    assert all(len(v) == 1 for v in seen.values()), "a series smaller than a shard straddles two"


def test_inspect_shows_the_series(panel: tuple[Path, Path]) -> None:
    _, out = panel
    done = CliRunner().invoke(app, ["data", "inspect", str(out)])
    assert done.exit_code == 0, done.output
    assert "12 series by series:" in done.output and "(min / median / max)" in done.output
    assert "for every series; dropped: none" in done.output


def _cli_prepare(source: Path, out: Path, *extra: str) -> Any:
    args = ["data", "prepare", str(source), "--out", str(out), "--time-columns", "date", "--target", "value"]
    args += ["--features", "value", "--season-length", "7", "--max-window", "14", "--frequency", "1D", *extra]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize(
    ("edit", "extra", "message"),
    [
        (None, ["--series-column", "shop"], "series column(s) ['shop'] not in the source"),
        ("one_row", ["--series-column", "series"], "series 'solo' has one row"),
        ("backwards", ["--series-column", "series"], "series 's000001': time goes backwards at"),
        ("duplicate", ["--series-column", "series"], "series 's000002': duplicate time 20"),
        ("too_short", ["--series-column", "series", "--max-window", "200"], "every one of the 3 series is too short"),
        (None, ["--series-column", "series", "--series-column", "series"], "data.series = ['series', 'series']"),
        (None, ["--series-column", "value"], "'value' is also a numeric column"),
        (None, ["--series-column", "series", "--memory-budget", "5"], "--memory-budget = '5': at least 1 MiB"),
        ("backwards", ["--series-column", "series", "--memory-budget", "1MiB"], "'s000001': time goes backwards at"),
    ],
)
def test_bad_panels_are_one_line_exit_2_and_nothing_written(
    tmp_path: Path, edit: str | None, extra: list[str], message: str
) -> None:
    frame = pd.concat(list(chunks(PanelSpec(series=3, days=120, seed=3))), ignore_index=True).drop(columns=["region"])
    if edit == "one_row":
        frame = pd.concat([frame, pd.DataFrame([{"series": "solo", "date": "2015-02-01", "value": 3.0}])])
    if edit == "backwards":
        rows = frame.index[frame["series"] == "s000001"]
        frame.loc[[rows[10], rows[11]]] = frame.loc[[rows[11], rows[10]]].to_numpy()
    if edit == "duplicate":
        row = frame[frame["series"] == "s000002"].iloc[[4]]
        frame = pd.concat([frame, row.assign(value=1.0)], ignore_index=True)
    source = tmp_path / "bad.csv"
    frame.to_csv(source, index=False)
    done = _cli_prepare(source, tmp_path / "out", *extra)
    assert done.exit_code == 2, done.output
    assert message in done.output, done.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_duplicates_anywhere_in_a_series_are_resolved_by_the_policy(tmp_path: Path) -> None:
    frame = pd.concat(list(chunks(PanelSpec(series=3, days=120, seed=3))), ignore_index=True).drop(columns=["region"])
    rows = len(frame)
    target = frame[frame["series"] == "s000002"].iloc[[4]]
    at = int(target.index[0]) + 10  # the repeat comes ten rows later, after later days
    frame = pd.concat([frame.iloc[:at], target.assign(value=1.0), frame.iloc[at:]], ignore_index=True)
    source = tmp_path / "dups.csv"
    frame.to_csv(source, index=False)
    key = (tmp_path / "first", tmp_path / "mean")
    first = _prepare(source, key[0], duplicates="first")
    mean = _prepare(source, key[1], duplicates="mean")
    for manifest in (first, mean):
        assert manifest.task_params["series"]["count"] == 3
        assert manifest.source["rows_in"] == rows + 1 and manifest.source["rows"] >= rows
    scale_first = first.preprocessing["series_scaling"]["s000002"]["value"]
    scale_mean = mean.preprocessing["series_scaling"]["s000002"]["value"]
    assert scale_first != scale_mean, "mean averaged the repeated day with its first value; first kept it"


@pytest.mark.skipif(not BIRTHS.exists(), reason="../shared/datasets not present")
def test_births_prepare_names_the_first_repeated_pair_then_prepares_with_a_policy(tmp_path: Path) -> None:
    base = ["--series-column", "state", "--time-columns", "date", "--target", "births", "--season-length", "7"]
    base += ["--max-window", "56", "--horizon", "7", "--frequency", "1D"]
    refused = CliRunner().invoke(app, ["data", "prepare", str(BIRTHS), "--out", str(tmp_path / "b"), *base])
    assert refused.exit_code == 2
    assert "series 'AK': duplicate time 1969-12-01" in refused.output
    done = CliRunner().invoke(
        app, ["data", "prepare", str(BIRTHS), "--out", str(tmp_path / "b"), *base, "--duplicates", "mean", "--json"]
    )
    assert done.exit_code == 0, done.output
    manifest = json.loads(done.stdout)
    series = manifest["task_params"]["series"]
    assert series["count"] == 51 and series["dropped"] == {}
    assert manifest["source"]["rows_in"] == 372_864 and manifest["source"]["rows"] == 51 * 7305
    assert all(len(s["series"]) == 1 for s in manifest["splits"]["train"]["shards"])


def test_static_covariates_are_embeddings_with_an_unknown_slot(tmp_path: Path) -> None:
    frame = pd.concat(list(chunks(PanelSpec(series=6, days=200, seed=2))), ignore_index=True)
    source = tmp_path / "panel.csv"
    frame.to_csv(source, index=False)
    manifest = _prepare(source, tmp_path / "out", static=["series", "region"])
    fitted = FittedPrep.from_dict(manifest.preprocessing["fitted"])
    assert fitted.config.static == ("series", "region") and set(fitted.config.categorical) == {"series", "region"}
    names = fitted.feature_names
    assert {"series__code", "region__code"} <= set(names), "one code per static column, never a 0/1 per series"
    assert not [n for n in names if n.startswith("series=")]
    codes = dict(fitted.categorical_codes)
    assert codes[names.index("series__code")] == 6 + 1, "six series and the slot for a series never seen"
    table = read_split(resolve(str(tmp_path / "out")), manifest, "test").to_pandas()
    per_series = table.groupby(SERIES)["series__code"].agg(["min", "max"])
    assert (per_series["min"] == per_series["max"]).all() and per_series["min"].min() >= 1
    assert per_series["min"].nunique() == 6
    unseen = transform_frame(frame[frame["series"] == "s000001"].assign(series="new"), fitted)
    assert (unseen["series__code"] == 0).all() and (unseen["region__code"] >= 1).all()


def test_a_static_covariate_mixes_with_one_hot_categoricals(tmp_path: Path) -> None:
    frame = pd.concat(list(chunks(PanelSpec(series=4, days=200, seed=2))), ignore_index=True)
    frame["weekend"] = np.where(pd.to_datetime(frame["date"]).dt.day_of_week >= 5, "yes", "no")
    source = tmp_path / "panel.csv"
    frame.to_csv(source, index=False)
    manifest = _prepare(source, tmp_path / "out", static="region", categorical="weekend")
    names = manifest.preprocessing["fitted"]["feature_names"]
    assert "region__code" in names and {"weekend=no", "weekend=yes"} <= set(names)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"series_column": None, "static": "region"}, "static covariates need a panel"),
        ({"static": "region,region"}, "data.static = ['region', 'region']: a column is named twice"),
        ({"static": "value"}, "are both numeric and categorical"),
        ({"static": "day"}, "column 'day' changes within series 's000000'"),
    ],
)
def test_bad_static_covariates_are_named(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    frame = pd.concat(list(chunks(PanelSpec(series=3, days=120, seed=3))), ignore_index=True)
    frame["day"] = pd.to_datetime(frame["date"]).dt.day_name()
    source = tmp_path / "panel.csv"
    frame.to_csv(source, index=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        _prepare(source, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.ray
@pytest.mark.skipif(not BIRTHS.exists(), reason="../shared/datasets not present")
def test_a_panel_tunes_end_to_end(tmp_path: Path) -> None:
    cluster.prepare(
        str(BIRTHS),
        str(tmp_path / "births"),
        series_column="state",
        time_columns="date",
        target="births",
        season_length=7,
        max_window=56,
        horizon=7,
        frequency="1D",
        duplicates="mean",
        static="state",
    )
    result = cluster.run(
        data=str(tmp_path / "births"),
        storage=str(tmp_path / "runs"),
        name="births",
        space="forecast-panel",
        metric="mase",
        num_samples=2,
        max_epochs=2,
        epoch_samples=4096,
        scheduler="fifo",
    )
    s = result.summary
    assert s is not None and s.trials["finished"] == 2
    assert s.best.test.rmse is not None and np.isfinite(s.best.test.rmse)
    naive = s.baselines["seasonal_naive"]["test"].rmse
    assert naive is not None and 10 < naive < 100, "seasonal naive in births a day, pooled over states"
    mine, naive_scores = s.exported.test, s.baselines["seasonal_naive"]["test"]
    assert mine.mase is not None and naive_scores.mase is not None and 0.5 < naive_scores.mase < 1.5
    assert mine.smape is not None and naive_scores.smape is not None
    assert s.series is not None and s.series["count"] == 51
    assert 0 <= s.series["beats_seasonal_naive"]["test"] <= 51
    history = result.history()
    assert history["val/mase"].notna().all()
    assert (history["val/loss"] == history["val/mase"]).all(), "--metric mase: trials are selected on MASE"
    assert set(result.trials()["config.loss"]) <= {"mse", "mae", "huber"}
    detail = json.loads((tmp_path / "runs" / "births" / "series.json").read_text())
    assert len(detail["series"]) == 51 and set(detail["curves"]) == {"best", "worst"}
    assert detail["curves"]["best"]["mase"] <= detail["curves"]["worst"]["mase"]
    assert len(detail["curves"]["best"]["forecast"]) == len(detail["curves"]["best"]["actual"]) > 100
    report = result.report(tmp_path / "report")
    assert (tmp_path / "report" / "series.png").is_file() and "## Series" in report.read_text()
    # predict: rows of many series, key columns included; a state the model never saw is scaled by its own rows and
    # takes the state embedding's unknown slot
    raw = pd.read_csv(BIRTHS)
    raw = raw.groupby(["state", "date"], as_index=False)["births"].mean()
    recent = raw[raw["state"].isin(["AK", "CA"]) & (raw["date"] >= "1988-09-01")]
    unseen = recent[recent["state"] == "CA"].assign(state="XX")
    forecasts = result.model.predict(pd.concat([recent, unseen], ignore_index=True))
    assert list(forecasts.columns[:1]) == ["state"] and set(forecasts["state"]) == {"AK", "CA", "XX"}
    by_state = forecasts.groupby("state")["forecast"].mean()
    levels = recent.groupby("state")["births"].mean()
    for state in ("AK", "CA"):
        assert abs(by_state[state] - levels[state]) < 0.3 * levels[state], (state, by_state[state], levels[state])
    assert abs(by_state["XX"] - by_state["CA"]) < 0.3 * by_state["CA"]
    assert set(forecasts.loc[forecasts["state"] == "XX", "scaling"]) == {"own history"}
    assert set(forecasts.loc[forecasts["state"] != "XX", "scaling"]) == {"trained"}
    assert (forecasts.groupby("state")["step"].max() == 7).all()
    with pytest.raises(ValueError, match="series 'AK' has fewer than the"):
        result.model.predict(recent[recent["state"] == "AK"].tail(10))
    with pytest.raises(ValueError, match=r"lack the series column\(s\) \['state'\]"):
        result.model.predict(recent.drop(columns=["state"]))


def test_the_training_loss_is_a_choice() -> None:
    import torch

    from trainables.evaluate import masked_loss

    pred = torch.tensor([[0.0], [0.0], [0.0]])
    target = torch.tensor([[1.0], [-3.0], [100.0]])
    mask = torch.tensor([[True], [True], [False]])  # the spike is not observed: never in any loss
    assert float(masked_loss("mse", pred, target, mask)) == pytest.approx((1 + 9) / 2)
    assert float(masked_loss("mae", pred, target, mask)) == pytest.approx((1 + 3) / 2)
    assert float(masked_loss("huber", pred, target, mask)) == pytest.approx((0.5 + 2.5) / 2)
    with pytest.raises(ValueError, match="loss = 'l3'"):
        masked_loss("l3", pred, target, mask)


def test_the_metric_decides_val_loss_and_so_the_winner_on_a_spiky_series() -> None:
    """On a spiky series a forecast near the median has the lower MAE and one near the mean the lower RMSE: the
    trial selected differs with --metric (val/loss is what schedulers, retention and the best trial read)."""
    from trainables import metrics as M
    from trainables.evaluate import scores_from_errors
    from trainables.tasks import selected

    truth = np.array([1.0] * 9 + [100.0])
    median_like = scores_from_errors(np.full(10, 1.0) - truth)  # MAE 9.9, RMSE 31.3
    mean_like = scores_from_errors(np.full(10, 11.0) - truth)  # MAE 17.8, RMSE 30.0
    by_rmse = [selected(s, "rmse")[M.VAL_LOSS] for s in (median_like, mean_like)]
    by_mae = [selected(s, "mae")[M.VAL_LOSS] for s in (median_like, mean_like)]
    assert int(np.argmin(by_rmse)) == 1 and int(np.argmin(by_mae)) == 0
    with pytest.raises(ValueError, match="metric = 'mase': not reported"):
        selected(median_like, "mase")


@pytest.mark.parametrize(
    ("metric", "on_panel", "message"),
    [
        ("mase", False, "--metric = 'mase': a mean over series needs a panel dataset"),
        ("smape", False, "--metric = 'smape': a mean over series needs a panel dataset"),
        ("median", True, "--metric = 'median': must be one of loss, rmse, mae, mase, smape"),
    ],
)
def test_a_metric_the_data_cannot_report_is_refused_before_anything_runs(
    tmp_path: Path, panel: tuple[Path, Path], prepared_data: str, metric: str, on_panel: bool, message: str
) -> None:
    data = str(panel[1]) if on_panel else prepared_data
    done = CliRunner().invoke(
        app, ["run", "--data", data, "--storage", str(tmp_path / "runs"), "--name", "m", "--metric", metric]
    )
    assert done.exit_code == 2, done.output
    assert message in done.output
    assert not (tmp_path / "runs" / "m" / "tuner.pkl").exists()


def test_the_progress_line_follows_the_metric() -> None:
    from cluster.tune.progress import WATCHED, ProgressState

    state = ProgressState(max_epochs=3, watched=WATCHED["mase"], best_metric=WATCHED["mase"])
    assert state.offer("t1", {"val/rmse": 10.0, "val/mase": 0.9})
    assert not state.offer("t2", {"val/rmse": 9.0, "val/mase": 0.95}), "a lower RMSE is not a better MASE"
    assert state.line(3.0).endswith("best val MASE 0.900 (t1)")
    default = ProgressState(max_epochs=3)
    default.offer("a", {"val/rmse": 20.0, "val/mase": 0.5})
    assert default.line(1.0).endswith("best val RMSE 20.00 (a)")


def test_a_parquet_panel_prepares_as_its_csv_does(tmp_path: Path) -> None:
    """Parquet sources are read through a seekable file (the footer comes first), locally and from S3."""
    csv = _panel_csv(tmp_path)
    parquet = tmp_path / "panel.parquet"
    pd.read_csv(csv).to_parquet(parquet, index=False)
    a = _prepare(csv, tmp_path / "from-csv")
    b = _prepare(parquet, tmp_path / "from-parquet")
    assert a.task_params["series"]["keys"] == b.task_params["series"]["keys"]
    assert {s: i.rows for s, i in a.splits.items()} == {s: i.rows for s, i in b.splits.items()}
