"""Panels larger than the preparation's memory budget: spilled to disk in parts of whole series, prepared part by
part, with the same result as in memory and nothing left behind."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks.panel_data import PanelSpec, chunks
from cluster.prep.data import prepare_forecast
from cluster.prep.spill import panel_parts
from trainables.data.forecast_prep import SERIES, TIME, ForecastPrepConfig
from trainables.data.manifest import Manifest, read_manifest
from trainables.data.shards import read_split
from trainables.storage import resolve

pytestmark = pytest.mark.unit

CFG = ForecastPrepConfig(
    series=("series",),
    time_columns=("date",),
    target="value",
    numeric=("value",),
    categorical=("region",),
    static=("region",),
    season_length=7,
    max_window=14,
    horizon=3,
    frequency="1D",
    lags=(7,),
)
SMALL = 2**20
"""A budget every test panel exceeds: the spill path."""


def _source(tmp_path: Path, series: int = 30, days: int = 200, **edits: Any) -> Path:
    frame = pd.concat(list(chunks(PanelSpec(series=series, days=days, seed=4))), ignore_index=True)
    # Rows of a series scattered through the file, as exports interleave them: the spill must gather them.
    frame = frame.sort_values(["date", "series"], kind="stable").reset_index(drop=True)
    path = tmp_path / "panel.csv"
    frame.to_csv(path, index=False)
    return path


def _prepare(source: Path, out: Path, budget: int | None, cfg: ForecastPrepConfig = CFG, **kw: Any) -> Manifest:
    from cluster.prep.panel import prepare_panel

    return prepare_panel(str(source), cfg, resolve(str(out)), name="p", shard_rows=500, memory_budget=budget, **kw)


def _by_series(out: Path, manifest: Manifest, split: str) -> pd.DataFrame:
    frame = read_split(resolve(str(out)), manifest, split).to_pandas()
    keys = manifest.task_params["series"]["keys"]
    frame["key"] = [keys[c] for c in frame[SERIES]]
    return frame.drop(columns=[SERIES]).sort_values(["key", TIME]).reset_index(drop=True)


def test_a_spilled_panel_prepares_as_it_does_in_memory(tmp_path: Path) -> None:
    source = _source(tmp_path)
    held = _prepare(source, tmp_path / "held", budget=None)
    spilled = _prepare(source, tmp_path / "spilled", budget=SMALL, partitions=7, batch_rows=500)
    a, b = held.task_params["series"], spilled.task_params["series"]
    assert sorted(a["keys"]) == sorted(b["keys"]) and a["keys"] != b["keys"], "same series, in part order"
    assert a["cut_offs"] == b["cut_offs"] and a["rows"] == b["rows"] and a["dropped"] == b["dropped"]
    assert held.source["rows_in"] == spilled.source["rows_in"] == pd.read_csv(source).shape[0]
    assert held.preprocessing["series_scaling"] == spilled.preprocessing["series_scaling"]
    fit_a, fit_b = held.preprocessing["fitted"], spilled.preprocessing["fitted"]
    assert fit_a["feature_names"] == fit_b["feature_names"] and fit_a["categories"] == fit_b["categories"]
    for col in fit_a["centre"]:
        assert fit_a["centre"][col] == pytest.approx(fit_b["centre"][col], abs=1e-12)
        assert fit_a["scale"][col] == pytest.approx(fit_b["scale"][col], rel=1e-12)
    for split in ("train", "val", "test"):
        assert held.splits[split].rows == spilled.splits[split].rows
        pd.testing.assert_frame_equal(
            _by_series(tmp_path / "held", held, split), _by_series(tmp_path / "spilled", spilled, split), rtol=1e-9
        )
        for shard in spilled.splits[split].shards:
            assert len(shard.series) == len(set(shard.series)), "a series appears once per shard"


def test_parts_hold_whole_series_and_every_row_once(tmp_path: Path) -> None:
    source = _source(tmp_path, series=40)
    raw = pd.read_csv(source)
    with panel_parts(str(source), CFG, SMALL, batch_rows=300, partitions=5) as parts:
        assert parts.spilled and 1 < len(parts) <= 5
        seen = [parts.read(p) for p in range(len(parts))]
        spill_dir = parts.spill_dir
    assert spill_dir is not None and not spill_dir.exists(), "spill files are removed"
    assert sum(len(p) for p in seen) == len(raw) == parts.rows_in
    owners = [set(p["series"]) for p in seen]
    assert sum(len(o) for o in owners) == raw["series"].nunique(), "no series in two parts"
    for part in seen:
        for key, rows in part.groupby("series"):
            expected = raw[raw["series"] == key]
            assert pd.to_datetime(rows["date"]).tolist() == pd.to_datetime(expected["date"]).tolist(), "source order"
            np.testing.assert_array_equal(rows["value"].to_numpy(), expected["value"].to_numpy())


def test_a_panel_under_the_budget_is_held_in_memory(tmp_path: Path) -> None:
    with panel_parts(str(_source(tmp_path)), CFG, 2**30) as parts:
        assert not parts.spilled and len(parts) == 1 and parts.held is not None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("backwards", "series 's000003': time goes backwards at"),
        ("one_row", "series 'solo' has one row"),
        ("short", "every one of the 30 series is too short"),
        ("static", "column 'region' changes within series 's000005'"),
    ],
)
def test_a_spilled_panel_refuses_what_memory_refuses_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str, message: str
) -> None:
    source = _source(tmp_path)
    frame = pd.read_csv(source)
    cfg = CFG
    if edit == "backwards":
        rows = frame.index[frame["series"] == "s000003"]
        frame.loc[[rows[10], rows[11]]] = frame.loc[[rows[11], rows[10]]].to_numpy()
    elif edit == "one_row":
        frame = pd.concat([frame, pd.DataFrame([{"series": "solo", "region": "r00", "date": "2015-02-01"}])])
    elif edit == "short":
        cfg = ForecastPrepConfig(**{**CFG.__dict__, "max_window": 400})
    else:
        frame.loc[frame.index[frame["series"] == "s000005"][3], "region"] = "elsewhere"
    frame.to_csv(source, index=False)
    spill_root = tmp_path / "tmp"
    spill_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_root))
    with pytest.raises(ValueError, match=message):
        prepare_forecast(str(source), cfg, resolve(str(tmp_path / "out")), name="p", memory_budget=SMALL)
    assert not list(spill_root.iterdir()), "spill files removed after a failure"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_a_word_in_a_numeric_column_is_refused_or_a_gap_with_coerce_in_both_paths(tmp_path: Path) -> None:
    source = _source(tmp_path, series=12)
    frame = pd.read_csv(source)
    frame["value"] = frame["value"].astype(object)
    frame.loc[frame.index[-5], "value"] = "n/a"  # in the last batch only: the spill's first type is a number
    frame.to_csv(source, index=False)
    for budget in (None, SMALL):
        with pytest.raises(ValueError, match=r"numeric column 'value' holds 1 value\(s\) that are not numbers"):
            _prepare(source, tmp_path / "refused", budget=budget, partitions=3, batch_rows=400)
    coerce = dataclasses.replace(CFG, coerce=True)
    held = _prepare(source, tmp_path / "held", budget=None, cfg=coerce)
    spilled = _prepare(source, tmp_path / "spilled", budget=SMALL, cfg=coerce, partitions=3, batch_rows=400)
    assert held.source["coerced"] == spilled.source["coerced"] == 1
    pd.testing.assert_frame_equal(
        _by_series(tmp_path / "held", held, "test"), _by_series(tmp_path / "spilled", spilled, "test"), rtol=1e-9
    )
    assert read_manifest(resolve(str(tmp_path / "spilled"))).splits["test"].rows == held.splits["test"].rows
