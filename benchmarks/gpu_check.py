"""GPU check (issue #6): two trials at 0.5 GPU each on one card, the memory cap enforced, samples/s of each.

Run on a machine with one CUDA GPU::

    python3 -m benchmarks.gpu_check --out gpu-check

It does three things and prints one table and a JSON file:

1. Memory cap: two Ray tasks with ``num_gpus=0.5`` run at once on the card. Each caps itself exactly as a trial does
   (``trainables.device.cap_memory``), holds 40% of the card, sees the other's 40% in the card's free memory, and
   then asks for 20% more: that must fail with lstm-tune's named error (share and batch size in the message), while
   the neighbour keeps its memory.
2. Shared card: ``lstm-tune run --gpus-per-trial 0.5 --max-concurrent-trials 2`` with two trials of one fixed
   configuration; each trial's device, cap, peak memory, samples/s and how long the two overlapped.
3. Whole card: the same configuration alone at ``--gpus-per-trial 1``, for the throughput a trial gives up by sharing.

``--gpus-per-trial 0`` runs parts 2 and 3 on the CPU (parts that need a GPU are skipped): how CI and a laptop check
that the script itself works.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import checked, lstm_tune, read_experiment_results
from trainables import metrics as M

SPACE = """\
task: forecast
extends: forecast-small
description: GPU check - one fixed, GPU-sized configuration.
params:
  hidden_size: {hidden}
  num_layers: 2
  dropout: 0.1
  lr: 2.0e-3
  weight_decay: 1.0e-6
  grad_clip: 1.0
  batch_size: {batch}
  window: 48
"""


@dataclass(frozen=True)
class CapCheck:
    """What one of the two half-GPU tasks saw."""

    visible_devices: str
    device: str
    cap_gib: float
    held_gib: float
    free_gib_while_held: float
    over_share_error: str
    still_held_gib: float


def _hold_and_overreach(hold_fraction: float, extra_fraction: float, settle_s: float) -> CapCheck:
    """Inside a ``num_gpus=0.5`` Ray task: cap as a trial does, hold memory, then ask for more than the share."""
    import os

    import torch

    from trainables.device import TrialResourceError, cap_memory, describe, named_oom, placement

    place = placement()
    device = place.device
    fraction = cap_memory(place, device)
    total = torch.cuda.get_device_properties(device).total_memory
    held = torch.empty(int(hold_fraction * total), dtype=torch.uint8, device=device)
    time.sleep(settle_s)  # both tasks hold their part before either reads the card's free memory
    free, _ = torch.cuda.mem_get_info(device)
    error = ""
    try:
        with named_oom(place, device, batch_size=0):
            more = torch.empty(int(extra_fraction * total), dtype=torch.uint8, device=device)
            del more
    except TrialResourceError as exc:
        error = str(exc)
    return CapCheck(
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        device=describe(device),
        cap_gib=(fraction or 0.0) * total / 2**30,
        held_gib=held.numel() / 2**30,
        free_gib_while_held=free / 2**30,
        over_share_error=error,
        still_held_gib=torch.cuda.memory_allocated(device) / 2**30,
    )


def cap_check() -> list[CapCheck]:
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        task = ray.remote(num_gpus=0.5)(_hold_and_overreach)
        return list(ray.get([task.remote(0.4, 0.2, 5.0) for _ in range(2)], timeout=300))
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class TrialFigures:
    trial_id: str
    device: str
    cap_gib: float | None
    peak_gib: float | None
    samples_per_s: float
    """Median over the trial's epochs after the first (the first includes CUDA warm-up)."""
    epochs: int
    start_unix: float
    end_unix: float


def trial_figures(rows: list[dict[str, Any]]) -> list[TrialFigures]:
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(row["trial_id"], []).append(row)
    found = []
    for trial_id, results in sorted(by_trial.items()):
        results.sort(key=lambda r: r[M.EPOCH])
        steady = results[1:] or results
        last = results[-1]
        first = results[0]
        found.append(
            TrialFigures(
                trial_id=trial_id,
                device=str(last.get(M.DEVICE, "?")),
                cap_gib=last.get(M.GPU_MEMORY_CAP),
                peak_gib=last.get(M.GPU_MEMORY_PEAK),
                samples_per_s=statistics.median(r[M.SAMPLES_PER_SECOND] for r in steady),
                epochs=len(results),
                start_unix=first[M.WALL_CLOCK] - first[M.TRAIN_SECONDS] - first[M.EVAL_SECONDS],
                end_unix=last[M.WALL_CLOCK],
            )
        )
    return found


def overlap_s(trials: list[TrialFigures]) -> float:
    """Seconds during which every trial was training at once."""
    if not trials:
        return 0.0
    return max(0.0, min(t.end_unix for t in trials) - max(t.start_unix for t in trials))


def tune_run(workdir: Path, name: str, *, gpus: float, trials: int, epochs: int, space: Path) -> dict[str, Any]:
    args = [
        "run",
        "--space",
        str(space),
        "--scheduler",
        "fifo",
        "--num-samples",
        str(trials),
        "--max-epochs",
        str(epochs),
        "--gpus-per-trial",
        f"{gpus:g}",
        "--max-concurrent-trials",
        str(trials),
        "--storage",
        str(workdir),
        "--name",
        name,
    ]
    started = time.perf_counter()
    checked(lstm_tune(args), f"lstm-tune {' '.join(args)}")
    wall = time.perf_counter() - started
    figures = trial_figures(read_experiment_results(workdir / name))
    return {
        "gpus_per_trial": gpus,
        "wall_s": wall,
        "overlap_s": overlap_s(figures),
        "total_samples_per_s": sum(t.samples_per_s for t in figures),
        "trials": [asdict(t) for t in figures],
    }


def render(found: dict[str, Any]) -> str:
    label = f" [{found['label']}]" if found.get("label") else ""
    lines = [f"torch {found['torch']}, device: {found['card']}{label}", ""]
    for check in found.get("cap_check", []):
        lines.append(
            f"cap check: {check['device']} CUDA_VISIBLE_DEVICES={check['visible_devices']} cap {check['cap_gib']:.1f} "
            f"GiB, held {check['held_gib']:.1f} GiB, card free while both held {check['free_gib_while_held']:.1f} GiB, "
            f"over-share request -> {check['over_share_error'] or 'NO ERROR'}; still held {check['still_held_gib']:.1f}"
        )
    lines += [
        "",
        "| run | trial | device | cap GiB | peak GiB | samples/s | epochs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("shared", "whole"):
        run = found.get(key)
        if run is None:
            continue
        for t in run["trials"]:
            cap = f"{t['cap_gib']:.1f}" if t["cap_gib"] is not None else "-"
            peak = f"{t['peak_gib']:.2f}" if t["peak_gib"] is not None else "-"
            lines.append(
                f"| {key} ({run['gpus_per_trial']:g} GPU/trial) | {t['trial_id']} | {t['device']} | {cap} | {peak} | "
                f"{t['samples_per_s']:,.0f} | {t['epochs']} |"
            )
        together = "trained" if len(run["trials"]) == 1 else "all trained at once for"
        lines.append(
            f"| {key}: together | | | | | {run['total_samples_per_s']:,.0f} | {together} {run['overlap_s']:.1f} s, "
            f"command wall {run['wall_s']:.1f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--gpus-per-trial", type=float, default=0.5, help="0 checks the script on the CPU")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--skip-cap-check", action="store_true", help="only the two tuning runs (part 1 skipped)")
    parser.add_argument("--label", default="", help="a name for this code version in the JSON and the table")
    parser.add_argument("--render", type=Path, help="print the table of an earlier run's gpu_check.json and exit")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return 0

    import torch

    gpu = args.gpus_per_trial > 0
    if gpu and not torch.cuda.is_available():
        print("no CUDA device here: run with --gpus-per-trial 0 to check the script on the CPU", file=sys.stderr)
        return 2
    found: dict[str, Any] = {
        "torch": torch.__version__,
        "card": torch.cuda.get_device_name(0) if gpu else "cpu",
        "hidden_size": args.hidden,
        "batch_size": args.batch,
        "epochs": args.epochs,
        "label": args.label,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lstm-tune-gpu-check-") as tmp:
        workdir = Path(tmp)
        space = workdir / "gpu-check.yaml"
        space.write_text(SPACE.format(hidden=args.hidden, batch=args.batch))
        if gpu and not args.skip_cap_check:
            found["cap_check"] = [asdict(c) for c in cap_check()]
        found["shared"] = tune_run(
            workdir, "shared", gpus=args.gpus_per_trial, trials=2, epochs=args.epochs, space=space
        )
        found["whole"] = tune_run(workdir, "whole", gpus=1.0 if gpu else 0.0, trials=1, epochs=args.epochs, space=space)
    (args.out / "gpu_check.json").write_text(json.dumps(found, indent=2))
    text = render(found)
    (args.out / "gpu_check.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
