"""Text classification end to end on Reuters R8 with real Ray: packed (Bi)LSTMs beat the majority class."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.experiment import run_experiment
from cluster.options import RunOptions, SchedulerOptions
from search_spaces import SearchSpaceError
from trainables import metrics as M

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
    )
    summary = run_experiment(opts, console=QUIET)
    assert summary.task == "classify" and summary.trials["errored"] == 0
    majority = summary.baselines["majority_class"]["test"].accuracy
    assert majority is not None and 0.45 < majority < 0.55, "R8's majority class (earn) is about half the test set"
    accuracy = summary.best.test.accuracy
    assert accuracy is not None and accuracy > majority + 0.3, (
        f"test accuracy {accuracy:.3f} vs majority {majority:.3f}"
    )
    assert summary.best.test.macro_f1 is not None and summary.best.test.macro_f1 > 0.3
    run = next((tmp_path / "r8" / "tensorboard").iterdir())
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert {M.VAL_ACCURACY, M.VAL_MACRO_F1, M.VAL_LOSS} <= set(acc.Tags()["scalars"])


def test_space_and_data_task_must_match(prepared_r8: str, tmp_path: Path) -> None:
    opts = RunOptions(space="forecast-small", data=prepared_r8, storage=str(tmp_path), name="mismatch")
    with pytest.raises(
        SearchSpaceError, match=r"'classify' dataset; use a classify space such as --space classify-small"
    ):
        run_experiment(opts, console=QUIET)
