"""A synthetic panel in memory and streamed, side by side: prepare throughput, then per mode the trial's peak memory
and training and scoring throughput.

``python3 -m benchmarks.panel_stream --series 3000 --days 1500 --budget 200MB``: the panel is generated
(:mod:`benchmarks.panel_data`), prepared once (timed, its own process: rows/s and peak RSS), then each mode runs in
its own process so ``ru_maxrss`` is its own: the dataset loaded as a trial loads it (the whole panel, or a
``SplitStream`` under ``--budget``), one epoch of ``--epoch-samples`` windows of a fixed model (windows/s, 2
threads), and the validation split scored (windows/s). Prints a table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODEL = {"hidden_size": 32, "num_layers": 1, "batch_size": 512, "window": 28, "loss": "mae"}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(source: Path, out: Path) -> dict[str, Any]:
    import cluster

    start = time.perf_counter()
    manifest = cluster.prepare(
        str(source),
        str(out),
        series_column=["series"],
        time_columns="date",
        target="value",
        features="value",
        season_length=7,
        max_window=28,
        horizon=7,
        frequency="1D",
        duplicates="mean",
        shard_rows=50_000,
    )
    seconds = time.perf_counter() - start
    rows = int(manifest.source["rows"])
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": _peak_mb()}


def trial(uri: str, budget: int | None, epoch_samples: int) -> dict[str, Any]:
    import torch

    from trainables.config import TrialConfig
    from trainables.data.handle import DataHandle
    from trainables.data.loader import load_forecast_data
    from trainables.tasks import ForecastTask

    torch.set_num_threads(2)
    start = time.perf_counter()
    data = load_forecast_data(DataHandle(uri=uri, memory_budget=budget), ("train", "val"))
    loaded = time.perf_counter() - start
    cfg = TrialConfig.from_flat(MODEL)
    task = ForecastTask(data, cfg)
    model = task.build(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    stats = task.train_epoch(model, optimizer, cfg, seed=0, device=torch.device("cpu"), samples=epoch_samples)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = task.evaluate(model, cfg, torch.device("cpu"))
    eval_s = time.perf_counter() - start
    return {
        "streamed": data.streamed,
        "load_s": loaded,
        "train_windows": stats.samples,
        "train_windows_per_s": stats.samples / train_s,
        "eval_s": eval_s,
        "val_mae": scores["val/mae"],
        "peak_rss_mb": _peak_mb(),
    }


def _child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.panel_stream", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark step {args[:2]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=3000)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--budget", default="200MB", help="the streamed mode's --memory-budget")
    parser.add_argument("--epoch-samples", type=int, default=65536)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lstm-tune-panel-stream"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--step", choices=["prepare", "trial"], help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--budget-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "prepare":
        print(json.dumps(prepare(args.workdir / "panel.parquet", args.workdir / "prepared")))
        return
    if args.step == "trial":
        print(json.dumps(trial(args.uri, args.budget_bytes or None, args.epoch_samples)))
        return

    from benchmarks.panel_data import PanelSpec, write
    from cluster.plan.options import parse_bytes

    budget = parse_bytes(args.budget, "--budget") or 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.workdir / "panel.parquet"
    if not source.exists():
        write(PanelSpec(series=args.series, days=args.days), source)
    prepared = args.workdir / "prepared"
    if prepared.exists():
        import shutil

        shutil.rmtree(prepared)
    prep = _child(["--step", "prepare", "--workdir", str(args.workdir)])
    base = ["--step", "trial", "--uri", str(prepared), "--epoch-samples", str(args.epoch_samples)]
    modes = {
        "in memory": _child([*base, "--budget-bytes", str(2**40)]),
        f"streamed ({args.budget})": _child([*base, "--budget-bytes", str(budget)]),
    }
    print(
        f"prepare: {prep['rows']:,} rows in {prep['seconds']:.1f} s ({prep['rows_per_s']:,.0f} rows/s), "
        f"peak RSS {prep['peak_rss_mb']:.0f} MB"
    )
    print(f"{'mode':<22} {'peak RSS MB':>11} {'load s':>7} {'train win/s':>12} {'val scoring s':>14} {'val MAE':>8}")
    for name, m in modes.items():
        print(
            f"{name:<22} {m['peak_rss_mb']:>11.0f} {m['load_s']:>7.1f} {m['train_windows_per_s']:>12,.0f} "
            f"{m['eval_s']:>14.1f} {m['val_mae']:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"prepare": prep, "modes": modes}, indent=2))


if __name__ == "__main__":
    main()
