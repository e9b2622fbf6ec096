"""Where the CPU goes in a whole tuning run, and what a trial costs before its first training step.

An ASHA run on the bundled Beijing data (``lstm-tune run`` as a user types it, 2 CPUs, 1 CPU per trial), twice:
``--no-reuse-workers`` (a fresh worker process per trial: boot, imports, data load each time, the usual hand-written
Ray Tune set-up) and the default (workers reused, the dataset loaded once per process). Every epoch reports the CPU
seconds of its training steps (``time/train_cpu_s``) and its validation seconds; each trial reports its start-up
(``startup/*``). CPU capacity is CPUs x wall clock, either from launch to exit (the command) or from the first trial's
start to the last result (the tuning window).
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import checked, lstm_tune, read_experiment_results
from trainables import metrics as M


def run_once(data: Path, workdir: Path, budget_s: float, reuse: bool, cpus: int) -> dict[str, Any]:
    name = f"cpu-{'reuse' if reuse else 'fresh'}-{int(time.time())}"
    storage = workdir / "runs"
    args = ["run", "--data", str(data), "--space", "forecast-small", "--scheduler", "asha", "--grace-period", "1"]
    args += ["--num-samples", "1000", "--max-epochs", "12", "--time-budget-s", str(budget_s)]
    args += ["--storage", str(storage), "--name", name, "--seed", "0"]
    args += [] if reuse else ["--no-reuse-workers"]
    before = children_cpu_s()
    launched = time.time()
    checked(lstm_tune(args), name)
    exited = time.time()
    used = children_cpu_s() - before
    out = account(read_experiment_results(storage / name), launched, exited, cpus)
    return out | {
        "reuse_workers": reuse,
        "command_cpu_used_s": used,
        "command_cpu_used_share": used / out["command_cpu_s"],
    }


def children_cpu_s() -> float:
    """CPU seconds of every finished child process tree (the run, its Ray processes and workers, once reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def account(rows: list[dict[str, Any]], launched: float, exited: float, cpus: int) -> dict[str, Any]:
    """CPU-seconds by purpose from the reported results (see the module docstring)."""
    train_cpu = sum(r.get(M.TRAIN_CPU_SECONDS, 0.0) for r in rows)
    eval_s = sum(r.get(M.EVAL_SECONDS, 0.0) for r in rows)
    firsts = [r for r in rows if M.STARTUP_TOTAL in r]
    startup = sum(r[M.STARTUP_TOTAL] for r in firsts)
    # A trial's start: its first result, less that epoch's steps, validation and start-up.
    starts = [r[M.WALL_CLOCK] - r[M.TRAIN_SECONDS] - r[M.EVAL_SECONDS] - r[M.STARTUP_TOTAL] for r in firsts]
    window_start, window_end = min(starts), max(r[M.WALL_CLOCK] for r in rows)
    command = cpus * (exited - launched)
    window = cpus * (window_end - window_start)
    fresh = [r for r in firsts if r[M.STARTUP_PROCESS] > 0]
    reused = [r for r in firsts if r[M.STARTUP_PROCESS] == 0]

    def median(rs: list[dict[str, Any]], key: str) -> float | None:
        return statistics.median(r[key] for r in rs) if rs else None

    return {
        "trials": len(firsts),
        "results": len(rows),
        "cpus": cpus,
        "command_s": exited - launched,
        "command_cpu_s": command,
        "before_first_trial_s": window_start - launched,
        "window_s": window_end - window_start,
        "train_cpu_s": train_cpu,
        "eval_s": eval_s,
        "startup_s": startup,
        "train_share_of_command": train_cpu / command,
        "train_share_of_window": train_cpu / window,
        "eval_share_of_window": eval_s / window,
        "startup_share_of_window": startup / window,
        "other_share_of_window": max(0.0, 1 - (train_cpu + eval_s + startup) / window),
        "startup_per_trial_s": statistics.mean(r[M.STARTUP_TOTAL] for r in firsts),
        "fresh_process_trials": len(fresh),
        "startup_fresh": {
            "total_s": median(fresh, M.STARTUP_TOTAL),
            "process_s": median(fresh, M.STARTUP_PROCESS),
            "data_s": median(fresh, M.STARTUP_DATA),
            "build_s": median(fresh, M.STARTUP_BUILD),
        },
        "startup_reused": {
            "total_s": median(reused, M.STARTUP_TOTAL),
            "data_s": median(reused, M.STARTUP_DATA),
            "build_s": median(reused, M.STARTUP_BUILD),
        },
    }


def measure(data: Path, workdir: Path, budget_s: float, cpus: int, log: Any) -> dict[str, Any]:
    out = {}
    for reuse in (False, True):
        row = run_once(data, workdir, budget_s, reuse, cpus)
        key = "after" if reuse else "before"
        out[key] = row
        log(
            f"cpu share ({key}: reuse_workers={reuse}): {row['train_share_of_window']:.1%} of the tuning window's "
            f"CPU-seconds in training steps ({row['train_share_of_command']:.1%} of the whole command), "
            f"{row['trials']} trials, start-up {row['startup_per_trial_s']:.2f} s per trial"
        )
    return out


__all__ = ["account", "measure", "run_once"]
