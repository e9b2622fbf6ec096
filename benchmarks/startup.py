"""Start-up: from launch to the first result, lstm-tune against a plain script, median of N launches each.

Both are launched as a user launches them, as new processes, and timed from just before the launch to the moment
their first result is on the screen:

- **plain**: ``benchmarks/startup_plain.py``: Python, torch and pandas imports, the Beijing CSV read and windowed,
  one epoch of a 16-unit LSTM on one thread, the validation RMSE printed;
- **lstm-tune**: ``lstm-tune run`` on the bundled data (``--num-samples 2 --max-epochs 1``, local Ray, a fresh
  experiment each launch): the first progress line that shows a best validation score.

Launches alternate (plain, lstm-tune, plain, ...) so both see the same machine. The first lstm-tune launch is
**cold** for lstm-tune's own caches (the bundled data's preparation cache emptied first; the operating system's file
cache cannot be dropped here, so "cold" is not a cold disk) and is reported apart; the median is over the warm ones.

    ../shared/bin/loopback-only python3 -m benchmarks.startup --launches 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EPOCH_SAMPLES = 16384
"""Both first epochs train on this many windows, so the two first results cost the same training."""


def beijing_csv(workdir: Path) -> Path:
    """The bundled Beijing CSV, decompressed once (a user's script reads a plain CSV)."""
    from cluster.prep.data import bundled_beijing_csv

    path = workdir / "beijing_pm25_hourly.csv"
    if not path.exists():
        path.write_bytes(bundled_beijing_csv())
    return path


def first_line(cmd: list[str], marker: str, env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(seconds to the first output line containing ``marker``, seconds to exit, that line); output on both streams."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    assert proc.stdout is not None
    seen, found, tail = None, "", []
    for line in proc.stdout:
        tail = [*tail[-20:], line]
        if seen is None and marker in line:
            seen, found = time.perf_counter() - began, line.strip()
    code = proc.wait()
    ended = time.perf_counter() - began
    if code != 0 or seen is None:
        raise RuntimeError(f"{cmd[:4]} exited {code} without {marker!r}:\n{''.join(tail)}")
    return seen, ended, found


def plain(csv: Path, workdir: Path) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "benchmarks.startup_plain", str(csv), "--train-windows", str(EPOCH_SAMPLES)]
    return first_line(cmd, "first result", dict(os.environ), Path(__file__).resolve().parent.parent)


def lstm_tune(workdir: Path, n: int, cache: Path) -> tuple[float, float, str]:
    cmd = [
        shutil.which("lstm-tune") or "lstm-tune", "run", "--num-samples", "2", "--max-epochs", "1",
        "--epoch-samples", str(EPOCH_SAMPLES), "--storage", str(workdir / "runs"), "--name", f"startup-{n}",
        "--seed", str(n),
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return first_line(cmd, "best val", env, workdir)


def measure(launches: int, workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``launches`` warm launches of each, alternating, after one cold lstm-tune launch; figures in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "runs", ignore_errors=True)
    cache = workdir / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    csv = beijing_csv(workdir)
    plain(csv, workdir)  # the file cache warm for both, as for a user who has run either before
    cold = lstm_tune(workdir, 0, cache)
    log(f"startup: lstm-tune cold: first result {cold[0]:.2f} s (exit {cold[1]:.2f} s): {cold[2]}")
    rows: dict[str, list[float]] = {"plain": [], "lstm-tune": []}
    for n in range(1, launches + 1):
        for name in ("plain", "lstm-tune"):
            seen, ended, line = plain(csv, workdir) if name == "plain" else lstm_tune(workdir, n, cache)
            rows[name].append(seen)
            log(f"startup: {name} #{n}: first result {seen:.2f} s (exit {ended:.2f} s): {line}")
    plain_median, ours_median = statistics.median(rows["plain"]), statistics.median(rows["lstm-tune"])
    return {
        "launches": launches,
        "plain_s": rows["plain"],
        "lstm_tune_s": rows["lstm-tune"],
        "plain_median_s": plain_median,
        "lstm_tune_median_s": ours_median,
        "ratio": ours_median / plain_median,
        "lstm_tune_cold_s": cold[0],
    }


def markdown(r: dict[str, Any]) -> list[str]:
    return [
        "### Start-up: launch to the first result",
        "",
        f"| median of {r['launches']} launches | first result | ratio to the plain script |",
        "| --- | ---: | ---: |",
        f"| plain script (torch, pandas, Beijing CSV, one epoch) | {r['plain_median_s']:.2f} s | 1.00 |",
        f"| `lstm-tune run` (bundled data, 2 trials, local Ray) | {r['lstm_tune_median_s']:.2f} s | {r['ratio']:.2f} |",
        f"| `lstm-tune run`, cold (first launch, empty caches) | {r['lstm_tune_cold_s']:.2f} s | |",
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=5, help="warm launches of each (plus one cold lstm-tune)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lstm-tune-startup-"))
    result = measure(args.launches, workdir)
    print()
    print("\n".join(markdown(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
