"""Holiday features: the row's day and the next ``horizon`` steps, from the calendar alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainables.data.forecast_prep import ForecastPrepConfig
from trainables.data.holidays import holiday_features, holiday_names

pytestmark = pytest.mark.unit


def test_leads_flag_the_holiday_k_steps_ahead_observed_and_actual() -> None:
    times = pd.Series(pd.date_range("1976-12-20", "1977-01-03", freq="1D"))
    out = pd.DataFrame(holiday_features(times, "US", pd.Timedelta("1D"), 3), index=times)
    assert list(out.columns) == holiday_names(3) == ["holiday", "holiday_lead1", "holiday_lead2", "holiday_lead3"]
    # Christmas 1976 was a Saturday: observed on Friday the 24th, and the 25th itself is flagged too.
    flagged = set(out.index[out["holiday"] == 1].strftime("%m-%d"))
    assert flagged == {"12-24", "12-25", "12-31", "01-01"}
    for k in (1, 2, 3):
        np.testing.assert_array_equal(out[f"holiday_lead{k}"].to_numpy()[:-k], out["holiday"].to_numpy()[k:])


def test_hourly_rows_take_their_day() -> None:
    times = pd.Series(pd.date_range("2024-07-03 22:00", periods=4, freq="1h"))
    out = holiday_features(times, "US", pd.Timedelta("1h"), 2)
    np.testing.assert_array_equal(out["holiday"], [0, 0, 1, 1])
    np.testing.assert_array_equal(out["holiday_lead2"], [1, 1, 1, 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holidays": "FR", "frequency": "1D"}, "data.holidays = 'FR': must be one of US"),
        ({"holidays": "US"}, "data.holidays: needs data.frequency"),
    ],
)
def test_bad_holiday_options_are_named(kwargs: dict[str, str], message: str) -> None:
    cfg = ForecastPrepConfig(time_columns=("date",), target="v", numeric=("v",), categorical=(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        cfg.validate()


def test_prepared_features_and_predict_rows_carry_the_leads(tmp_path: object) -> None:
    from pathlib import Path

    from cluster.prep.prepare import prepare
    from trainables.data.forecast_prep import FittedPrep, transform_frame
    from trainables.data.manifest import read_manifest
    from trainables.storage import resolve

    root = Path(str(tmp_path))
    days = pd.date_range("2019-01-01", "2021-12-31", freq="1D")
    frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "v": np.sin(np.arange(len(days)) / 5.0) + 3})
    frame.to_csv(root / "daily.csv", index=False)
    prepare(
        str(root / "daily.csv"), str(root / "out"), time_columns="date", target="v", frequency="1D", horizon=2,
        season_length=7, max_window=14, holidays="US",
    )  # fmt: skip
    manifest = read_manifest(resolve(str(root / "out")))
    names = [c.name for c in manifest.columns if c.role == "feature"]
    assert names[-3:] == ["holiday", "holiday_lead1", "holiday_lead2"]
    fitted = FittedPrep.from_dict(manifest.preprocessing["fitted"])
    rows = transform_frame(frame[frame["date"] <= "2021-07-02"].copy(), fitted)
    last = rows.iloc[-1]
    assert (last["holiday"], last["holiday_lead1"], last["holiday_lead2"]) == (0.0, 0.0, 1.0)  # 4 July, 2 days ahead
