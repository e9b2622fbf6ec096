"""The data plane against a real S3-compatible server (SeaweedFS on 127.0.0.1): prepare, read once per node,
refuse corrupt shards, and one clear error for each way storage or input can be wrong."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cluster.api.launch import run_experiment
from cluster.cli import app
from cluster.plan.options import RunOptions, SchedulerOptions
from cluster.plan.storage import StorageError, check_readable
from cluster.prep.data import bundled_beijing_path, prepare_forecast
from cluster.prep.text import prepare_classify
from tests.conftest import REPO, SHARED_DATASETS
from tests.s3server import S3Server, flip_a_byte, free_port
from trainables.data.cache import ShardCache, ShardError
from trainables.data.forecast_prep import ForecastPrepConfig
from trainables.data.manifest import read_manifest
from trainables.data.text_prep import TextPrepConfig
from trainables.storage import DEFAULT_S3_ATTEMPTS, FIRST_CONTACT_S3_ATTEMPTS, resolve

QUIET = Console(stderr=True, quiet=True)
R8_TRAIN = SHARED_DATASETS / "reuters-r8-train.csv.xz"
R8_TEST = SHARED_DATASETS / "reuters-r8-test.csv.xz"


def keys(server: S3Server, bucket: str, prefix: str) -> list[str]:
    out = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in out.get("Contents", []))


def test_prepare_forecast_into_s3(s3_server: S3Server) -> None:
    manifest = prepare_forecast(
        bundled_beijing_path(), ForecastPrepConfig(), resolve("s3://lt-data/beijing"), name="beijing"
    )
    client = s3_server.client()
    for split in manifest.splits.values():
        for shard in split.shards:
            body = client.get_object(Bucket="lt-data", Key=f"beijing/{shard.path}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == shard.sha256
    assert read_manifest(resolve("s3://lt-data/beijing")).to_json() == manifest.to_json()
    assert "AWS_SECRET" not in manifest.to_json() and s3_server.secret_key not in manifest.to_json()


@pytest.mark.skipif(not R8_TRAIN.exists(), reason="../shared/datasets not present")
def test_prepare_r8_into_s3_respects_vocabulary_limits(s3_server: S3Server) -> None:
    cfg = TextPrepConfig(min_freq=3, max_vocab=5000, max_length=200)
    manifest = prepare_classify(str(R8_TRAIN), cfg, resolve("s3://lt-data/r8"), name="r8", test_source=str(R8_TEST))
    assert manifest.task_params["num_classes"] == 8
    assert {k: v.rows for k, v in manifest.splits.items()} == {"train": 4936, "val": 549, "test": 2189}
    vocab = s3_server.client().get_object(Bucket="lt-data", Key="r8/vocab.txt")["Body"].read().decode().split("\n")[:-1]
    assert len(vocab) == 5000 == manifest.task_params["vocab_size"]
    train = pd.read_csv(R8_TRAIN)
    counts = Counter(tok for text in train["text"] for tok in re.findall(r"[\w']+", text.lower()))
    assert all(counts[t] >= 3 for t in vocab[2:]), "a vocabulary word is below min_freq in the whole training source"
    ranked = [t for t, c in counts.most_common() if c >= 3]
    assert len(ranked) > 4998, "the cap must bind on R8 for this test to mean anything"


def test_trials_read_each_shard_once_per_node(s3_server: S3Server, ray_local: None) -> None:
    prepare_forecast(bundled_beijing_path(), ForecastPrepConfig(), resolve("s3://lt-data/run-data"), name="b")
    cache_dir = tempfile.mkdtemp(prefix="lt-cache-run-", dir="/tmp")
    summary = run_experiment(
        RunOptions(
            storage="s3://lt-exp/runs",
            name="once",
            data="s3://lt-data/run-data",
            num_samples=4,
            max_epochs=2,
            scheduler=SchedulerOptions(kind="fifo"),
            cache_dir=cache_dir,
        ),
        console=QUIET,
    )
    assert summary.trials == {"total": 4, "finished": 4, "stopped": 0, "errored": 0}
    manifest = read_manifest(resolve("s3://lt-data/run-data"))
    shas = {s.sha256 for split in manifest.splits.values() for s in split.shards}
    fetched = ShardCache.default(cache_dir).fetch_count()
    assert set(fetched) == shas and set(fetched.values()) == {1}, f"shards fetched more than once: {fetched}"
    stored = keys(s3_server, "lt-exp", "runs/once/")
    assert "runs/once/best.json" in stored and "runs/once/best_model/model.pt" in stored
    assert any(k.startswith("runs/once/tensorboard/") for k in stored)
    assert any("/checkpoint_" in k and k.endswith("trial_state.pt") for k in stored)
    assert summary.best.test.rmse < summary.baselines["persistence"]["test"].rmse * 1.05
    # No credential in anything the experiment wrote: state, results, checkpoints, TensorBoard, best model.
    client = s3_server.client()
    for key in stored:
        body = client.get_object(Bucket="lt-exp", Key=key)["Body"].read()
        assert s3_server.secret_key.encode() not in body, f"the secret key leaked into {key}"
    # And TensorBoard serves the experiment straight from S3, on loopback.
    assert_tensorboard_serves("s3://lt-exp/runs/once")
    # The report reads it from S3 too: 4 trials, their curves, the summary's test score.
    out = Path(tempfile.mkdtemp(prefix="lt-report-"))
    done = CliRunner().invoke(app, ["report", "s3://lt-exp/runs/once", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "report of 4 trials" in done.output
    assert {"learning_curves.png", "best_so_far.png", "report.md"} <= {p.name for p in out.iterdir()}
    assert f"| best LSTM | {summary.best.val.rmse:.4g} |" in (out / "report.md").read_text()


def assert_tensorboard_serves(uri: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "tensorboard", uri, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stderr is not None
        seen = []
        match = None
        while match is None and len(seen) < 20:
            seen.append(proc.stderr.readline())
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", seen[-1])
            if not seen[-1]:
                break
        assert match, f"no loopback URL in {seen!r}"
        # TensorBoard loads runs one by one in the background (from S3, slowly): the plugins turn on with the
        # first run, so wait until every trial's run is there, not just until something is.
        deadline = time.monotonic() + 90
        listing: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(match.group(1) + "data/plugins_listing", timeout=5) as resp:
                listing = json.loads(resp.read())
            if listing.get("scalars", {}).get("enabled") and listing.get("hparams", {}).get("enabled"):
                with urllib.request.urlopen(match.group(1) + "data/plugin/scalars/tags", timeout=5) as resp:
                    tags = json.loads(resp.read())
                if sum("val/rmse" in run_tags for run_tags in tags.values()) >= 4:
                    break
            time.sleep(2)
        assert listing["scalars"]["enabled"] and listing["hparams"]["enabled"], listing
        assert sum("val/rmse" in run_tags for run_tags in tags.values()) == 4, tags
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_corrupt_shard_fails_before_training(s3_server: S3Server) -> None:
    prepare_forecast(bundled_beijing_path(), ForecastPrepConfig(), resolve("s3://lt-data/corrupt"), name="c")
    flip_a_byte(s3_server, "lt-data", "corrupt/val/part-00000.parquet")
    opts = RunOptions(
        storage="s3://lt-exp/runs",
        name="corrupt",
        data="s3://lt-data/corrupt",
        num_samples=2,
        max_epochs=1,
        scheduler=SchedulerOptions(kind="fifo"),
        cache_dir=tempfile.mkdtemp(prefix="lt-cache-bad-", dir="/tmp"),
    )
    with pytest.raises(ShardError, match=r"s3://lt-data/corrupt/val/part-00000\.parquet is corrupt"):
        run_experiment(opts, console=QUIET)
    assert not any("forecast_trainable" in k for k in keys(s3_server, "lt-exp", "runs/corrupt/")), "a trial started"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def assert_clear_failure(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.integration  # waits out the client's retries against a closed endpoint
def test_first_contact_tries_three_times_then_names_the_endpoint() -> None:
    """A command's first storage check gives up after 3 tries (a closed endpoint answers in about a second); the
    work after it keeps 6. Counted as connections to a loopback server that hangs up on every one."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    accepted: list[int] = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        loc = resolve("s3://lt-bucket/x", endpoint=f"http://127.0.0.1:{port}")
        assert loc.child("a").endpoint == loc.endpoint == f"http://127.0.0.1:{port}"
        with pytest.raises(StorageError, match=rf"--storage: cannot reach the S3 endpoint http://127.0.0.1:{port} "):
            check_readable(loc, "--storage")
        assert len(accepted) == FIRST_CONTACT_S3_ATTEMPTS == 3
        accepted.clear()
        with pytest.raises(OSError, match="NETWORK_CONNECTION"):
            loc.fs.get_file_info("lt-bucket/x")
        assert len(accepted) == DEFAULT_S3_ATTEMPTS == 6
    finally:
        server.close()
    local = resolve("/tmp/somewhere")
    assert local.with_attempts(1) is local


BEIJING = ["--time-columns", "year,month,day,hour", "--target", "pm2.5", "--categorical", "cbwd", "--exclude", "No"]


def test_storage_and_input_errors_are_one_clear_line(s3_server: S3Server, tmp_path: Path) -> None:
    src = bundled_beijing_path()
    closed = f"http://127.0.0.1:{free_port(set())}"
    started = time.monotonic()
    assert_clear_failure(
        cli("data", "prepare", src, "--out", "s3://lt-data/e1", "--s3-endpoint", closed, *BEIJING),
        "cannot reach the S3 endpoint",
    )
    assert time.monotonic() - started < 60, "an unreachable endpoint must fail fast, not hang"
    assert_clear_failure(
        cli("run", "--storage", "s3://lt-exp/e0", "--s3-endpoint", closed), "--storage: cannot reach the S3 endpoint"
    )
    assert_clear_failure(
        cli("data", "prepare", src, "--out", "s3://lt-data/e2", *BEIJING, env={"AWS_SECRET_ACCESS_KEY": "wrong"}),
        "S3 refused the credentials",
    )
    assert_clear_failure(
        cli("data", "prepare", src, "--out", "s3://no-such-bucket/e3", *BEIJING),
        "bucket 'no-such-bucket' does not exist",
    )
    broken = tmp_path / "broken.csv"
    broken.write_text("year,month,day,hour,pm2.5\n2010,1,1,0,5\n2010,1,1,1,6,7,8\n")
    assert_clear_failure(
        cli(
            "data",
            "prepare",
            str(broken),
            "--out",
            "s3://lt-data/e4",
            "--time-columns",
            "year,month,day,hour",
            "--target",
            "pm2.5",
        ),
        "a row has 7 field(s) where the header has 5",
    )
    assert_clear_failure(
        cli(
            "data",
            "prepare",
            src,
            "--out",
            "s3://lt-data/e5",
            "--time-columns",
            "year,month,day,hour",
            "--target",
            "pm10",
        ),
        "column(s) ['pm10'] not in the source",
    )
    docs = tmp_path / "docs.csv"
    pd.DataFrame({"label": ["a", "b", "a"], "text": ["good text", "  ", "more text"]}).to_csv(docs, index=False)
    assert_clear_failure(
        cli("data", "prepare", str(docs), "--task", "classify", "--out", "s3://lt-data/e6"),
        "has 1 empty document(s), first at row 1",
    )
    for prefix in ("e1", "e2", "e3", "e4", "e5", "e6"):
        assert keys(s3_server, "lt-data", f"{prefix}/") == [], f"{prefix}: a failed prepare left objects behind"


def test_inspect_and_run_on_unreachable_data(s3_server: S3Server) -> None:
    prepare_forecast(
        bundled_beijing_path(), ForecastPrepConfig(max_window=24), resolve("s3://lt-data/inspect"), name="i"
    )
    shown = cli("data", "inspect", "s3://lt-data/inspect")
    assert shown.returncode == 0 and "train" in shown.stderr and "pm2.5" in shown.stderr
    as_json = cli("data", "inspect", "s3://lt-data/inspect", "--json")
    assert as_json.returncode == 0 and '"format_version": 1' in as_json.stdout
    assert_clear_failure(cli("data", "inspect", "s3://lt-data/nothing-here"), "no manifest")
    # The space samples windows up to 24: fits. Then the wider preset (72) does not.
    assert_clear_failure(
        cli("run", "--data", "s3://lt-data/inspect", "--space", "forecast", "--storage", "s3://lt-exp/runs"),
        "params.window can reach 72",
    )
