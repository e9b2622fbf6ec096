"""Generated malformed CSVs through ``lstm-tune data prepare``: each is refused with exit 2 and one line, or prepared
with its documented handling; never a traceback, never a half-written dataset (issue 21)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cluster.cli import app
from trainables.data.manifest import SPLITS, read_manifest
from trainables.data.shards import read_split
from trainables.storage import resolve

pytestmark = pytest.mark.integration  # 200 generated sources take about 10-20 s: out of the unit loop

ROWS = 80
HEADER = "date,value,extra,kind"
CELLS = {
    # what a real export holds where a number should be
    "number": st.sampled_from(["", "NA", "?", "inf", "-inf", "Infinity", "nan", "1,234", "n/a", "--", "1e400", "0x1F"]),
    "time": st.sampled_from(["", "2021-02-30", "yesterday", "2021-13-01", "0", "2020-01-01"]),
    "kind": st.sampled_from(["", "A", "B", "é", "A,B", '"', "x" * 5000]),
}


def _valid_lines() -> list[str]:
    days = np.datetime64("2021-01-01") + np.arange(ROWS)
    return [f"{d},{10 + (i % 7) + i * 0.1:.2f},{(i * 37) % 11},{'AB'[i % 2]}" for i, d in enumerate(days)]


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    lines = _valid_lines()
    for _ in range(draw(st.integers(1, 4))):
        # Damage to values is the common case; damage to the file's shape, rarer.
        kind = draw(
            st.sampled_from(["cell"] * 6 + ["swap", "duplicate", "drop", "truncate", "bytes", "columns", "blank"])
        )
        row = draw(st.integers(0, len(lines) - 1))
        if kind == "cell":
            col = draw(st.integers(0, 3))
            cells = lines[row].split(",")
            cells += [""] * (col + 1 - len(cells))
            pool = CELLS["time"] if col == 0 else CELLS["kind"] if col == 3 else CELLS["number"]
            cells[col] = draw(pool)
            lines[row] = ",".join(cells)
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[row], lines[other] = lines[other], lines[row]
        elif kind == "duplicate":
            lines.insert(row, lines[row])
        elif kind == "drop":
            del lines[row : row + draw(st.integers(1, ROWS))]
            lines = lines or [_valid_lines()[0]]
        elif kind == "truncate":
            lines[row] = lines[row][: draw(st.integers(0, max(len(lines[row]) - 1, 0)))]
        elif kind == "columns":
            lines[row] = lines[row] + "," + draw(st.sampled_from(["1", "", "x,y"]))
        elif kind == "blank":
            lines.insert(row, "")
        else:
            lines[row] = lines[row] + "\udcf6"  # a stray Latin-1 byte once encoded with surrogateescape
    header = draw(st.sampled_from([HEADER] * 5 + ["\ufeff" + HEADER, "date,value,extra", "date;value;extra;kind"]))
    text = "\n".join([header, *lines]) + draw(st.sampled_from(["\n", "", "\r\n"]))
    return text.encode("utf-8", errors="surrogateescape")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(source=malformed(), policy=st.sampled_from([[], ["--coerce", "--non-finite", "missing"]]))
def test_malformed_csv_is_refused_in_one_line_or_prepared_finite(source: bytes, policy: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="malformed-"))
    try:
        (work / "in.csv").write_bytes(source)
        out = work / "out"
        args = ["data", "prepare", str(work / "in.csv"), "--out", str(out), "--time-columns", "date"]
        args += ["--target", "value", "--categorical", "kind", "--features", "value,extra", "--season-length", "7"]
        args += ["--max-window", "7", "--split", "0.6,0.2,0.2", *policy]
        result = CliRunner().invoke(app, args)
        if result.exit_code == 2:
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), result.output
            assert not out.exists() or not any(out.rglob("*")), f"left behind: {list(out.rglob('*'))}"
            return
        assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
        assert "Traceback" not in result.output
        manifest = read_manifest(resolve(str(out)))
        for split in SPLITS:
            table = read_split(resolve(str(out)), manifest, split).to_pandas()
            features = [c.name for c in manifest.columns if c.role == "feature"]
            assert np.isfinite(table[features].to_numpy(np.float64)).all()
    finally:
        shutil.rmtree(work, ignore_errors=True)
