"""One driver per experiment: the lease at its root (cluster/plan/lease.py), on local disk and on S3."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.plan.lease import LEASE_FILE, LeaseHeldError, acquire
from tests.s3server import S3Server
from trainables.storage import Location, resolve


def _race(uri: str, barrier: object, wins: object, endpoint: str | None) -> None:
    if endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    barrier.wait()  # type: ignore[attr-defined]
    try:
        lease = acquire(resolve(uri), "run", renew=False)
    except LeaseHeldError:
        return
    wins.put(lease.owner)  # type: ignore[attr-defined]
    time.sleep(1.0)  # held while the others try


def race(uri: str, drivers: int = 6, endpoint: str | None = None) -> int:
    """``drivers`` processes acquire at one moment: how many got the lease."""
    ctx = multiprocessing.get_context("spawn")
    barrier, wins = ctx.Barrier(drivers), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(uri, barrier, wins, endpoint)) for _ in range(drivers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    won = 0
    while not wins.empty():
        wins.get()
        won += 1
    return won


@pytest.mark.integration
def test_of_drivers_starting_together_exactly_one_gets_the_experiment(tmp_path: Path) -> None:
    for attempt in range(3):
        assert race(str(tmp_path / f"exp{attempt}")) == 1


@pytest.mark.integration
def test_on_s3_exactly_one_gets_it_and_an_expired_lease_goes_to_one_taker(s3_server: S3Server) -> None:
    """Conditional writes on the real server: If-None-Match to create, If-Match to renew and take over."""
    for attempt in range(3):
        assert race(f"s3://lt-exp/lease-race-{attempt}", endpoint=s3_server.endpoint) == 1
    root = resolve("s3://lt-exp/lease-expiry")
    stale = acquire(root, "run", ttl=0.5, renew=False)
    with pytest.raises(LeaseHeldError, match="s3://lt-exp/lease-expiry is in use"):
        acquire(root, "run", renew=False)
    time.sleep(0.8)
    taken = acquire(root, "resume", ttl=2.0)  # renewed every 0.5 s through If-Match
    time.sleep(1.5)
    body = json.loads(s3_server.client().get_object(Bucket="lt-exp", Key=f"lease-expiry/{LEASE_FILE}")["Body"].read())
    assert body["owner"] == taken.owner and taken.lost is None
    stale.release()  # not its lease any more: left alone
    taken.release()
    listed = s3_server.client().list_objects_v2(Bucket="lt-exp", Prefix="lease-expiry/")
    assert listed.get("KeyCount", 0) == 0, "a released lease leaves nothing"


def test_a_held_lease_is_refused_naming_the_experiment_and_released_leaves_nothing(tmp_path: Path) -> None:
    root = resolve(str(tmp_path / "runs" / "exp"))
    lease = acquire(root, "run")
    with pytest.raises(LeaseHeldError, match=r"experiment .*/runs/exp is in use: another driver \(run on .*, pid "):
        acquire(root, "resume")
    body = json.loads((tmp_path / "runs" / "exp" / LEASE_FILE).read_text())
    assert set(body) == {"owner", "purpose", "host", "pid", "renewed", "expires"}
    lease.release()
    assert not (tmp_path / "runs" / "exp").exists(), "a released lease leaves no folder it made"
    acquire(root, "run", renew=False).release()


def test_renewal_keeps_it_and_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    root = resolve(str(tmp_path / "exp"))
    kept = acquire(root, "run", ttl=1.2)  # renewed every 0.3 s
    time.sleep(2.0)
    with pytest.raises(LeaseHeldError):
        acquire(root, "run", renew=False)
    kept.release()
    stale = acquire(root, "run", ttl=0.5, renew=False)
    time.sleep(0.8)
    taken = acquire(root, "resume", renew=False)
    assert json.loads((tmp_path / "exp" / LEASE_FILE).read_text())["owner"] == taken.owner
    stale.release()  # no longer its lease: left alone
    assert json.loads((tmp_path / "exp" / LEASE_FILE).read_text())["owner"] == taken.owner


@pytest.mark.integration
def test_a_killed_drivers_lease_is_taken_at_once_here_and_after_a_silent_wait_elsewhere(tmp_path: Path) -> None:
    root = resolve(str(tmp_path / "exp"))
    code = "from cluster.plan.lease import acquire; from trainables.storage import resolve; "
    code += f"acquire(resolve({str(root.uri)!r}), 'run', renew=False); print('held', flush=True)"
    holder = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "held" in holder.stdout  # the process has exited without releasing: its pid is gone
    acquire(root, "resume", renew=False)
    # A holder on another host cannot be checked by pid: a resume watches for a renewal first.
    path = tmp_path / "exp" / LEASE_FILE
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "owner": "elsewhere", "host": "another-node", "expires": time.time() + 60}))
    with pytest.raises(LeaseHeldError, match="another-node"):
        acquire(root, "run", renew=False)  # a new run does not wait
    started = time.monotonic()
    acquire(root, "resume", renew=False, wait=1.5)
    assert 1.4 < time.monotonic() - started < 5


def test_a_renewing_holder_elsewhere_keeps_it_against_a_waiting_resume(tmp_path: Path) -> None:
    root: Location = resolve(str(tmp_path / "exp"))
    held = acquire(root, "run", ttl=2.0)  # renews every 0.5 s
    path = tmp_path / "exp" / LEASE_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "host": "another-node"}))
    started = time.monotonic()
    with pytest.raises(LeaseHeldError):
        acquire(root, "resume", renew=False, wait=10.0)
    assert time.monotonic() - started < 3, "refused as soon as the holder renewed"
    held.release()


@pytest.mark.ray
@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_runs_with_one_name_at_one_moment_one_proceeds(where: str, s3_server: S3Server, tmp_path: Path) -> None:
    storage = str(tmp_path / "runs") if where == "local" else "s3://lt-exp/lease-cli"
    args = [sys.executable, "-m", "cluster.cli", "run", "--storage", storage, "--name", "same", "--space"]
    args += ["forecast-small", "--scheduler", "fifo", "--num-samples", "1", "--max-epochs", "1"]
    args += ["--epoch-samples", "512", "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RAY_ADDRESS", None)
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    outs = [p.communicate(timeout=400) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [(p.returncode, err[-2000:]) for p, (_, err) in zip(procs, outs, strict=True)]
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    line = loser.strip().splitlines()[-1]
    assert line.startswith("error: experiment ") and "/same is in use: another driver (run on " in line, loser
    assert "Traceback" not in loser
    winner = next(json.loads(out) for p, (out, _) in zip(procs, outs, strict=True) if p.returncode == 0)
    assert winner["trials"]["total"] == 1
    if where == "local":
        trials = [d for d in (tmp_path / "runs" / "same").glob("forecast_trainable_*") if d.is_dir()]
        assert len(trials) == 1, trials
        assert not (tmp_path / "runs" / "same" / LEASE_FILE).exists(), "released at the end"
