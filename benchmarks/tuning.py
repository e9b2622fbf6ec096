"""Tuning efficiency: best validation metric against wall clock for ASHA, PBT, FIFO random search and Optuna.

Every method gets the same search space, the same machine (2 CPUs, one torch thread per trial), the same wall-clock
budget counted from the moment its command is launched (so Ray's start-up counts against ours), and the same seeds.
Our three are ``lstm-tune run`` as a user types it; Optuna (TPE sampler, Hyperband pruner) drives the same trial code
in plain processes (:mod:`benchmarks.optuna_driver`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DATASETS,
    Curve,
    best_so_far,
    checked,
    lstm_tune,
    read_experiment_results,
    spread,
    target_for,
)

METHODS = ("asha", "asha-tpe", "pbt", "random", "optuna")


@dataclass(frozen=True)
class TuningSet:
    """One dataset as the tuning benchmark runs it."""

    name: str
    space: str
    metric: str
    mode: str
    max_epochs: int
    budget_s: float
    prepare: list[str] = field(default_factory=list)
    """``lstm-tune data prepare`` arguments (empty: the bundled Beijing data, prepared in place)."""
    sources: tuple[str, ...] = ()


BEIJING = TuningSet(name="beijing", space="forecast-small", metric="val/rmse", mode="min", max_epochs=12, budget_s=90)
R8 = TuningSet(
    name="r8",
    space="classify-small",
    metric="val/accuracy",
    mode="max",
    max_epochs=6,
    budget_s=120,
    sources=("reuters-r8-train.csv.xz", "reuters-r8-test.csv.xz"),
    # Shorter documents than the quality run's 200 tokens: more trials fit the budget; the ranking is what counts.
    prepare=["--task", "classify", "--max-length", "120", "--max-vocab", "20000", "--min-freq", "2"],
)
SETS = {s.name: s for s in (BEIJING, R8)}


def prepare(spec: TuningSet, workdir: Path) -> Path:
    """The dataset once, before any method's clock starts."""
    out = workdir / f"{spec.name}-data"
    if (out / "manifest.json").exists():
        return out
    if spec.sources:
        train, test = (str(DATASETS / s) for s in spec.sources)
        checked(
            lstm_tune(["data", "prepare", train, "--test-source", test, "--out", str(out), *spec.prepare]), "prepare"
        )
    else:
        from cluster.prep.data import prepare_default
        from trainables.storage import resolve

        prepare_default(resolve(str(out)))
    return out


def scheduler_args(method: str, spec: TuningSet) -> list[str]:
    """How each of our methods is asked for. Trial counts are far above what fits: the budget ends every run."""
    if method == "asha":
        return ["--scheduler", "asha", "--grace-period", "1", "--reduction-factor", "3", "--num-samples", "1000",
                "--max-epochs", str(spec.max_epochs)]  # fmt: skip
    if method == "asha-tpe":  # ASHA stopping, Optuna's TPE proposing (--search tpe)
        return [*scheduler_args("asha", spec), "--search", "tpe"]
    if method == "random":
        return ["--scheduler", "fifo", "--num-samples", "1000", "--max-epochs", str(spec.max_epochs)]
    if method == "pbt":
        # A population of 4 trains on until the budget ends; PBT's trials are meant to run long.
        return ["--scheduler", "pbt", "--num-samples", "4", "--perturbation-interval", "2",
                "--max-epochs", str(spec.max_epochs * 10)]  # fmt: skip
    raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")


def run_ours(method: str, spec: TuningSet, data: Path, seed: int, workdir: Path, budget_s: float) -> dict[str, Any]:
    name = f"{spec.name}-{method}-{seed}"
    storage = workdir / "runs"
    launched = time.time()
    args = ["run", "--data", str(data), "--space", spec.space, *scheduler_args(method, spec), "--seed", str(seed)]
    args += ["--time-budget-s", str(budget_s), "--storage", str(storage), "--name", name, "--json"]
    done = checked(lstm_tune(args), f"{name}")
    rows = read_experiment_results(storage / name)
    return {"rows": rows, "launched": launched, "wall_s": time.time() - launched, "summary": json.loads(done.stdout)}


def run_optuna(spec: TuningSet, data: Path, seed: int, workdir: Path, budget_s: float) -> dict[str, Any]:
    from benchmarks.optuna_driver import read_results

    out = workdir / f"optuna-{spec.name}-{seed}"
    launched = time.time()
    cmd = [sys.executable, "-m", "benchmarks.optuna_driver", "--data", str(data), "--space", spec.space]
    cmd += ["--max-epochs", str(spec.max_epochs), "--seed", str(seed), "--workers", "2"]
    cmd += ["--deadline", str(launched + budget_s), "--out", str(out)]
    checked(subprocess.run(cmd, capture_output=True, text=True, check=False), f"optuna {spec.name} seed {seed}")
    return {"rows": read_results(out), "launched": launched, "wall_s": time.time() - launched}


def curve_of(run: dict[str, Any], spec: TuningSet, budget_s: float) -> Curve:
    points = [
        (row["time/unix"] - run["launched"], float(row[spec.metric]))
        for row in run["rows"]
        if "time/unix" in row and spec.metric in row
    ]
    return best_so_far(points, spec.mode, until=budget_s)


def run_set(
    spec: TuningSet,
    seeds: list[int],
    workdir: Path,
    budget_s: float,
    log: Any,
    methods: tuple[str, ...] = METHODS,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``methods`` for every seed; ``previous`` (an earlier result of this set, same budget and seeds) supplies
    the curves of methods not run now, so one method can be added to a finished comparison."""
    data = prepare(spec, workdir)
    curves: dict[str, dict[int, Curve]] = {}
    trials: dict[str, dict[int, int]] = {}
    if previous is not None:
        if previous["budget_s"] != budget_s or previous["seeds"] != seeds:
            raise ValueError(
                f"--merge: {spec.name} ran with budget {previous['budget_s']} and seeds {previous['seeds']}"
            )
        for method, row in previous["methods"].items():
            if method not in methods:
                curves[method] = {int(s): Curve(c["t"], c["best"]) for s, c in row["curves"].items()}
                trials[method] = {int(s): n for s, n in row["trials_per_seed"].items()}
    for seed in seeds:
        for method in methods:
            started = time.perf_counter()
            run = (
                run_optuna(spec, data, seed, workdir, budget_s)
                if method == "optuna"
                else run_ours(method, spec, data, seed, workdir, budget_s)
            )
            curves.setdefault(method, {})[seed] = curve_of(run, spec, budget_s)
            trials.setdefault(method, {})[seed] = len({r["trial_id"] for r in run["rows"]})
            log(
                f"tuning {spec.name} seed {seed} {method:8}: best {spec.metric} {curves[method][seed].final()} "
                f"({trials[method][seed]} trials, {time.perf_counter() - started:.0f} s)"
            )
    order = [m for m in METHODS if m in curves]
    return analyse(spec, {m: curves[m] for m in order}, trials, budget_s)


def analyse(
    spec: TuningSet, curves: dict[str, dict[int, Curve]], trials: dict[str, dict[int, int]], budget_s: float
) -> dict[str, Any]:
    """Target, time to target, the headline ratios per seed, and their spread."""
    finals = [c.final() for by_seed in curves.values() for c in by_seed.values()]
    found = [v for v in finals if v is not None]
    best = min(found) if spec.mode == "min" else max(found)
    target = target_for(best, spec.mode)
    seeds = sorted(next(iter(curves.values())))
    per_method: dict[str, Any] = {}
    for method, by_seed in curves.items():
        ttt = [by_seed[s].time_to(target, spec.mode) for s in seeds]
        per_method[method] = {
            "final": spread([by_seed[s].final() for s in seeds]),
            "time_to_target_s": spread(ttt),
            "reached": sum(t is not None for t in ttt),
            "trials": spread([float(trials[method][s]) for s in seeds]),
            "trials_per_seed": {str(s): trials[method][s] for s in seeds},
            "curves": {str(s): {"t": by_seed[s].times, "best": by_seed[s].values} for s in seeds},
        }

    def ttt_ratio(ours: str, theirs: str) -> list[float | None]:
        out: list[float | None] = []
        for s in seeds:
            a, r = curves[ours][s].time_to(target, spec.mode), curves[theirs][s].time_to(target, spec.mode)
            # The other never reaching the target inside the budget: the ratio is at most ours over the budget.
            out.append(None if a is None else a / (r if r is not None else budget_s))
        return out

    def gain(ours: str, theirs: str) -> list[float | None]:
        """Relative difference in the metric at the budget (equal wall clock); positive: ours better."""
        out: list[float | None] = []
        for s in seeds:
            a, b = curves[ours][s].final(), curves[theirs][s].final()
            if a is None or b is None:
                out.append(None)
            else:
                out.append((b - a) / b if spec.mode == "min" else (a - b) / b)
        return out

    headlines: dict[str, Any] = {}
    for ours in ("asha", "asha-tpe"):
        if ours in curves and "random" in curves:
            values = ttt_ratio(ours, "random")
            headlines[f"{ours}_ttt_over_random"] = {"per_seed": values, **spread(values)}
        if ours in curves and "optuna" in curves:
            values = gain(ours, "optuna")
            headlines[f"{ours}_vs_optuna_gain"] = {"per_seed": values, **spread(values)}
    return {
        "dataset": spec.name,
        "space": spec.space,
        "metric": spec.metric,
        "mode": spec.mode,
        "budget_s": budget_s,
        "seeds": seeds,
        "best_found": best,
        "target": target,
        "methods": per_method,
        "headlines": headlines,
    }


__all__ = ["BEIJING", "METHODS", "R8", "SETS", "TuningSet", "analyse", "run_set"]
