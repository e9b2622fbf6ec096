"""Training throughput per device: one trial, trials sharing the device, and packs of K members (issue 22).

The figure that matters on a GPU cluster is training samples per second per GPU, summed over everything on the
card. This script measures it on the bundled Beijing data for one forecast-small configuration (hidden 32, 1 layer,
window 24, batch 256), each way in turn, in one run:

- ``trial``: one model trained as an unpacked trial trains (``LSTMForecaster``, ``nn.LSTM``: cuDNN on a GPU);
- ``shared xN``: N such trials at once in N processes on the same device (what ``--gpus-per-trial 1/N`` does);
- ``pack K``: one pack of K members (:class:`trainables.pack.Pack`), every member on the same batches.

Each way trains ``--rounds`` epochs of ``--epoch-samples`` windows; the first is warm-up (CUDA context, kernels,
caches) and left out. Memory: peak CUDA memory per way (GPU only). Run on a CUDA machine::

    python3 -m benchmarks.pack_throughput --device cuda --packs 8,32,128 --shared 2,4 --json pack-throughput.json

``--device cpu`` runs every way on the CPU with small figures (how CI checks the script; on CPU packing is slower,
as the refusal of ``--pack`` says).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FLAT = {"hidden_size": 32, "num_layers": 1, "window": 24, "batch_size": 256, "lr": 3e-3, "grad_clip": 1.0}


@dataclass(frozen=True)
class Way:
    way: str
    models: int
    samples_per_s: float
    """Training samples per second summed over every model on the device (median of the timed rounds)."""
    per_model: float
    peak_gib: float | None
    rounds: list[float]
    """Seconds of each timed round."""


def _data(root: str) -> Any:
    from cluster.prep.data import prepare_default
    from trainables.data.loader import DataHandle, load_forecast_data
    from trainables.storage import resolve

    if not Path(root, "manifest.json").exists():
        prepare_default(resolve(root))
    return load_forecast_data(DataHandle(uri=root))


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def trial_rounds(root: str, device_name: str, rounds: int, samples: int, threads: int = 1) -> list[float]:
    """Seconds per epoch of one unpacked trial (the loop's own ``train_epoch``)."""
    import torch

    from trainables.config import TrialConfig
    from trainables.optim import AdamW
    from trainables.tasks import ForecastTask

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    data = _data(root)
    cfg = TrialConfig.from_flat(FLAT)
    task = ForecastTask(data, cfg)
    torch.manual_seed(0)
    model = task.build(cfg).to(device)
    optimizer = AdamW(model.parameters(), lr=cfg.optim.lr)
    times = []
    for epoch in range(rounds):
        _sync(device)
        started = time.perf_counter()
        task.train_epoch(model, optimizer, cfg, seed=epoch, device=device, samples=samples)
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def _trial_worker(args: tuple[str, str, int, int, Any, Any]) -> list[float]:
    root, device_name, rounds, samples, ready, go = args
    _data(root)  # loaded before the start line, as a running trial has its data
    ready.wait()
    go.wait()
    return trial_rounds(root, device_name, rounds, samples)


def shared(root: str, device_name: str, n: int, rounds: int, samples: int) -> list[float]:
    """N trials at once in N processes on one device; the slowest process's time per epoch."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    with ctx.Manager() as manager:
        ready, go = manager.Barrier(n + 1), manager.Barrier(n + 1)
        with ctx.Pool(n) as pool:
            pending = pool.map_async(_trial_worker, [(root, device_name, rounds, samples, ready, go)] * n)
            ready.wait()
            go.wait()
            per_process = pending.get()
    return [max(times) for times in zip(*per_process, strict=True)]


def pack_rounds(root: str, device_name: str, k: int, rounds: int, samples: int) -> tuple[list[float], float | None]:
    """Seconds per round of a pack of ``k`` members, each with its own learning rate."""
    import torch

    from trainables.config import TrialConfig
    from trainables.pack import MemberConfig, Pack, PackShape
    from trainables.tasks import ForecastTask

    torch.set_num_threads(1)
    device = torch.device(device_name)
    data = _data(root)
    cfg = TrialConfig.from_flat(FLAT)
    task = ForecastTask(data, cfg)
    fitted = data.fitted
    shape = PackShape.of(cfg, n_features=data.n_features, target_index=fitted.target_index, horizon=data.horizon)
    pack = Pack(shape, k, device)
    for member in range(k):
        torch.manual_seed(member)
        pack.join(
            f"m{member}",
            MemberConfig(lr=1e-3 * (1 + member % 8), grad_clip=1.0),
            {"model": task.build(cfg).state_dict()},
        )
    train, positions = task._train_on(device)
    times = []
    for r in range(rounds):
        order = positions[
            torch.randperm(len(positions), generator=torch.Generator().manual_seed(r))[:samples].to(device)
        ]
        batches = (
            gather_batch(train, order[i : i + cfg.optim.batch_size], cfg.window.window, data.horizon)
            for i in range(0, len(order), cfg.optim.batch_size)
        )
        _sync(device)
        started = time.perf_counter()
        pack.train_round(batches)
        _sync(device)
        times.append(time.perf_counter() - started)
    return times, _peak(device)


def gather_batch(train: Any, batch: Any, window: int, horizon: int) -> Any:
    from trainables.data.windows import gather

    return gather(train, batch, window=window, horizon=horizon)


def _way(way: str, models: int, times: list[float], samples: int, peak: float | None) -> Way:
    timed = times[1:] or times
    per_round = statistics.median(timed)
    total = models * samples / per_round
    return Way(way, models, total, total / models, peak, [round(t, 4) for t in timed])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--packs", default="8,32,128", help="pack sizes, comma-separated")
    parser.add_argument("--shared", default="2,4", help="processes sharing the device, comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="epochs per way; the first is warm-up")
    parser.add_argument("--epoch-samples", type=int, default=16384)
    parser.add_argument("--data", default=None, help="where the bundled data is prepared (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    root = args.data or str(Path(tempfile.mkdtemp(prefix="lstm-tune-pack-")) / "beijing")
    _data(root)
    device = torch.device(args.device)
    ways: list[Way] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = trial_rounds(root, args.device, args.rounds, args.epoch_samples)
    ways.append(_way("trial", 1, times, args.epoch_samples, _peak(device)))
    for n in [int(v) for v in args.shared.split(",") if v]:
        ways.append(
            _way(
                f"shared x{n}",
                n,
                shared(root, args.device, n, args.rounds, args.epoch_samples),
                args.epoch_samples,
                None,
            )
        )
    for k in [int(v) for v in args.packs.split(",") if v]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, peak = pack_rounds(root, args.device, k, args.rounds, args.epoch_samples)
        ways.append(_way(f"pack {k}", k, times, args.epoch_samples, peak))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    base = ways[0].samples_per_s
    print(f"device: {name}; config {FLAT}; {args.epoch_samples} samples per round, median of {args.rounds - 1}")
    print(f"{'way':<12} {'models':>6} {'samples/s':>12} {'per model':>11} {'vs trial':>9} {'peak GiB':>9}")
    for w in ways:
        peak = f"{w.peak_gib:.2f}" if w.peak_gib is not None else "-"
        print(
            f"{w.way:<12} {w.models:>6} {w.samples_per_s:>12,.0f} {w.per_model:>11,.0f} "
            f"{w.samples_per_s / base:>8.2f}x {peak:>9}"
        )
    if args.json:
        record = {
            "device": name,
            "config": FLAT,
            "epoch_samples": args.epoch_samples,
            "ways": [asdict(w) for w in ways],
        }
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
