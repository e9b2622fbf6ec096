"""A panel larger than every process's memory, end to end through S3: prepared (spilled by series) into a local
SeaweedFS, then tuned by ``lstm-tune run`` with streamed trials, each process's peak RSS measured.

``python3 -m benchmarks.panel_scale --series 12000 --days 2600``: the synthetic panel (:mod:`benchmarks.panel_data`)
is written to local Parquet once; a SeaweedFS server starts on 127.0.0.1 (run this through
``../shared/bin/loopback-only``); ``lstm-tune data prepare`` and ``lstm-tune run`` run as subprocesses while a
sampler polls the resident memory of each and of every process below it (Ray's GCS, raylet and workers) every 0.2 s.
``--in-memory`` also prepares the same panel with the whole source in memory (local disk), for rows/s side by side.
Prints a table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PREP = [
    "--series-column", "series", "--time-columns", "date", "--target", "value", "--features", "value",
    "--season-length", "7", "--max-window", "56", "--horizon", "7", "--frequency", "1D", "--duplicates", "mean",
    "--shard-rows", "200000",
]  # fmt: skip


SPACE = Path(__file__).with_name("spaces") / "panel-scale.yaml"


class PeakSampler:
    """Peak RSS per process of a process tree, polled (a peak shorter than the interval can be missed)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peaks: dict[int, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                    if rss > self.peaks.get(p.pid, (0.0, ""))[0]:
                        self.peaks[p.pid] = (rss, _name(p))
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join()
        return sorted(self.peaks.values(), reverse=True)


def _name(p: Any) -> str:
    try:
        cmd = p.cmdline()
    except Exception:
        return p.name()  # type: ignore[no-any-return]
    text = " ".join(cmd)
    for marker in ("ray::", "gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env", "weed", "lstm-tune"):
        if marker in text:
            return next((c for c in cmd if marker in c), marker)[:60]
    return (cmd[0].rsplit("/", 1)[-1] if cmd else p.name())[:60]


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, list[tuple[float, str]], str]:
    """Run ``cmd``; seconds, the peak RSS (MB) of each process of its tree, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakSampler(proc.pid)
    out, err = proc.communicate()
    peaks = sampler.stop()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err[-4000:]}")
    return seconds, peaks, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=12000)
    parser.add_argument("--days", type=int, default=2600)
    parser.add_argument("--prep-budget", default="1GB", help="data prepare's --memory-budget")
    parser.add_argument("--trial-budget", default="300MB", help="run's --memory-budget")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-samples", type=int, default=65536)
    parser.add_argument("--in-memory", action="store_true", help="also prepare with the source held in memory")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lstm-tune-panel-scale"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.panel_data import PanelSpec, write
    from cluster.plan.options import parse_bytes
    from tests.s3server import new_server

    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.workdir / f"panel-{args.series}x{args.days}.parquet"
    if not source.exists():
        write(PanelSpec(series=args.series, days=args.days), source)
    server = new_server()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_ENDPOINT_URL_S3": server.endpoint,
        "OMP_NUM_THREADS": "1",
    }
    cli = [sys.executable, "-m", "cluster.cli"]
    results: dict[str, Any] = {"series": args.series, "days": args.days}
    server.start()
    try:
        server.client().create_bucket(Bucket="bench")
        seconds, peaks, out = measured(
            [*cli, "data", "prepare", str(source), "--out", "s3://bench/panel", *PREP, "--json",
             "--memory-budget", args.prep_budget],
            env,
        )  # fmt: skip
        manifest = json.loads(out)
        rows_in = int(manifest["source"]["rows_in"])
        prepared_bytes = sum(s["bytes"] for split in manifest["splits"].values() for s in split["shards"])
        results["prepare_spilled"] = {
            "rows_in": rows_in,
            "series": manifest["task_params"]["series"]["count"],
            "prepared_bytes": prepared_bytes,
            "seconds": seconds,
            "rows_per_s": rows_in / seconds,
            "peak_rss_mb": peaks[0][0],
        }
        print("prepared:", json.dumps(results["prepare_spilled"]), flush=True)
        budget = str(parse_bytes(args.trial_budget, "--trial-budget"))
        seconds, peaks, out = measured(
            [sys.executable, "-m", "benchmarks.panel_stream", "--step", "trial", "--uri", "s3://bench/panel",
             "--budget-bytes", budget, "--epoch-samples", str(args.epoch_samples)],
            env,
        )  # fmt: skip
        results["trial_streamed"] = {**json.loads(out.strip().splitlines()[-1]), "sampled_peak_rss_mb": peaks[0][0]}
        print("streamed trial:", json.dumps(results["trial_streamed"]), flush=True)
        if args.in_memory:
            local = args.workdir / "in-memory"
            shutil.rmtree(local, ignore_errors=True)
            seconds, peaks, _ = measured(
                [*cli, "data", "prepare", str(source), "--out", str(local), *PREP, "--memory-budget", "1000GB"], env
            )
            results["prepare_in_memory"] = {
                "seconds": seconds,
                "rows_per_s": rows_in / seconds,
                "peak_rss_mb": peaks[0][0],
            }
            print("in memory:", json.dumps(results["prepare_in_memory"]), flush=True)
        seconds, peaks, out = measured(
            [*cli, "run", "--data", "s3://bench/panel", "--storage", "s3://bench/runs", "--name", "scale",
             "--space", str(SPACE), "--metric", "mase", "--scheduler", "fifo",
             "--num-samples", str(args.trials), "--max-epochs", str(args.epochs),
             "--epoch-samples", str(args.epoch_samples), "--memory-budget", args.trial_budget, "--json"],
            env,
        )  # fmt: skip
        summary = json.loads(out)
        results["run"] = {
            "seconds": seconds,
            "peaks_mb": [[round(mb), name] for mb, name in peaks[:12]],
            "max_peak_rss_mb": peaks[0][0],
            "best_test_mase": summary["best"]["test"].get("mase"),
            "seasonal_naive_test_mase": summary["baselines"]["seasonal_naive"]["test"].get("mase"),
            "trials": summary["trials"],
        }
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)

    prep = results["prepare_spilled"]
    print(
        f"panel: {prep['rows_in']:,} rows, {prep['series']:,} series kept, prepared {prep['prepared_bytes'] / 2**20:,.0f}"
        " MiB of Parquet in S3"
    )
    print(f"{'step':<34} {'seconds':>8} {'rows/s':>10} {'peak RSS MB (largest process)':>30}")
    print(f"{'prepare, spilled (' + args.prep_budget + ')':<34} {prep['seconds']:>8.1f} {prep['rows_per_s']:>10,.0f}"
          f" {prep['peak_rss_mb']:>30.0f}")  # fmt: skip
    if "prepare_in_memory" in results:
        mem = results["prepare_in_memory"]
        print(
            f"{'prepare, in memory':<34} {mem['seconds']:>8.1f} {mem['rows_per_s']:>10,.0f} {mem['peak_rss_mb']:>30.0f}"
        )
    t = results["trial_streamed"]
    print(
        f"one streamed trial ({args.trial_budget}): load {t['load_s']:.1f} s, {t['train_windows_per_s']:,.0f} "
        f"training windows/s, validation scored in {t['eval_s']:.1f} s, peak RSS {t['peak_rss_mb']:.0f} MB"
    )
    run = results["run"]
    print(f"{'run, ' + str(args.trials) + ' trials streamed (' + args.trial_budget + ')':<34} {run['seconds']:>8.1f}"
          f" {'':>10} {run['max_peak_rss_mb']:>30.0f}")  # fmt: skip
    print("largest processes of the run (MB):", ", ".join(f"{name} {mb}" for mb, name in run["peaks_mb"][:6]))
    print(f"best test MASE {run['best_test_mase']}, seasonal naive {run['seasonal_naive_test_mase']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
