"""Checkpoints: exact resume in a new process, PBT's mutated values win after a restore, unsafe payloads refused,
retention's pruned markers and stale experiment state followed to the newest written state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
import torch

from cluster.tune.retention import checkpoint_usage, prune
from tests.helpers import DirSession
from trainables import metrics as M
from trainables.checkpoint import (
    ADOPTED,
    PRUNED_FILE,
    CheckpointError,
    CheckpointPruned,
    TrainState,
    load_checkpoint,
)
from trainables.config import ModelConfig, TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.loop import apply_hyperparameters, run_trial, trial_done
from trainables.model import build_model
from trainables.ray_api import Checkpoint
from trainables.restore import restore_state
from trainables.storage import Location

REPO = Path(__file__).resolve().parents[1]
BASE = {"hidden_size": 16, "num_layers": 2, "dropout": 0.1, "lr": 3e-3, "batch_size": 512, "window": 12, "seed": 7}

RESUME_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from tests.helpers import DirSession
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.loop import run_trial
data_uri, ckpt, out, flat = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
session = DirSession(out, resume_from=ckpt)
data = load_forecast_data(DataHandle(uri=data_uri))
run_trial(TrialConfig.from_flat(flat), data, session, device=torch.device("cpu"))
print(json.dumps(session.reports))
"""


def train(data_uri: str, root: Path, flat: dict[str, Any], resume_from: str | None = None) -> DirSession:
    session = DirSession(str(root), resume_from=resume_from)
    cfg = TrialConfig.from_flat(flat)
    run_trial(cfg, load_forecast_data(DataHandle(uri=data_uri)), session, device=torch.device("cpu"))
    return session


@pytest.mark.integration
def test_resume_in_new_process_matches_uninterrupted(prepared_data: str, tmp_path: Path) -> None:
    straight = train(prepared_data, tmp_path / "straight", {**BASE, "max_epochs": 3})
    first = train(prepared_data, tmp_path / "first", {**BASE, "max_epochs": 2})
    assert [r[M.EPOCH] for r in first.reports] == [1, 2]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RESUME_SCRIPT,
            prepared_data,
            str(tmp_path / "first" / "epoch-2"),
            str(tmp_path / "resumed"),
            json.dumps({**BASE, "max_epochs": 3}),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r[M.EPOCH] for r in resumed] == [3], "resume must continue at epoch 3, not restart"
    for key in (M.TRAIN_LOSS, M.VAL_LOSS):
        assert resumed[0][key] == pytest.approx(straight.reports[2][key], rel=1e-6, abs=1e-9), (
            f"{key} after resume differs from uninterrupted training"
        )


def test_pbt_restore_applies_mutated_hyperparameters(prepared_data: str, tmp_path: Path) -> None:
    donor = train(prepared_data, tmp_path / "donor", {**BASE, "max_epochs": 1, "lr": 1e-3, "weight_decay": 0.0})
    assert donor.reports[0][M.LEARNING_RATE] == pytest.approx(1e-3)
    payload = load_checkpoint(str(tmp_path / "donor" / "epoch-1"))
    assert payload["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)

    # The same restore a PBT exploit does, with mutated values in the config.
    mutated = TrialConfig.from_flat({**BASE, "lr": 7e-3, "weight_decay": 1e-4, "dropout": 0.3})
    data = load_forecast_data(DataHandle(uri=prepared_data))
    model = build_model(mutated.model, n_features=data.n_features, target_index=data.fitted.target_index)
    optimizer = torch.optim.AdamW(model.parameters(), lr=mutated.optim.lr)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3), "load_state_dict restores the donor's lr"
    apply_hyperparameters(model, optimizer, mutated)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(7e-3)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)
    assert model.lstm.dropout == pytest.approx(0.3) and model.head_dropout.p == pytest.approx(0.3)

    # And through the loop: the first epoch after the restore runs and reports the mutated lr.
    clone = train(
        prepared_data,
        tmp_path / "clone",
        {**BASE, "max_epochs": 2, "lr": 7e-3, "weight_decay": 1e-4},
        resume_from=str(tmp_path / "donor" / "epoch-1"),
    )
    assert [r[M.EPOCH] for r in clone.reports] == [2]
    assert clone.reports[0][M.LEARNING_RATE] == pytest.approx(7e-3)
    assert load_checkpoint(str(tmp_path / "clone" / "epoch-2"))["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        7e-3
    )


class AdoptedSession(DirSession):
    """Restores as :func:`trainables.restore.restore_state` does from a checkpoint found in storage, not from Tune."""

    def restore(self) -> dict[str, Any] | None:
        payload = super().restore()
        return None if payload is None else {**payload, ADOPTED: True}


def test_a_finished_trial_restored_from_storage_reports_its_final_result_again(
    prepared_data: str, tmp_path: Path
) -> None:
    """A driver killed after a trial wrote its last checkpoint but before Tune took that result: on resume the trial
    has nothing to train, and without a new report Tune ends it on an older result, counted as stopped early."""
    done = train(prepared_data, tmp_path / "done", {**BASE, "max_epochs": 2})
    last = done.reports[-1]
    assert load_checkpoint(str(tmp_path / "done" / "epoch-2"))["report"][M.VAL_LOSS] == last[M.VAL_LOSS]
    flat = {**BASE, "max_epochs": 2}
    data = load_forecast_data(DataHandle(uri=prepared_data))
    cfg = TrialConfig.from_flat(flat)

    adopted = AdoptedSession(str(tmp_path / "adopted"), resume_from=str(tmp_path / "done" / "epoch-2"))
    state = run_trial(cfg, data, adopted, device=torch.device("cpu"), extra_metrics={M.NODE_ID: "new-node"})
    (replay,) = adopted.reports
    assert state.epoch == 2 and replay[M.EPOCH] == 2 and replay[M.REPLAYED] == 1
    assert replay[M.VAL_LOSS] == last[M.VAL_LOSS] and replay[M.TRAIN_LOSS] == last[M.TRAIN_LOSS]
    assert replay[M.NODE_ID] == "new-node", "where the result was published now, not where it was trained"
    assert replay[M.WALL_CLOCK] >= last[M.WALL_CLOCK]
    again = load_checkpoint(str(tmp_path / "adopted" / "epoch-2"))
    assert again["state"] == load_checkpoint(str(tmp_path / "done" / "epoch-2"))["state"]

    # Tune handed the checkpoint itself (it holds that result already, e.g. a PBT donor's): nothing is published.
    given = DirSession(str(tmp_path / "given"), resume_from=str(tmp_path / "done" / "epoch-2"))
    assert run_trial(cfg, data, given, device=torch.device("cpu")).epoch == 2 and given.reports == []
    # Adopted with budget left (the killed driver's trial was mid-run): it trains on, nothing is replayed.
    more = AdoptedSession(str(tmp_path / "more"), resume_from=str(tmp_path / "done" / "epoch-2"))
    run_trial(TrialConfig.from_flat({**flat, "max_epochs": 3}), data, more, device=torch.device("cpu"))
    assert [r[M.EPOCH] for r in more.reports] == [3] and M.REPLAYED not in more.reports[0]


def test_trial_done_counts_budget_and_patience() -> None:
    cfg = TrialConfig.from_flat({**BASE, "max_epochs": 4, "patience": 2})
    assert not trial_done(TrainState(epoch=3, bad_epochs=1), cfg)
    assert trial_done(TrainState(epoch=4), cfg)
    assert trial_done(TrainState(epoch=2, bad_epochs=2), cfg), "early stopping ran out of patience"
    assert not trial_done(TrainState(epoch=2, bad_epochs=9), TrialConfig.from_flat({**BASE, "max_epochs": 4}))


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/lstm-tune-payload-ran"


def test_checkpoint_with_code_payload_is_refused(tmp_path: Path) -> None:
    if os.path.exists(MARKER):
        os.remove(MARKER)
    model = build_model(ModelConfig(hidden_size=4), n_features=3, target_index=0)
    torch.save({"format_version": 1, "model": model.state_dict(), "evil": _Payload()}, tmp_path / "trial_state.pt")
    with pytest.raises(
        CheckpointError, match=r"is not a valid lstm-tune file and may be unsafe: it holds objects other than tensors"
    ):
        load_checkpoint(str(tmp_path))
    assert not os.path.exists(MARKER), "the payload ran"


def test_a_tampered_model_is_refused_naming_the_file_and_never_advising_an_unsafe_load(tmp_path: Path) -> None:
    from trainables.export import load_forecaster

    if os.path.exists(MARKER):
        os.remove(MARKER)
    folder = tmp_path / "best_model"
    folder.mkdir()
    torch.save({"format_version": 2, "members": [_Payload()]}, folder / "model.pt")
    with pytest.raises(CheckpointError) as refused:
        load_forecaster(str(folder))
    message = str(refused.value)
    assert f"{folder / 'model.pt'} is not a valid lstm-tune file and may be unsafe" in message
    assert "posix.system" in message and "weights_only" not in message and "will likely succeed" not in message
    assert not os.path.exists(MARKER), "the payload ran"
    (folder / "model.pt").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"model.pt is not a valid lstm-tune (model|file)"):
        load_forecaster(str(folder))


def test_other_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no trial_state\.pt"):
        load_checkpoint(str(tmp_path))
    torch.save({"format_version": 99}, tmp_path / "trial_state.pt")
    with pytest.raises(CheckpointError, match="format_version = 99"):
        load_checkpoint(str(tmp_path))


def fake_checkpoint(folder: Path, epoch: int, written: int) -> None:
    folder.mkdir(parents=True)
    torch.save({"format_version": 1, "state": {"epoch": epoch}}, folder / "trial_state.pt")
    os.utime(folder / "trial_state.pt", ns=(written, written))


def test_restore_follows_pruned_and_stale_checkpoints(tmp_path: Path) -> None:
    t = 1_800_000_000 * 10**9
    trial, donor = tmp_path / "exp" / "trial_a", tmp_path / "exp" / "trial_b"
    for i in range(3):
        fake_checkpoint(trial / f"checkpoint_00000{i}", epoch=i + 1, written=t + i * 10**9)
    fs = pafs.LocalFileSystem()
    own = Location(uri=str(trial), fs=fs, path=str(trial))

    def epoch_of(given: Path | None, where: Location | None = own) -> int | None:
        state = restore_state(Checkpoint.from_directory(str(given)) if given else None, where)
        if state is not None:  # marked when found in storage rather than handed by Tune intact
            assert state.get(ADOPTED, False) == (given is None or (given / PRUNED_FILE).exists()), given
        return None if state is None else int(state["state"]["epoch"])

    # An intact checkpoint is used as Tune gives it, even when newer ones exist (a trial on a lost node may have
    # written them after Tune stopped listening); with none given, the newest written one.
    assert epoch_of(trial / "checkpoint_000000") == 1
    assert epoch_of(None) == 3
    # Pruned while Tune's snapshot still named it: the marker stays, the state goes, restore reads the newest.
    assert prune(fs, str(trial / "checkpoint_000002"), reason="test")
    assert not prune(fs, str(trial / "checkpoint_000002"), reason="test"), "pruning twice deletes nothing"
    assert sorted(p.name for p in (trial / "checkpoint_000002").iterdir()) == [PRUNED_FILE]
    with pytest.raises(CheckpointPruned):
        load_checkpoint(str(trial / "checkpoint_000002"))
    assert epoch_of(trial / "checkpoint_000002") == 2
    # A resumed run numbering from a stale index overwrote checkpoint_000000 last: write time beats index.
    fake_checkpoint(trial / "checkpoint_000003", epoch=2, written=t)
    os.utime(trial / "checkpoint_000000" / "trial_state.pt", ns=(t + 99 * 10**9,) * 2)
    assert epoch_of(trial / "checkpoint_000002") == 1
    assert epoch_of(None) == 1
    # Without a folder of its own (no experiment_uri) and nothing given, a trial starts fresh.
    assert epoch_of(None, None) is None
    # A PBT donor's checkpoint, pruned after the exploit chose it: the donor's newest, not the recipient's.
    fake_checkpoint(donor / "checkpoint_000004", epoch=5, written=t)
    fake_checkpoint(donor / "checkpoint_000005", epoch=6, written=t + 10**9)
    assert epoch_of(donor / "checkpoint_000004") == 5
    prune(fs, str(donor / "checkpoint_000004"), reason="test")
    assert epoch_of(donor / "checkpoint_000004") == 6
    prune(fs, str(donor / "checkpoint_000005"), reason="test")
    with pytest.raises(CheckpointError, match="was pruned and no newer one exists"):
        epoch_of(donor / "checkpoint_000005")
    loc = Location(uri=str(tmp_path / "exp"), fs=fs, path=str(tmp_path / "exp"))
    kept, size = checkpoint_usage(loc)
    assert kept == 3 and size == sum(f.stat().st_size for f in (tmp_path / "exp").rglob("trial_state.pt")), (
        "usage counts folders that still hold a state, and only their bytes"
    )


class TagRecorder:
    """Stands in for TrialLogger: which tags would reach TensorBoard."""

    def __init__(self) -> None:
        self.tags: set[str] = set()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.tags |= set(metrics)


def test_epochs_report_their_timing_and_the_first_one_the_start_up(prepared_data: str, tmp_path: Path) -> None:
    import time

    from trainables.loop import Startup

    data = load_forecast_data(DataHandle(uri=prepared_data))
    session, logger = DirSession(str(tmp_path)), TagRecorder()
    before = time.time()
    startup = Startup(entered=time.perf_counter() - 0.5, process_s=2.0, data_s=0.1)
    run_trial(
        TrialConfig.from_flat({**BASE, "max_epochs": 2}),
        data,
        session,
        device=torch.device("cpu"),
        startup=startup,
        logger=logger,  # type: ignore[arg-type]
    )
    first, second = session.reports
    assert first[M.STARTUP_PROCESS] == 2.0 and first[M.STARTUP_DATA] == 0.1
    assert first[M.STARTUP_BUILD] >= 0.4 and first[M.STARTUP_TOTAL] >= 2.5
    assert first[M.STARTUP_TOTAL] == pytest.approx(2.0 + 0.1 + first[M.STARTUP_BUILD])
    assert not any(k in second for k in M.STARTUP_METRICS)
    for r in session.reports:
        assert r[M.TRAIN_SECONDS] > 0 and r[M.TRAIN_CPU_SECONDS] > 0 and r[M.EVAL_SECONDS] > 0
    assert before < first[M.WALL_CLOCK] < second[M.WALL_CLOCK] < time.time()
    # A Unix time is no curve: TensorBoard gets the durations, not the clock.
    assert M.TRAIN_SECONDS in logger.tags and M.STARTUP_TOTAL in logger.tags and M.WALL_CLOCK not in logger.tags


@pytest.mark.integration
def test_process_age_counts_from_the_process_start() -> None:
    code = "import time; time.sleep(1.0); from trainables.trainable import process_age_s; print(process_age_s())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert 1.0 <= float(out.stdout) < 30
