"""A packed trial (docs/design/packing.md): a Tune trial whose epochs are trained by a pack actor.

The trial keeps everything a trial is to Tune and to the user (its config, result history, checkpoints, TensorBoard
run, place in the summary): it restores its checkpoint as any trial does, joins a pack of its shape with it, and per
epoch asks the pack for one round, then reports the round's result with a checkpoint of its own. It never holds the
model or the data; the pack (:mod:`trainables.pack_server`) does.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from trainables import metrics as M
from trainables.checkpoint import ADOPTED, TrainState, save_checkpoint_state
from trainables.config import TrialConfig
from trainables.loop import TrialSession, early_stopping, trial_done, usable_loss
from trainables.pack_rules import shape_key
from trainables.pack_server import PACK_MARKER
from trainables.tensorboard import TrialLogger, schedule_scalars

REGISTRY_PREFIX = "lstm-tune-packs:"


@dataclass(frozen=True, kw_only=True)
class PackEnv:
    """What a packed trial needs to find its pack; shipped in :class:`trainables.trainable.TrialEnv`."""

    registry: str
    """The run's :class:`~trainables.pack_server.PackRegistry` (a named actor the driver created)."""
    capacity: int
    """Members per pack (``--pack``)."""
    grace_s: float = 5.0
    """How long a round waits for a member that has not asked for it (a stopped or paused trial)."""


class _Evicted(RuntimeError):
    pass


def _call(ref: Any) -> Any:
    """``ray.get``, with a pack's "you hold no slot" turned into :class:`_Evicted`."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, KeyError):
            raise _Evicted(str(exc.cause)) from None
        raise


def _join(env: PackEnv, member: str, flat: dict[str, Any], payload: dict[str, Any] | None) -> tuple[Any, str, str]:
    """A slot in a pack of this trial's shape: (pack actor, pack name, how it joined). Waits while every pack of
    the run is full and no new one may start (a trial waits for resources the same way)."""
    import ray

    registry = ray.get_actor(env.registry)
    context = ray.get_runtime_context()
    actor_id, actor = context.get_actor_id() or "", context.current_actor if context.get_actor_id() else None
    key = shape_key(flat)
    while True:
        packs: list[tuple[str, Any]] = ray.get(registry.packs_for.remote(key))
        for name, pack in packs:
            answer: dict[str, Any] = ray.get(pack.join.remote(member, flat, payload, actor_id, actor))
            if not answer.get("full"):
                return pack, name, str(answer["how"])
        grown: tuple[str, Any] | None = ray.get(registry.grow.remote(key, flat))
        if grown is None:
            time.sleep(0.5)


def run_member(
    cfg: TrialConfig,
    flat: dict[str, Any],
    env: PackEnv,
    session: TrialSession,
    *,
    member: str,
    logger: TrialLogger | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> TrainState:
    """Train one configuration through a pack until ``max_epochs`` (or until the scheduler stops the process)."""
    payload = session.restore()
    state = TrainState(**payload["state"]) if payload is not None else TrainState()
    if payload is not None and payload.get(ADOPTED) and payload.get("report") and trial_done(state, cfg):
        # As an unpacked trial does (trainables.loop.run_trial): publish a checkpoint's result Tune never took.
        replay = {**payload["report"], **(extra_metrics or {}), M.WALL_CLOCK: time.time(), M.REPLAYED: 1}
        _report(session, replay, payload, state)
        return state
    pack, name, how = _join(env, member, flat, payload)
    last = payload
    try:
        for epoch in range(state.epoch + 1, cfg.limits.max_epochs + 1):
            try:
                out = _call(pack.next_round.remote(member, epoch))
            except _Evicted:
                # Idle past the grace time while a newcomer needed the slot: back in from the last checkpoint.
                pack, name, how = _join(env, member, flat, last)
                out = _call(pack.next_round.remote(member, epoch))
            stats, scores = out["stats"], out["scores"]
            state.epoch, state.step = epoch, state.step + int(stats["steps"])
            val_loss = usable_loss(scores[M.VAL_LOSS])
            state.best_val_loss, state.bad_epochs = early_stopping(
                state.best_val_loss, state.bad_epochs, val_loss, cfg.limits.min_delta
            )
            train_s = float(out["train_s"])
            report = {
                M.EPOCH: epoch,
                M.TRAIN_LOSS: usable_loss(stats["loss"]),
                M.GRAD_NORM: usable_loss(stats["grad_norm"]),
                M.CLIPPED: stats["clipped"],
                **{k: v if k != M.VAL_LOSS else val_loss for k, v in scores.items()},
                M.LEARNING_RATE: out["lr"],
                M.SAMPLES_PER_SECOND: stats["samples"] / train_s if train_s > 0 else 0.0,
                M.TRAIN_SECONDS: train_s,
                M.EVAL_SECONDS: out["eval_s"],
                M.PACK: name,
                **out["pack"],
                **({M.PACK_JOIN: how} if how else {}),
                **(extra_metrics or {}),
            }
            how = ""
            if logger is not None:
                logger.log({**report, **schedule_scalars(cfg.to_flat())}, epoch)
            report[M.WALL_CLOCK] = time.time()
            last = {
                "model": out["state"]["model"],
                "optimizer": out["state"]["optimizer"],
                "state": {"epoch": state.epoch},
                "model_config": out["model_info"],
                "data_info": out["data_info"],
                PACK_MARKER: out["marker"],
            }
            _report(session, report, last, state)
            if not math.isfinite(stats["loss"]):
                break
            if trial_done(state, cfg):
                break
    finally:
        # Tune may end this process without running another line (an ASHA stop); the pack notices that too.
        pack.leave.remote(member)
    return state


def _report(session: TrialSession, report: dict[str, Any], payload: dict[str, Any], state: TrainState) -> None:
    with tempfile.TemporaryDirectory(prefix="lstm-tune-ckpt-") as ckpt_dir:
        save_checkpoint_state(
            ckpt_dir,
            model_state=payload["model"],
            optimizer_state=payload["optimizer"],
            state=state,
            model_config=payload["model_config"],
            data_info=payload["data_info"],
            report=report,
            extra={PACK_MARKER: payload[PACK_MARKER]} if PACK_MARKER in payload else None,
        )
        session.report(report, ckpt_dir)


__all__ = ["REGISTRY_PREFIX", "PackEnv", "run_member"]
