# Named to run early, after the failure tests: a second multi-node cluster (with the dashboard, for the Jobs API).
"""Runs sent to a real multi-node Ray cluster (head with the dashboard plus two worker nodes) through the Ray Jobs
API by ``lstm-tune submit``; results land in the real S3 server."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.plan.options import OptionError
from cluster.remote.jobs import DEFAULT_EXCLUDES, Submission, check_package, dashboard_address, scan_package
from tests.conftest import REPO
from tests.raycluster import LocalCluster
from tests.s3server import S3Server
from tests.test_failures import keys, run_cli, trial_results

pytestmark = pytest.mark.cluster
LAUNCHER = REPO / "deploy" / "ray-cluster" / "local.yaml"
"""The layout the tests start with `ray start`: the local launcher config's (head with no CPUs, two 1-CPU workers)."""
STORAGE = "s3://lt-exp/jobs"


@pytest.fixture(scope="module")
def cluster(s3_server: S3Server) -> Iterator[LocalCluster]:
    c = LocalCluster.from_launcher_config(LAUNCHER, dashboard=True)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def submit(cluster: LocalCluster, *run_args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return cli("submit", "--address", cluster.dashboard_url, "--json", *extra, "--", *run_args)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def job_ids(cluster: LocalCluster) -> list[str]:
    proc = cli("jobs", "list", "--address", cluster.dashboard_url, "--json")
    assert proc.returncode == 0, proc.stderr
    return [j["submission_id"] for j in json.loads(proc.stdout)]


def wait_status(cluster: LocalCluster, job_id: str, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        proc = cli("jobs", "status", job_id, "--address", cluster.dashboard_url, "--json")
        state = json.loads(proc.stdout)["status"]
        if state in wanted:
            return state
        time.sleep(2)
    raise AssertionError(f"job {job_id} still {state} after {timeout} s")


def test_submit_follow_and_find_results(cluster: LocalCluster, s3_server: S3Server) -> None:
    started = time.monotonic()
    proc = submit(
        cluster,
        *("--storage", STORAGE, "--name", "submitted", "--scheduler", "fifo"),
        *("--num-samples", "2", "--max-epochs", "2"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    job_id = info["submission_id"]
    assert info["ray_job_submit"].startswith("ray job submit --address " + cluster.dashboard_url)
    assert "-- python -m cluster.cli run --storage s3://lt-exp/jobs" in info["ray_job_submit"]
    assert info["package_mb"] < 5, info  # .git and caches left out
    first = None
    while time.monotonic() - started < 240 and first is None:
        if any(k.endswith("/result.json") for k in keys(s3_server, "jobs/submitted/")):
            first = time.monotonic() - started
        time.sleep(0.5)
    assert first is not None, "no trial result in storage within 240 s of the submission"
    logs = cli("jobs", "logs", job_id, "--address", cluster.dashboard_url, "--follow", timeout=400)
    assert logs.returncode == 0, logs.stderr[-3000:]
    assert f"job {job_id}: SUCCEEDED" in logs.stderr
    assert "test RMSE" in logs.stderr and "vs persistence" in logs.stderr, logs.stderr[-2000:]
    assert any(k == "jobs/submitted/best.json" for k in keys(s3_server, "jobs/submitted/"))
    nodes = {r["node_id"] for results in trial_results(s3_server, "submitted", prefix="jobs").values() for r in results}
    print(
        f"\nsubmit: first trial result in storage {first:.1f} s after `lstm-tune submit`; trials on {len(nodes)} nodes"
    )
    assert len(nodes) >= 2, f"the trials of one run all ran on one node: {nodes}"
    assert job_id in job_ids(cluster)


def test_stop_ends_a_running_job(cluster: LocalCluster, s3_server: S3Server) -> None:
    proc = submit(
        cluster,
        *("--storage", STORAGE, "--name", "stopped", "--scheduler", "fifo", "--num-samples", "2", "--max-epochs", "50"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_id = json.loads(proc.stdout)["submission_id"]
    wait_status(cluster, job_id, {"RUNNING"}, 120)
    stop = cli("jobs", "stop", job_id, "--address", cluster.dashboard_url)
    assert stop.returncode == 0 and stop.stdout.strip() == f"{job_id}: STOPPED", stop.stdout + stop.stderr
    again = cli("jobs", "stop", job_id, "--address", cluster.dashboard_url)
    assert again.stdout.strip() == f"{job_id}: already STOPPED"


def test_bad_submissions_fail_before_the_job_exists(cluster: LocalCluster) -> None:
    before = job_ids(cluster)
    run = ("--storage", STORAGE, "--name", "never")
    cases = {
        ("--cpus-per-trial", "8"): "--cpus-per-trial = 8: no node has that many CPUs (largest: 1)",
        ("--gpus-per-trial", "1.5"): "--gpus-per-trial = 1.5: above 1 it must be a whole number",
        ("--gpus-per-trial", "1"): "--gpus-per-trial = 1: no node has that many GPUs (the cluster has no GPU)",
        ("--num-samples", "zero"): "run arguments: Invalid value for '--num-samples'",
        ("--schedulr", "pbt"): "run arguments: No such option: --schedulr",
        ("--address", "127.0.0.1:6379"): "--address belongs before the run options",
    }
    for args, message in cases.items():
        proc = submit(cluster, *run, *args)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        assert message in error_line(proc), (args, error_line(proc))
    relative = submit(cluster, "--storage", "./runs")
    assert "--storage = ./runs: relative paths do not survive submission" in error_line(relative)
    big = submit(cluster, *run, extra=("--working-dir", str(REPO), "--max-package-mb", "0.5"))
    assert big.returncode == 2
    assert "tests/data/newsgroups-sgns-50d.txt.gz (0.7 MB)" in error_line(big) and "--exclude PATTERN" in error_line(
        big
    )
    assert job_ids(cluster) == before, "a refused submission created a job"


def test_dead_address_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = cli("submit", "--address", f"http://127.0.0.1:{port}", "--", "--storage", STORAGE)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr[-1500:]
    assert f"no Ray dashboard at http://127.0.0.1:{port}" in error_line(proc)
    assert elapsed < 10, f"a dead address took {elapsed:.1f} s to fail"
    listing = cli("jobs", "list", "--address", f"127.0.0.1:{port}")
    assert listing.returncode == 1 and "no Ray dashboard" in error_line(listing)


def test_dashboard_address_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert dashboard_address(None) == "http://127.0.0.1:8265"
    assert dashboard_address("10.0.0.5:8265/") == "http://10.0.0.5:8265"
    assert dashboard_address("https://ray.example.com") == "https://ray.example.com"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert dashboard_address(None) == "http://head:8265"
    for bad in ("ray://head:10001", "ftp://head"):
        with pytest.raises(OptionError, match="--address"):
            dashboard_address(bad)


def test_package_respects_ignore_files_and_limit(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "pack").write_bytes(b"x" * 5000)
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"x" * 100)
    (tmp_path / "pkg" / "m.py").write_text("print(1)\n")
    (tmp_path / "pkg" / ".gitignore").write_text("local.csv\n")
    (tmp_path / "pkg" / "local.csv").write_bytes(b"x" * 4000)
    (tmp_path / ".rayignore").write_text("/big/\n")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob").write_bytes(b"x" * 9000)
    (tmp_path / "data.parquet").write_bytes(b"x" * 3000)
    pkg = scan_package(tmp_path)
    assert pkg.files == 4 and pkg.bytes == 9 + 3000 + len("local.csv\n") + len("/big/\n")
    assert pkg.largest[0] == ("data.parquet", 3000)
    assert scan_package(tmp_path, ("*.parquet",)).bytes == pkg.bytes - 3000
    check_package(pkg, 0.01)
    with pytest.raises(OptionError, match=r"is 0\.0 MB in 4 files .* largest: data\.parquet \(0\.0 MB\)"):
        check_package(pkg, 0.001)


def test_submission_runtime_env_has_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = Submission(address="http://h:8265", run_args=["--storage", "s3://b/p"], working_dir=Path("/w"))
    env: dict[str, Any] = sub.runtime_env
    assert env["excludes"][: len(DEFAULT_EXCLUDES)] == list(DEFAULT_EXCLUDES)
    assert "env_vars" not in env
    assert "AWS_SECRET" not in json.dumps(env) + sub.ray_command()
    assert sub.entrypoint == "python -m cluster.cli run --storage s3://b/p"
