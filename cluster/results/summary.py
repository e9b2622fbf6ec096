"""What a run reports: the best trial on the test split next to naive baselines, as ``best.json`` and as a table.

No torch here (scoring is :mod:`cluster.results.scoring`): printing a finished experiment's summary loads nothing heavy.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from trainables.evaluate import ForecastScores


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Forecasting: RMSE and MAE in the target's original units. Classification: accuracy and macro-F1."""

    rmse: float | None = None
    mae: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    rmse_by_step: list[float] | None = None
    """Forecasting: RMSE of step 1, 2, ... horizon ahead."""
    mase: float | None = None
    """Panels: mean over series of the MAE scaled by each series' training seasonal-naive MAE."""
    smape: float | None = None
    """Panels: mean over series of the symmetric MAPE, percent."""
    pinball: float | None = None
    """Forecasting: mean pinball loss over the run's quantile levels, in units (a point forecast stands for each)."""
    coverage: float | None = None
    """Quantile forecasters: share of targets inside the prediction interval (lowest to highest level)."""
    interval: float | None = None
    """The interval's nominal coverage, e.g. 0.8 for levels 0.1 and 0.9."""

    @classmethod
    def of(cls, s: ForecastScores) -> Scores:
        return cls(
            rmse=s.rmse,
            mae=s.mae,
            rmse_by_step=list(s.rmse_by_step),
            mase=s.mase,
            smape=s.smape,
            pinball=s.pinball,
            coverage=s.coverage,
            interval=s.interval,
        )


@dataclass(frozen=True, kw_only=True)
class BestTrial:
    """The trial with the lowest validation loss, at that checkpoint, scored on the validation and test splits."""

    trial_id: str
    config: dict[str, Any]
    """Its hyperparameters (the run-wide settings left out)."""
    epoch: int
    """Epoch of the checkpoint that scored best on validation."""
    val: Scores
    test: Scores
    checkpoint: str
    """URI of that checkpoint."""


@dataclass(frozen=True, kw_only=True)
class EnsembleMember:
    """One trial of an ensemble, at its best checkpoint."""

    trial_id: str
    epoch: int
    """Epoch of the member's checkpoint (its lowest validation loss)."""
    val: Scores
    """The member alone, as its trial reported it."""
    checkpoint: str


@dataclass(frozen=True, kw_only=True)
class Ensemble:
    """The mean forecast (or mean class probabilities) of the best trials, each at its best checkpoint."""

    members: list[EnsembleMember]
    """Best first: ``members[0]`` is :attr:`Summary.best`."""
    val: Scores
    test: Scores


@dataclass(frozen=True, kw_only=True)
class Summary:
    """What ``lstm-tune run`` prints at the end and writes to ``best.json``."""

    experiment: str
    """Experiment URI."""
    task: str
    """forecast or classify."""
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
    ensemble: Ensemble | None = None
    """Set when the run averaged several trials (``--ensemble K``, K > 1): that is the exported model."""
    series: dict[str, Any] | None = None
    """Panels: ``count`` of series, and per split how many the exported model beats seasonal naive on (lower MAE on
    the same targets): ``{"count": 51, "beats_seasonal_naive": {"val": 50, "test": 51}}``."""

    @property
    def exported(self) -> Ensemble | BestTrial:
        """What ``best_model`` holds and what the headline scores: the ensemble if there is one, else the best trial."""
        return self.ensemble if self.ensemble is not None else self.best

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)


def summary_from_json(data: bytes) -> Summary:
    """Read back a ``best.json``."""
    raw = json.loads(data)
    best = raw["best"]
    ensemble = raw.get("ensemble")
    return Summary(
        **{
            **raw,
            "best": BestTrial(**{**best, "val": Scores(**best["val"]), "test": Scores(**best["test"])}),
            "ensemble": _ensemble_from_json(ensemble) if ensemble else None,
            "baselines": {n: {s: Scores(**v) for s, v in b.items()} for n, b in raw["baselines"].items()},
        }
    )


def _ensemble_from_json(raw: dict[str, Any]) -> Ensemble:
    return Ensemble(
        members=[EnsembleMember(**{**m, "val": Scores(**m["val"])}) for m in raw["members"]],
        val=Scores(**raw["val"]),
        test=Scores(**raw["test"]),
    )


def exported_scores(summary: dict[str, Any]) -> dict[str, Any]:
    """From a ``best.json`` read as plain JSON: the val and test scores of the exported model (the ensemble's when
    the run made one, else the best trial's)."""
    ensemble = summary.get("ensemble")
    chosen = ensemble or summary["best"]
    return {split: chosen.get(split, {}) for split in ("val", "test")}


def model_label(summary: Summary | dict[str, Any]) -> str:
    """How tables name the exported model."""
    ensemble = summary.ensemble if isinstance(summary, Summary) else summary.get("ensemble")
    if ensemble is None:
        return "best LSTM"
    members = ensemble.members if isinstance(ensemble, Ensemble) else ensemble["members"]
    return f"ensemble of the best {len(members)} trials"


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def _ahead(horizon: int) -> str:
    return "1 step ahead" if horizon == 1 else f"steps 1-{horizon} ahead (RMSE over all steps)"


def _by_step(model: Scores, persistence: Scores, horizon: int) -> str:
    """Test RMSE at the first, middle and last step: how the error grows with the horizon."""
    steps = sorted({1, (horizon + 1) // 2, horizon})
    mine, base = model.rmse_by_step or [], persistence.rmse_by_step or []
    parts = [f"step {k}: {_num(mine[k - 1])} vs {_num(base[k - 1])}" for k in steps if k <= min(len(mine), len(base))]
    return "test RMSE by step (model vs persistence): " + "; ".join(parts)


def render(summary: Summary, console: Console) -> None:
    b = summary.best
    table = Table(title=f"lstm-tune: {summary.experiment}", show_lines=False)
    names = ("rmse", "mae") if summary.task == "forecast" else ("accuracy", "macro_f1")
    labels = ("RMSE", "MAE") if summary.task == "forecast" else ("accuracy", "macro-F1")
    table.add_column("model")
    for split in ("val", "test"):
        for label in labels:
            table.add_column(f"{split} {label}", justify="right")

    def cells(per_split: dict[str, Scores]) -> list[str]:
        return [_num(getattr(per_split[split], n)) for split in ("val", "test") for n in names]

    e = summary.ensemble
    if e is not None:
        table.add_row(model_label(summary), *cells({"val": e.val, "test": e.test}), style="bold")
    best_style = "bold" if e is None else ""
    table.add_row(
        f"best LSTM ({b.trial_id}, epoch {b.epoch})", *cells({"val": b.val, "test": b.test}), style=best_style
    )
    for name, per_split in summary.baselines.items():
        table.add_row(name.replace("_", "-"), *cells(per_split))
    console.print(table)
    t = summary.trials
    if summary.task == "forecast":
        persistence = summary.baselines["persistence"]["test"].rmse or math.nan
        test_rmse = summary.exported.test.rmse or math.nan
        gain = 100.0 * (persistence - test_rmse) / persistence
        headline = (
            f"target {summary.target} {_ahead(summary.horizon)}, {summary.dataset}; units of the target.\n"
            f"{_who(summary)}test RMSE {test_rmse:.2f} vs persistence {persistence:.2f}: "
            f"{abs(gain):.1f}% {'better' if gain > 0 else 'worse'}"
        )
        headline += "".join("\n" + line for line in detail_lines(summary))
        if summary.horizon > 1:
            headline += "\n" + _by_step(
                summary.exported.test, summary.baselines["persistence"]["test"], summary.horizon
            )
    else:
        majority = summary.baselines["majority_class"]["test"].accuracy or math.nan
        headline = (
            f"{summary.dataset}: {_who(summary)}test accuracy {summary.exported.test.accuracy or math.nan:.4f} "
            f"vs majority class {majority:.4f}"
        )
    console.print(
        headline + "\n"
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
            f"checkpoints kept: {c['kept']} ({c['bytes'] / 1e6:.1f} MB); deleted by retention: {c['deleted']}",
            highlight=False,
        )
    if e is not None:
        members = ", ".join(f"{m.trial_id} (epoch {m.epoch})" for m in e.members)
        console.print(f"ensemble: {members}", highlight=False)
    if summary.exported_model:
        loader = "load_classifier" if summary.task == "classify" else "load_forecaster"
        kind = f"ensemble of {len(e.members)}" if e is not None else "best model"
        console.print(f"{kind}: {summary.exported_model}  (trainables.{loader})", highlight=False)
    for note in summary.notes:
        console.print(f"note: {note}", style="yellow", highlight=False)


def detail_lines(summary: Summary) -> list[str]:
    """A forecaster's lines beyond RMSE: a panel's scale-free figures, a quantile forecaster's interval."""
    lines = [_panel_line(summary)] if summary.series else []
    if summary.exported.test.coverage is not None:
        lines.append(_interval_line(summary))
    return lines


def _panel_line(summary: Summary) -> str:
    """Scale-free figures of a panel: MASE and sMAPE (means over series) next to seasonal naive, and on how many
    series the model beats it."""
    mine, naive = summary.exported.test, summary.baselines["seasonal_naive"]["test"]
    series = summary.series or {}
    wins = series.get("beats_seasonal_naive", {}).get("test")
    parts = []
    if mine.mase is not None and naive.mase is not None:
        gain = 100.0 * (naive.mase - mine.mase) / naive.mase
        parts.append(
            f"test MASE {mine.mase:.3f} vs seasonal naive {naive.mase:.3f} ({abs(gain):.1f}% "
            f"{'better' if gain > 0 else 'worse'})"
        )
    if mine.smape is not None and naive.smape is not None:
        parts.append(f"sMAPE {mine.smape:.2f}% vs {naive.smape:.2f}%")
    if wins is not None:
        parts.append(f"beats seasonal naive on {wins} of {series.get('count')} series")
    return f"{series.get('count')} series, means over series: " + "; ".join(parts)


def _interval_line(summary: Summary) -> str:
    """A quantile forecaster's interval: how often test targets fell inside it, against what it promises."""
    mine, naive = summary.exported.test, summary.baselines["seasonal_naive"]["test"]
    nominal = mine.interval or math.nan
    line = f"test {nominal:.0%} interval covered {mine.coverage or math.nan:.1%} of targets"
    if mine.pinball is not None and naive.pinball is not None:
        line += f"; mean pinball loss {mine.pinball:.3f} vs seasonal naive {naive.pinball:.3f}"
    return line


def _who(summary: Summary) -> str:
    return "" if summary.ensemble is None else f"{model_label(summary)}: "


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = [
    "BestTrial",
    "Ensemble",
    "EnsembleMember",
    "Scores",
    "Summary",
    "detail_lines",
    "exported_scores",
    "model_label",
    "render",
    "summary_from_json",
]
