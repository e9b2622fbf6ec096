"""Data-parallel trials: one Tune trial drives a Ray Train ``TorchTrainer`` of N workers (DDP: gloo on CPU, nccl on
GPU), each reading its own training shards.

Tune keeps owning the trial: the workers never report to Ray Train. Rank 0 hands each epoch's metrics and checkpoint
bytes to the trial through a queue, and the trial reports them to Tune as any single-process trial does, so ASHA,
PBT, retention and resume treat both kinds of trial alike.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from trainables.ddp import DataParallel

QUEUE_POLL_S = 1.0


def checkpoint_bytes(directory: str) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)}


@contextmanager
def materialise(files: dict[str, bytes]) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="lstm-tune-dp-ckpt-") as directory:
        for name, blob in files.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(blob)
        yield directory


def payload_bytes(payload: dict[str, Any] | None) -> bytes | None:
    if payload is None:
        return None
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def payload_from_bytes(blob: bytes | None) -> dict[str, Any] | None:
    if blob is None:
        return None
    payload: dict[str, Any] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return payload


class RelaySession:
    """:class:`trainables.loop.TrialSession` of a data-parallel worker: restores what the trial handed over, and
    (rank 0) relays each report to the trial."""

    def __init__(self, payload: dict[str, Any] | None, queue: Any, parallel: DataParallel) -> None:
        self.payload = payload
        self.queue = queue
        self.parallel = parallel

    def restore(self) -> dict[str, Any] | None:
        return self.payload

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        if self.parallel.reports:
            self.queue.put((metrics, checkpoint_bytes(checkpoint_dir)))


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What every worker of a data-parallel trial gets (shipped in ``train_loop_config``)."""

    flat_config: dict[str, Any]
    task: str
    env: Any
    """The trial's :class:`trainables.trainable.TrialEnv`."""
    payload: bytes | None
    queue: Any
    trial_name: str
    cpus_per_worker: int
    tags: list[str]


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray

    from trainables import metrics as M
    from trainables.config import TrialConfig
    from trainables.data.loader import load_forecast_data
    from trainables.data.shards import shards_for_rank
    from trainables.data.text_loader import load_text_data
    from trainables.device import Placement, trial_device
    from trainables.loop import run_trial
    from trainables.ray_api import train_worker_context
    from trainables.storage import resolve
    from trainables.tensorboard import TrialLogger

    spec: WorkerSpec = loop_config["spec"]
    context = train_worker_context()
    parallel = DataParallel(rank=context.get_world_rank(), world_size=context.get_world_size())
    cfg = TrialConfig.from_flat(spec.flat_config)
    torch.set_num_threads(cfg.limits.threads or spec.cpus_per_worker)
    part = (parallel.rank, parallel.world_size)
    data: Any = (
        load_text_data(spec.env.data, part=part)
        if spec.task == "classify"
        else load_forecast_data(spec.env.data, part=part)
    )
    mine = shards_for_rank(data.manifest.splits["train"].shards, parallel.rank, parallel.world_size)
    shards = parallel.gather([s.path for s in mine])
    logger = None
    if parallel.reports and spec.env.tensorboard_uri:
        tb = resolve(spec.env.tensorboard_uri, endpoint=spec.env.data.endpoint)
        logger = TrialLogger(tb, spec.trial_name, spec.flat_config, spec.tags)
    gpus = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    group = ray.util.get_current_placement_group()
    try:
        with trial_device(Placement(cpus=spec.cpus_per_worker, gpus=gpus), cfg.optim.batch_size) as (device, placed):
            run_trial(
                cfg,
                data,
                RelaySession(payload_from_bytes(spec.payload), spec.queue, parallel),
                device=device,
                logger=logger,
                extra_metrics={
                    M.NODE_ID: ray.get_runtime_context().get_node_id(),
                    M.WORKERS: parallel.world_size,
                    M.TRAIN_SHARDS: shards,
                    M.WORKER_GROUP: group.id.hex() if group is not None else "",
                    **placed,
                },
                embeddings_uri=spec.env.embeddings_uri,
                parallel=parallel,
            )
    finally:
        if logger is not None:
            logger.close()


def run_data_parallel(
    spec: WorkerSpec, *, workers: int, gpus_per_worker: float, report: Any, checkpoint_type: Any
) -> None:
    """Drive a ``TorchTrainer`` from inside a Tune trial and relay rank 0's epochs to Tune until training ends."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources: dict[str, float] = {"CPU": float(spec.cpus_per_worker)}
    if gpus_per_worker > 0:
        resources["GPU"] = gpus_per_worker
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources),
        run_config=RunConfig(
            # Ray Train's own run state stays node-local: checkpoints and results go through Tune.
            name=f"{spec.trial_name}-{uuid.uuid4().hex[:8]}",
            storage_path=os.path.join(tempfile.gettempdir(), "lstm-tune-train"),
            # A failed worker fails the trial; Tune retries it from its last checkpoint, as for any trial.
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # re-raised in the trial's thread below
            failure.append(exc)

    thread = threading.Thread(target=fit, name="lstm-tune-torchtrainer", daemon=True)
    thread.start()
    while True:
        item = _next(spec.queue, thread)
        if item is None:
            break
        metrics, files = item
        with materialise(files) as directory:
            report(metrics, checkpoint=checkpoint_type.from_directory(directory))
    thread.join()
    if failure:
        raise RuntimeError(f"data-parallel training failed: {failure[0]}") from failure[0]


def _next(queue: Any, thread: threading.Thread) -> Any:
    """The next relayed epoch, or None once training has ended and nothing is left."""
    from ray.util.queue import Empty

    while True:
        try:
            return queue.get(timeout=QUEUE_POLL_S)
        except Empty:
            if not thread.is_alive():
                try:
                    return queue.get_nowait()
                except Empty:
                    return None


__all__ = [
    "DataParallel",
    "RelaySession",
    "WorkerSpec",
    "payload_bytes",
    "payload_from_bytes",
    "run_data_parallel",
    "worker_loop",
]
