"""AdamW without the ``torch._dynamo`` import.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use (``add_param_group`` in the constructor,
``zero_grad``, ``state_dict``, ``load_state_dict`` and the graph breaks around ``step``): 1.0-1.4 s of a fresh
trial worker's start-up here, on the path to its first result, for a compiler no trial uses. This is
``torch.optim.AdamW`` with those methods called undecorated (``__wrapped__``, the function the decorators wrap); the
arithmetic, the state and ``state_dict`` are torch's own, so checkpoints are unchanged. Where a torch release drops
``__wrapped__`` the decorated method is used: slower to start, never wrong. ``tests/test_optim.py`` checks that the
steps equal ``torch.optim.AdamW``'s bit for bit and that a trial's optimizer leaves ``torch._dynamo`` unimported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Adam, Optimizer


def _plain(method: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(method, "__wrapped__", method)


_ADD_PARAM_GROUP = _plain(Optimizer.add_param_group)
_ZERO_GRAD = _plain(Optimizer.zero_grad)
_STATE_DICT = _plain(Optimizer.state_dict)
_LOAD_STATE_DICT = _plain(Optimizer.load_state_dict)
_ADAM_STEP = _plain(Adam.step)
_UNDECORATED_STEP = _ADAM_STEP is not Adam.step


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW``, started without importing ``torch._dynamo`` (not for ``differentiable=True``)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = _STATE_DICT(self)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _LOAD_STATE_DICT(self, state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if not _UNDECORATED_STEP:
            result: float | None = Adam.step(self, closure)
            return result
        # What the decorator does around the update, less its graph breaks: no autograd history for the update.
        with torch.no_grad():
            result = _ADAM_STEP(self, closure)
        return result


__all__ = ["AdamW"]
