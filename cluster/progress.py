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
    best: float | None = None
    """Best validation figure so far: lowest val RMSE (forecasting) or highest val accuracy (classifying)."""
    best_metric: str = M.VAL_RMSE
    best_trial: str = ""
    results: int = 0

    def offer(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Take a trial's result; True when it is a new best."""
        for metric, lower in ((M.VAL_RMSE, True), (M.VAL_ACCURACY, False)):
            value = result.get(metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if self.best is None or (value < self.best if lower else value > self.best):
                self.best, self.best_metric, self.best_trial = float(value), metric, trial_id
                return True
            return False
        return False

    def line(self, elapsed: float) -> str:
        if self.best is None:
            best = "no result yet"
        elif self.best_metric == M.VAL_ACCURACY:
            best = f"best val accuracy {self.best:.4f} ({self.best_trial})"
        else:
            best = f"best val RMSE {self.best:.2f} ({self.best_trial})"
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
        self._print(force=self.state.offer(trial.trial_id, result))

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
