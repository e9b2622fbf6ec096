"""Trial checkpoints: model, optimiser, counters and RNG state in one file, loaded without running code.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; a pickle that tries to call anything
is refused by the unpickler before it runs, and we turn that refusal into a clear error.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

FORMAT_VERSION = 1
CHECKPOINT_FILE = "trial_state.pt"
ADOPTED = "adopted"
"""Set (True) by :mod:`trainables.restore` in a payload it found in storage rather than got from Tune: a checkpoint
whose result Tune may never have received."""
PRUNED_FILE = "pruned.json"
"""Left in a checkpoint folder whose state retention deleted. The folder stays because Tune's experiment state may
still name it as a trial's latest checkpoint, and Tune refuses to restore from a path that no longer exists."""


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of another format, or unsafe to load."""


class CheckpointPruned(CheckpointError):
    """Retention replaced this checkpoint's state by a :data:`PRUNED_FILE` marker."""


@dataclass(kw_only=True)
class TrainState:
    """Counters that continue across restores."""

    epoch: int = 0
    """Finished epochs."""
    step: int = 0
    """Optimiser steps taken."""
    best_val_loss: float = math.inf
    """Lowest validation loss so far in this trial's lineage."""
    bad_epochs: int = 0
    """Consecutive epochs without an improvement of at least ``min_delta`` (early stopping)."""


def save_checkpoint(
    directory: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    model_config: dict[str, Any],
    data_info: dict[str, Any],
    report: dict[str, Any] | None = None,
) -> str:
    """Write one checkpoint file into ``directory`` and return its path.

    ``report`` is the result published with it, kept so a trial restored from this checkpoint with nothing left to
    train can publish its final result again (:func:`trainables.loop.run_trial`).
    """
    return save_checkpoint_state(
        directory,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        state=state,
        model_config=model_config,
        data_info=data_info,
        report=report,
    )


def save_checkpoint_state(
    directory: str,
    *,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    state: TrainState,
    model_config: dict[str, Any],
    data_info: dict[str, Any],
    report: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """:func:`save_checkpoint` from state dicts (a packed member's, which has no module of its own); ``extra``:
    further plain-data keys (a packed member's pack marker)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model_state,
        "optimizer": optimizer_state,
        "state": asdict(state),
        "model_config": dict(model_config),
        "data_info": dict(data_info),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "report": dict(report or {}),
        **(extra or {}),
    }
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CHECKPOINT_FILE)
    torch.save(payload, path)
    return path


def unsafe_file(uri: str, exc: BaseException) -> CheckpointError:
    """The refusal of a file the safe loader would not rebuild. PyTorch's own message advises loading it again with
    ``weights_only=False``: for a file that failed the safe loader, the one thing never to do; only the culprit it
    names (``unsupported GLOBAL posix.system``) is passed on."""
    named = re.search(r"(?:unsupported GLOBAL \S+|Unsupported (?:global|operand)[^\n.]*)", str(exc), re.IGNORECASE)
    reason = named.group(0).strip() if named else type(exc).__name__
    return CheckpointError(
        f"{uri} is not a valid lstm-tune file and may be unsafe: it holds objects other than tensors and plain data "
        f"({reason}); nothing in it was loaded or run. Do not load it by other means unless you made it yourself."
    )


def load_checkpoint(directory: str) -> dict[str, Any]:
    """Load a checkpoint safely; refuse other formats and any payload that is not plain data."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    if os.path.isfile(os.path.join(directory, PRUNED_FILE)):
        raise CheckpointPruned(f"checkpoint {directory} was pruned by retention")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {directory}: no {CHECKPOINT_FILE} in it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unsafe_file(path, exc) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(f"checkpoint {path}: format_version = {version!r}; this lstm-tune reads {FORMAT_VERSION}")
    return payload


def restore_rng(payload: dict[str, Any]) -> None:
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))


def _as_tuple(value: Any) -> Any:
    # random.getstate() is nested tuples; keep the exact types setstate expects.
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


__all__ = [
    "ADOPTED",
    "CHECKPOINT_FILE",
    "FORMAT_VERSION",
    "PRUNED_FILE",
    "CheckpointError",
    "CheckpointPruned",
    "TrainState",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
    "save_checkpoint_state",
]
