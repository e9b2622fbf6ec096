"""Packed trials on a real local Ray (docs/design/packing.md): each member is a Tune trial, ASHA and PBT act on
members exactly as on trials, a stopped member's slot goes to the next trial, and a resumed run restores every
member. Packs run on CPU here only because tests switch the refusal off (``LSTM_TUNE_PACK_ON_CPU``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.api.launch import run_experiment
from cluster.plan.options import (
    PACK_ON_CPU,
    CheckpointOptions,
    OptionError,
    ResourceOptions,
    RunOptions,
    SchedulerOptions,
)
from tests.helpers import DirSession
from trainables import metrics as M
from trainables.checkpoint import load_checkpoint
from trainables.config import TrialConfig
from trainables.data.handle import DataHandle
from trainables.data.loader import load_forecast_data
from trainables.loop import run_trial
from trainables.model import forecaster_from_info
from trainables.pack_server import PACK_MARKER, PackServer

pytestmark = pytest.mark.ray
QUIET = Console(stderr=True, quiet=True)

SPACE: dict[str, Any] = {
    "task": "forecast",
    "params": {
        "hidden_size": {"distribution": "choice", "values": [8]},
        "window": {"distribution": "choice", "values": [12]},
        "batch_size": {"distribution": "choice", "values": [256]},
        "lr": {"distribution": "loguniform", "low": 3.0e-4, "high": 3.0e-2},
        "dropout": {"distribution": "uniform", "low": 0.0, "high": 0.3},
    },
    "pbt": {"mutations": {"lr": {"distribution": "loguniform", "low": 3.0e-4, "high": 3.0e-2}}},
}


def _results(exp: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        d.name.split("_")[2] + "_" + d.name.split("_")[3]: [
            json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()
        ]
        for d in exp.glob("forecast_trainable_*")
        if (d / "result.json").is_file()
    }


def _events(exp: Path) -> list[dict[str, Any]]:
    launches = json.loads((exp / "packs.json").read_text())
    return [e for packs in launches for p in packs for e in p["events"]]


def _options(tmp_path: Path, prepared_data: str, name: str, **kw: Any) -> RunOptions:
    base: dict[str, Any] = {
        "storage": str(tmp_path),
        "name": name,
        "data": prepared_data,
        "space": SPACE,
        "epoch_samples": 4096,
        "resources": ResourceOptions(pack=2),
    }
    return RunOptions(**{**base, **kw})


@pytest.fixture
def packs_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PACK_ON_CPU, "1")


def test_asha_stops_members_and_their_slots_go_to_new_trials(
    ray_local: None, packs_on_cpu: None, prepared_data: str, tmp_path: Path
) -> None:
    asha = SchedulerOptions(kind="asha", grace_period=1, reduction_factor=2)
    keep = CheckpointOptions(num_to_keep=2, keep_stopped=5)
    opts = _options(tmp_path, prepared_data, "asha", num_samples=5, max_epochs=4, scheduler=asha, checkpoints=keep)
    summary = run_experiment(opts, console=QUIET)
    exp = tmp_path / "asha"
    assert summary.trials["total"] == 5 and summary.trials["errored"] == 0, summary.trials
    assert summary.trials["stopped"] >= 1, summary.trials
    results = _results(exp)
    # Each member is a trial with its own history; every epoch came from a pack round of at most 2 members.
    for history in results.values():
        assert [r[M.EPOCH] for r in history] == list(range(1, len(history) + 1))
        assert all(1 <= r[M.PACK_MEMBERS] <= 2 for r in history)
        assert history[0][M.PACK_JOIN] == "fresh"
    # ASHA's recorded rung decisions match what the members did: a stopped one trained no round past its rung.
    rungs = [json.loads(line) for line in (exp / "asha_rungs.jsonl").read_text().splitlines()]
    for r in rungs:
        last = results[r["trial"]][-1][M.EPOCH]
        assert (last == r["rung"]) if r["decision"] == "stopped" else (last > r["rung"]), r
    events = _events(exp)
    rounds = [e for e in events if e["event"] == "round"]
    assert all(len(e["members"]) <= 2 for e in rounds)
    joins = [e for e in events if e["event"] == "join"]
    assert len({e["member"] for e in joins}) == 5, "5 trials through 2 slots: freed slots were taken again"
    assert {e["slot"] for e in joins} == {0, 1}
    trained = {m for e in rounds for m in e["members"]}
    for trial, history in results.items():
        member_rounds = sum(trial in e["members"] for e in rounds)
        assert member_rounds == len(history), f"{trial}: {member_rounds} rounds trained, {len(history)} reported"
    assert trained == set(results)
    # Each member has its own TensorBoard run with its epochs' scalars (the pack's among them) and its HParams row.
    runs = sorted(p for p in (exp / "tensorboard").iterdir() if p.is_dir())
    assert len(runs) == 5, [p.name for p in runs]
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {M.VAL_LOSS, M.VAL_RMSE, M.TRAIN_LOSS, M.PACK_MEMBERS, M.PACK_SAMPLES_PER_SECOND} <= tags, tags
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    # A member's checkpoint is an ordinary forecaster checkpoint: it loads into the unpacked model.
    payload = load_checkpoint(summary.best.checkpoint)
    model = forecaster_from_info(payload["model_config"])
    model.load_state_dict(payload["model"])
    assert summary.best.test.rmse < summary.baselines["persistence"]["test"].rmse * 1.2


def test_pbt_exploits_copy_the_donor_into_the_members_slot(
    ray_local: None, packs_on_cpu: None, prepared_data: str, tmp_path: Path
) -> None:
    pbt = SchedulerOptions(kind="pbt", perturbation_interval=1, quantile_fraction=0.5)
    summary = run_experiment(
        _options(tmp_path, prepared_data, "pbt", num_samples=2, max_epochs=4, scheduler=pbt), console=QUIET
    )
    exp = tmp_path / "pbt"
    assert summary.trials["errored"] == 0 and summary.pbt_exploits >= 1, (summary.trials, summary.pbt_exploits)
    lineage = [json.loads(line) for line in (exp / "pbt_lineage.jsonl").read_text().splitlines()]
    # A join with another member's checkpoint is an exploit (a trial Tune paused and resumed rejoins with its own).
    joins = [e for e in _events(exp) if e["event"] == "join" and e["donor"] not in (None, e["member"])]
    assert sorted((e["member"], e["donor"]) for e in joins) == sorted(
        (r["trial"], r["cloned_from"]) for r in lineage
    ), (joins, lineage)
    assert all(e["how"] in ("in place", "checkpoint") for e in joins), joins
    print(f"\npacked PBT: {len(lineage)} exploit(s), joined {[e['how'] for e in joins]}")
    results = _results(exp)
    for record, join in zip(sorted(lineage, key=lambda r: r["time"]), sorted(joins, key=lambda e: e["t"]), strict=True):
        history = results[record["trial"]]
        assert any(r.get(M.PACK_JOIN) in ("in place", "checkpoint") for r in history), record
        if join["epoch"] < 4:  # a donor already at the last epoch leaves nothing to train with the new values
            assert record["new"]["lr"] in {r["config"]["lr"] for r in history}, (
                record,
                [(r[M.EPOCH], r["config"]["lr"]) for r in history],
            )


def test_a_killed_driver_resumes_every_member_from_its_checkpoint(prepared_data: str, tmp_path: Path) -> None:
    """The whole head goes (driver and its local Ray, killed as a process group); ``lstm-tune resume`` starts
    fresh packs that the members rejoin from their checkpoints."""
    env = {**os.environ, PACK_ON_CPU: "1"}
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    args = [sys.executable, "-m", "cluster.cli", "run", "--storage", str(tmp_path), "--name", "kill"]
    args += ["--data", prepared_data, "--space", str(space), "--pack", "2", "--num-samples", "2"]
    args += ["--max-epochs", "20", "--epoch-samples", "4096", "--scheduler", "fifo", "--sync-period-s", "1"]
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    exp = tmp_path / "kill"
    deadline = time.time() + 240
    while time.time() < deadline:
        done = {t: len(h) for t, h in _results(exp).items()} if exp.exists() else {}
        if len(done) == 2 and all(n >= 2 for n in done.values()):
            break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t: len(h) for t, h in _results(exp).items()}
    assert all(2 <= n < 20 for n in before.values()), before
    resumed = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "resume", str(exp), "--json"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    after = _results(exp)
    for trial, history in after.items():
        epochs = [r[M.EPOCH] for r in history if not r.get(M.REPLAYED)]
        assert epochs[-1] == 20, (trial, epochs)
        joined = [(r[M.EPOCH], r[M.PACK_JOIN]) for r in history if M.PACK_JOIN in r]
        assert joined[0] == (1, "fresh") and joined[-1][1] == "checkpoint", (trial, joined)
        assert joined[-1][0] > 1, (trial, joined)
    print(f"\npacked resume: epochs at the kill {before}; after resume every member reached 20")


def test_pack_is_refused_without_a_gpu_before_any_trial(
    ray_local: None, prepared_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PACK_ON_CPU, raising=False)
    with pytest.raises(OptionError, match=r"--pack = 2: packing needs a CUDA GPU and the cluster has none"):
        run_experiment(_options(tmp_path, prepared_data, "refused", num_samples=1, max_epochs=1), console=QUIET)
    assert not list((tmp_path / "refused").glob("forecast_trainable_*"))


def test_a_space_a_pack_cannot_train_is_refused_before_any_trial(prepared_data: str, tmp_path: Path) -> None:
    space = {
        **SPACE,
        "params": {**SPACE["params"], "head": {"distribution": "choice", "values": ["linear", "decoder"]}},
    }
    with pytest.raises(ValueError, match=r"params.head = 'decoder' cannot be packed.*\(--pack = 2\)"):
        run_experiment(
            _options(tmp_path, prepared_data, "decoder", space=space, num_samples=1, max_epochs=1), console=QUIET
        )
    assert not (tmp_path / "decoder").exists() or not list((tmp_path / "decoder").glob("forecast_trainable_*"))


def _flat(lr: float) -> dict[str, Any]:
    return {"hidden_size": 8, "window": 12, "batch_size": 256, "lr": lr, "epoch_samples": 2048, "max_epochs": 6}


def _payload(out: dict[str, Any], epoch: int) -> dict[str, Any]:
    """What the member's checkpoint holds, as Tune hands it back (a PBT exploit, a resume)."""
    return {**out["state"], "state": {"epoch": epoch}, PACK_MARKER: out["marker"]}


def test_a_pack_server_keeps_slots_as_trials_need_them(ray_local: None, prepared_data: str) -> None:
    """One pack actor driven directly: lockstep rounds, an in-place exploit, a kept slot, eviction by process
    reuse and by idleness, a member sitting a round out."""
    import ray

    pack = (
        ray.remote(PackServer)
        .options(num_cpus=1, max_concurrency=100)
        .remote("t/h8/0", DataHandle(uri=prepared_data), _flat(1e-2), 2, 1.0)
    )
    assert ray.get(pack.join.remote("A", _flat(1e-2), None, "proc-a", None))["how"] == "fresh"
    assert ray.get(pack.join.remote("D", _flat(3e-3), None, "proc-d", None))["how"] == "fresh"
    a1, d1 = ray.get([pack.next_round.remote("A", 1), pack.next_round.remote("D", 1)])
    assert a1["pack"][M.PACK_ROUND] == d1["pack"][M.PACK_ROUND] == 1 and a1["pack"][M.PACK_MEMBERS] == 2
    assert a1["stats"]["samples"] == 2048 and d1["scores"][M.VAL_RMSE] > 0

    # PBT: A is restored from D's checkpoint with D's learning rate; D has not trained since, so its slot is copied.
    assert ray.get(pack.join.remote("A", _flat(3e-3), _payload(d1, 1), "proc-a", None))["how"] == "in place"
    a2, d2 = ray.get([pack.next_round.remote("A", 2), pack.next_round.remote("D", 2)])
    assert a2["stats"]["loss"] == d2["stats"]["loss"] and a2["scores"] == d2["scores"]
    for name, value in d2["state"]["model"].items():
        assert torch.equal(value, a2["state"]["model"][name]), name
    # D paused and back with its newest checkpoint: its slot is untouched since, so kept as it is.
    assert ray.get(pack.join.remote("D", _flat(3e-3), _payload(d2, 2), "proc-d", None))["how"] == "kept"
    # A stale checkpoint (D has trained past it) goes in through the file's weights instead.
    assert ray.get(pack.join.remote("A", _flat(3e-3), _payload(d1, 1), "proc-a", None))["how"] == "checkpoint"

    assert ray.get(pack.join.remote("C", _flat(1e-3), None, "proc-c", None))["full"]  # 2 slots, 2 live members
    # Tune reuses A's process for a new trial E: A's slot is E's at once.
    slot_a = next(e["slot"] for e in ray.get(pack.history.remote()) if e["member"] == "A" and e["event"] == "join")
    assert ray.get(pack.join.remote("E", _flat(1e-3), None, "proc-a", None)) == {"slot": slot_a, "how": "fresh"}
    with pytest.raises(ray.exceptions.RayTaskError, match="holds no slot"):
        ray.get(pack.next_round.remote("A", 2))
    # E never asks for a round (Tune stopped it): D waits the grace time, then trains alone; E sits it out.
    d3 = ray.get(pack.next_round.remote("D", 3))
    assert d3["pack"][M.PACK_MEMBERS] == 1
    with pytest.raises(ray.exceptions.RayTaskError, match="asked for epoch 9, holds epoch 3"):
        ray.get(pack.next_round.remote("D", 9))
    time.sleep(1.2)
    assert ray.get(pack.join.remote("C", _flat(1e-3), None, "proc-c", None))["how"] == "fresh"
    events = ray.get(pack.history.remote())
    why = {e["member"]: e["why"] for e in events if e["event"] == "leave"}
    assert why["A"] == "its process started another trial" and why["E"].startswith("idle for")
    assert any(e["event"] == "sat out" and e["member"] == "E" for e in events)
    ray.kill(pack)


def test_a_member_trains_as_its_unpacked_trial(ray_local: None, prepared_data: str, tmp_path: Path) -> None:
    """The pack draws a round's batches as the trial would draw its epoch's (from the pack's first configuration
    and the round), and a member starts from the weights its trial would build: alone in a pack, a configuration
    reports what the unpacked trial reports."""
    import ray

    flat = {**_flat(5e-3), "weight_decay": 1e-3, "grad_clip": 0.5, "l1": 1e-5, "max_epochs": 3}
    pack = ray.remote(PackServer).options(num_cpus=1).remote("t/alone/0", DataHandle(uri=prepared_data), flat, 2, 1.0)
    ray.get(pack.join.remote("A", flat, None, "proc-a", None))
    packed = [ray.get(pack.next_round.remote("A", epoch)) for epoch in (1, 2, 3)]
    ray.kill(pack)
    alone = DirSession(str(tmp_path / "alone"))
    run_trial(
        TrialConfig.from_flat(flat),
        load_forecast_data(DataHandle(uri=prepared_data)),
        alone,
        device=torch.device("cpu"),
    )
    assert len(alone.reports) == 3
    for out, report in zip(packed, alone.reports, strict=True):
        assert out["stats"]["loss"] == pytest.approx(report[M.TRAIN_LOSS], rel=1e-4)
        assert out["scores"][M.VAL_LOSS] == pytest.approx(report[M.VAL_LOSS], rel=1e-4)
        assert out["scores"][M.VAL_RMSE] == pytest.approx(report[M.VAL_RMSE], rel=1e-4)


def test_the_pack_throughput_script_measures_each_way(prepared_data: str) -> None:
    """benchmarks/pack_throughput.py on the CPU with small figures: the GPU run's script works end to end."""
    from benchmarks.pack_throughput import _way, pack_rounds, trial_rounds

    trial = trial_rounds(prepared_data, "cpu", rounds=2, samples=512)
    packed, peak = pack_rounds(prepared_data, "cpu", k=3, rounds=2, samples=512)
    assert len(trial) == len(packed) == 2 and all(t > 0 for t in trial + packed) and peak is None
    way = _way("pack 3", 3, [9.0, 2.0, 4.0], samples=512, peak=None)
    assert way.samples_per_s == pytest.approx(3 * 512 / 3.0) and way.per_model == pytest.approx(512 / 3.0)
    assert way.rounds == [2.0, 4.0]  # the warm-up round left out


def test_a_text_classifier_member_trains_as_its_unpacked_trial(
    ray_local: None, prepared_r8: str, tmp_path: Path
) -> None:
    """The same for a text classifier on Reuters R8: ragged documents in length-grouped batches, an embedding with
    its padding row, a bidirectional encoder and mean pooling."""
    import ray

    from trainables.data.text_loader import load_text_data

    flat = {
        "hidden_size": 16, "embedding_dim": 16, "bidirectional": True, "pooling": "mean", "batch_size": 64,
        "lr": 5e-3, "grad_clip": 1.0, "epoch_samples": 1024, "max_epochs": 2,
    }  # fmt: skip
    pack = ray.remote(PackServer).options(num_cpus=1).remote("t/text/0", DataHandle(uri=prepared_r8), flat, 2, 1.0)
    ray.get(pack.join.remote("A", flat, None, "proc-a", None))
    packed = [ray.get(pack.next_round.remote("A", epoch)) for epoch in (1, 2)]
    ray.kill(pack)
    alone = DirSession(str(tmp_path / "alone"))
    run_trial(
        TrialConfig.from_flat(flat), load_text_data(DataHandle(uri=prepared_r8)), alone, device=torch.device("cpu")
    )
    for out, report in zip(packed, alone.reports, strict=True):
        assert out["stats"]["loss"] == pytest.approx(report[M.TRAIN_LOSS], rel=1e-4)
        assert out["scores"][M.VAL_LOSS] == pytest.approx(report[M.VAL_LOSS], rel=1e-4)
        assert out["scores"][M.VAL_ACCURACY] == report[M.VAL_ACCURACY]
    assert out["model_info"]["task"] == "classify"
