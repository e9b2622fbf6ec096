"""Ray for the duration of a run: joined or started, with the driver's own heavy imports done while Ray starts.

Light on purpose (it imports Ray and nothing of torch or Tune): a run calls it before the modules that build the
Tuner and score the results are imported, so that their import (torch alone is 1-2 s here) overlaps the 3-4 s that
``ray.init`` spends waiting for its processes, instead of following it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ray


class _Meanwhile:
    """A call run in a thread while the main thread waits for Ray; its exception is raised again on ``join``.
    ``ray.init`` stays on the main thread: started from another thread, Ray's driver later hung registering remote
    functions (measured here, Ray 2.58)."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name="lstm-tune-meanwhile", daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the main thread
            self._error = exc

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def ray_session(address: str | None, *, meanwhile: Callable[[], object] | None = None) -> Iterator[None]:
    """Ray for the duration of a run, shut down again only if this run started it. ``meanwhile`` runs in a thread
    while Ray connects (imports, mostly) and has finished, or raised, before the body runs."""
    pending = _Meanwhile(meanwhile) if meanwhile is not None else None
    started = False
    try:
        started = connect(address)
        if pending is not None:
            pending.join()
            pending = None
        yield
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                pending.join()
        if started:
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Join a cluster (``--address``, else ``RAY_ADDRESS``) or start a private local one; True if we started Ray."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **common)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**common)
    else:
        # "local" never joins a stale cluster left in the temp dir by a killed run.
        ray.init(address="local", include_dashboard=False, **common)
    return True


__all__ = ["connect", "ray_session"]
