"""Ray for a run (cluster/tune/session.py): what runs meanwhile finishes, or raises, before the run goes on."""

from __future__ import annotations

import threading
import time

import pytest

from cluster.tune.session import _Meanwhile

pytestmark = pytest.mark.unit


def test_meanwhile_runs_in_another_thread_and_is_done_at_join() -> None:
    seen: list[str] = []

    def work() -> None:
        time.sleep(0.05)
        seen.append(threading.current_thread().name)

    pending = _Meanwhile(work)
    pending.join()
    assert seen == ["lstm-tune-meanwhile"]


def test_an_error_meanwhile_is_raised_in_the_caller_at_join() -> None:
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'torch'")

    pending = _Meanwhile(broken)
    with pytest.raises(ModuleNotFoundError, match="No module named 'torch'"):
        pending.join()
