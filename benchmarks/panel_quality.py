"""Births by state, side by side with NeuralForecast's AutoLSTM: the same series, horizon, split, wall-clock budget
and MASE scale, on this machine, in one run.

``python3 -m benchmarks.panel_quality --seconds 300`` (through ``../shared/bin/loopback-only``: both tools start
Ray): lstm-tune tunes the ``forecast-panel`` space (``--static state``, ``--metric mase``, TPE and ASHA) for
``--seconds``, then AutoLSTM (3.3.0, its default space, MAE loss) gets the same budget in its own virtual environment
(made on first use at ``--venv``: ``torch==2.13.0`` CPU and ``neuralforecast==3.3.0``, so neither tool's
dependencies touch the other's). Both are scored on the test period (the last 15% of dates, every test day an origin,
7 days ahead) by mean MASE over the 51 states with each state's training-period one-week naive MAE as the scale,
beside seasonal naive on their own targets. Prints a table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DATASETS

BIRTHS = DATASETS / "us_births_by_state_daily.csv.xz"
NF_PINS = ["torch==2.13.0", "neuralforecast==3.3.0"]


def ours(
    seconds: float, workdir: Path, seed: int, holidays: str | None, ensemble: int = 1, lags: str | None = None
) -> dict[str, Any]:
    import cluster

    data = workdir / (f"births-{holidays.lower()}-holidays" if holidays else "births")
    if lags:
        data = data.with_name(f"{data.name}-lags{lags.replace(',', '-')}")
    if not (data / "manifest.json").exists():
        cluster.prepare(
            str(BIRTHS), str(data), series_column="state", static="state", time_columns="date", target="births",
            season_length=7, max_window=56, horizon=7, frequency="1D", duplicates="mean", holidays=holidays,
            lags=lags,
        )  # fmt: skip
    started = time.perf_counter()
    result = cluster.run(
        data=str(data), storage=str(workdir / "runs"), name=f"births-{int(time.time())}", space="forecast-panel",
        metric="mase", search="tpe", scheduler="asha", num_samples=1000, time_budget_s=seconds, max_epochs=12,
        epoch_samples=16384, seed=seed, ensemble=ensemble,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    s = result.summary
    assert s is not None and s.series is not None
    naive = s.baselines["seasonal_naive"]["test"]
    return {
        "tool": "lstm-tune"
        + (f" ({holidays} holidays)" if holidays else "")
        + (f" lags {lags}" if lags else "")
        + (f" ens {ensemble}" if ensemble > 1 else ""),
        "seconds_budget": seconds,
        "seconds": elapsed,
        "trials": s.trials,
        "series": s.series["count"],
        "mase": s.exported.test.mase,
        "seasonal_naive_mase": naive.mase,
        "beats_seasonal_naive": s.series["beats_seasonal_naive"]["test"],
    }


def venv_python(venv: Path) -> Path:
    """AutoLSTM's interpreter, its virtual environment built first if need be. Checked before lstm-tune's half
    runs, so a failed install (no package index inside ``loopback-only``: build it outside first) costs seconds,
    not the whole budget."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import neuralforecast"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(python), "-m", "pip", "install", "-q", *NF_PINS]).returncode != 0:
        raise SystemExit(
            f"could not install {' '.join(NF_PINS)} into {venv}: build it where the package index is reachable "
            f"(outside loopback-only): python3 -m benchmarks.panel_quality --setup --venv {venv}"
        )
    return python


def theirs(seconds: float, venv: Path, workdir: Path) -> dict[str, Any]:
    script = Path(__file__).resolve().with_name("nf_autolstm.py")
    # In the work folder: PyTorch Lightning writes lightning_logs/ into the current directory.
    done = subprocess.run(
        [str(venv_python(venv)), str(script), str(BIRTHS.resolve()), str(seconds)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    if done.returncode != 0:
        raise SystemExit(f"AutoLSTM failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "lstm-tune-nf-venv")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lstm-tune-panel-quality")
    parser.add_argument("--skip", choices=["ours", "theirs"], default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--setup", action="store_true", help="build AutoLSTM's virtual environment, then stop")
    parser.add_argument(
        "--holidays", default="US", help="lstm-tune's holiday calendar (--holidays none: the calendar features alone)"
    )
    parser.add_argument("--ensemble", type=int, default=1, help="lstm-tune exports the mean of the best N trials")
    parser.add_argument(
        "--lags", default=None, help="target lags as inputs, e.g. 357 (a year minus the horizon: the year-ago day of "
        "each of the 7 targets sits in the window's last 7 rows)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.skip != "theirs" or args.setup:
        venv_python(args.venv)  # before lstm-tune's half: fail in seconds, not after it
    if args.setup:
        return
    rows = []
    if args.skip != "ours":
        holidays = None if args.holidays.lower() == "none" else args.holidays
        rows.append(ours(args.seconds, args.workdir, args.seed, holidays, args.ensemble, args.lags))
        print(json.dumps(rows[-1], default=str), flush=True)
    if args.skip != "theirs":
        rows.append(theirs(args.seconds, args.venv, args.workdir))
        print(json.dumps(rows[-1], default=str), flush=True)
    print(f"{'tool':<26} {'budget s':>8} {'wall s':>7} {'test MASE':>9} {'seasonal naive':>14} {'below naive':>11} "
          f"{'states better':>13}")  # fmt: skip
    for r in rows:
        below = 1 - r["mase"] / r["seasonal_naive_mase"]
        print(
            f"{r['tool']:<26} {r['seconds_budget']:>8.0f} {r['seconds']:>7.0f} {r['mase']:>9.3f} "
            f"{r['seasonal_naive_mase']:>14.3f} {below:>11.1%} {r['beats_seasonal_naive']:>10}/{r['series']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
