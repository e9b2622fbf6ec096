"""What the tool costs on top of the work: a Tune trial against a bare PyTorch loop, and Tune's scheduling per trial.

In-trial: one forecasting configuration trains for a few epochs as a Tune trial (``run_experiment``, FIFO, 1 CPU,
1 thread) and as a hand-written loop (windows materialised once, forward/backward/step, a validation pass) on the same
model, batches and thread count. Throughput is compared for the training steps alone and for whole epochs (steps,
validation, checkpoint and report).

Scheduling: N trials of fixed work (``iterations`` reports of ``work_s`` seconds each, a sleep, so the figure is
Tune's cost and not CPU contention) on 2 CPUs; the ideal wall time is N x iterations x work_s / 2.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL_SIZES: dict[str, dict[str, Any]] = {
    "small": {"hidden_size": 16, "num_layers": 1, "batch_size": 256, "window": 24},
    "large": {"hidden_size": 64, "num_layers": 2, "batch_size": 128, "window": 24},
}


def space_file(fixed: dict[str, Any], workdir: Path) -> str:
    """A search space with every value fixed: one configuration."""
    lines = ["task: forecast", "description: one fixed configuration (benchmark)", "params:"]
    lines += [f"  {k}: {v}" for k, v in fixed.items()]
    path = workdir / f"fixed-{'-'.join(str(v) for v in fixed.values())}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def bare_loop(data_uri: str, fixed: dict[str, Any], epochs: int) -> dict[str, float]:
    """The hand-written loop: what a user would write without any tool. Epoch 1 is warm-up and not counted."""
    import torch

    from trainables.config import TrialConfig
    from trainables.data.loader import DataHandle, load_forecast_data
    from trainables.data.windows import gather, target_positions
    from trainables.model import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_forecast_data(DataHandle(uri=data_uri))
    cfg = TrialConfig.from_flat({**fixed, "max_epochs": epochs})
    window, horizon = cfg.window.window, data.horizon
    train, val = data.splits["train"], data.splits["val"]
    x_train, y_train, m_train = gather(
        train, target_positions(train, window=window, horizon=horizon), window=window, horizon=horizon
    )
    x_val, y_val, m_val = gather(
        val, target_positions(val, window=window, horizon=horizon), window=window, horizon=horizon
    )
    w_train, w_val = m_train.float(), m_val.float()
    model = build_model(cfg.model, n_features=data.n_features, target_index=data.fitted.target_index, horizon=horizon)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    batch = cfg.optim.batch_size
    step_rates, epoch_rates = [], []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x_train)).split(batch):
            loss = (((model(x_train[idx]) - y_train[idx]) ** 2) * w_train[idx]).sum() / w_train[idx].sum().clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
        trained = time.perf_counter()
        model.eval()
        with torch.no_grad():
            for chunk in range(0, len(x_val), 1024):
                pred = model(x_val[chunk : chunk + 1024])
                _ = float((((pred - y_val[chunk : chunk + 1024]) ** 2) * w_val[chunk : chunk + 1024]).sum())
        done = time.perf_counter()
        if epoch > 0:
            step_rates.append(len(x_train) / (trained - started))
            epoch_rates.append(len(x_train) / (done - started))
    return {
        "samples": float(len(x_train)),
        "step_samples_per_s": statistics.median(step_rates),
        "epoch_samples_per_s": statistics.median(epoch_rates),
    }


def tune_trial(data_uri: str, fixed: dict[str, Any], epochs: int, workdir: Path) -> dict[str, float]:
    """The same configuration as one Tune trial through ``run_experiment`` (Ray already initialised)."""
    from rich.console import Console

    from benchmarks.common import read_experiment_results
    from cluster.api.launch import run_experiment
    from cluster.plan.options import RunOptions, SchedulerOptions
    from trainables import metrics as M

    name = f"overhead-{fixed['hidden_size']}-{int(time.time() * 1000)}"
    storage = workdir / "runs"
    run_experiment(
        RunOptions(
            storage=str(storage),
            name=name,
            data=data_uri,
            space=space_file(fixed, workdir),
            num_samples=1,
            max_epochs=epochs,
            scheduler=SchedulerOptions(kind="fifo"),
        ),
        console=Console(stderr=True, quiet=True),
    )
    rows = sorted(read_experiment_results(storage / name), key=lambda r: r[M.EPOCH])
    steps = [r[M.SAMPLES_PER_SECOND] for r in rows[1:]]
    samples = rows[0][M.SAMPLES_PER_SECOND] * rows[0][M.TRAIN_SECONDS]
    # Epoch to epoch as Tune saw it: steps, validation, checkpoint, report, and whatever Tune does in between.
    gaps = [b[M.WALL_CLOCK] - a[M.WALL_CLOCK] for a, b in itertools.pairwise(rows)]
    return {
        "samples": samples,
        "step_samples_per_s": statistics.median(steps),
        "epoch_samples_per_s": samples / statistics.median(gaps),
    }


def bare_in_ray(data_uri: str, fixed: dict[str, Any], epochs: int) -> dict[str, float]:
    """The bare loop as a plain 1-CPU Ray task: separates what running in a Ray worker costs from what Tune and our
    trainable add."""
    import ray

    return dict(ray.get(ray.remote(num_cpus=1)(bare_loop).remote(data_uri, fixed, epochs)))


def in_trial(data_uri: str, workdir: Path, epochs: int, log: Any, rounds: int = 3) -> list[dict[str, Any]]:
    """Each variant ``rounds`` times, interleaved, medians kept: on a shared VM one measurement swings by 10%."""
    rows = []
    for size, fixed in MODEL_SIZES.items():
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "bare_in_ray_task": [], "tune": []}
        for _ in range(rounds):
            runs["bare"].append(bare_loop(data_uri, fixed, epochs))
            runs["bare_in_ray_task"].append(bare_in_ray(data_uri, fixed, epochs))
            runs["tune"].append(tune_trial(data_uri, fixed, epochs, workdir))
        bare, in_ray, tune = (
            {key: statistics.median(r[key] for r in runs[variant]) for key in runs[variant][0]} for variant in runs
        )
        row = {
            "model": size,
            **{f"config_{k}": v for k, v in fixed.items()},
            "threads": 1,
            "rounds": rounds,
            "bare": bare,
            "bare_in_ray_task": in_ray,
            "tune": tune,
            "step_ratio": tune["step_samples_per_s"] / bare["step_samples_per_s"],
            "epoch_ratio": tune["epoch_samples_per_s"] / bare["epoch_samples_per_s"],
            "ray_task_step_ratio": in_ray["step_samples_per_s"] / bare["step_samples_per_s"],
            "step_samples_per_s_runs": {v: [r["step_samples_per_s"] for r in runs[v]] for v in runs},
        }
        log(
            f"in-trial {size}: steps {row['step_ratio']:.3f}x, whole epochs {row['epoch_ratio']:.3f}x the bare loop "
            f"({tune['epoch_samples_per_s']:.0f} vs {bare['epoch_samples_per_s']:.0f} samples/s); the bare loop in a "
            f"Ray task {row['ray_task_step_ratio']:.3f}x (medians of {rounds})"
        )
        rows.append(row)
    return rows


def fixed_work(config: dict[str, Any]) -> None:
    """A trial of known cost: ``iterations`` reports, each after ``work_s`` seconds, each with a small checkpoint
    as our trials carry one."""
    from trainables.ray_api import Checkpoint, report

    for i in range(config["iterations"]):
        time.sleep(config["work_s"])
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state").write_bytes(b"x" * 1024)
            report({"iteration": i + 1, "loss": 1.0 / (i + 1)}, checkpoint=Checkpoint.from_directory(d))


def scheduling(ns: list[int], iterations: int, work_s: float, workdir: Path, log: Any) -> list[dict[str, Any]]:
    import os

    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # The result loggers lstm-tune's own runs use, and no others.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    cpus = int(ray.cluster_resources().get("CPU", 1))
    rows = []
    for n in ns:
        tuner = tune.Tuner(
            tune.with_resources(fixed_work, {"cpu": 1}),
            param_space={"iterations": iterations, "work_s": work_s, "i": tune.grid_search(list(range(n)))},
            tune_config=tune.TuneConfig(metric="loss", mode="min", reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"sched-{n}-{int(time.time())}",
                storage_path=str(workdir / "sched"),
                verbose=0,
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],
            ),
        )
        started = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - started
        errors = sum(1 for r in results if r.error is not None)
        ideal = n * iterations * work_s / cpus
        extra = wall - ideal
        row = {
            "trials": n,
            "iterations": iterations,
            "work_s": work_s,
            "cpus": cpus,
            "errors": errors,
            "wall_s": wall,
            "ideal_s": ideal,
            "overhead_pct": 100 * extra / wall,
            # Extra wall time x slots, shared out: what each trial / each report cost a CPU slot.
            "per_trial_s": extra * cpus / n,
            "per_result_s": extra * cpus / (n * iterations),
        }
        log(
            f"scheduling N={n}: {wall:.1f} s wall vs {ideal:.1f} s of work per slot; overhead {row['overhead_pct']:.1f}% "
            f"({row['per_trial_s']:.3f} s per trial, {row['per_result_s']:.3f} s per result)"
        )
        rows.append(row)
    return rows


def fixed_and_marginal(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares fit of extra wall time = fixed + marginal x trials/slot: Tune's one-off start (Ray actors, the
    first worker process) apart from what each further trial costs."""
    if len({r["trials"] for r in rows}) < 2:
        return None
    xs = [r["trials"] / r["cpus"] for r in rows]
    ys = [r["wall_s"] - r["ideal_s"] for r in rows]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return {"fixed_s": my - slope * mx, "marginal_per_trial_s": slope}


__all__ = ["MODEL_SIZES", "bare_in_ray", "bare_loop", "fixed_and_marginal", "in_trial", "scheduling", "tune_trial"]
