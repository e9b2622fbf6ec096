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
from trainables.data.manifest import SPLITS, read_manifest
from trainables.data.shards import read_split
from trainables.storage import resolve

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


@pytest.mark.parametrize("mode", ["single", "panel", "spilled"])
def test_words_in_a_numeric_column_are_refused_by_default_and_gaps_with_coerce(tmp_path: Path, mode: str) -> None:
    frame = _frame({"single": 1, "panel": 3, "spilled": 40}[mode])
    if mode == "single":
        frame = frame.drop(columns=["series"])
    frame = frame.astype({"value": object, "extra": object})
    frame.loc[[30, 31], "value"] = ["n/a (sensor)", "1,234"]
    frame.loc[50, "extra"] = "?"  # a missing marker: a gap, never refused
    source = tmp_path / "words.csv"
    frame.to_csv(source, index=False)
    keys = [] if mode == "single" else ["--series-column", "series"]
    keys += ["--memory-budget", "1MiB"] if mode == "spilled" else []
    refused = _prepare(source, tmp_path / "out", *keys)
    assert refused.exit_code == 2, refused.output  # type: ignore[attr-defined]
    line = refused.output.strip()  # type: ignore[attr-defined]
    assert len(line.splitlines()) == 1, line
    assert "numeric column 'value' holds 2 value(s) that are not numbers" in line and "'n/a (sensor)'" in line, line
    assert "--coerce" in line and "row 30" in line if mode != "panel" else "series 's000000'" in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))

    done = _prepare(source, tmp_path / "out", *keys, "--coerce")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert "changed: 2 value(s) that are not numbers made gaps (--coerce)" in done.output  # type: ignore[attr-defined]
    manifest = read_manifest(resolve(str(tmp_path / "out")))
    assert manifest.source["coerced"] == 2
    assert manifest.source["missing_values"]["value"] >= 2 if mode == "single" else True


def test_a_latin1_source_is_named_with_the_way_out_and_prepares_with_encoding(tmp_path: Path) -> None:
    frame = _frame(1).drop(columns=["series"]).rename(columns={"extra": "Größe"})
    frame["Stadt"] = ["Köln", "Zürich", "Malmö"] * (len(frame) // 3) + ["Köln"] * (len(frame) % 3)
    source = tmp_path / "latin.csv"
    frame.to_csv(source, index=False, encoding="latin-1")
    args = [str(source), "--out", str(tmp_path / "out"), "--time-columns", "date", "--target", "value"]
    args += ["--features", "value,Größe", "--categorical", "Stadt", "--season-length", "7", "--max-window", "14"]
    refused = CliRunner().invoke(app, ["data", "prepare", *args])
    assert refused.exit_code == 2, refused.output
    line = refused.output.strip()
    assert len(line.splitlines()) == 1 and f"source {source}: " in line and "not valid utf-8 text" in line, line
    assert "--encoding latin-1" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))

    done = CliRunner().invoke(app, ["data", "prepare", *args, "--encoding", "latin-1"])
    assert done.exit_code == 0, done.output
    names = [c.name for c in read_manifest(resolve(str(tmp_path / "out"))).columns]
    assert {"Größe", "Stadt=Köln", "Stadt=Zürich", "Stadt=Malmö"} <= set(names)

    unknown = CliRunner().invoke(app, ["data", "prepare", *args, "--encoding", "latin-9x", "--overwrite"])
    assert unknown.exit_code == 2 and "--encoding = 'latin-9x': not a known text encoding" in unknown.output


def _corpus(tmp_path: Path, labels: list[str], long_words: int = 0) -> Path:
    texts = [f"document {i} about {label} and more words here" for i, label in enumerate(labels)]
    if long_words:
        texts[3] = " ".join(f"w{i % 97}" for i in range(long_words))
    source = tmp_path / "corpus.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(source, index=False)
    return source


def _classify(source: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["data", "prepare", str(source), "--out", str(out), "--task", "classify", *extra])


@pytest.mark.integration  # a 7.8 MB document
def test_one_long_document_prepares_capped_by_max_length(tmp_path: Path) -> None:
    """2 million words on one line: longer than the CSV reader's 4 MiB block, so the read restarts with larger blocks;
    the document keeps its first --max-length tokens."""
    source = _corpus(tmp_path, ["a", "b"] * 20, long_words=2_000_000)
    assert source.stat().st_size > 4 << 20
    done = _classify(source, tmp_path / "out", "--max-length", "50", "--min-freq", "1")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    manifest = read_manifest(resolve(str(tmp_path / "out")))
    lengths = np.concatenate(
        [read_split(resolve(str(tmp_path / "out")), manifest, s).column("length").to_numpy() for s in SPLITS]
    )
    assert lengths.max() == 50 and len(lengths) == 40


def test_a_single_class_corpus_is_refused(tmp_path: Path) -> None:
    refused = _classify(_corpus(tmp_path, ["only"] * 30), tmp_path / "out")
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    line = refused.output.strip()  # type: ignore[attr-defined]
    assert len(line.splitlines()) == 1 and "label column 'label' holds one class ('only')" in line, line
    assert "at least 2" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize("panel", [False, True])
def test_a_row_number_is_left_out_and_a_future_copy_of_the_target_is_called_a_leak(tmp_path: Path, panel: bool) -> None:
    frame = _frame(3 if panel else 1)
    if not panel:
        frame = frame.drop(columns=["series"])
    frame.insert(0, "No", np.arange(1, len(frame) + 1))
    shifted = frame.groupby("series")["value"].shift(-3) if panel else frame["value"].shift(-3)
    frame["tomorrow_plus"] = shifted * 2.0 + 1.0  # the target three rows later, in other units
    source = tmp_path / "leaky.csv"
    frame.to_csv(source, index=False)
    args = ["data", "prepare", str(source), "--out", str(tmp_path / "out"), "--time-columns", "date"]
    args += ["--target", "value", "--season-length", "7", "--max-window", "14", "--frequency", "1D"]
    args += ["--series-column", "series"] if panel else []
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "warning: column 'No' left out of the inferred features: a row number" in done.output
    assert "warning: column 'tomorrow_plus' matches the target 3 step(s) later" in done.output
    assert "--exclude tomorrow_plus" in done.output
    manifest = read_manifest(resolve(str(tmp_path / "out")))
    features = [c.name for c in manifest.columns if c.role == "feature"]
    assert "No" not in features and "extra" in features and "tomorrow_plus" in features
    assert len(manifest.source["warnings"]) == 2
    clean = CliRunner().invoke(app, [*args, "--exclude", "tomorrow_plus", "--overwrite"])
    assert clean.exit_code == 0 and "matches the target" not in clean.output


@pytest.mark.integration  # a 7 MB source: the word must lie past the CSV reader's first 4 MiB block
def test_a_word_far_down_a_numeric_column_is_refused_or_coerced_like_one_near_the_top(tmp_path: Path) -> None:
    """The reader types columns from its first block; a word in a later block is read as text from then on, so the
    row stage names it (before: a CSV conversion error that --coerce could not help)."""
    n = 300_000
    frame = pd.DataFrame({"date": pd.date_range("2000-01-01", periods=n, freq="1min").astype(str)})
    frame["value"] = (np.arange(n) % 100).astype(object)
    frame.loc[250_000, "value"] = "n/a (sensor)"
    source = tmp_path / "late.csv"
    frame.to_csv(source, index=False)
    assert source.stat().st_size > 4 << 20
    args = ["data", "prepare", str(source), "--out", str(tmp_path / "out"), "--time-columns", "date", "--target"]
    args += ["value"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "numeric column 'value' holds 1 value(s) that are not numbers, the first at row 250000" in refused.output
    done = CliRunner().invoke(app, [*args, "--coerce"])
    assert done.exit_code == 0, done.output
    assert "changed: 1 value(s) that are not numbers made gaps (--coerce)" in done.output
