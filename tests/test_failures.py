# Named to run first: the multi-node cluster gets the 2 cores alone, before the session-wide local Ray starts.
"""Nothing lost when a node, the driver or storage fails: a real multi-node Ray cluster (head plus two worker nodes,
separate ``ray start`` processes) and the real S3 server; the driver runs as the CLI in its own process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.tune.retention import prune
from tests.conftest import REPO
from tests.raycluster import LocalCluster
from tests.s3server import S3Server
from trainables.storage import resolve

pytestmark = pytest.mark.cluster
LAUNCHER = REPO / "deploy" / "ray-cluster" / "local.yaml"
"""The layout the tests start with `ray start`: the local launcher config's (head with no CPUs, two 1-CPU workers)."""
STORAGE = "s3://lt-exp/failures"
EPOCH_SAMPLES = "6144"
"""A fifth of a full pass (about 2 s an epoch instead of 10 on a 1-CPU node): the failures hit trials mid-run all the
same, and the module fits CI's time."""


@pytest.fixture(scope="module")
def cluster(s3_server: S3Server) -> Iterator[LocalCluster]:
    c = LocalCluster.from_launcher_config(LAUNCHER)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def cli_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return env


def start_driver(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    out = open(tmp_path / "driver.out", "w")
    err = open(tmp_path / "driver.err", "w")
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "cluster.cli", "run", "--storage", STORAGE, "--scheduler", "fifo", "--json"),
            *("--epoch-samples", EPOCH_SAMPLES, *args),
        ],
        stdout=out,
        stderr=err,
        text=True,
        env=cli_env(),
        cwd=REPO,
    )


def run_cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def keys(server: S3Server, prefix: str) -> list[str]:
    client = server.client()
    out, token = [], None
    while True:
        kw: dict[str, Any] = {"Bucket": "lt-exp", "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = client.list_objects_v2(**kw)
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def checkpoints(server: S3Server, name: str) -> list[str]:
    return [k for k in keys(server, f"failures/{name}/") if "/checkpoint_" in k and k.endswith("trial_state.pt")]


def per_trial(server: S3Server, name: str) -> dict[str, int]:
    """How many checkpoints each trial that has started has written so far."""
    counts: dict[str, int] = {}
    for key in checkpoints(server, name):
        trial = key.split("/")[-3]
        counts[trial] = counts.get(trial, 0) + 1
    return counts


def min_per_trial(server: S3Server, name: str, trials: int) -> int:
    """The fewest checkpoints any of the ``trials`` trials has written so far (0 until all have started)."""
    counts = per_trial(server, name)
    return min(counts.values()) if len(counts) >= trials else 0


def prune_all_but_newest(server: S3Server, name: str) -> int:
    """Prune every checkpoint but each trial's most recently written one, as retention does; return how many."""
    by_trial: dict[str, list[tuple[Any, str]]] = {}
    client = server.client()
    for key in checkpoints(server, name):
        folder = key.rsplit("/", 1)[0]
        written = client.head_object(Bucket="lt-exp", Key=key)["LastModified"]
        by_trial.setdefault(folder.rsplit("/", 1)[0], []).append((written, folder))
    fs = resolve(STORAGE, endpoint=server.endpoint).fs
    count = 0
    for folders in by_trial.values():
        for _, folder in sorted(folders)[:-1]:
            count += prune(fs, f"lt-exp/{folder}", reason="test")
    return count


def trial_results(server: S3Server, name: str, prefix: str = "failures") -> dict[str, list[dict[str, Any]]]:
    """Every result each trial reported, in order (Tune's result.json, one JSON object a line)."""
    client = server.client()
    out = {}
    for key in keys(server, f"{prefix}/{name}/"):
        if key.endswith("/result.json"):
            body = client.get_object(Bucket="lt-exp", Key=key)["Body"].read().decode()
            out[key.split("/")[-2]] = [json.loads(line) for line in body.splitlines() if line.strip()]
    return out


def trial_errors(server: S3Server, name: str) -> str:
    """The tails of the trials' error files, for an assertion message that says what broke."""
    client = server.client()
    tails = []
    for key in keys(server, f"failures/{name}/"):
        if key.endswith("error.txt"):
            body = client.get_object(Bucket="lt-exp", Key=key)["Body"].read().decode(errors="replace")
            tails.append(f"{key}:\n{body[-1500:]}")
    return "\n".join(tails) or "no error.txt in the experiment"


def finished_summary(proc: subprocess.CompletedProcess[str] | subprocess.Popen[str], tmp_path: Path | None) -> Any:
    stdout = proc.stdout if isinstance(proc, subprocess.CompletedProcess) else (tmp_path / "driver.out").read_text()
    stderr = proc.stderr if isinstance(proc, subprocess.CompletedProcess) else (tmp_path / "driver.err").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout)


def test_lost_worker_node_trials_resume_elsewhere(cluster: LocalCluster, s3_server: S3Server, tmp_path: Path) -> None:
    proc = start_driver(
        tmp_path, "--address", cluster.address, "--name", "nodeloss", "--num-samples", "2", "--max-epochs", "8"
    )
    # Kill the node of a trial that is running and has progress to lose: a node whose trial had already finished, or
    # a trial with no result yet, would leave no trace of a move (both seen here under CI load).
    wait_for(lambda: min_per_trial(s3_server, "nodeloss", 2) >= 2, 240, "2 checkpoints of each trial in S3")
    busy = cluster.busy_worker_nodes()
    assert busy, "no worker node was running a trial"
    victim = cluster.kill_node_with_id(busy[0])
    at_kill = sorted(per_trial(s3_server, "nodeloss").values())
    proc.wait(timeout=400)
    summary = finished_summary(proc, tmp_path)
    assert summary["trials"] == {"total": 2, "finished": 2, "stopped": 0, "errored": 0}
    shown = json.loads(run_cli("experiments", "show", f"{STORAGE}/nodeloss", "--json").stdout)
    assert shown["trials"] == {"TERMINATED": 2}
    # Tune's trial ids ("3604c_00001") from the trial folders ("forecast_trainable_3604c_00001_1_batch_size=...").
    results = {"_".join(t.split("_")[2:4]): rs for t, rs in trial_results(s3_server, "nodeloss").items()}
    sequences = {t: [(r["epoch"], r["node_id"][:8]) for r in rs] for t, rs in results.items()}
    # Tune's own count of restarts is the evidence of the move.
    assert shown["retries"], (
        f"no trial restarted after node {busy[0][:8]} was killed (checkpoints per trial then: {at_kill}): {sequences}"
    )
    for trial, rs in results.items():
        epochs = [r["epoch"] for r in rs]
        assert epochs[-1] == 8, f"{trial} did not finish: {epochs}"
        # The whole history survives the move (Tune's loggers replaced it by the last upload's: it began at epoch 3).
        assert sorted(set(epochs)) == list(range(1, 9)), f"{trial} lost part of its history: {sequences}"
        assert epochs.count(1) <= 1, f"{trial} restarted from epoch 1 instead of its checkpoint: {sequences}"
        if trial in shown["retries"]:
            # It finished on the surviving node, which it reached with the progress of its checkpoint.
            assert rs[-1]["node_id"] != busy[0], f"{trial} finished on the node that was killed: {sequences}"
            moved = next(r["epoch"] for r in rs if r["node_id"] == rs[-1]["node_id"])
            assert moved > 1, f"{trial} restarted from epoch 1 on the surviving node: {sequences}"
    print(f"\nnode loss: killed the node (raylet pid {victim}) of a running trial; restarts {shown['retries']}")
    print(f"node loss: (epoch, node) per trial {sequences}")


def test_killed_driver_then_resume(cluster: LocalCluster, s3_server: S3Server, tmp_path: Path) -> None:
    proc = start_driver(
        tmp_path,
        *("--address", cluster.address, "--name", "driverkill", "--num-samples", "3", "--max-epochs", "6"),
        *("--sync-period-s", "2"),
    )
    # The driver uploads result histories every --sync-period-s (Tune's default, 300 s, left none in storage here).
    wait_for(
        lambda: len(checkpoints(s3_server, "driverkill")) >= 4 and any(trial_results(s3_server, "driverkill").values()),
        240,
        "4 checkpoints and a result history in S3",
    )
    proc.kill()
    proc.wait(timeout=30)
    before = trial_results(s3_server, "driverkill")
    # What retention may have done just before the kill, made certain: every checkpoint but each trial's newest is
    # pruned, so the stored snapshot most likely names a pruned one (Tune refused such restores when folders were
    # deleted; a trial failed four times over "does not exist on storage anymore").
    pruned = prune_all_but_newest(s3_server, "driverkill")
    print(f"\ndriver kill: pruned {pruned} checkpoints before the resume")
    # A resumed driver usually runs on another machine (a new head pod): none of the killed driver's local files
    # (Tune's staging folder, with the trials' full result histories) is left to it. Everything comes from storage.
    staging = {p.resolve() for p in Path(cluster.temp_dir).glob("h/session_*/artifacts")}  # session_latest: a link
    assert staging, f"no driver staging folder under {cluster.temp_dir}"
    for folder in staging:
        shutil.rmtree(folder)
    resumed = run_cli("resume", f"{STORAGE}/driverkill", "--address", cluster.address, "--json")
    summary = finished_summary(resumed, None)
    assert summary["trials"] == {"total": 3, "finished": 3, "stopped": 0, "errored": 0}, trial_errors(
        s3_server, "driverkill"
    )
    for trial, results in trial_results(s3_server, "driverkill").items():
        epochs = [r["epoch"] for r in results]
        print(f"\ndriver kill: {trial} epochs before kill {[r['epoch'] for r in before.get(trial, [])]}, all {epochs}")
        assert epochs.count(1) <= 1, f"{trial} restarted from epoch 1 after the resume: {epochs} (before: {before})"
        done = before.get(trial, [])
        assert epochs[: len(done)] == [r["epoch"] for r in done], f"{trial} lost history: {epochs} (before: {done})"
        if done:  # resumed from its newest checkpoint, which is at least as new as its last logged result
            assert epochs.count(done[-1]["epoch"]) == 1, f"{trial} trained twice: {epochs} (pruned {pruned})"
        assert epochs[-1] == 6
    # Idempotent: resuming (or running with --resume-if-exists) a finished experiment prints it and changes nothing.
    again = run_cli("run", "--storage", STORAGE, "--name", "driverkill", "--resume-if-exists", "--json", timeout=120)
    assert json.loads(again.stdout)["best"] == summary["best"]
    assert "nothing to resume" in again.stderr


def run_through_outage(
    cluster: LocalCluster, s3_server: S3Server, tmp_path: Path, name: str, seconds: float, *args: str
) -> Any:
    """A 2-trial run whose S3 server stops for ``seconds`` once a checkpoint per trial is in; its summary."""
    proc = start_driver(tmp_path, "--address", cluster.address, "--name", name, "--num-samples", "2", *args)
    wait_for(lambda: len(checkpoints(s3_server, name)) >= 2, 240, "2 checkpoints in S3")
    s3_server.stop()
    time.sleep(seconds)
    s3_server.start()
    proc.wait(timeout=400 + seconds)
    return finished_summary(proc, tmp_path)


def test_a_90_s_s3_outage_is_waited_out(cluster: LocalCluster, s3_server: S3Server, tmp_path: Path) -> None:
    """Longer than the S3 client's retries (6 attempts, about 11-27 s of backoff): trials wait for storage before
    they checkpoint, the driver keeps going, and the run ends with every epoch of every trial in its history."""
    summary = run_through_outage(
        cluster, s3_server, tmp_path, "outage90", 90, "--max-epochs", "6", "--sync-period-s", "5"
    )
    assert summary["trials"] == {"total": 2, "finished": 2, "stopped": 0, "errored": 0}, trial_errors(
        s3_server, "outage90"
    )
    # What the trials printed is in their workers' logs on the nodes.
    said = [
        line
        for out in Path(cluster.temp_dir).rglob("worker-*.out")
        for line in out.read_text(errors="replace").splitlines()
        if "lt-exp/failures/outage90/" in line and "reachable" in line
    ]
    assert any("unreachable" in line for line in said) and any("reachable again after" in line for line in said), said
    print(f"\nlong outage: {said[-1]}")
    for trial, results in trial_results(s3_server, "outage90").items():
        epochs = [r["epoch"] for r in results]
        assert sorted(set(epochs)) == list(range(1, 7)), f"{trial}: {epochs}"


def test_s3_outage_mid_run(cluster: LocalCluster, s3_server: S3Server, tmp_path: Path) -> None:
    summary = run_through_outage(cluster, s3_server, tmp_path, "outage", 6, "--max-epochs", "8")
    assert summary["trials"]["finished"] == 2 and summary["trials"]["errored"] == 0
    best = summary["best"]["checkpoint"]
    assert best.startswith("lt-exp/failures/outage/")
    assert any(k == f"{best.split('/', 1)[1]}/trial_state.pt" for k in keys(s3_server, "failures/outage/")), (
        f"the best checkpoint {best} named by the summary is not in the bucket"
    )
    for key in ("best.json", "best_model/model.pt"):
        assert f"failures/outage/{key}" in keys(s3_server, "failures/outage/")
