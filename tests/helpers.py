"""A TrialSession without Ray: checkpoints go to numbered folders, metrics to a list."""

from __future__ import annotations

import os
import shutil
from typing import Any

from cluster.results.summary import BestTrial, Ensemble, Scores, Summary
from trainables.checkpoint import load_checkpoint


class DirSession:
    """Keeps every reported checkpoint as ``root/epoch-N`` and can resume from any of them."""

    def __init__(self, root: str, resume_from: str | None = None) -> None:
        self.root = root
        self.resume_from = resume_from
        self.reports: list[dict[str, Any]] = []

    def restore(self) -> dict[str, Any] | None:
        return load_checkpoint(self.resume_from) if self.resume_from else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        dest = os.path.join(self.root, f"epoch-{metrics['epoch']}")
        shutil.copytree(checkpoint_dir, dest)
        self.reports.append(dict(metrics))


def forecast_summary(
    experiment: str, *, test_rmse: float = 18.5, ensemble: Ensemble | None = None, exported_model: str = ""
) -> Summary:
    """A finished Beijing forecaster's summary (persistence 20.17 on test), without running anything."""
    scores = Scores(rmse=test_rmse, mae=10.0)
    return Summary(
        experiment=experiment,
        task="forecast",
        scheduler="asha",
        search_space="forecast-small",
        dataset="beijing-pm25",
        target="pm2.5",
        horizon=1,
        trials={"total": 4, "finished": 2, "stopped": 2, "errored": 0},
        best=BestTrial(trial_id="t0", config={"lr": 0.001}, epoch=3, val=scores, test=scores, checkpoint="c0"),
        baselines={"persistence": {"val": Scores(rmse=22.8, mae=12.0), "test": Scores(rmse=20.17, mae=11.0)}},
        wall_time_s=1.0,
        exported_model=exported_model,
        ensemble=ensemble,
    )
