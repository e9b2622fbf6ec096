"""Scaling in data: prepare and train one epoch on the household power set at fractions of its rows.

Each fraction runs in its own process, so its peak resident memory (``ru_maxrss``) is its own: the first rows of the
CSV, ``prepare_forecast`` into a local folder (timed), then the dataset loaded as a trial loads it and one epoch of a
fixed model trained (timed, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import lzma
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DATASETS

SOURCE = "household_power_minute.csv.xz"
MODEL = {"hidden_size": 32, "num_layers": 1, "batch_size": 1024, "window": 60, "max_epochs": 1, "threads": 2}


def household_config() -> Any:
    from trainables.data.forecast_prep import ForecastPrepConfig

    return ForecastPrepConfig(
        time_columns=("Date", "Time"),
        time_format="%d/%m/%Y %H:%M:%S",
        target="Global_active_power",
        numeric=(
            "Global_active_power",
            "Global_reactive_power",
            "Voltage",
            "Global_intensity",
            "Sub_metering_1",
            "Sub_metering_2",
            "Sub_metering_3",
        ),
        categorical=(),
        frequency="1min",
        season_length=1440,
        max_window=240,
    )


def write_subsets(fractions: list[float], workdir: Path) -> dict[float, tuple[Path, int]]:
    """The first ``fraction`` of the rows of the source, as plain CSV files (the header kept)."""
    with lzma.open(DATASETS / SOURCE, "rt") as f:
        lines = f.readlines()
    header, rows = lines[0], lines[1:]
    out = {}
    for fraction in fractions:
        n = max(1, round(len(rows) * fraction))
        path = workdir / f"household-{fraction:g}.csv"
        if not path.exists():
            path.write_text(header + "".join(rows[:n]))
        out[fraction] = (path, n)
    del lines, rows  # 2 M lines: the children it starts next must not run beside that
    return out


def one(source: Path, dest: Path) -> dict[str, Any]:
    """Prepare and train one epoch; runs in a fresh process (see :func:`measure`)."""
    import torch

    from benchmarks.common import RecordingSession
    from cluster.prep.data import prepare_forecast
    from trainables.config import TrialConfig
    from trainables.data.loader import DataHandle, load_forecast_data
    from trainables.loop import run_trial
    from trainables.storage import resolve

    torch.set_num_threads(int(MODEL["threads"]))
    started = time.perf_counter()
    prepare_forecast(str(source), household_config(), resolve(str(dest)), name="household", overwrite=True)
    prepared = time.perf_counter()
    data = load_forecast_data(DataHandle(uri=str(dest)))
    loaded = time.perf_counter()
    session = RecordingSession()
    cfg = TrialConfig.from_flat({k: v for k, v in MODEL.items()})
    run_trial(cfg, data, session, device=torch.device("cpu"))
    report = session.reports[0]
    return {
        "prepare_s": prepared - started,
        "load_s": loaded - prepared,
        "epoch_s": report["time/train_s"] + report["time/eval_s"],
        "train_windows": int(report["train/samples_per_s"] * report["time/train_s"]),
        "samples_per_s": report["train/samples_per_s"],
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` rather than ``ru_maxrss``: on Linux the latter survives exec,
    so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(fractions: list[float], workdir: Path, log: Any) -> list[dict[str, Any]]:
    rows = []
    for fraction, (path, n) in write_subsets(fractions, workdir).items():
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--one",
            str(path),
            "--dest",
            str(workdir / f"hp-{fraction:g}"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"scaling {fraction:g}: {done.stderr[-3000:]}")
        row = {"fraction": fraction, "rows": n, **json.loads(done.stdout.strip().splitlines()[-1])}
        log(
            f"scaling {fraction:.0%} ({n:,} rows): prepare {row['prepare_s']:.1f} s, one epoch {row['epoch_s']:.1f} s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB"
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", type=Path, required=True, help="CSV to prepare and train on")
    parser.add_argument("--dest", type=Path, required=True, help="prepared dataset folder")
    args = parser.parse_args()
    print(json.dumps(one(args.one, args.dest)))


if __name__ == "__main__":
    main()


__all__ = ["MODEL", "household_config", "measure", "write_subsets"]
