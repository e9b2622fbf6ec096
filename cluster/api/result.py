"""``ExperimentResult``: an experiment in storage as Python objects (summary, trials, history, model)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cluster.plan.options import RUN_WIDE_KEYS
from cluster.plan.storage import ExperimentPaths, StorageError, check_readable, is_experiment
from cluster.results.summary import BestTrial, Ensemble, Scores, Summary, summary_from_json
from trainables import metrics as M
from trainables.storage import exists, read_bytes, resolve

if TYPE_CHECKING:
    import pandas as pd

    from trainables.export import Classifier, Forecaster

HISTORY_SKIP = ("config", "hostname", "pid", "node_ip", "date", "timestamp", "experiment_tag")
"""Result keys :meth:`ExperimentResult.history` leaves out: the config (one column per trial in :meth:`trials`) and
Tune's bookkeeping of where and when."""


@dataclass(frozen=True)
class ExperimentResult:
    """An experiment folder (local or ``s3://``), finished or not: what :func:`cluster.run` returns.

    Reading it starts nothing: :meth:`trials` reads Tune's stored state, :meth:`history` the stored result histories,
    :attr:`model` loads the exported model on first use.
    """

    uri: str
    """``<storage>/<name>``."""
    summary: Summary | None
    """What ``best.json`` holds (``None`` while the experiment is unfinished)."""

    @classmethod
    def open(cls, uri: str) -> ExperimentResult:
        """The experiment at ``uri``; raises :class:`~cluster.plan.storage.StorageError` if there is none."""
        root = resolve(uri)
        check_readable(root, "experiment")
        if not is_experiment(root):
            raise StorageError(f"{root.uri}: no lstm-tune experiment here (tuner.pkl missing)")
        paths = ExperimentPaths(root=root)
        summary = summary_from_json(read_bytes(paths.best_json)) if exists(paths.best_json) else None
        return cls(uri=root.uri, summary=summary)

    @property
    def paths(self) -> ExperimentPaths:
        return ExperimentPaths(root=resolve(self.uri))

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def status(self) -> Literal["finished", "incomplete"]:
        """finished: scored and exported (``best.json`` written); incomplete: running or interrupted."""
        return "finished" if self.summary is not None else "incomplete"

    def _finished(self) -> Summary:
        if self.summary is None:
            raise StorageError(f"{self.uri}: the experiment is not finished (cluster.resume it)")
        return self.summary

    @property
    def best(self) -> BestTrial:
        """The best trial (lowest validation loss) at its best checkpoint, scored on val and test."""
        return self._finished().best

    @property
    def best_config(self) -> dict[str, Any]:
        return dict(self.best.config)

    @property
    def ensemble(self) -> Ensemble | None:
        """The mean of the best trials, when the run made one (``ensemble > 1``): that is then the exported model."""
        return self._finished().ensemble

    @property
    def scores(self) -> dict[str, dict[str, Scores]]:
        """Per model (``model``: what was exported; ``best_trial``; each baseline), its ``val`` and ``test`` scores,
        all on exactly the same targets."""
        s = self._finished()
        out = {
            "model": {"val": s.exported.val, "test": s.exported.test},
            "best_trial": {"val": s.best.val, "test": s.best.test},
        }
        out.update(s.baselines)
        return out

    @property
    def tensorboard_uri(self) -> str:
        """The TensorBoard log folder: ``lstm-tune tensorboard URI`` or ``tensorboard --logdir`` on it."""
        return self.paths.tensorboard.uri

    @property
    def model_uri(self) -> str:
        return self.paths.best_model.uri

    @cached_property
    def model(self) -> Forecaster | Classifier:
        """The exported model with its fitted preprocessing: ``model.predict(raw_rows)`` (or documents)."""
        from trainables.export import load_model

        self._finished()
        return load_model(self.paths.best_model)

    def trials(self) -> pd.DataFrame:
        """One row per trial: ``trial_id``, ``round`` (0: the first run, k: the k-th ``extend``), ``state``
        (finished, stopped, errored, running, paused, pending),
        ``epochs``, the best validation figure and its epoch, ``restarts``, training seconds, then one
        ``config.<name>`` column per hyperparameter."""
        import pandas as pd

        from cluster.report.record import read_experiment
        from cluster.results.experiments import trial_states

        record = read_experiment(resolve(self.uri))
        histories = {t.trial_id: t for t in record.trials}
        metric, _, higher = record.display_metric
        label = "best_val_accuracy" if higher else "best_val_rmse"
        rows = []
        for state in trial_states(resolve(self.uri)):
            history = histories.get(state.trial_id)
            epochs = history.epochs if history else 0
            steps, values = history.series(metric) if history else ([], [])
            best_at = (max if higher else min)(range(len(values)), key=values.__getitem__) if values else None
            row: dict[str, Any] = {
                "trial_id": state.trial_id,
                "round": state.round,
                "state": _state(state.status, epochs, record.max_epochs),
                "epochs": epochs,
                label: values[best_at] if best_at is not None else math.nan,
                "best_epoch": steps[best_at] if best_at is not None else None,
                "restarts": state.restarts,
                "train_seconds": history.seconds if history else 0.0,
            }
            row.update({f"config.{k}": v for k, v in sorted(state.config.items()) if k not in RUN_WIDE_KEYS})
            rows.append(row)
        return pd.DataFrame(rows)

    def history(self) -> pd.DataFrame:
        """Every epoch result every trial reported, oldest first per trial: ``trial_id``, ``epoch`` and each metric
        (``val/rmse``, ``train/loss``, ...), as stored in the trials' result histories."""
        import pandas as pd

        from cluster.report.record import read_experiment

        rows = []
        for trial in read_experiment(resolve(self.uri)).trials:
            for result in trial.results:
                row = {
                    "trial_id": trial.trial_id,
                    "epoch": int(result.get(M.EPOCH, result.get("training_iteration", 0))),
                }
                row.update({k: v for k, v in result.items() if k not in HISTORY_SKIP and k not in row})
                rows.append(row)
        return pd.DataFrame(rows)

    def report(self, out: str | Path | None = None) -> Path:
        """Write the report folder (plots and ``report.md``, as ``lstm-tune report``); returns ``report.md``."""
        from cluster.report.record import read_experiment
        from cluster.report.writer import write_report

        record = read_experiment(resolve(self.uri))
        files = write_report(record, Path(out or f"reports/{record.name}"))
        return files[-1]


def _state(status: str, epochs: int, max_epochs: int) -> str:
    if status == "TERMINATED":
        return "finished" if epochs >= max_epochs else "stopped"
    return {"ERROR": "errored"}.get(status, status.lower())


__all__ = ["ExperimentResult"]
