"""The report's plots (matplotlib, Agg backend: no display needed). Each takes the experiment record and a path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from trainables.metrics import SCHEDULE_KEYS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cluster.report.record import ExperimentRecord

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def learning_curves_plot(record: ExperimentRecord, path: Path) -> Path:
    """Every trial's validation metric by epoch; trials that stopped early are faded, the best one is bold."""
    key, label, _ = record.display_metric
    best = record.best_trial()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for t in record.trials:
        epochs, values = t.series(key)
        if not epochs:
            continue
        finished = t.epochs >= record.max_epochs
        ax.plot(epochs, values, color="tab:blue" if finished else "tab:gray", alpha=0.85 if finished else 0.3, lw=1)
    if best is not None:
        epochs, values = best.series(key)
        ax.plot(epochs, values, color="tab:red", lw=2.5, label=f"best: {best.trial_id}")
        ax.legend(loc="best")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"{record.name}: learning curves ({len(record.trials)} trials; grey: stopped early or still running)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def best_so_far_plot(record: ExperimentRecord, path: Path) -> Path:
    """The best validation score any trial had reached, against minutes since the first trial started."""
    key, label, higher = record.display_metric
    points: list[tuple[float, float]] = []
    for t in record.trials:
        for r in t.results:
            value = r.get(key)
            if isinstance(value, (int, float)) and "timestamp" in r:
                points.append((float(r["timestamp"]), float(value)))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if points:
        starts = [
            float(t.results[0]["timestamp"]) - float(t.results[0].get("time_this_iter_s", 0.0))
            for t in record.trials
            if t.results and "timestamp" in t.results[0]
        ]
        origin = min(starts) if starts else min(p[0] for p in points)
        points.sort()
        xs, ys, best = [], [], None
        for when, value in points:
            best = value if best is None else (max(best, value) if higher else min(best, value))
            xs.append((when - origin) / 60)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:green", lw=2)
        ax.scatter([(w - origin) / 60 for w, _ in points], [v for _, v in points], s=6, color="tab:gray", alpha=0.4)
    ax.set_xlabel("minutes since the first trial started")
    ax.set_ylabel(label)
    ax.set_title(f"{record.name}: best so far (line) and every epoch's score (dots)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def asha_rungs_plot(record: ExperimentRecord, path: Path) -> Path:
    """For each rung, how many trials reached it, split into promoted and stopped."""
    rungs = sorted({int(r["rung"]) for r in record.rungs})
    promoted = [sum(1 for r in record.rungs if int(r["rung"]) == k and r["decision"] == "promoted") for k in rungs]
    stopped = [sum(1 for r in record.rungs if int(r["rung"]) == k and r["decision"] == "stopped") for k in rungs]
    finished = sum(1 for t in record.trials if t.epochs >= record.max_epochs)
    labels = [f"epoch {k}" for k in rungs] + [f"finished ({record.max_epochs})"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(range(len(labels)))
    ax.bar(xs[:-1], promoted, color="tab:blue", label="promoted")
    ax.bar(xs[:-1], stopped, bottom=promoted, color="tab:gray", label="stopped")
    ax.bar(xs[-1:], [finished], color="tab:green", label="ran every epoch")
    for x, (p, s) in enumerate(zip(promoted, stopped, strict=True)):
        ax.text(x, p + s, f"{p}/{p + s}", ha="center", va="bottom")
    ax.set_xticks(xs, labels)
    ax.set_ylabel("trials")
    ax.set_title(f"{record.name}: ASHA rung survival (promoted/reached)")
    ax.legend(loc="best")
    return _save(fig, path)


def pbt_lineage_plot(record: ExperimentRecord, path: Path) -> Path:
    """Left: each trial's life over epochs with an arrow for every exploit (donor -> cloner). Right: the winner's
    hyperparameter schedule, read from the config of each of its results."""
    fig, (tree, schedule) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    row = {t.trial_id: i for i, t in enumerate(record.trials)}
    best = record.best_trial()
    for t in record.trials:
        colour = "tab:red" if best is not None and t.trial_id == best.trial_id else "tab:blue"
        tree.plot([0, t.epochs], [row[t.trial_id]] * 2, color=colour, lw=2 if colour == "tab:red" else 1)
    for e in record.exploits:
        if e["trial"] in row and e["cloned_from"] in row:
            tree.annotate(
                "",
                xy=(e["step"], row[e["trial"]]),
                xytext=(e["step"], row[e["cloned_from"]]),
                arrowprops={"arrowstyle": "->", "color": "tab:orange", "alpha": 0.7},
            )
    tree.set_yticks(list(row.values()), list(row.keys()), fontsize=7)
    tree.set_xlabel("epoch")
    tree.set_title(f"{len(record.exploits)} exploits (arrow: donor -> trial that cloned it)")
    if best is not None:
        plotted = 0
        for name in SCHEDULE_KEYS:
            xs, ys = _config_series(best.results, name)
            if len(set(ys)) > 1 or (ys and name == "lr"):
                schedule.plot(xs, ys, marker="o", ms=3, label=name)
                plotted += 1
        if plotted:
            schedule.set_yscale("log")
            schedule.legend(loc="best", fontsize=8)
        schedule.set_title(f"winner {best.trial_id}: hyperparameter schedule")
    schedule.set_xlabel("epoch")
    schedule.grid(alpha=0.3)
    return _save(fig, path)


def _config_series(results: list[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
    pairs = [
        (int(r["training_iteration"]), float(r["config"][name]))
        for r in results
        if isinstance((r.get("config") or {}).get(name), (int, float)) and float(r["config"][name]) > 0
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def series_plot(record: ExperimentRecord, path: Path) -> Path:
    """Panels: the best and the worst series by test MASE, the step-1 forecast drawn over the actuals."""
    curves = (record.series or {}).get("curves", {})
    fig, axes = plt.subplots(len(curves), 1, figsize=(8, 2.8 * max(len(curves), 1)), squeeze=False)
    for ax, (which, c) in zip(axes[:, 0], sorted(curves.items()), strict=False):
        actual = [float("nan") if v is None else v for v in c["actual"]]
        ax.plot(actual, color="black", lw=1, label="actual")
        ax.plot(c["forecast"], color="tab:red", lw=1, alpha=0.85, label="forecast, 1 step ahead")
        mase = c.get("mase")
        ax.set_title(f"{which} series: {c['series']}" + (f" (test MASE {mase:.3f})" if mase is not None else ""))
        ax.set_xlabel("test step")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return _save(fig, path)


__all__ = [
    "asha_rungs_plot",
    "best_so_far_plot",
    "learning_curves_plot",
    "pbt_lineage_plot",
    "series_plot",
]
