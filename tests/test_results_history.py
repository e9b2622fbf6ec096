"""A trial restarted from a checkpoint keeps its whole history in storage (``result.json``, ``progress.csv``): real
Ray Tune, the real S3 server, the loggers lstm-tune runs with."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ray import tune
from ray.tune import Checkpoint, FailureConfig, RunConfig, Tuner

from cluster.tune.loggers import CsvResults, JsonResults, last_csv_epoch, last_json_epoch, result_loggers
from tests.s3server import S3Server
from trainables import metrics as M
from trainables.storage import read_bytes, resolve, write_bytes_atomic

EXPERIMENTS = "s3://lt-exp/history"


def fails_once_at_epoch_4(config: dict[str, Any]) -> None:
    """Five epochs with a checkpoint each; the first attempt dies at epoch 4, after leaving in storage what Tune's
    periodic upload leaves there: the history as of epoch 1."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads(open(os.path.join(folder, "state.json")).read())["epoch"]
    for epoch in range(start + 1, 6):
        if epoch == 4 and checkpoint is None:
            trial = resolve(config["experiment"]).child(os.path.basename(tune.get_context().get_trial_dir()))
            write_bytes_atomic(trial.child("result.json"), json.dumps({"epoch": 1}).encode() + b"\n")
            write_bytes_atomic(trial.child("progress.csv"), b"epoch\n1\n")
            raise RuntimeError("node lost")
        folder = tempfile.mkdtemp()
        with open(os.path.join(folder, "state.json"), "w") as f:
            f.write(json.dumps({"epoch": epoch}))
        tune.report({"epoch": epoch}, checkpoint=Checkpoint.from_directory(folder))


@pytest.mark.ray
def test_restarted_trial_keeps_its_history(
    ray_local: None, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    root = resolve(EXPERIMENTS)
    results = Tuner(
        fails_once_at_epoch_4,
        param_space={"experiment": f"{EXPERIMENTS}/restart"},
        run_config=RunConfig(
            name="restart",
            storage_path=root.path,
            storage_filesystem=root.fs,
            failure_config=FailureConfig(max_failures=1),
            callbacks=result_loggers(),
            verbose=0,
        ),
    ).fit()
    (result,) = list(results)
    assert result.error is None and result.metrics["epoch"] == 5
    trial = resolve(f"{EXPERIMENTS}/restart").child(os.path.basename(result.path))
    history = [json.loads(line)["epoch"] for line in read_bytes(trial.child("result.json")).decode().splitlines()]
    # Tune's own loggers copied the stored file over the driver's on the restart: [1, 4, 5].
    assert history == [1, 2, 3, 4, 5], history
    rows = list(csv.DictReader(io.StringIO(read_bytes(trial.child("progress.csv")).decode())))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5], rows


def stored_trial(name: str) -> Any:
    """A Tune trial of an experiment in S3, as a restored driver holds it (Ray's own classes; Ray must be up)."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    root = resolve(EXPERIMENTS)
    storage = StorageContext(
        storage_path=root.path, storage_filesystem=root.fs, experiment_dir_name=name, trial_dir_name="unused"
    )
    trial = Trial("stub", stub=True, storage=storage)
    trial.init_local_path()  # fixes the trial's folder name (it carries the time of the first call)
    return trial


@pytest.mark.ray
def test_a_new_driver_fetches_the_stored_history_of_any_trial(ray_local: None, s3_server: S3Server) -> None:
    """``resume`` elsewhere: the snapshot names no checkpoint of this trial (it continues from its newest written
    one), and Tune's loggers fetched nothing, so the next upload wrote an empty history over the stored one."""
    trial = stored_trial("new-driver")
    assert trial.checkpoint is None
    stored = resolve(f"{EXPERIMENTS}/new-driver").child(os.path.basename(trial.storage.trial_fs_path))
    write_bytes_atomic(stored.child("result.json"), b'{"epoch": 1}\n{"epoch": 2}\n')
    JsonResults().log_trial_start(trial)
    local = os.path.join(trial.local_path, "result.json")
    assert open(local).read() == '{"epoch": 1}\n{"epoch": 2}\n'


@pytest.mark.ray
def test_the_same_driver_keeps_its_own_history(ray_local: None, s3_server: S3Server) -> None:
    trial = stored_trial("same-driver")
    stored = resolve(f"{EXPERIMENTS}/same-driver").child(os.path.basename(trial.storage.trial_fs_path))
    write_bytes_atomic(stored.child("progress.csv"), b"epoch\n1\n")
    with open(os.path.join(trial.local_path, "progress.csv"), "w") as f:
        f.write("epoch\n1\n2\n3\n")
    logger = CsvResults()
    logger.log_trial_result(4, trial, {"epoch": 4})
    logger.log_trial_end(trial)
    assert open(os.path.join(trial.local_path, "progress.csv")).read().split() == ["epoch", "1", "2", "3", "4"]


@pytest.mark.ray
def test_a_replayed_result_the_history_holds_is_not_logged_twice(ray_local: None, s3_server: S3Server) -> None:
    """A finished trial restored from a checkpoint Tune never saw publishes its final result again
    (``trainables.loop``): the history gets it once, whether the killed driver had logged it or not."""
    trial = stored_trial("replayed")
    folder = trial.local_path
    with open(os.path.join(folder, "result.json"), "w") as f:
        f.write('{"epoch": 1}\n{"epoch": 2}\n')
    with open(os.path.join(folder, "progress.csv"), "w") as f:
        f.write("epoch,replayed\n1,\n2,\n")
    assert last_json_epoch(Path(folder, "result.json")) == 2 and last_csv_epoch(Path(folder, "progress.csv")) == 2
    loggers = [JsonResults(), CsvResults()]
    for logger in loggers:
        logger.log_trial_result(3, trial, {"epoch": 2, M.REPLAYED: 1})  # logged before the kill: skipped
        logger.log_trial_result(3, trial, {"epoch": 3, M.REPLAYED: 1})  # never logged: kept
        logger.log_trial_result(4, trial, {"epoch": 3})  # not a replay (a PBT clone may repeat epochs): kept
        logger.log_trial_end(trial)
    epochs = [json.loads(line)["epoch"] for line in open(os.path.join(folder, "result.json")).read().splitlines()]
    assert epochs == [1, 2, 3, 3]
    with open(os.path.join(folder, "progress.csv"), newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 3]


def test_last_epoch_of_missing_empty_and_odd_histories(tmp_path: Path) -> None:
    assert last_json_epoch(tmp_path / "none.json") is None and last_csv_epoch(tmp_path / "none.csv") is None
    (tmp_path / "empty.json").write_text("\n")
    (tmp_path / "header.csv").write_text("epoch\n")
    (tmp_path / "noepoch.json").write_text('{"loss": 1.0}\n')
    (tmp_path / "torn.json").write_text('{"epoch": 1}\n{"epo')
    assert last_json_epoch(tmp_path / "empty.json") is None and last_csv_epoch(tmp_path / "header.csv") is None
    assert last_json_epoch(tmp_path / "noepoch.json") is None and last_json_epoch(tmp_path / "torn.json") is None
