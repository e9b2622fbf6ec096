"""Load past this machine: thousands of short ASHA trials on 8 local Ray nodes advertising fake GPUs.

``python3 -m benchmarks.load --trials 250,1000,2000`` (through ``../shared/bin/loopback-only``). Starts a head and
``--nodes`` worker nodes with ``ray start`` (``--num-gpus`` each, so Tune places one trial per fake GPU: 32 slots by
default), prepares a small slice of the bundled Beijing data, and for each trial count runs one ``lstm-tune`` tuning
run (ASHA, tiny LSTMs on CPU, ``--epoch-samples`` small) from this process, measuring:

- results lost: every epoch a trial reached (its last ``training_iteration``) must be a line of its stored
  ``result.json``; counted over all trials (0 is the bar);
- the driver's peak RSS (this process, sampled every 0.2 s) and the size of Tune's experiment state;
- results/s while trials run (first start to last result), and the time from a trial ending to a waiting trial
  starting in the slot it freed, as the driver's progress events see them (slot reuse), median and 95th percentile;
- the driver's full garbage collections (Python's oldest generation): how many, the longest, the total;
- the experiment-state sync: how often Tune's driver saved its state and how long each save held the driver's loop
  (serialising every trial and writing the file: ``TuneController.save_to_dir``, timed around Ray's own method),
  and each whole sync call including the hand-off of the upload.

Trials ask for 1 fake GPU and 0.05 CPU: the machine's 2 cores are shared by every slot, so figures measure the
driver and the scheduler, not the model.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import read_experiment_results

SPACE = """task: forecast
description: load benchmark (tiny models)
params:
  hidden_size: {distribution: choice, values: [4, 8]}
  num_layers: {distribution: constant, value: 1}
  lr: {distribution: loguniform, low: 1.0e-3, high: 1.0e-2}
  batch_size: {distribution: constant, value: 64}
  window: {distribution: constant, value: 6}
"""


class SyncTimes:
    """Every experiment-state save by Tune's driver in this process: when it began and how long it took, measured
    by wrapping Ray's own methods for the duration of a run (a benchmark's instrument, never the product's)."""

    def __init__(self) -> None:
        self.saves: list[tuple[float, float]] = []
        self.calls: list[float] = []
        self._saved = False

    def __enter__(self) -> SyncTimes:
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
        from ray.tune.execution.tune_controller import TuneController

        self._originals = (TuneController.save_to_dir, _ExperimentCheckpointManager.sync_up_experiment_state)
        save, sync = self._originals
        times = self

        def timed_save(controller: Any) -> None:
            began = time.perf_counter()
            save(controller)
            times.saves.append((began, time.perf_counter() - began))
            times._saved = True

        def timed_sync(manager: Any, *args: Any, **kwargs: Any) -> None:
            times._saved = False
            began = time.perf_counter()
            sync(manager, *args, **kwargs)
            if times._saved:
                times.calls.append(time.perf_counter() - began)

        TuneController.save_to_dir = timed_save  # type: ignore[method-assign,assignment]
        _ExperimentCheckpointManager.sync_up_experiment_state = timed_sync  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *_: object) -> None:
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
        from ray.tune.execution.tune_controller import TuneController

        save, sync = self._originals
        TuneController.save_to_dir = save  # type: ignore[method-assign]
        _ExperimentCheckpointManager.sync_up_experiment_state = sync  # type: ignore[method-assign]

    def figures(self) -> dict[str, float | int | None]:
        durations = sorted(d for _, d in self.saves)
        starts = [t for t, _ in self.saves]
        intervals = [b - a for a, b in itertools.pairwise(starts)]
        return {
            "state_saves": len(durations),
            "state_save_median_s": statistics.median(durations) if durations else None,
            "state_save_max_s": durations[-1] if durations else None,
            "state_save_total_s": sum(durations),
            "state_sync_call_max_s": max(self.calls) if self.calls else None,
            "state_save_interval_median_s": statistics.median(intervals) if intervals else None,
        }


class GCPauses:
    """Python's collections of the oldest generation in this process (the driver's), with their durations: a full
    pass walks every live object, and the driver holds every trial's state."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self._hook)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._hook)

    def figures(self) -> dict[str, float | int | None]:
        return {
            "gc_full_collections": len(self.pauses),
            "gc_full_max_s": max(self.pauses) if self.pauses else None,
            "gc_full_total_s": sum(self.pauses),
        }


class PeakRSS:
    """Peak resident memory of this process, sampled in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        me = psutil.Process()
        while not self._stop.wait(every):
            self.peak = max(self.peak, me.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def small_data(workdir: Path) -> str:
    """The first 3,000 hours of the bundled data: validation stays a few hundred windows per epoch."""
    import pandas as pd

    import cluster
    from cluster.prep.data import bundled_beijing_csv, read_csv_bytes

    out = workdir / "data"
    if not (out / "manifest.json").exists():
        source = workdir / "beijing-3000.csv"
        read_csv_bytes(bundled_beijing_csv(), "beijing").iloc[:3000].to_csv(source, index=False)
        cluster.prepare(
            str(source), str(out), time_columns="year,month,day,hour", target="pm2.5", categorical="cbwd",
            exclude="No", max_window=24, horizon=1,
        )  # fmt: skip
        del pd
    return str(out)


def lost_results(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(expected, missing): each trial must have every epoch from 1 to the last one it reached."""
    by_trial: dict[str, set[int]] = {}
    for r in rows:
        by_trial.setdefault(str(r["trial_id"]), set()).add(int(r["training_iteration"]))
    expected = sum(max(epochs) for epochs in by_trial.values())
    missing = sum(len(set(range(1, max(e) + 1)) - e) for e in by_trial.values())
    return expected, missing


def slot_reuse(events: list[tuple[str, str, float]], slots: int) -> list[float]:
    """Seconds from a trial ending (finished, stopped or errored) to a waiting trial starting in the slot it freed,
    as the driver saw them: once every slot has been taken, each start is paired with the oldest unpaired end."""
    ends = sorted(t for kind, _, t in events if kind in ("complete", "error"))
    starts = sorted(t for kind, _, t in events if kind == "start")[slots:]
    gaps, i = [], 0
    for start in starts:
        if i < len(ends) and ends[i] <= start:
            gaps.append(start - ends[i])
            i += 1
    return gaps


def measure(trials: int, address: str, data: str, workdir: Path, epochs: int, slots: int) -> dict[str, Any]:
    import cluster

    space = workdir / "load.yaml"
    space.write_text(SPACE)
    name = f"load-{trials}-{int(time.time())}"
    events: list[tuple[str, str, float]] = []
    started = time.perf_counter()
    with PeakRSS() as rss, SyncTimes() as sync, GCPauses() as pauses:
        result = cluster.run(
            on_progress=lambda e: events.append((e.kind, e.trial_id, e.elapsed_s)),
            data=data, storage=str(workdir / "runs"), name=name, space=str(space), address=address,
            scheduler="asha", num_samples=trials, max_epochs=epochs, epoch_samples=256, gpus_per_trial=1.0,
            cpus_per_trial=0.05, sync_period_s=30, keep_checkpoints=1, keep_stopped=0, seed=0,
        )  # fmt: skip
    wall = time.perf_counter() - started
    experiment = workdir / "runs" / name
    rows = read_experiment_results(experiment)
    expected, missing = lost_results(rows)
    gaps = slot_reuse(events, slots)
    results_at = [t for kind, _, t in events if kind == "result"]
    tuning_s = max(results_at) - min(t for kind, _, t in events if kind == "start") if results_at else None
    states = sorted(experiment.glob("experiment_state-*.json"))
    s = result.summary
    assert s is not None
    return {
        "trials": trials,
        "finished": s.trials,
        "wall_s": wall,
        "results": len(rows),
        "tuning_s": tuning_s,
        "results_per_s": len(rows) / tuning_s if tuning_s else None,
        "results_expected": expected,
        "results_lost": missing,
        "driver_peak_rss_mb": rss.peak / 2**20,
        "experiment_state_kb": states[-1].stat().st_size / 1024 if states else None,
        "slot_reuse_median_s": statistics.median(gaps) if gaps else None,
        "slot_reuse_p95_s": sorted(gaps)[int(0.95 * (len(gaps) - 1))] if gaps else None,
        **sync.figures(),
        **pauses.figures(),
    }


def main(argv: list[str] | None = None) -> None:
    from tests.raycluster import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="250,1000,2000", help="trial counts, one run each")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lstm-tune-load")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = small_data(args.workdir)
    ray_cluster = LocalCluster(workers=args.nodes, worker_cpus=args.gpus_per_node, worker_gpus=args.gpus_per_node)
    ray_cluster.start(timeout=300)
    rows = []
    try:
        for n in (int(t) for t in args.trials.split(",")):
            slots = args.nodes * args.gpus_per_node
            rows.append(measure(n, ray_cluster.address, data, args.workdir, args.epochs, slots))
            print(json.dumps(rows[-1], default=str), flush=True)
    finally:
        ray_cluster.stop()
    print(f"{'trials':>7} {'wall s':>7} {'tuning s':>8} {'results':>8} {'lost':>5} {'results/s':>9} {'driver MB':>9} "
          f"{'state KB':>8} {'reuse p50 s':>11} {'reuse p95 s':>11} {'saves':>5} {'save p50 s':>10} "
          f"{'save max s':>10} {'every s':>7}")  # fmt: skip
    for r in rows:
        print(
            f"{r['trials']:>7} {r['wall_s']:>7.0f} {r['tuning_s'] or 0:>8.0f} {r['results']:>8} {r['results_lost']:>5} "
            f"{r['results_per_s'] or 0:>9.1f} {r['driver_peak_rss_mb']:>9.0f} {r['experiment_state_kb'] or 0:>8.0f} "
            f"{r['slot_reuse_median_s'] or 0:>11.2f} {r['slot_reuse_p95_s'] or 0:>11.2f} {r['state_saves']:>5} "
            f"{r['state_save_median_s'] or 0:>10.3f} {r['state_save_max_s'] or 0:>10.3f} "
            f"{r['state_save_interval_median_s'] or 0:>7.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
