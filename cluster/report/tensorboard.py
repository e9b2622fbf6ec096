"""``lstm-tune tensorboard URI``: TensorBoard on an experiment's event files, local or in S3, on loopback by default."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from cluster.plan.storage import ExperimentPaths
from trainables.storage import Location, s3_endpoint


@dataclass(frozen=True)
class Board:
    logdir: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/"


def logdir_of(root: Location) -> str:
    """The experiment's TensorBoard folder as TensorBoard names it (a path, or ``s3://bucket/key``)."""
    tb = ExperimentPaths(root=root).tensorboard
    return tb.path if tb.is_local else f"s3://{tb.path}"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def board_env() -> dict[str, str]:
    """TensorBoard reads S3 through boto3 and takes an S3-compatible endpoint from S3_ENDPOINT (scheme included)."""
    env = dict(os.environ)
    if (endpoint := s3_endpoint()) and "S3_ENDPOINT" not in env:
        env["S3_ENDPOINT"] = endpoint
    return env


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def serving(board: Board, log: str) -> Iterator[subprocess.Popen[bytes]]:
    """TensorBoard for as long as this command lives: stopped on return, on an error, on Ctrl-C and on SIGTERM
    (``kill``, a container's stop), which Python would otherwise obey by exiting at once and leaving it running."""
    previous = signal.signal(signal.SIGTERM, _exit)
    proc = start(board, log)
    try:
        yield proc
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def start(board: Board, log: str) -> subprocess.Popen[bytes]:
    """TensorBoard in its own process; its log goes to the file ``log`` (a pipe nobody reads would fill and block)."""
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", board.logdir, "--host", board.host]
    cmd += ["--port", str(board.port), "--reload_interval", "5"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=board_env(), stdout=out, stderr=subprocess.STDOUT)


def wait_ready(board: Board, proc: subprocess.Popen[bytes], log: str, timeout: float = 60.0) -> None:
    """Until TensorBoard answers; a clear error with its own last words if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, "rb") as f:
                tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"tensorboard exited with code {proc.returncode}: {' / '.join(tail)}")
        try:
            with urllib.request.urlopen(f"{board.url}data/logdir", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"tensorboard did not answer at {board.url} within {timeout:.0f} s")


__all__ = ["Board", "board_env", "free_port", "logdir_of", "serving", "start", "wait_ready"]
