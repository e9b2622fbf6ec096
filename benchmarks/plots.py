"""PNG figures of a suite run (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {
    "asha": "tab:blue",
    "asha-tpe": "tab:purple",
    "pbt": "tab:green",
    "random": "tab:grey",
    "optuna": "tab:orange",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, grid: tuple[Any, ...] = ()) -> Path:
    for ax in grid:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def tuning(result: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, data in result["methods"].items():
        for i, (_seed, curve) in enumerate(sorted(data["curves"].items())):
            if curve["t"]:
                # Steps that run on to the budget, so a run that stopped improving still shows its level.
                ts, vs = [*curve["t"], result["budget_s"]], [*curve["best"], curve["best"][-1]]
                ax.step(ts, vs, where="post", color=COLOURS.get(method), alpha=0.8, label=method if i == 0 else None)
    ax.axhline(result["target"], color="black", linestyle=":", linewidth=1, label="target (2% of best)")
    ax.set_xlabel("seconds since launch")
    ax.set_ylabel(f"best {result['metric']} so far")
    ax.set_title(f"{result['dataset']}: {len(result['seeds'])} seeds, {result['budget_s']:g} s on 2 CPUs")
    values = [v for m in result["methods"].values() for c in m["curves"].values() for v in c["best"]]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.05 or 0.01
        ax.set_ylim(lo - pad, min(hi, lo + 4 * (abs(result["target"] - lo) + pad)) + pad)
    ax.legend(fontsize=8)
    return _save(fig, out / f"tuning-{result['dataset']}.png", (ax,))


def overheads(in_trial: list[dict[str, Any]], scheduling: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [r["model"] for r in in_trial]
    xs = range(len(names))
    left.bar([x - 0.2 for x in xs], [r["step_ratio"] for r in in_trial], width=0.4, label="training steps")
    left.bar([x + 0.2 for x in xs], [r["epoch_ratio"] for r in in_trial], width=0.4, label="whole epochs")
    left.axhline(0.95, color="black", linestyle=":", linewidth=1, label="target 0.95")
    left.set_xticks(list(xs), names)
    left.set_ylabel("Tune trial / bare loop throughput")
    left.set_ylim(0, 1.1)
    left.legend(fontsize=8)
    right.plot([r["trials"] for r in scheduling], [r["overhead_pct"] for r in scheduling], marker="o")
    right.axhline(2.0, color="black", linestyle=":", linewidth=1, label="target 2%")
    right.set_xscale("log", base=2)
    right.set_xlabel("trials (fixed 1 s iterations)")
    right.set_ylabel("scheduling overhead, % of wall time")
    right.legend(fontsize=8)
    return _save(fig, out / "overhead.png", (left, right))


def cpu_share(result: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    parts = [
        ("train", "training steps"),
        ("eval", "validation"),
        ("startup", "trial start-up"),
        ("other", "other/idle"),
    ]
    labels = [k for k in ("before", "after") if k in result]
    bottoms = [0.0] * len(labels)
    for key, label in parts:
        values = [100 * result[k][f"{key}_share_of_window"] for k in labels]
        ax.bar(labels, values, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.axhline(90, color="black", linestyle=":", linewidth=1, label="target: 90% training")
    ax.set_ylabel("% of CPU-seconds (tuning window)")
    ax.set_xticks(range(len(labels)), [f"{k}\n(reuse workers: {result[k]['reuse_workers']})" for k in labels])
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out / "cpu-share.png")


def scaling(rows: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    n = [r["rows"] / 1e6 for r in rows]
    left.plot(n, [r["prepare_s"] for r in rows], marker="o", label="prepare")
    left.plot(n, [r["epoch_s"] for r in rows], marker="o", label="one epoch (2 threads)")
    left.set_xlabel("rows (millions)")
    left.set_ylabel("seconds")
    left.legend(fontsize=8)
    right.plot(n, [r["peak_rss_mb"] for r in rows], marker="o", color="tab:red")
    right.set_xlabel("rows (millions)")
    right.set_ylabel("peak resident memory, MB")
    return _save(fig, out / "scaling.png", (left, right))


__all__ = ["cpu_share", "overheads", "scaling", "tuning"]
