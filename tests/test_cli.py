"""The command line as a user meets it: bad input is one clear line and a non-zero exit; a run prints JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import forecast_summary

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def one_clear_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, "bad input must not exit 0"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("task: forecast\nparams:\n  lr: [0.1, 0.2\n")
    proc = cli("run", "--space", str(bad), "--storage", str(tmp_path / "runs"))
    one_clear_line(proc, "broken.yaml", "malformed YAML")
    assert proc.returncode == 2
    assert not (tmp_path / "runs").exists(), "nothing may be written before validation passes"


def test_mistyped_key(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("task: forecast\nparams:\n  hiden_size: {distribution: choice, values: [16, 32]}\n")
    proc = cli("run", "--space", str(bad), "--storage", str(tmp_path / "runs"))
    one_clear_line(proc, "typo.yaml", "params.hiden_size", "did you mean 'hidden_size'")


def test_bad_option_and_unknown_preset(tmp_path: Path) -> None:
    one_clear_line(cli("run", "--scheduler", "pbt", "--keep-checkpoints", "2"), "--keep-checkpoints = 2")
    one_clear_line(cli("run", "--space", "forcast"), "no such file and no such preset")
    one_clear_line(cli("run", "--scheduler", "hyperband"), "--scheduler = 'hyperband'")


def test_spaces_commands() -> None:
    listed = cli("spaces", "list")
    assert listed.returncode == 0 and listed.stdout.split() == [
        "classify",
        "classify-small",
        "forecast",
        "forecast-panel",
        "forecast-small",
    ]
    shown = cli("spaces", "show", "forecast-small")
    assert shown.returncode == 0 and "lr" in shown.stdout and "(PBT mutates)" in shown.stdout


def test_help_everywhere() -> None:
    for args in (["--help"], ["run", "--help"], ["spaces", "--help"]):
        proc = cli(*args)
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_bad_input_is_answered_before_torch_and_ray_load(tmp_path: Path) -> None:
    """Help, bad options, bad spaces, a missing dataset or experiment, and a finished experiment's summary are
    answered before torch and Ray load (about 3 s)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: forecast\nparams:\n  lr: {distribution: loguniform, low: 1, high: 0.1}\n")
    finished = tmp_path / "done"
    finished.mkdir()
    (finished / "tuner.pkl").write_bytes(b"")  # only its presence counts for a finished experiment
    summary = forecast_summary(str(finished))
    (finished / "best.json").write_text(summary.to_json())
    code = f"""
import sys
from typer.testing import CliRunner
from cluster.cli import app
cases = (
    (["--help"], 0, "Usage"),
    (["run", "--help"], 0, "Usage"),
    (["run", "--num-samples", "0"], 2, "--num-samples = 0"),
    (["run", "--space", {str(bad)!r}], 2, "params.lr: low = 1 must be < high = 0.1"),
    (["run", "--search", "grid"], 2, "--search grid needs choice"),
    (["run", "--search", "tpe", "--scheduler", "pbt"], 2, "--search = 'tpe' with --scheduler pbt"),
    (["run", "--ensemble", "0"], 2, "--ensemble = 0: must be >= 1"),
    (["run", "--num-samples", "4", "--ensemble", "5"], 2, "--ensemble = 5: more than the 4 trial(s)"),
    (["run", "--data", {str(tmp_path / "nope")!r}, "--storage", {str(tmp_path / "runs")!r}], 2, "no manifest"),
    (["resume", {str(tmp_path / "nope")!r}], 2, "no Tune experiment state (tuner.pkl) to resume"),
    (["resume", {str(finished)!r}], 0, "test RMSE 18.50 vs persistence 20.17"),
)
for args, code, needle in cases:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code and needle in result.output, (args, result.exit_code, result.output)
print(",".join(m for m in ("torch", "ray", "pandas", "cluster.api.launch") if m in sys.modules) or "none")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none", f"loaded before answering: {proc.stdout.strip()}"


@pytest.mark.integration
def test_tensorboard_goes_when_the_command_is_terminated(tmp_path: Path) -> None:
    """SIGTERM (kill, a container's stop) to ``lstm-tune tensorboard`` stops its TensorBoard server too; Python's
    default would exit at once and leave the server running (CI once found four left over)."""
    (tmp_path / "tensorboard").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "tensorboard", str(tmp_path), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "http://127.0.0.1:" in line, line
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        server = Path(f"/proc/{children[0]}")
        assert "tensorboard.main" in (server / "cmdline").read_bytes().decode()
        proc.terminate()
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 15
        while server.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.exists(), "TensorBoard outlived the command"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_user_errors_are_value_errors() -> None:
    """The CLI catches ValueError for all of them (naming the classes would import torch): hold them to it."""
    import importlib

    from cluster.cli.common import USER_ERROR_CLASSES

    for dotted in USER_ERROR_CLASSES:
        module, _, name = dotted.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), name), ValueError), dotted


def test_package_names_load_on_first_use() -> None:
    """trainables and trainables.data export their names lazily; every exported name must resolve."""
    import trainables
    import trainables.data

    for package in (trainables, trainables.data):
        assert sorted(package.__all__) == sorted(package._HOME)  # type: ignore[attr-defined]
        for name in package.__all__:
            assert getattr(package, name) is not None
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            package.nope  # noqa: B018


@pytest.mark.ray
def test_run_prints_json_summary(tmp_path: Path, prepared_data: str) -> None:
    proc = cli(
        "run",
        "--num-samples",
        "2",
        "--max-epochs",
        "2",
        "--scheduler",
        "fifo",
        "--data",
        prepared_data,
        "--storage",
        str(tmp_path),
        "--name",
        "cli",
        "--epoch-samples",
        "3000",
        "--json",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["trials"] == {"total": 2, "finished": 2, "stopped": 0, "errored": 0}
    # Each epoch trained on 3,000 of the ~30,000 training windows.
    for history in (tmp_path / "cli").glob("forecast_trainable_*/result.json"):
        for line in history.read_text().splitlines():
            result = json.loads(line)
            assert round(result["train/samples_per_s"] * result["time/train_s"]) == 3000, result
    assert math_finite(summary["best"]["test"]["rmse"])
    assert (tmp_path / "cli" / "best.json").exists() and (tmp_path / "cli" / "best_model" / "model.pt").exists()
    again = cli("run", "--data", prepared_data, "--storage", str(tmp_path), "--name", "cli")
    one_clear_line(again, "--name = 'cli'", "already exists")


def math_finite(x: float) -> bool:
    return isinstance(x, float) and x == x and abs(x) != float("inf")


def test_best_so_far_by_task_and_before_any_report() -> None:
    """The figure ``experiments show`` leads with: lowest val RMSE, highest val accuracy, or none reported yet."""
    import pandas as pd

    from cluster.results.experiments import ExperimentInfo, _best_so_far
    from trainables import metrics as M

    forecast = {"a": pd.DataFrame({M.VAL_RMSE: [30.0, 21.5]}), "b": pd.DataFrame({M.VAL_RMSE: [25.0, float("nan")]})}
    assert _best_so_far(forecast) == (M.VAL_RMSE, 21.5, "a")
    classify = {"a": pd.DataFrame({M.VAL_ACCURACY: [0.5, 0.91]}), "b": pd.DataFrame({M.VAL_ACCURACY: [0.93, 0.2]})}
    assert _best_so_far(classify) == (M.VAL_ACCURACY, 0.93, "b")
    # Trials that have not reported: empty frames, or a column of NaN only.
    silent = {"a": pd.DataFrame(), "b": pd.DataFrame({M.VAL_RMSE: [float("nan")]})}
    assert _best_so_far(silent) == (M.VAL_RMSE, None, "")
    assert _best_so_far({}) == (M.VAL_RMSE, None, "")

    common = {"name": "x", "uri": "/x", "status": "incomplete", "trials": {"RUNNING": 1}, "retries": {}}
    quiet = ExperimentInfo(**common, metric=M.VAL_RMSE, best_val=None, best_trial="")
    assert quiet.best_line() == "best so far: no trial has reported yet" and quiet.test_line() is None
    accurate = ExperimentInfo(**common, metric=M.VAL_ACCURACY, best_val=0.9312, best_trial="b")
    assert accurate.best_line() == "best so far: val accuracy 0.9312 (b)"
