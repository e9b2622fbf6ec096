"""Change features of forecasting data: the change of a column since the previous row (``diffs``), and the per-row
amount of a running total that restarts (``increments``, e.g. Beijing's cumulated wind speed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cluster.cli import app
from cluster.prep.data import bundled_beijing_csv, prepare_forecast, read_csv_bytes
from trainables.config import ModelConfig
from trainables.data.forecast_prep import (
    ChangeFeatures,
    ForecastPrepConfig,
    category_changed,
    row_changes,
    running_increments,
)
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.data.manifest import read_manifest
from trainables.export import Forecaster, ForecastMember
from trainables.model import LSTMForecaster
from trainables.storage import resolve

NAN = np.nan


def raw_frame() -> pd.DataFrame:
    return read_csv_bytes(bundled_beijing_csv(), "bundled")


def hourly_wind_speed(raw: pd.DataFrame) -> np.ndarray:
    """Iws is wind speed cumulated since the direction last changed: the hour's own speed, by hand."""
    same = raw["cbwd"].eq(raw["cbwd"].shift(1)).to_numpy()
    iws = raw["Iws"].to_numpy(dtype=np.float64)
    speed = np.where(same, iws - np.concatenate([[NAN], iws[:-1]]), iws)
    speed[0] = NAN
    return speed


def test_row_changes_by_hand() -> None:
    values = np.array([3.0, 5.0, 4.0, NAN, 6.0])
    np.testing.assert_array_equal(row_changes(values, None), [NAN, 2.0, -1.0, NAN, NAN])
    np.testing.assert_array_equal(row_changes(values, 1.0)[:3], [2.0, 2.0, -1.0])
    assert row_changes(np.zeros(0), 4.0).shape == (0,)
    np.testing.assert_array_equal(row_changes(np.array([7.0]), 7.0), [0.0])


def test_running_increments_restart_where_the_total_falls_or_the_category_changes() -> None:
    total = np.array([1.0, 3.0, 6.0, 2.0, 2.0, 5.0])
    np.testing.assert_array_equal(running_increments(total, None), [NAN, 2.0, 3.0, 2.0, 0.0, 3.0])
    np.testing.assert_array_equal(running_increments(total, 0.5)[0], 0.5)
    np.testing.assert_array_equal(running_increments(total, 4.0)[0], 1.0)  # fell from 4 to 1: restarted at 1
    # Beijing's Iws restarts when the wind turns, even where the new total is higher than the old one.
    iws = np.array([1.79, 4.92, 6.71, 1.79, 3.58, 8.05])
    cbwd = np.array(["NW", "NW", "NW", "cv", "cv", "NE"], dtype=object)
    restarted = category_changed(cbwd, None)
    assert restarted.tolist() == [False, False, False, True, False, True]
    np.testing.assert_allclose(running_increments(iws, None, restarted), [NAN, 3.13, 1.79, 1.79, 1.79, 8.05])
    assert category_changed(cbwd, "NE").tolist()[0] is True
    assert category_changed(cbwd, "NW").tolist()[0] is False
    assert category_changed(np.array([], dtype=object), "NW").shape == (0,)


@pytest.mark.parametrize("cuts", [[1], [2, 3], [999, 1000, 1001], list(range(0, 3000, 128))])
def test_changes_do_not_depend_on_batch_boundaries(cuts: list[int]) -> None:
    raw = raw_frame().iloc[:3000]
    cfg = ForecastPrepConfig(diffs=("pm2.5", "TEMP"), increments=(("Iws", "cbwd"), ("Ir", "")))
    numeric = {c: raw[c].to_numpy(dtype=np.float64) for c in ("pm2.5", "TEMP", "Iws", "Ir")}
    categories = {"cbwd": raw["cbwd"].to_numpy(dtype=object)}
    whole = ChangeFeatures(cfg).push(numeric, categories)
    batched = ChangeFeatures(cfg)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in whole}
    for lo, hi in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        out = batched.push({c: v[lo:hi] for c, v in numeric.items()}, {"cbwd": categories["cbwd"][lo:hi]})
        for name, values in out.items():
            parts[name].append(values)
    for name, values in whole.items():
        np.testing.assert_array_equal(np.concatenate(parts[name]), values, err_msg=name)
    np.testing.assert_allclose(whole["Iws__step"], hourly_wind_speed(raw), rtol=1e-12)


def test_bundled_change_features_match_the_source_in_every_split(prepared_data: str) -> None:
    manifest = read_manifest(resolve(prepared_data))
    data = load_forecast_data(DataHandle(uri=prepared_data), ("train", "val", "test"))
    fitted, names = data.fitted, data.fitted.feature_names
    assert {"pm2.5__diff", "DEWP__diff", "TEMP__diff", "PRES__diff", "Iws__step"} <= set(names)
    raw = raw_frame()
    train_rows = manifest.splits["train"].rows
    train = raw.iloc[:train_rows]
    # Scales: the spread of observed consecutive changes on the training rows only.
    assert fitted.change_scale["pm2.5__diff"] == pytest.approx(train["pm2.5"].diff().std(ddof=0), rel=1e-9)
    assert fitted.change_scale["PRES__diff"] == pytest.approx(train["PRES"].diff().std(ddof=0), rel=1e-9)
    assert fitted.change_scale["Iws__step"] == pytest.approx(np.nanstd(hourly_wind_speed(train)), rel=1e-9)
    pm_filled = raw["pm2.5"].ffill().fillna(fitted.fill["pm2.5"]).to_numpy()
    speed = hourly_wind_speed(raw)
    # Each split's arrays start with its context rows, taken from the split before it.
    starts = {"train": 0, "val": train_rows, "test": train_rows + manifest.splits["val"].rows}
    for split, arrays in data.splits.items():
        first = starts[split] - manifest.splits[split].context_rows
        rows = np.arange(first, first + len(arrays.features))
        rows = rows[rows > 0]  # the series' first row has no change
        feats = arrays.features.numpy()[rows - first]
        diff = feats[:, names.index("pm2.5__diff")] * fitted.change_scale["pm2.5__diff"]
        np.testing.assert_allclose(diff, pm_filled[rows] - pm_filled[rows - 1], atol=1e-3, err_msg=split)
        step = feats[:, names.index("Iws__step")] * fitted.change_scale["Iws__step"]
        np.testing.assert_allclose(step, speed[rows], atol=1e-4, err_msg=split)


def test_change_options_are_validated_at_their_boundaries() -> None:
    ForecastPrepConfig(diffs=("pm2.5", "Ir"), increments=(("Iws", "cbwd"), ("Is", ""))).validate()
    with pytest.raises(ValueError, match=r"data\.diffs: 'cbwd' is not a numeric column; allowed: pm2\.5, DEWP"):
        ForecastPrepConfig(diffs=("cbwd",)).validate()
    with pytest.raises(ValueError, match=r"data\.diffs = \['TEMP', 'TEMP'\]: a column is named twice"):
        ForecastPrepConfig(diffs=("TEMP", "TEMP")).validate()
    with pytest.raises(ValueError, match=r"data\.increments: 'wind' is not a numeric column"):
        ForecastPrepConfig(increments=(("wind", ""),)).validate()
    with pytest.raises(ValueError, match=r"data\.increments\[Iws\]: reset column 'TEMP' is not a categorical column"):
        ForecastPrepConfig(increments=(("Iws", "TEMP"),)).validate()
    with pytest.raises(ValueError, match=r"data\.increments: \['Iws', 'Iws'\] names a column twice"):
        ForecastPrepConfig(increments=(("Iws", "cbwd"), ("Iws", ""))).validate()


def test_history_rows_count_what_features_read_before_a_row() -> None:
    assert ForecastPrepConfig().history_rows == 0
    assert ForecastPrepConfig(rolling=(1,)).history_rows == 0
    assert ForecastPrepConfig(diffs=("TEMP",)).history_rows == 1
    assert ForecastPrepConfig(increments=(("Iws", ""),)).history_rows == 1
    assert ForecastPrepConfig(lags=(24,), rolling=(48,), diffs=("TEMP",)).history_rows == 47
    round_trip = ForecastPrepConfig(diffs=("TEMP",), increments=(("Iws", "cbwd"),))
    assert ForecastPrepConfig.from_dict(json.loads(json.dumps(round_trip.to_dict()))) == round_trip


def test_cli_prepares_change_features_and_names_a_bad_reset_column(tmp_path: Path) -> None:
    source = tmp_path / "beijing.csv"
    raw_frame().iloc[:3000].to_csv(source, index=False)
    common = ["--time-columns", "year,month,day,hour", "--target", "pm2.5", "--categorical", "cbwd"]
    common += ["--exclude", "No", "--max-window", "24"]
    runner = CliRunner()
    out = tmp_path / "ok"
    args = ["data", "prepare", str(source), "--out", str(out), *common, "--diffs", "TEMP, PRES"]
    done = runner.invoke(app, [*args, "--increments", "Iws:cbwd,Ir"])
    assert done.exit_code == 0, done.output
    fitted = read_manifest(resolve(str(out))).preprocessing["fitted"]
    assert {"TEMP__diff", "PRES__diff", "Iws__step", "Ir__step"} <= set(fitted["feature_names"])
    assert fitted["config"]["increments"] == [["Iws", "cbwd"], ["Ir", ""]]
    bad = tmp_path / "bad"
    refused = runner.invoke(app, ["data", "prepare", str(source), "--out", str(bad), *common, "--increments", "Iws:wd"])
    assert refused.exit_code == 2
    assert "data.increments[Iws]: reset column 'wd' is not a categorical column (cbwd)" in refused.output
    assert not bad.exists() or not any(bad.rglob("*")), "a refused preparation left files"


def test_predict_forecasts_only_where_lag_and_change_features_are_exact(tmp_path: Path) -> None:
    """An origin's forecast is the same however much earlier the rows handed to predict start."""
    raw = raw_frame().iloc[:2000]
    source = tmp_path / "beijing.csv"
    raw.to_csv(source, index=False)
    cfg = ForecastPrepConfig(lags=(24,), diffs=("pm2.5",), increments=(("Iws", "cbwd"),), max_window=24)
    prepare_forecast(str(source), cfg, resolve(str(tmp_path / "data")), name="x")
    fitted = load_forecast_data(DataHandle(uri=str(tmp_path / "data")), ("train",)).fitted
    torch.manual_seed(0)
    model = LSTMForecaster(ModelConfig(hidden_size=8), n_features=len(fitted.feature_names), target_index=0)
    forecaster = Forecaster(
        members=[ForecastMember(model=model.eval(), window=12)], fitted=fitted, step=pd.Timedelta(hours=1)
    )
    rows = raw.iloc[1000:1100].reset_index(drop=True)
    with pytest.raises(ValueError, match=r"35 rows given; the model needs at least window = 12 \+ 24 rows"):
        forecaster.predict(rows.iloc[:35])
    assert len(forecaster.predict(rows.iloc[:36])) == 1
    late = forecaster.predict(rows.iloc[40:])
    early = forecaster.predict(rows)
    merged = late.merge(early, on=["origin", "step"], suffixes=("_late", "_early"))
    assert len(merged) == len(late) == 100 - 40 - 35
    np.testing.assert_allclose(merged["forecast_late"], merged["forecast_early"], rtol=1e-5)
    assert early["origin"].iloc[0] == pd.to_datetime(rows[["year", "month", "day", "hour"]]).iloc[35]
