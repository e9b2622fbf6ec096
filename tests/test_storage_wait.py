"""A trial waits out an S3 outage longer than the client's retries before it checkpoints (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.storage import resolve

pytestmark = pytest.mark.unit


def test_a_trial_waits_for_unreachable_storage_then_goes_on(tmp_path: Path) -> None:
    from tests.s3server import free_port
    from trainables.storage import wait_until_reachable

    lines: list[str] = []
    assert wait_until_reachable(resolve(str(tmp_path)), budget_s=5, say=lines.append) == 0.0 and not lines
    closed = resolve("s3://lt-exp/x", endpoint=f"http://127.0.0.1:{free_port(set())}")
    waited = wait_until_reachable(closed, budget_s=2.0, say=lines.append)
    assert 2.0 <= waited < 10
    assert lines[0].startswith("storage s3://lt-exp/x unreachable (") and "waiting up to 2 s" in lines[0]
    assert lines[-1] == f"storage s3://lt-exp/x still unreachable after {waited:.0f} s; checkpointing anyway"
