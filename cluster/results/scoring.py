"""After ``fit``: the chosen checkpoints (the best trial, or an ensemble of the best few) scored on validation and
test, and the naive baselines on the same targets."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from cluster.results.summary import Scores
from trainables.checkpoint import load_checkpoint
from trainables.data.handle import DataHandle
from trainables.data.loader import ForecastData, load_forecast_data
from trainables.data.text_loader import TextData, load_text_data
from trainables.data.windows import SeriesArrays, target_positions
from trainables.evaluate import ForecastScores, baseline_scores, evaluate_ensemble, pieces, predict_scaled
from trainables.model import (
    LSTMClassifier,
    LSTMForecaster,
    classifier_from_info,
    forecaster_from_info,
    mean_forecast,
    point_forecast,
)
from trainables.tasks import classification_scores, mean_probabilities


def load_forecast_member(checkpoint_dir: str) -> tuple[dict[str, Any], LSTMForecaster, int]:
    """A checkpoint (loaded safely): its payload, the model it holds and the window it reads."""
    payload = load_checkpoint(checkpoint_dir)
    model = forecaster_from_info(payload["model_config"])
    model.load_state_dict(payload["model"])
    return payload, model, int(payload["data_info"]["window"])


def score_forecasters(
    members: list[tuple[LSTMForecaster, int]], data: ForecastData, quantiles: tuple[float, ...] = ()
) -> dict[str, ForecastScores]:
    """The members' mean forecast (one member: the model alone) scored on val and test; ``quantiles``: the levels
    the pinball loss of point forecasts is taken at."""
    target = data.fitted.config.target
    return {
        split: evaluate_ensemble(
            members,
            data.split(split),
            horizon=data.horizon,
            target_centre=data.fitted.centre[target],
            target_scale=data.fitted.scale[target],
            device=torch.device("cpu"),
            quantiles=quantiles,
        )
        for split in ("val", "test")
    }


def score_checkpoint(checkpoint_dir: str, data: ForecastData) -> tuple[dict[str, Any], dict[str, ForecastScores]]:
    """Load a checkpoint (safely) and score it on val and test; returns the payload and the scores."""
    payload, model, window = load_forecast_member(checkpoint_dir)
    return payload, score_forecasters([(model, window)], data)


def load_classify_member(checkpoint_dir: str) -> tuple[dict[str, Any], LSTMClassifier]:
    payload = load_checkpoint(checkpoint_dir)
    model = classifier_from_info(payload["model_config"])
    model.load_state_dict(payload["model"])
    return payload, model


def score_classifiers(models: list[LSTMClassifier], data: TextData) -> dict[str, Scores]:
    """The members' mean class probabilities (one member: the model alone) scored on val and test."""
    scores = {}
    for split in ("val", "test"):
        part = data.splits[split]
        probs = mean_probabilities(models, part, data.num_classes, torch.device("cpu"))
        s = classification_scores(probs, part.labels, data.num_classes)
        scores[split] = Scores(accuracy=s["accuracy"], macro_f1=s["macro_f1"])
    return scores


def majority_baseline(data: TextData) -> dict[str, dict[str, Scores]]:
    """Always predicting the most frequent training class, scored like the model."""
    labels = data.manifest.preprocessing["fitted"]["labels"]
    majority = labels.index(data.manifest.task_params["majority_label"])
    out = {}
    for split in ("val", "test"):
        truth = data.splits[split].labels
        logits = torch.zeros(len(truth), data.num_classes)
        logits[:, majority] = 1.0
        s = classification_scores(logits, truth, data.num_classes)
        out[split] = Scores(accuracy=s["accuracy"], macro_f1=s["macro_f1"])
    return {"majority_class": out}


def baselines_of(data: ForecastData, quantiles: tuple[float, ...] = ()) -> dict[str, dict[str, ForecastScores]]:
    season = int(data.manifest.task_params["season_steps"])
    return {
        s: baseline_scores(data.split(s), horizon=data.horizon, season_steps=season, quantiles=quantiles)
        for s in ("val", "test")
    }


def baseline_table(per_split: dict[str, dict[str, ForecastScores]]) -> dict[str, dict[str, Scores]]:
    """Baseline scores per split -> per baseline name, its val and test :class:`Scores`."""
    return {name: {s: Scores.of(per_split[s][name]) for s in per_split} for name in per_split["val"]}


def baselines_for(data: ForecastData) -> dict[str, dict[str, Scores]]:
    return baseline_table(baselines_of(data))


def series_wins(model: dict[str, ForecastScores], baselines: dict[str, dict[str, ForecastScores]]) -> dict[str, Any]:
    """Per split, on how many series the model's MAE is below seasonal naive's on the same targets."""
    wins = {}
    count = 0
    for split, scores in model.items():
        naive = baselines[split]["seasonal_naive"].series_mae
        count = max(count, len(naive))
        wins[split] = sum(1 for code, mae in scores.series_mae.items() if code in naive and mae < naive[code])
    return {"count": count, "beats_seasonal_naive": wins}


@dataclass(frozen=True, kw_only=True)
class Scored:
    """The chosen checkpoints scored on val and test, with the baselines of the same targets."""

    payloads: list[dict[str, Any]]
    """The checkpoints' contents, best first (what the export holds)."""
    best: dict[str, Scores]
    """The best trial alone."""
    ensemble: dict[str, Scores] | None
    """All of them averaged (None with a single checkpoint)."""
    baselines: dict[str, dict[str, Scores]]
    fitted: Any
    """The dataset's fitted preprocessing (exported with the model)."""
    dataset: str
    target: str
    horizon: int
    series: dict[str, Any] | None = None
    """Panels: the series count and, per split, how many the exported model beats seasonal naive on."""
    series_scaling: dict[str, Any] | None = None
    """Panels: each series' (centre, scale) per numeric column, exported with the model for ``predict``."""
    series_detail: dict[str, Any] | None = None
    """Panels: per-series test errors and the best and worst series' forecasts (written as ``series.json``)."""


def series_detail(
    members: list[tuple[LSTMForecaster, int]],
    data: ForecastData,
    model: ForecastScores,
    naive: ForecastScores,
    shown: int = 5,
) -> dict[str, Any]:
    """Panels, on the test split: each series' MAE and MASE next to seasonal naive's, and the step-1 forecasts of the
    best and worst series (by MASE) against their actuals, for the report."""
    keys = list(data.manifest.task_params["series"]["keys"])
    scales = data.manifest.task_params["series"].get("naive_mae") or [None] * len(keys)
    rows = []
    for code, mae in sorted(model.series_mae.items()):
        scale = scales[code]
        naive_mae = naive.series_mae.get(code)
        rows.append(
            {
                "series": keys[code],
                "mae": mae,
                "naive_mae": naive_mae,
                "mase": mae / scale if scale else None,
                "naive_mase": naive_mae / scale if scale and naive_mae is not None else None,
            }
        )
    ranked = sorted((r for r in rows if r["mase"] is not None), key=lambda r: r["mase"])
    picks = {"best": ranked[:1], "worst": ranked[-1:]} if ranked else {}
    curves: dict[str, Any] = {}
    wanted = {keys.index(chosen[0]["series"]): (which, chosen[0]) for which, chosen in picks.items()}
    window = max(w for _, w in members)
    for arrays in pieces(data.split("test")):  # a series lies whole in one piece
        positions = target_positions(arrays, window=window, horizon=data.horizon)
        for code, (which, chosen) in wanted.items():
            curve = _series_curve(members, data, arrays, positions, code)
            if curve is not None:
                curves[which] = {"series": chosen["series"], "mase": chosen["mase"], **curve}
        del arrays, positions  # before the next piece is read
    return {
        "split": "test",
        "series": rows,
        "best": ranked[:shown],
        "worst": ranked[-shown:][::-1],
        "curves": curves,
    }


def _series_curve(
    members: list[tuple[LSTMForecaster, int]],
    data: ForecastData,
    arrays: SeriesArrays,
    positions: torch.Tensor,
    code: int,
) -> dict[str, list[float | None]] | None:
    """Step-1 forecasts of series ``code`` (the members' mean, as the exported model forecasts) against its actuals,
    from the scoreable ``positions`` of ``arrays`` (None: the series is not in ``arrays``)."""
    if arrays.series is None:
        return None
    mine = positions[torch.from_numpy(arrays.series[positions.numpy()] == code)]
    if not len(mine):
        return None
    outs = [predict_scaled(m, arrays, mine, window=w, horizon=data.horizon) for m, w in members]
    out, levels = mean_forecast(outs, [m.quantiles for m, _ in members])
    preds = point_forecast(out, levels)
    step1 = (mine - data.horizon + 1).numpy()  # the row step 1 forecasts
    target = data.fitted.config.target
    forecast = arrays.unscale(
        preds[:, 0].double().numpy(), step1, data.fitted.centre[target], data.fitted.scale[target]
    )
    return {
        "actual": [None if not math.isfinite(v) else float(v) for v in arrays.target_raw[step1]],
        "forecast": [float(v) for v in forecast],
    }


def score_forecast(checkpoints: list[Any], handle: DataHandle) -> Scored:
    """Forecaster checkpoints (Tune's, best first): the best alone, all of them averaged, and the baselines."""
    data = load_forecast_data(handle, ("val", "test"))  # nothing here reads the training split
    loaded = [_in_dir(c, load_forecast_member) for c in checkpoints]
    members = [(model, window) for _, model, window in loaded]

    # The run's levels (every trial carries the same); checkpoints from before quantiles existed have none.
    levels = tuple(float(q) for q in loaded[0][0]["data_info"].get("quantiles", ()))
    raw_best = score_forecasters(members[:1], data, levels)
    raw_ensemble = score_forecasters(members, data, levels) if len(members) > 1 else None
    raw_baselines = baselines_of(data, levels)
    exported = raw_ensemble or raw_best
    panel = "series" in data.manifest.task_params

    def scores(raw: dict[str, ForecastScores]) -> dict[str, Scores]:
        return {split: Scores.of(s) for split, s in raw.items()}

    return Scored(
        payloads=[payload for payload, _, _ in loaded],
        best=scores(raw_best),
        ensemble=scores(raw_ensemble) if raw_ensemble is not None else None,
        baselines=baseline_table(raw_baselines),
        series=series_wins(exported, raw_baselines) if panel else None,
        series_scaling=data.manifest.preprocessing.get("series_scaling") if panel else None,
        series_detail=series_detail(members, data, exported["test"], raw_baselines["test"]["seasonal_naive"])
        if panel
        else None,
        fitted=data.fitted,
        dataset=data.manifest.name,
        target=data.fitted.config.target,
        horizon=data.horizon,
    )


def score_classify(checkpoints: list[Any], handle: DataHandle) -> Scored:
    """Classifier checkpoints (Tune's, best first): the best alone, all of them averaged, and the majority class."""
    text = load_text_data(handle, ("train", "val", "test"))
    loaded = [_in_dir(c, load_classify_member) for c in checkpoints]
    models = [model for _, model in loaded]
    return Scored(
        payloads=[payload for payload, _ in loaded],
        best=score_classifiers(models[:1], text),
        ensemble=score_classifiers(models, text) if len(models) > 1 else None,
        baselines=majority_baseline(text),
        fitted=text.fitted(),
        dataset=text.manifest.name,
        target="label",
        horizon=0,
    )


T = TypeVar("T")


def _in_dir(checkpoint: Any, load: Callable[[str], T]) -> T:
    """``load`` applied to a Tune checkpoint's local directory (fetched first when it lives in S3)."""
    with checkpoint.as_directory() as directory:
        return load(directory)


__all__ = [
    "Scored",
    "baselines_for",
    "load_classify_member",
    "load_forecast_member",
    "majority_baseline",
    "score_checkpoint",
    "score_classifiers",
    "score_classify",
    "score_forecast",
    "score_forecasters",
]
