"""The benchmark suite: one command, JSON results, PNG plots and a Markdown summary.

    ../shared/bin/loopback-only python3 -m benchmarks.suite --quick      # under 10 minutes on 2 CPUs
    ../shared/bin/loopback-only python3 -m benchmarks.suite --out docs/benchmarks   # the full run (about 1 h)

``lstm-tune bench ARGS`` is the same from an editable install.

Parts (``--only``, comma-separated): startup (launch to the first result: ``lstm-tune run`` against a plain script,
median of 5 launches each), tuning (ASHA, ASHA+TPE, PBT, FIFO random and Optuna TPE+Hyperband on Beijing
PM2.5 and Reuters R8), cpu (where the CPU goes; start-up before/after worker reuse), scaling (household power at
fractions of its rows), data-plane (reader vs raw GET; S3 bytes per experiment), in-trial (a Tune trial against a bare
loop), scheduling (Tune's overhead against the number of trials). Nothing here is a test: the figures depend on the
machine, which the summary names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import plots
from benchmarks.common import fmt

PARTS = ("startup", "tuning", "cpu", "scaling", "data-plane", "in-trial", "scheduling")


@dataclass(frozen=True)
class Mode:
    """How big each part runs."""

    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    budget_scale: float
    """Multiplies each dataset's tuning budget (1.0: Beijing 90 s, R8 120 s)."""
    cpu_budget_s: float
    fractions: tuple[float, ...]
    in_trial_epochs: int
    in_trial_rounds: int
    sched_ns: tuple[int, ...]
    sched_iterations: int
    data_plane_quick: bool
    startup_launches: int
    methods: tuple[str, ...] = ("asha", "asha-tpe", "pbt", "random", "optuna")


FULL = Mode(
    datasets=("beijing", "r8"),
    seeds=(0, 1, 2),
    budget_scale=1.0,
    cpu_budget_s=90,
    fractions=(0.1, 0.5, 1.0),
    in_trial_epochs=4,
    in_trial_rounds=3,
    sched_ns=(8, 32, 128),
    sched_iterations=3,
    data_plane_quick=False,
    startup_launches=5,
)
QUICK = Mode(
    datasets=("beijing",),
    seeds=(0,),
    budget_scale=1 / 3,
    cpu_budget_s=30,
    fractions=(0.02, 0.05, 0.1),
    in_trial_epochs=3,
    in_trial_rounds=1,
    sched_ns=(8, 32),
    sched_iterations=2,
    data_plane_quick=True,
    startup_launches=3,
)
SMOKE = Mode(
    datasets=("beijing",),
    seeds=(0,),
    budget_scale=0.12,
    cpu_budget_s=10,
    fractions=(0.002,),
    in_trial_epochs=3,
    in_trial_rounds=1,
    sched_ns=(2,),
    sched_iterations=1,
    data_plane_quick=True,
    startup_launches=1,
)
"""What CI runs: every code path of every part, seconds each; no figure from it means anything."""


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_per_trial": 1,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_startup(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.startup import measure

    results["startup"] = measure(mode.startup_launches, workdir / "startup", log)


def run_tuning(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.tuning import SETS, run_set

    earlier = results.get("tuning", {})
    results["tuning"] = {}
    for name in mode.datasets:
        spec = SETS[name]
        budget = round(spec.budget_s * mode.budget_scale)
        result = run_set(
            replace(spec, budget_s=budget),
            list(mode.seeds),
            workdir,
            budget,
            log,
            methods=mode.methods,
            previous=earlier.get(name),
        )
        results["tuning"][name] = result


def run_cpu(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.cpu_share import measure
    from benchmarks.tuning import BEIJING, prepare

    data = prepare(BEIJING, workdir)
    results["cpu"] = measure(data, workdir, mode.cpu_budget_s, cpus=2, log=log)


def run_scaling(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.scaling import measure

    results["scaling"] = measure(list(mode.fractions), workdir, log)


def run_data_plane(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.data_plane import measure

    results["data_plane"] = measure(quick=mode.data_plane_quick, repeats=1 if mode.data_plane_quick else 3)
    read = results["data_plane"]["read"]
    log(
        f"data plane: reader {read['reader_cold']['mb_per_s']:.0f} MB/s vs raw GET {read['raw_get']['mb_per_s']:.0f} "
        f"MB/s ({read['ratio_reader_cold_vs_raw']:.2f}x), cached {read['reader_cached']['mb_per_s']:.0f} MB/s"
    )


@contextlib.contextmanager
def local_ray() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def run_in_trial(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.overhead import in_trial
    from benchmarks.tuning import BEIJING, prepare

    data = str(prepare(BEIJING, workdir))
    with local_ray():
        results["in_trial"] = in_trial(data, workdir, mode.in_trial_epochs, log, rounds=mode.in_trial_rounds)


def run_scheduling(mode: Mode, workdir: Path, out: Path, results: dict[str, Any]) -> None:
    from benchmarks.overhead import fixed_and_marginal, scheduling

    with local_ray():
        results["scheduling"] = scheduling(list(mode.sched_ns), mode.sched_iterations, 1.0, workdir, log)
    results["scheduling_fit"] = fixed_and_marginal(results["scheduling"])


RUNNERS = {
    "startup": run_startup,
    "tuning": run_tuning,
    "cpu": run_cpu,
    "scaling": run_scaling,
    "data-plane": run_data_plane,
    "in-trial": run_in_trial,
    "scheduling": run_scheduling,
}


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Every plot the results have data for (all of them again after a --merge)."""
    paths = [plots.tuning(t, out) for t in results.get("tuning", {}).values()]
    if "cpu" in results:
        paths.append(plots.cpu_share(results["cpu"], out))
    if "scaling" in results:
        paths.append(plots.scaling(results["scaling"], out))
    if "in_trial" in results and "scheduling" in results:
        paths.append(plots.overheads(results["in_trial"], results["scheduling"], out))
    return paths


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, then a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def per_seed(values: list[float | None], scale: float = 1.0) -> list[float | None]:
    return [None if v is None else round(scale * v, 2) for v in values]


def tuning_markdown(name: str, t: dict[str, Any]) -> list[str]:
    lines = [
        f"**Tuning, {name}** ({t['metric']}, {t['mode']}; {t['budget_s']:g} s per run from launch; seeds "
        f"{t['seeds']}; target {t['target']:.4g} = within 2% of the best any method found, {t['best_found']:.4g})",
        "",
    ]
    rows = []
    for method, row in t["methods"].items():
        f, ttt = row["final"], row["time_to_target_s"]
        rows.append(
            [
                method,
                f"{fmt(f['median'], 4)} ({fmt(f['min'], 4)}-{fmt(f['max'], 4)})",
                f"{fmt(ttt['median'], 1)} ({fmt(ttt['min'], 1)}-{fmt(ttt['max'], 1)})",
                f"{row['reached']}/{len(t['seeds'])}",
                fmt(row["trials"]["median"], 0),
            ]
        )
    header = ["method", "best at budget: median (min-max)", "time to target, s: median (min-max)", "reached", "trials"]
    lines += table(header, rows)
    for key, h in t["headlines"].items():
        ours = key.partition("_")[0]
        if key.endswith("_ttt_over_random"):
            lines.append(
                f"- {ours} time-to-target / random's: median {fmt(h['median'])} (min {fmt(h['min'])}, max "
                f"{fmt(h['max'])}; per seed {per_seed(h['per_seed'])})"
            )
        else:
            lines.append(
                f"- {ours} vs Optuna at equal wall clock (relative gain in {t['metric']}, positive = ours better): "
                f"median {fmt(None if h['median'] is None else 100 * h['median'])}% "
                f"(per seed {per_seed(h['per_seed'], 100)})"
            )
    return [*lines, ""]


def in_trial_markdown(rows: list[dict[str, Any]]) -> list[str]:
    header = ["model", "bare loop, samples/s (steps / epochs)", "Tune trial (steps / epochs)", "ratio steps"]
    header += ["ratio epochs", "bare loop in a Ray task, ratio steps"]
    body = []
    for r in rows:
        b, t = r["bare"], r["tune"]
        body.append(
            [
                f"{r['model']} (h{r['config_hidden_size']}, {r['config_num_layers']} layer(s), batch "
                f"{r['config_batch_size']})",
                f"{b['step_samples_per_s']:.0f} / {b['epoch_samples_per_s']:.0f}",
                f"{t['step_samples_per_s']:.0f} / {t['epoch_samples_per_s']:.0f}",
                f"{r['step_ratio']:.3f}",
                f"{r['epoch_ratio']:.3f}",
                f"{r['ray_task_step_ratio']:.3f}",
            ]
        )
    return table(header, body)


def scheduling_markdown(rows: list[dict[str, Any]], fit: dict[str, float] | None) -> list[str]:
    body = [
        [
            f"{r['trials']} x {r['iterations']} x {r['work_s']:g} s",
            f"{r['wall_s']:.1f}",
            f"{r['ideal_s']:.1f}",
            f"{r['overhead_pct']:.1f}%",
            f"{r['per_trial_s']:.3f} s",
            f"{r['per_result_s']:.3f} s",
        ]
        for r in rows
    ]
    lines = table(["trials", "wall s", "ideal s", "overhead", "per trial", "per result"], body)
    if fit:
        lines += [
            f"Least-squares fit of the extra wall time: {fit['fixed_s']:.2f} s once per run (Tune's start, the first "
            f"worker processes) + {fit['marginal_per_trial_s']:.3f} s per trial per CPU slot.",
            "",
        ]
    return lines


def cpu_markdown(cpu: dict[str, Any]) -> list[str]:
    header = ["ASHA run, Beijing", "trials", "CPU in training steps (window / command)", "validation", "start-up"]
    header += ["start-up per trial", "fresh-process start-up (process + data + build)", "driver CPU"]
    body = []
    for key in ("before", "after"):
        c = cpu[key]
        f = c["startup_fresh"]
        body.append(
            [
                f"{key} (reuse workers: {c['reuse_workers']})",
                str(c["trials"]),
                f"{c['train_share_of_window']:.1%} / {c['train_share_of_command']:.1%}",
                f"{c['eval_share_of_window']:.1%}",
                f"{c['startup_share_of_window']:.1%}",
                f"{c['startup_per_trial_s']:.2f} s",
                f"{fmt(f['total_s'])} s ({fmt(f['process_s'])} + {fmt(f['data_s'])} + {fmt(f['build_s'])})",
                f"{c['command_cpu_used_share']:.1%}" if "command_cpu_used_share" in c else "-",
            ]
        )
    return table(header, body)


def scaling_markdown(rows: list[dict[str, Any]]) -> list[str]:
    body = [
        [
            f"{r['rows']:,} ({r['fraction']:.0%})",
            f"{r['prepare_s']:.1f}",
            f"{r['epoch_s']:.1f}",
            f"{r['samples_per_s']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        for r in rows
    ]
    return table(["household power rows", "prepare s", "one epoch s", "windows/s", "peak RSS MB"], body)


def data_plane_markdown(d: dict[str, Any]) -> list[str]:
    read = d["read"]
    per_experiment = ", ".join(
        f"{r['trials']} trial(s) {r['s3_bytes_fetched'] / 1e6:.2f} MB" for r in d["bytes_per_experiment"]
    )
    return [
        f"Data plane ({d['source']}, {read['dataset_mb']:.1f} MB in {read['shards']} shards): raw GET "
        f"{read['raw_get']['mb_per_s']:.0f} MB/s, reader (GET + sha256 + cache + decode) "
        f"{read['reader_cold']['mb_per_s']:.0f} MB/s ({read['ratio_reader_cold_vs_raw']:.2f}x), from the node cache "
        f"{read['reader_cached']['mb_per_s']:.0f} MB/s; S3 bytes per experiment: {per_experiment} (dataset "
        f"{d['bytes_per_experiment'][0]['dataset_bytes'] / 1e6:.2f} MB).",
        "",
    ]


def summary_markdown(results: dict[str, Any]) -> str:
    """The README's tables, from one run's results."""
    m = results["machine"]
    lines = [
        f"Mode `{results['mode']}`, {m['date']}, {m['cpus']} CPUs ({m['platform']}), Python {m['python']}, "
        f"torch {m['torch']}; suite wall time {results['wall_s'] / 60:.1f} min.",
        "",
    ]
    if "startup" in results:
        from benchmarks.startup import markdown

        lines += markdown(results["startup"])
    for name, t in results.get("tuning", {}).items():
        lines += tuning_markdown(name, t)
    if "in_trial" in results:
        lines += in_trial_markdown(results["in_trial"])
    if "scheduling" in results:
        lines += scheduling_markdown(results["scheduling"], results.get("scheduling_fit"))
    if "cpu" in results:
        lines += cpu_markdown(results["cpu"])
    if "scaling" in results:
        lines += scaling_markdown(results["scaling"])
    if "data_plane" in results:
        lines += data_plane_markdown(results["data_plane"])
    return "\n".join(lines)


ROOT = Path(__file__).resolve().parent.parent


def _names(
    parser: argparse.ArgumentParser, option: str, kind: str, given: str, allowed: tuple[str, ...]
) -> tuple[str, ...]:
    """A comma-separated choice of ``allowed``; anything else stops the command with a line naming it."""
    names = tuple(n.strip() for n in given.split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        parser.error(f"{option}: unknown {kind}(s) {bad}; allowed: {', '.join(allowed)}")
    return names


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="one seed, Beijing only, short budgets: under 10 minutes")
    group.add_argument("--smoke", action="store_true", help="seconds per part: checks the code, not the machine")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of: {', '.join(PARTS)}")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2; quick: 0)")
    parser.add_argument("--methods", default=None, help="tuning methods to run (default: all of them)")
    parser.add_argument("--datasets", default=None, help="tuning datasets: beijing, r8 (default: the mode's)")
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="an earlier results.json (same mode): keep its figures, replace or add what this run measures",
    )
    parser.add_argument("--out", type=Path, default=None, help="results.json, summary.md and PNGs (default: temp)")
    parser.add_argument(
        "--render", type=Path, default=None, help="only redraw summary.md and the plots of this results.json into --out"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="data and experiments (default: a temp folder)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; allowed: {', '.join(PARTS)}")
    if args.render:
        try:
            rendered = json.loads(args.render.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--render {args.render}: {exc}")
        target = args.out or args.render.parent
        target.mkdir(parents=True, exist_ok=True)
        (target / "summary.md").write_text(summary_markdown(rendered) + "\n")
        draw(rendered, target)
        log(f"summary and plots of {args.render} in {target}")
        return
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = {"smoke": SMOKE, "quick": QUICK, "full": FULL}[mode_name]
    if args.seeds:
        try:
            mode = replace(mode, seeds=tuple(int(s) for s in args.seeds.split(",")))
        except ValueError:
            parser.error(f"--seeds = {args.seeds!r}: comma-separated integers, e.g. 0,1,2")
    if args.datasets or args.methods:
        from benchmarks.tuning import METHODS, SETS

        if args.datasets:
            mode = replace(mode, datasets=_names(parser, "--datasets", "dataset", args.datasets, tuple(SETS)))
        if args.methods:
            mode = replace(mode, methods=_names(parser, "--methods", "method", args.methods, tuple(METHODS)))
    earlier: dict[str, Any] = {}
    if args.merge:
        try:
            earlier = json.loads(args.merge.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--merge {args.merge}: {exc}")
        if earlier.get("mode") != mode_name:
            parser.error(f"--merge {args.merge}: a {earlier.get('mode')!r} run; this one is {mode_name!r}")
    out = args.out or Path(tempfile.mkdtemp(prefix="lstm-tune-bench-"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lstm-tune-bench-work-"))
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # The parts start processes (the CLI, Optuna workers, Ray workers) that import benchmarks/ from the checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    results: dict[str, Any] = {**earlier, "mode": mode_name, "machine": earlier.get("machine", machine())}
    if earlier:
        results["merged"] = [
            *earlier.get("merged", []),
            {"machine": machine(), "parts": parts, "methods": mode.methods},
        ]
    results["parts"] = [p for p in PARTS if p in parts or p in earlier.get("parts", [])]
    started = time.perf_counter()
    for part in PARTS:  # fixed order: subprocess parts first, the in-process Ray last
        if part in parts:
            t = time.perf_counter()
            log(f"{part}: start")
            RUNNERS[part](mode, workdir, out, results)
            results.setdefault("part_wall_s", {})[part] = time.perf_counter() - t
            log(f"{part}: done in {time.perf_counter() - t:.0f} s")
    results["wall_s"] = time.perf_counter() - started + earlier.get("wall_s", 0.0)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    draw(results, out)
    summary = summary_markdown(results)
    (out / "summary.md").write_text(summary + "\n")
    print()
    print(summary)
    log(f"results, summary and plots in {out}")


if __name__ == "__main__":
    main()
