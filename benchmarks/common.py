"""What the benchmark scripts share: where the data is, running the CLI, reading an experiment's results, curves."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = Path(
    os.environ.get("LSTM_TUNE_BENCH_DATASETS", Path(__file__).resolve().parent.parent.parent / "shared" / "datasets")
)
"""The real datasets (../shared/datasets beside the repository); LSTM_TUNE_BENCH_DATASETS points elsewhere."""


def lstm_tune(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI exactly as a user runs it, in its own process."""
    cmd = [sys.executable, "-c", "from cluster.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)


def checked(done: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return done


class RecordingSession:
    """A trial session without Ray that keeps the reported metrics (checkpoints are written, then dropped)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def restore(self) -> dict[str, Any] | None:
        return None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        self.reports.append(dict(metrics))


def read_experiment_results(experiment: Path) -> list[dict[str, Any]]:
    """Every result every trial reported (the ``result.json`` lines Tune writes per trial), with its trial id."""
    rows: list[dict[str, Any]] = []
    for path in sorted(experiment.glob("*/result.json")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                row.setdefault("trial_id", path.parent.name)
                rows.append(row)
    return rows


@dataclass(frozen=True)
class Curve:
    """Best validation metric found so far against seconds since the run was launched."""

    times: list[float]
    values: list[float]

    def final(self) -> float | None:
        return self.values[-1] if self.values else None

    def time_to(self, target: float, mode: str) -> float | None:
        """First time the best-so-far reaches ``target`` (None: never within the run)."""
        for time_s, value in zip(self.times, self.values, strict=True):
            if (value <= target) if mode == "min" else (value >= target):
                return time_s
        return None


def best_so_far(points: Iterable[tuple[float, float]], mode: str, until: float) -> Curve:
    """Curve from (seconds, metric) points, ignoring points after ``until`` and non-finite metrics."""
    times: list[float] = []
    values: list[float] = []
    best: float | None = None
    for t, v in sorted(points):
        if t > until or not math.isfinite(v):
            continue
        if best is None or (v < best if mode == "min" else v > best):
            best = v
            times.append(t)
            values.append(v)
    return Curve(times, values)


def target_for(best: float, mode: str, within: float = 0.02) -> float:
    """The target a run must reach: within ``within`` (relative) of the best any method found."""
    return best * (1 + within) if mode == "min" else best * (1 - within)


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, min and max of the values that exist, and how many did not (a run that never reached a target)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0, "missing": len(values)}
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
        "missing": len(values) - len(present),
    }


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


__all__ = [
    "DATASETS",
    "Curve",
    "RecordingSession",
    "best_so_far",
    "checked",
    "fmt",
    "lstm_tune",
    "read_experiment_results",
    "spread",
    "target_for",
]
