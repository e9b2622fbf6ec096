"""The synthetic panel generator (issue 20's scale runs): the structure it promises, the same panel whatever the
chunking, and bounded chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.panel_data import PanelSpec, chunks, main, write


def _panel(**kw: object) -> pd.DataFrame:
    return pd.concat(list(chunks(PanelSpec(**kw))), ignore_index=True)  # type: ignore[arg-type]


def test_same_seed_same_panel_whatever_the_chunk_size() -> None:
    a = _panel(series=60, days=120, seed=3, chunk_series=7)
    b = _panel(series=60, days=120, seed=3, chunk_series=60)
    pd.testing.assert_frame_equal(a, b)
    assert not _panel(series=60, days=120, seed=4).equals(a)


def test_the_panel_has_the_structure_real_panels_have() -> None:
    df = _panel(series=400, days=730, seed=0)
    sizes = df.groupby("series").size()
    assert sizes.max() == 730, "some series span the whole range"
    ragged = (sizes < 730).mean()
    assert 0.15 < ragged < 0.35, f"a quarter of the series start late, got {ragged:.0%}"
    assert sizes.min() >= 365, "a late series still has half the range"
    missing = df["value"].isna().mean()
    assert 0.003 < missing < 0.03, f"about 1% of values missing, got {missing:.2%}"
    observed = df["value"].dropna()
    assert (observed >= 0).all() and (observed == observed.round()).all(), "non-negative counts"
    levels = df.groupby("series")["value"].mean()
    assert levels.max() / levels.min() > 100, "levels span orders of magnitude"
    # weekly cycle: weekday means differ by more than noise in most series
    df["weekday"] = pd.to_datetime(df["date"]).dt.day_of_week
    spread = df.groupby(["series", "weekday"])["value"].mean().groupby("series").agg(lambda s: s.max() / s.min())
    assert (spread > 1.05).mean() > 0.7
    # every series is in date order, one row per day, no duplicate dates
    for _, s in df.groupby("series"):
        dates = pd.to_datetime(s["date"]).to_numpy()
        assert (np.diff(dates) == np.timedelta64(1, "D")).all()
    assert df["region"].nunique() == 20


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_written_files_read_back(tmp_path: Path, suffix: str) -> None:
    spec = PanelSpec(series=25, days=60, chunk_series=4)
    out = tmp_path / f"panel{suffix}"
    rows = write(spec, out)
    back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(back) == rows and back["series"].nunique() == 25
    assert list(back.columns) == ["series", "region", "date", "value"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--series", "0"], "--series = 0: must be >= 1"),
        (["--days", "13"], "--days = 13: must be >= 14"),
        (["--chunk-series", "0"], "--chunk-series = 0: must be >= 1"),
        (["--out", "panel.txt"], "write .parquet, .csv or .csv.gz"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    full = ["--out", str(tmp_path / "p.parquet"), *args]
    if args[0] == "--out":
        full = ["--out", str(tmp_path / args[1])]
    assert main(full) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.parquet").exists()
