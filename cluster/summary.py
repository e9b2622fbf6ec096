"""After ``fit``: the best trial scored on the test split, next to naive baselines on the same targets."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from trainables.checkpoint import load_checkpoint
from trainables.config import ModelConfig
from trainables.data.loader import ForecastData
from trainables.evaluate import ForecastScores, baseline_scores, evaluate_model
from trainables.model import build_model


@dataclass(frozen=True, kw_only=True)
class Scores:
    """RMSE and MAE in the target's original units."""

    rmse: float
    mae: float

    @classmethod
    def of(cls, s: ForecastScores) -> Scores:
        return cls(rmse=s.rmse, mae=s.mae)


@dataclass(frozen=True, kw_only=True)
class BestTrial:
    trial_id: str
    config: dict[str, Any]
    epoch: int
    """Epoch of the checkpoint that scored best on validation."""
    val: Scores
    test: Scores
    checkpoint: str
    """URI of that checkpoint."""


@dataclass(frozen=True, kw_only=True)
class Summary:
    """What ``lstm-tune run`` prints at the end and writes to ``best.json``."""

    experiment: str
    """Experiment URI."""
    scheduler: str
    search_space: str
    dataset: str
    target: str
    horizon: int
    trials: dict[str, int]
    """Counts: total, finished (all epochs), stopped (early, by the scheduler), errored."""
    best: BestTrial
    baselines: dict[str, dict[str, Scores]]
    """Per baseline name: val and test scores on exactly the targets the model is scored on."""
    wall_time_s: float
    pbt_exploits: int = 0
    exported_model: str = ""
    checkpoints: dict[str, int] = field(default_factory=dict)
    """Checkpoint folders kept, their bytes, and how many the retention policy deleted."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)

    @property
    def beats_persistence(self) -> bool:
        return self.best.test.rmse < self.baselines["persistence"]["test"].rmse


def summary_from_json(data: bytes) -> Summary:
    """Read back a ``best.json``."""
    raw = json.loads(data)
    best = raw["best"]
    return Summary(
        **{
            **raw,
            "best": BestTrial(**{**best, "val": Scores(**best["val"]), "test": Scores(**best["test"])}),
            "baselines": {n: {s: Scores(**v) for s, v in b.items()} for n, b in raw["baselines"].items()},
        }
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def score_checkpoint(checkpoint_dir: str, data: ForecastData) -> tuple[dict[str, Any], dict[str, ForecastScores]]:
    """Load a checkpoint (safely) and score it on val and test; returns the payload and the scores."""
    payload = load_checkpoint(checkpoint_dir)
    info = payload["model_config"]
    model = build_model(ModelConfig(**info["config"]), n_features=info["n_features"], target_index=info["target_index"])
    model.load_state_dict(payload["model"])
    target = data.fitted.config.target
    scores = {
        split: evaluate_model(
            model,
            data.splits[split],
            window=int(payload["data_info"]["window"]),
            horizon=data.horizon,
            target_centre=data.fitted.centre[target],
            target_scale=data.fitted.scale[target],
            device=torch.device("cpu"),
        )
        for split in ("val", "test")
    }
    return payload, scores


def baselines_for(data: ForecastData) -> dict[str, dict[str, Scores]]:
    season = int(data.manifest.task_params["season_steps"])
    per_split = {s: baseline_scores(data.splits[s], horizon=data.horizon, season_steps=season) for s in ("val", "test")}
    return {name: {s: Scores.of(per_split[s][name]) for s in per_split} for name in per_split["val"]}


def render(summary: Summary, console: Console) -> None:
    b = summary.best
    table = Table(title=f"lstm-tune: {summary.experiment}", show_lines=False)
    table.add_column("forecaster")
    table.add_column("val RMSE", justify="right")
    table.add_column("val MAE", justify="right")
    table.add_column("test RMSE", justify="right")
    table.add_column("test MAE", justify="right")
    table.add_row(
        f"best LSTM ({b.trial_id}, epoch {b.epoch})",
        f"{b.val.rmse:.2f}",
        f"{b.val.mae:.2f}",
        f"{b.test.rmse:.2f}",
        f"{b.test.mae:.2f}",
        style="bold",
    )
    for name, s in summary.baselines.items():
        table.add_row(
            name.replace("_", "-"),
            f"{s['val'].rmse:.2f}",
            f"{s['val'].mae:.2f}",
            f"{s['test'].rmse:.2f}",
            f"{s['test'].mae:.2f}",
        )
    console.print(table)
    persistence = summary.baselines["persistence"]["test"].rmse
    gain = 100.0 * (persistence - b.test.rmse) / persistence
    t = summary.trials
    console.print(
        f"target {summary.target} {summary.horizon} step(s) ahead, {summary.dataset}; units of the target.\n"
        f"test RMSE {b.test.rmse:.2f} vs persistence {persistence:.2f}: "
        f"{abs(gain):.1f}% {'better' if gain > 0 else 'worse'}\n"
        f"trials: {t['total']} ({t['finished']} finished, {t['stopped']} stopped early, {t['errored']} errored); "
        f"scheduler {summary.scheduler}"
        + (f", {summary.pbt_exploits} PBT exploits" if summary.scheduler == "pbt" else "")
        + f"; wall time {summary.wall_time_s:.0f} s",
        highlight=False,
    )
    cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(b.config.items()))
    console.print(f"best config: {cfg}", highlight=False)
    if summary.checkpoints:
        c = summary.checkpoints
        console.print(
            f"checkpoints kept: {c['kept']} ({c['bytes'] / 1e6:.1f} MB); deleted {c['deleted']} of trials stopped early",
            highlight=False,
        )
    if summary.exported_model:
        console.print(f"best model: {summary.exported_model}  (trainables.load_forecaster)", highlight=False)
    for note in summary.notes:
        console.print(f"note: {note}", style="yellow", highlight=False)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = ["BestTrial", "Scores", "Summary", "baselines_for", "render", "score_checkpoint", "summary_from_json"]
