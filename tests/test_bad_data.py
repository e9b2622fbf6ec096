"""Bad data never passes silently: each class of malformed input is refused with one line naming it, or handled by an
explicit option that says what it changed (issue 21; more classes join as they are built)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.panel_data import PanelSpec, chunks
from cluster.cli import app
from trainables.data.manifest import read_manifest
from trainables.data.shards import read_split
from trainables.storage import resolve

pytestmark = pytest.mark.unit

COMMON = ["--time-columns", "date", "--target", "value", "--features", "value,extra", "--season-length", "7"]
COMMON += ["--max-window", "14", "--frequency", "1D"]


def _frame(series: int) -> pd.DataFrame:
    frame = pd.concat(list(chunks(PanelSpec(series=series, days=150, seed=5))), ignore_index=True)
    frame["extra"] = np.arange(len(frame)) % 7 * 1.5
    return frame.drop(columns=["region"])


def _prepare(source: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["data", "prepare", str(source), "--out", str(out), *COMMON, *extra])


@pytest.mark.parametrize("panel", [False, True])
@pytest.mark.parametrize(("column", "value"), [("value", np.inf), ("extra", -np.inf)])
def test_infinite_values_are_refused_by_default_and_gaps_on_request(
    tmp_path: Path, panel: bool, column: str, value: float
) -> None:
    frame = _frame(3 if panel else 1)
    if not panel:
        frame = frame.drop(columns=["series"])
    row = 40
    frame.loc[row, column] = value
    source = tmp_path / "bad.csv"
    frame.to_csv(source, index=False)
    keys = ["--series-column", "series"] if panel else []
    refused = _prepare(source, tmp_path / "out", *keys)
    assert refused.exit_code == 2, refused.output  # type: ignore[attr-defined]
    line = refused.output.strip()  # type: ignore[attr-defined]
    assert len(line.splitlines()) == 1 and f"column {column!r} holds 1 infinite value(s)" in line, line
    assert "--non-finite missing" in line and ("series 's000000'" in line if panel else f"at row {row}" in line)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))

    done = _prepare(source, tmp_path / "out", *keys, "--non-finite", "missing")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert "changed: 1 infinite value(s) made gaps" in done.output  # type: ignore[attr-defined]
    manifest = read_manifest(resolve(str(tmp_path / "out")))
    assert manifest.source["non_finite"] == 1
    for split in ("train", "val", "test"):
        table = read_split(resolve(str(tmp_path / "out")), manifest, split).to_pandas()
        numbers = table.select_dtypes("number").to_numpy(dtype=np.float64)
        assert np.isfinite(numbers[~np.isnan(numbers)]).all()


def test_an_unknown_non_finite_policy_is_named(tmp_path: Path) -> None:
    frame = _frame(1).drop(columns=["series"])
    frame.to_csv(tmp_path / "ok.csv", index=False)
    done = _prepare(tmp_path / "ok.csv", tmp_path / "out", "--non-finite", "zero")
    assert done.exit_code == 2 and "data.non_finite = 'zero': must be error or missing" in done.output  # type: ignore[attr-defined]
