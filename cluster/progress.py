"""Live progress on the driver: running / stopped / finished trials and the best so far."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from rich.console import Console

from trainables import metrics as M


@dataclass
class ProgressState:
    """Counts a user watches; a pure container so the wording is testable without Ray."""

    max_epochs: int
    running: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    stopped: set[str] = field(default_factory=set)
    errored: set[str] = field(default_factory=set)
    best_rmse: float = math.inf
    best_trial: str = ""
    results: int = 0

    def line(self, elapsed: float) -> str:
        best = (
            f"best val RMSE {self.best_rmse:.2f} ({self.best_trial})"
            if math.isfinite(self.best_rmse)
            else "no result yet"
        )
        return (
            f"[{elapsed:6.0f}s] running {len(self.running)}, finished {len(self.finished)}, "
            f"stopped early {len(self.stopped)}, errored {len(self.errored)} | {best}"
        )


class ProgressCallback(Callback):
    """Prints one status line when something changes (at most every ``interval`` seconds for results)."""

    def __init__(self, console: Console, max_epochs: int, interval: float = 5.0) -> None:
        self.console = console
        self.state = ProgressState(max_epochs=max_epochs)
        self.interval = interval
        self._started = time.monotonic()
        self._last_print = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into the experiment state; a console (locks, a terminal) must not travel.
        state = dict(self.__dict__)
        state["console"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.console is None:
            self.console = Console(stderr=True, soft_wrap=True)

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_print >= self.interval:
            self._last_print = now
            self.console.print(self.state.line(now - self._started), highlight=False)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.state.running.add(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self.state.results += 1
        rmse = result.get(M.VAL_RMSE)
        if isinstance(rmse, (int, float)) and rmse < self.state.best_rmse:
            self.state.best_rmse, self.state.best_trial = float(rmse), trial.trial_id
            self._print(force=True)
        else:
            self._print()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.state.running.discard(trial.trial_id)
        epochs = int((trial.last_result or {}).get(M.EPOCH, 0))
        (self.state.finished if epochs >= self.state.max_epochs else self.state.stopped).add(trial.trial_id)
        self._print(force=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.state.running.discard(trial.trial_id)
        self.state.errored.add(trial.trial_id)
        self._print(force=True)


__all__ = ["ProgressCallback", "ProgressState"]
