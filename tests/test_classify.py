"""Text classification end to end on Reuters R8 with real Ray: packed (Bi)LSTMs beat the majority class."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from cluster.api.launch import run_experiment
from cluster.cli import app
from cluster.plan.options import RunOptions, SchedulerOptions
from search_spaces import SearchSpaceError
from tests.conftest import SHARED_DATASETS
from trainables import metrics as M
from trainables.checkpoint import CheckpointError
from trainables.config import TrialConfig
from trainables.data.handle import DataHandle
from trainables.data.text_loader import load_text_data
from trainables.export import load_classifier, load_forecaster
from trainables.tasks import ClassifyTask

QUIET = Console(stderr=True, quiet=True)


@pytest.mark.ray
def test_r8_smoke_beats_majority_class(ray_local: None, prepared_r8: str, tmp_path: Path) -> None:
    opts = RunOptions(
        space="classify-small",
        data=prepared_r8,
        storage=str(tmp_path),
        name="r8",
        num_samples=2,
        max_epochs=2,
        scheduler=SchedulerOptions(kind="fifo"),
        ensemble=2,  # both trials: the export, the figures and predict are the mean of their class probabilities
    )
    summary = run_experiment(opts, console=QUIET)
    assert summary.task == "classify" and summary.trials["errored"] == 0
    majority = summary.baselines["majority_class"]["test"].accuracy
    assert majority is not None and 0.45 < majority < 0.55, "R8's majority class (earn) is about half the test set"
    assert summary.ensemble is not None and summary.ensemble.members[0].trial_id == summary.best.trial_id
    assert len({m.trial_id for m in summary.ensemble.members}) == 2
    accuracy = summary.ensemble.test.accuracy
    for scores in (summary.best.test, summary.ensemble.test):
        assert scores.accuracy is not None and scores.accuracy > majority + 0.3, (
            f"test accuracy {scores.accuracy:.3f} vs majority {majority:.3f}"
        )
        assert scores.macro_f1 is not None and scores.macro_f1 > 0.3
    run = next((tmp_path / "r8" / "tensorboard").iterdir())
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert {M.VAL_ACCURACY, M.VAL_MACRO_F1, M.VAL_LOSS} <= set(acc.Tags()["scalars"])

    # A finished classifier shows its own figures: accuracy, highest best, next to the majority class.
    runner = CliRunner()
    shown = runner.invoke(app, ["experiments", "show", str(tmp_path / "r8"), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["status"] == "finished" and info["metric"] == M.VAL_ACCURACY and info["best_val_rmse"] is None
    assert info["best_val"] >= (summary.best.val.accuracy or 1.0) - 1e-9
    assert info["test_accuracy"] == pytest.approx(accuracy) and info["majority_test_accuracy"] == pytest.approx(
        majority
    )
    assert info["retries"] == {}
    text = runner.invoke(app, ["experiments", "show", str(tmp_path / "r8")]).output
    assert f"best model test accuracy {accuracy:.4f} vs majority class {majority:.4f}" in text, text
    listed = runner.invoke(app, ["experiments", "list", str(tmp_path)]).output
    assert f"{accuracy:.4f} accuracy" in listed, listed

    # Export, then classify the raw test documents from the command line: the exported tokenizer, vocabulary and
    # weights reproduce the summary's test accuracy exactly.
    out = tmp_path / "model"
    done = runner.invoke(app, ["export", str(tmp_path / "r8"), "--out", str(out)])
    assert done.exit_code == 0, done.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["task"] == "classify" and card["ensemble"]["test"]["accuracy"] == pytest.approx(accuracy)
    preds = tmp_path / "labels.csv"
    test_csv = SHARED_DATASETS / "reuters-r8-test.csv.xz"
    done = runner.invoke(app, ["predict", str(out), str(test_csv), "--out", str(preds)])
    assert done.exit_code == 0, done.output
    predicted = pd.read_csv(preds)
    truth = pd.read_csv(test_csv)
    assert list(predicted.columns) == ["document", "label", "confidence"] and len(predicted) == len(truth)
    # the summary counts in float32
    assert float((predicted["label"] == truth["label"]).mean()) == pytest.approx(accuracy, abs=1e-6)
    assert ((predicted["confidence"] > 0) & (predicted["confidence"] <= 1)).all()
    assert load_classifier(str(out)).predict(["", "profit rose to 5 mln dlrs"])["label"].notna().all()
    with pytest.raises(CheckpointError, match="load it with load_classifier"):
        load_forecaster(str(out))
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("body,label\nx,earn\n")
    refused = runner.invoke(app, ["predict", str(out), str(no_text)])
    assert refused.exit_code == 2 and "lacks the text column 'text'" in refused.output


def test_space_and_data_task_must_match(prepared_r8: str, tmp_path: Path) -> None:
    opts = RunOptions(space="forecast-small", data=prepared_r8, storage=str(tmp_path), name="mismatch")
    with pytest.raises(
        SearchSpaceError, match=r"'classify' dataset; use a classify space such as --space classify-small"
    ):
        run_experiment(opts, console=QUIET)


@pytest.mark.parametrize("samples", [1, 100, 10**9])
def test_an_epoch_of_n_documents(prepared_r8: str, samples: int) -> None:
    """``--epoch-samples`` on text: length-grouped batches in a new order until ``samples`` documents are seen."""
    data = load_text_data(DataHandle(uri=prepared_r8))
    cfg = TrialConfig.from_flat({"hidden_size": 8, "embedding_dim": 8, "batch_size": 32})
    task = ClassifyTask(data, cfg)
    model = task.build(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = task.train_epoch(model, optimizer, cfg, seed=1, device=torch.device("cpu"), samples=samples)
    n = min(samples, len(data.splits["train"]))
    assert stats.samples == n and stats.steps >= -(-n // 32) and stats.loss > 0
