"""Live progress on the driver: running / stopped / finished trials and the best so far."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

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
    watched: str = M.VAL_RMSE
    """The forecasting figure shown: val RMSE, or what ``--metric`` selects on (val MAE, MASE, sMAPE)."""

    def offer(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Take a trial's result; True when it is a new best."""
        for metric, lower in ((self.watched, True), (M.VAL_ACCURACY, False)):
            value = result.get(metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if self.best is None or (value < self.best if lower else value > self.best):
                self.best, self.best_metric, self.best_trial = float(value), metric, trial_id
                return True
            return False
        return False

    def line(self, elapsed: float) -> str:
        return progress_line(
            elapsed,
            (len(self.running), len(self.finished), len(self.stopped), len(self.errored)),
            self.best,
            self.best_metric,
            self.best_trial,
        )


SHOWN = {
    M.VAL_RMSE: ("RMSE", 2),
    M.VAL_MAE: ("MAE", 2),
    M.VAL_MASE: ("MASE", 3),
    M.VAL_SMAPE: ("sMAPE", 2),
    M.VAL_PINBALL: ("pinball", 3),
}
WATCHED = {"mae": M.VAL_MAE, "mase": M.VAL_MASE, "smape": M.VAL_SMAPE, "pinball": M.VAL_PINBALL}
"""``--metric`` -> the figure the progress line shows (RMSE for loss and rmse)."""


def progress_line(
    elapsed: float, counts: tuple[int, int, int, int], best: float | None, best_metric: str, best_trial: str
) -> str:
    """The console's line: trials running, finished, stopped early and errored, and the best so far."""
    if best is None:
        shown = "no result yet"
    elif best_metric == M.VAL_ACCURACY:
        shown = f"best val accuracy {best:.4f} ({best_trial})"
    else:
        label, digits = SHOWN.get(best_metric, ("RMSE", 2))
        shown = f"best val {label} {best:.{digits}f} ({best_trial})"
    running, finished, stopped, errored = counts
    return f"[{elapsed:6.0f}s] running {running}, finished {finished}, stopped early {stopped}, errored {errored} | {shown}"


EventKind = Literal["start", "result", "complete", "error"]


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    """What a progress hook receives after every trial event (``cluster.run(on_progress=...)``)."""

    kind: EventKind
    """start: a trial started; result: it reported an epoch; complete: it ended (finished or stopped); error."""
    trial_id: str
    elapsed_s: float
    """Seconds since the tuning run started."""
    running: int
    finished: int
    stopped: int
    errored: int
    results: int
    """Epoch results reported so far, all trials together."""
    best: float | None
    """Best validation figure so far (lowest val RMSE, or highest val accuracy for a classifier)."""
    best_metric: str
    best_trial: str
    result: dict[str, Any] | None = None
    """The trial's result on ``result`` events (metric name -> value)."""
    new_best: bool = False

    @property
    def line(self) -> str:
        """The line the console shows."""
        counts = (self.running, self.finished, self.stopped, self.errored)
        return progress_line(self.elapsed_s, counts, self.best, self.best_metric, self.best_trial)


ProgressHook = Callable[[ProgressEvent], None]

_restored_output: tuple[Console | None, ProgressHook | None] = (Console(stderr=True, soft_wrap=True), None)


@contextlib.contextmanager
def restored_output(console: Console | None, hook: ProgressHook | None) -> Iterator[None]:
    """Where a progress callback unpickled inside this block prints and reports: Tune restores callbacks from its
    stored state, so the resuming call cannot pass them in."""
    global _restored_output
    saved, _restored_output = _restored_output, (console, hook)
    try:
        yield
    finally:
        _restored_output = saved


class ProgressCallback(Callback):
    """Prints one status line when something changes (at most every ``interval`` seconds for results), and hands
    every trial event to ``hook``. A console of ``None`` prints nothing (a library call's default)."""

    def __init__(
        self,
        console: Console | None,
        max_epochs: int,
        interval: float = 5.0,
        hook: ProgressHook | None = None,
        metric: str = "loss",
    ) -> None:
        self.console = console
        watched = WATCHED.get(metric, M.VAL_RMSE)
        self.state = ProgressState(max_epochs=max_epochs, watched=watched, best_metric=watched)
        self.interval = interval
        self.hook = hook
        self._started = time.monotonic()
        self._last_print = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into the experiment state; a console (locks, a terminal) and a user's hook (maybe a
        # closure over a notebook's objects) must not travel. A resumed run sets its own.
        state = dict(self.__dict__)
        state["console"] = None
        state["hook"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled by Tuner.restore on a resume: the resuming call's console and hook, set by restored_output().
        self.__dict__.update(state)
        self.console, self.hook = _restored_output

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.console is not None and (force or now - self._last_print >= self.interval):
            self._last_print = now
            self.console.print(self.state.line(now - self._started), highlight=False)

    def _emit(
        self, kind: EventKind, trial: Trial, result: dict[str, Any] | None = None, new_best: bool = False
    ) -> None:
        if self.hook is None:
            return
        s = self.state
        self.hook(
            ProgressEvent(
                kind=kind,
                trial_id=trial.trial_id,
                elapsed_s=time.monotonic() - self._started,
                running=len(s.running),
                finished=len(s.finished),
                stopped=len(s.stopped),
                errored=len(s.errored),
                results=s.results,
                best=s.best,
                best_metric=s.best_metric,
                best_trial=s.best_trial,
                result=result,
                new_best=new_best,
            )
        )

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.state.running.add(trial.trial_id)
        self._emit("start", trial)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self.state.results += 1
        new_best = self.state.offer(trial.trial_id, result)
        self._print(force=new_best)
        self._emit("result", trial, result=dict(result), new_best=new_best)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.state.running.discard(trial.trial_id)
        epochs = int((trial.last_result or {}).get(M.EPOCH, 0))
        (self.state.finished if epochs >= self.state.max_epochs else self.state.stopped).add(trial.trial_id)
        self._print(force=True)
        self._emit("complete", trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.state.running.discard(trial.trial_id)
        self.state.errored.add(trial.trial_id)
        self._print(force=True)
        self._emit("error", trial)


__all__ = ["ProgressCallback", "ProgressEvent", "ProgressHook", "ProgressState", "restored_output"]
