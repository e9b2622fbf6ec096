"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus worker nodes, each its own process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from tests.s3server import free_port


@dataclass
class LocalCluster:
    """Head (no CPUs: trials land on workers) and ``workers`` nodes of one CPU each."""

    workers: int = 2
    worker_cpus: int = 1
    worker_gpus: int = 0
    """GPUs each worker node advertises (``ray start --num-gpus``): fake ones, for placement and load tests."""
    dashboard: bool = False
    """Start the head's dashboard (Ray Jobs API) on 127.0.0.1; slower to start."""
    port: int = 0
    dashboard_port: int = 0
    temp_dir: str = ""
    head: subprocess.Popen[bytes] | None = None
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def from_launcher_config(cls, path: Path, *, dashboard: bool = False) -> LocalCluster:
        """The layout of a `ray up` config (deploy/ray-cluster/local.yaml): worker count and CPUs per worker."""
        cfg = yaml.safe_load(path.read_text())
        workers = [t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]]
        (worker,) = workers
        return cls(workers=int(worker["min_workers"]), worker_cpus=int(worker["resources"]["CPU"]), dashboard=dashboard)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout: float = 120.0) -> None:
        ray = shutil.which("ray")
        if ray is None:
            raise RuntimeError("ray CLI not found")
        self.port = free_port(set())
        self.dashboard_port = free_port({self.port})
        self.temp_dir = tempfile.mkdtemp(prefix="lt-rc-", dir="/tmp")
        common = ["--disable-usage-stats", "--block"]
        if self.dashboard:
            dash = ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        else:
            dash = ["--include-dashboard=false"]
        try:
            self.head = self._spawn(
                [
                    ray,
                    "start",
                    "--head",
                    f"--port={self.port}",
                    "--num-cpus=0",
                    f"--temp-dir={self.temp_dir}/h",
                    *dash,
                    *common,
                ]
            )
            self._wait_nodes(1, timeout)
            for i in range(self.workers):
                # Nodes on one machine need their own temp dir (sockets), or the second plasma store fails to bind.
                sockets = [f"--temp-dir={self.temp_dir}/w{i}"]
                self.nodes.append(
                    self._spawn(
                        [
                            *(ray, "start", f"--address={self.address}", f"--num-cpus={self.worker_cpus}"),
                            *([f"--num-gpus={self.worker_gpus}"] if self.worker_gpus else []),
                            *sockets,
                            *common,
                        ]
                    )
                )
            self._wait_nodes(1 + self.workers, timeout)
            self._wait_registered(timeout)
            if self.dashboard:
                self._wait_dashboard(timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.temp_dir, f"start-{len(self.nodes)}-{time.time():.0f}.log"), "ab")  # kept open
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_nodes(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.alive_raylets()) >= n:
                return
            time.sleep(0.5)
        raise RuntimeError(f"Ray cluster did not reach {n} node(s) in {timeout} s; logs in {self.temp_dir}")

    def _wait_registered(self, timeout: float) -> None:
        """Raylets running is not enough: wait until the GCS lists every node with its CPUs."""
        probe = (
            "import ray, time\n"
            f"ray.init(address='{self.address}', logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {timeout}\n"
            "while time.monotonic() < deadline:\n"
            "    cpus = sum(n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive'])\n"
            f"    if cpus >= {self.workers * self.worker_cpus}: break\n"
            "    time.sleep(0.5)\n"
            "print(cpus)\n"
        )
        out = subprocess.run(
            ["python3", "-c", probe], capture_output=True, text=True, timeout=timeout + 30, check=False
        )
        if not out.stdout.strip().endswith(f"{float(self.workers * self.worker_cpus)}"):
            raise RuntimeError(f"Ray cluster nodes did not register: {out.stdout[-300:]} {out.stderr[-1000:]}")

    def _wait_dashboard(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"dashboard at {self.dashboard_url} did not answer in {timeout} s; logs in {self.temp_dir}")

    def alive_raylets(self) -> list[psutil.Process]:
        procs = []
        for starter in [self.head, *self.nodes]:
            if starter is None:
                continue
            try:
                children = psutil.Process(starter.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            procs += [c for c in children if c.name() == "raylet" and c.is_running()]
        return procs

    def busy_worker_nodes(self) -> list[str]:
        """Node ids of worker nodes whose raylet has a trial process under it (Ray titles it ``ray::ImplicitFunc``).

        Read from the process tree, so it takes milliseconds: asking the GCS meant a fresh ``ray.init`` of several
        seconds under CI load, long enough for the trial to finish before its node was killed (seen in CI)."""
        busy = []
        for raylet in self.alive_raylets():
            if self.temp_dir_of(raylet).endswith("/h"):
                continue
            if any(self._runs_trial(child) for child in raylet.children(recursive=True)):
                busy.append(self.node_id(raylet))
        return busy

    @staticmethod
    def _runs_trial(proc: psutil.Process) -> bool:
        try:
            return any(arg.startswith("ray::ImplicitFunc") for arg in proc.cmdline()[:1])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    @staticmethod
    def node_id(raylet: psutil.Process) -> str:
        return next(a.split("=", 1)[1] for a in raylet.cmdline() if a.startswith("--node_id="))

    @staticmethod
    def temp_dir_of(raylet: psutil.Process) -> str:
        return next(a.split("=", 1)[1] for a in raylet.cmdline() if a.startswith("--temp_dir="))

    def kill_node_with_id(self, node_id: str) -> int:
        """Lose the worker node with Ray node id ``node_id`` as a machine would: SIGKILL its raylet and every process
        under it (trial workers included) at once. Killing the raylet alone leaves its workers running for a while,
        still reachable by the driver, and a trial could finish there instead of moving (seen here). Returns the
        raylet's pid."""
        raylets = [r for r in self.alive_raylets() if self.node_id(r) == node_id]
        if not raylets:
            raise RuntimeError(f"no live raylet with node id {node_id}")
        raylet = raylets[0]
        doomed = [raylet, *raylet.children(recursive=True)]
        for proc in doomed:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(doomed, timeout=10)
        return int(raylet.pid)

    def worker_raylet(self, index: int) -> psutil.Process:
        children = psutil.Process(self.nodes[index].pid).children(recursive=True)
        return next(c for c in children if c.name() == "raylet")

    def stop(self) -> None:
        procs = [p for p in (self.head, *self.nodes) if p is not None]
        for proc in procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    group = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                except psutil.NoSuchProcess:
                    group = []
                for p in group:
                    try:
                        p.send_signal(sig)
                    except psutil.NoSuchProcess:
                        pass
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                psutil.wait_procs(group, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
