"""The outside anchor: Optuna's TPE sampler and Hyperband pruner driving the same trial code, in plain processes.

No Ray: ``--workers`` processes share one study through a journal file, each runs :func:`trainables.loop.run_trial`
(one torch thread each, like a 1-CPU Tune trial) and reports every epoch to Optuna, which may prune the trial. Each
result is appended, with its Unix time, to ``<out>/results-<rank>.jsonl``; the run stops at ``--deadline`` (Unix
time), mid-trial if need be, as Tune's ``--time-budget-s`` does.

    python3 -m benchmarks.optuna_driver --data DIR --space forecast-small --max-epochs 12 --seed 0 \
        --deadline $(($(date +%s) + 90)) --out /tmp/optuna-run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from search_spaces import ParamSpec, SearchSpace

METRIC = "val/loss"  # what every method minimises, as Tune's schedulers do


class Deadline(Exception):
    """The wall-clock budget ran out inside a trial."""


def suggest(trial: Any, spec: ParamSpec, kind: str) -> Any:
    """One parameter of our search-space file as an Optuna suggestion (same ranges as Tune gets)."""
    d = spec.distribution
    if d == "constant":
        return spec.values[0]
    if d in ("choice", "grid"):
        return trial.suggest_categorical(spec.name, list(spec.values))
    low, high = float(spec.low or 0.0), float(spec.high or 0.0)
    if d == "loguniform":
        return trial.suggest_float(spec.name, low, high, log=True)
    if d == "uniform":
        return trial.suggest_float(spec.name, low, high)
    if d == "randint":  # Tune's randint excludes high
        return trial.suggest_int(spec.name, int(low), int(high) - 1)
    if d == "quniform":
        q = spec.q or 1.0
        if kind == "int":
            return trial.suggest_int(spec.name, int(low), int(high), step=int(q))
        return trial.suggest_float(spec.name, low, high, step=q)
    raise ValueError(f"{spec.name}: distribution {d!r} has no Optuna equivalent here")


def sample_config(trial: Any, space: SearchSpace) -> dict[str, Any]:
    from cluster.plan.space import param_rules

    rules = param_rules()
    return {name: suggest(trial, spec, rules[name].kind) for name, spec in space.params.items()}


class OptunaSession:
    """:class:`trainables.loop.TrialSession` that reports to an Optuna trial and to a results file."""

    def __init__(self, trial: Any, log: Any, deadline: float) -> None:
        self.trial = trial
        self.log = log
        self.deadline = deadline
        self.best = float("inf")

    def restore(self) -> dict[str, Any] | None:
        return None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        import optuna

        now = time.time()
        if now > self.deadline:
            raise Deadline
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.log.write(json.dumps({**row, "time/unix": now, "trial_id": f"optuna-{self.trial.number}"}) + "\n")
        self.log.flush()
        self.best = min(self.best, float(metrics[METRIC]))
        self.trial.report(float(metrics[METRIC]), int(metrics["epoch"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned


def worker(rank: int, args: argparse.Namespace) -> None:
    import optuna
    import torch

    from cluster.plan.space import param_rules
    from search_spaces import load_space
    from trainables.config import TrialConfig
    from trainables.data.loader import DataHandle, load_forecast_data
    from trainables.data.manifest import read_manifest
    from trainables.data.text_loader import load_text_data
    from trainables.loop import run_trial
    from trainables.storage import resolve

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space, param_rules())
    handle = DataHandle(uri=args.data)
    task = read_manifest(resolve(args.data)).task
    data = load_text_data(handle) if task == "classify" else load_forecast_data(handle)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(args.out / "journal.log")))
    study = optuna.load_study(
        study_name="bench",
        storage=storage,
        # One seed per worker: the same seed in every process would propose the same configurations.
        sampler=optuna.samplers.TPESampler(seed=args.seed * 1000 + rank),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=args.max_epochs, reduction_factor=3),
    )
    device = torch.device("cpu")
    with open(args.out / f"results-{rank}.jsonl", "a") as log:

        def objective(trial: Any) -> float:
            config = {**sample_config(trial, space), "max_epochs": args.max_epochs, "seed": args.seed}
            session = OptunaSession(trial, log, args.deadline)
            run_trial(TrialConfig.from_flat(config), data, session, device=device)
            return session.best

        while time.time() < args.deadline:
            try:
                study.optimize(objective, n_trials=1, catch=())
            except Deadline:
                break


def create_study(out: Path) -> None:
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "journal.log")))
    optuna.create_study(study_name="bench", storage=storage, direction="minimize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--space", required=True, help="search-space preset or YAML file")
    parser.add_argument("--max-epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    parser.add_argument("--deadline", type=float, required=True, help="Unix time to stop at")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.out = args.out or Path(tempfile.mkdtemp(prefix="optuna-bench-"))
    args.out.mkdir(parents=True, exist_ok=True)
    create_study(args.out)
    # Spawned, not forked: each worker imports torch itself, as a fresh process does.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(rank, args)) for rank in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise SystemExit(f"optuna worker(s) exited with {failed}")
    print(json.dumps({"out": str(args.out), "pid": os.getpid()}))


def read_results(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(out.glob("results-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


if __name__ == "__main__":
    main()
