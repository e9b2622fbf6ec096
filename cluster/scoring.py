"""After ``fit``: the best checkpoint scored on validation and test, and the naive baselines on the same targets."""

from __future__ import annotations

from typing import Any

import torch

from cluster.summary import Scores
from trainables.checkpoint import load_checkpoint
from trainables.data.loader import ForecastData
from trainables.data.text_loader import TextData
from trainables.evaluate import ForecastScores, baseline_scores, evaluate_model
from trainables.model import classifier_from_info, forecaster_from_info
from trainables.tasks import classification_scores, predict_logits


def score_checkpoint(checkpoint_dir: str, data: ForecastData) -> tuple[dict[str, Any], dict[str, ForecastScores]]:
    """Load a checkpoint (safely) and score it on val and test; returns the payload and the scores."""
    payload = load_checkpoint(checkpoint_dir)
    info = payload["model_config"]
    model = forecaster_from_info(info)
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


def score_classifier(checkpoint_dir: str, data: TextData) -> tuple[dict[str, Any], dict[str, Scores]]:
    """Load a classifier checkpoint (safely) and score it on val and test."""
    payload = load_checkpoint(checkpoint_dir)
    info = payload["model_config"]
    model = classifier_from_info(info)
    model.load_state_dict(payload["model"])
    scores = {}
    for split in ("val", "test"):
        part = data.splits[split]
        logits = predict_logits(model, part, data.num_classes, torch.device("cpu"))
        s = classification_scores(logits, part.labels, data.num_classes)
        scores[split] = Scores(accuracy=s["accuracy"], macro_f1=s["macro_f1"])
    return payload, scores


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


def baselines_for(data: ForecastData) -> dict[str, dict[str, Scores]]:
    season = int(data.manifest.task_params["season_steps"])
    per_split = {s: baseline_scores(data.splits[s], horizon=data.horizon, season_steps=season) for s in ("val", "test")}
    return {name: {s: Scores.of(per_split[s][name]) for s in per_split} for name in per_split["val"]}


__all__ = ["baselines_for", "majority_baseline", "score_checkpoint", "score_classifier"]
