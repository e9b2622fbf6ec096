"""What differs between tasks inside the one training loop: the model, an epoch of training, and evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trainables import metrics as M
from trainables.config import TrialConfig
from trainables.data.embeddings import aligned_for
from trainables.data.loader import ForecastData
from trainables.data.text_loader import TextData, TextSplit, length_batches
from trainables.data.windows import SeriesArrays, gather, target_positions
from trainables.evaluate import ForecastScores, evaluate_model, masked_loss
from trainables.model import build_classifier, build_model, l1_penalty


@dataclass(frozen=True)
class EpochStats:
    loss: float
    steps: int
    samples: int
    grad_norm: float = math.nan
    """Mean global gradient norm before clipping over the epoch's steps."""
    clipped: float = math.nan
    """Share of the epoch's steps whose gradient ``grad_clip`` scaled down."""


@dataclass(frozen=True)
class StepResult:
    grad_norm: torch.Tensor
    """Global gradient norm before clipping (a 0-d tensor on the device)."""
    clipped: torch.Tensor
    """Whether clipping scaled this step's gradient down (0-d bool tensor)."""


class EpochAccumulator:
    """An epoch's running sums, kept on the device: adding a step never waits for the device (a GPU keeps its
    queue full); one transfer at the end."""

    def __init__(self, device: torch.device) -> None:
        # loss x samples, gradient norm, clipped steps
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.steps = 0
        self.samples = 0

    def add(self, loss: torch.Tensor, samples: int, step: StepResult) -> None:
        self._sums += torch.stack([loss.detach().double() * samples, step.grad_norm.double(), step.clipped.double()])
        self.steps += 1
        self.samples += samples

    def stats(self) -> EpochStats:
        if not self.steps:
            return EpochStats(loss=math.nan, steps=0, samples=0)
        loss, norm, clipped = self._sums.tolist()
        return EpochStats(
            loss=loss / self.samples if self.samples else math.nan,
            steps=self.steps,
            samples=self.samples,
            grad_norm=norm / self.steps,
            clipped=clipped / self.steps,
        )


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, cfg: TrialConfig) -> StepResult:
    optimizer.zero_grad(set_to_none=True)
    total = loss + cfg.optim.l1 * l1_penalty(model) if cfg.optim.l1 > 0 else loss
    total.backward()
    # The norm is measured even with clipping off: it is how a user tells whether a grad_clip value binds at all
    # (on the bundled Beijing data the mean norm is 0.25-0.32, so a limit of 1 clips 1-3% of steps).
    limit = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    norm = nn.utils.clip_grad_norm_(model.parameters(), limit).detach()
    optimizer.step()
    return StepResult(grad_norm=norm, clipped=norm > limit)


SELECTABLE = {
    "loss": M.VAL_SCALED_MSE,
    "rmse": M.VAL_RMSE,
    "mae": M.VAL_MAE,
    "mase": M.VAL_MASE,
    "smape": M.VAL_SMAPE,
    "pinball": M.VAL_PINBALL,
}


def selected(scores: ForecastScores, metric: str) -> dict[str, float]:
    """A forecaster's validation figures, with ``val/loss`` holding the one trials are selected on (``metric``)."""
    out = {M.VAL_SCALED_MSE: scores.loss, M.VAL_RMSE: scores.rmse, M.VAL_MAE: scores.mae}
    if scores.mase is not None:
        out[M.VAL_MASE] = scores.mase
    if scores.smape is not None:
        out[M.VAL_SMAPE] = scores.smape
    if scores.pinball is not None:
        out[M.VAL_PINBALL] = scores.pinball
    if scores.coverage is not None:
        out[M.VAL_COVERAGE] = scores.coverage
    key = SELECTABLE.get(metric)
    if key is None or key not in out:
        raise ValueError(f"metric = {metric!r}: not reported for this dataset; allowed: {', '.join(SELECTABLE)}")
    out[M.VAL_LOSS] = out[key]
    return out


def model_quantiles(cfg: TrialConfig) -> tuple[float, ...]:
    """The levels the model forecasts: the run's quantiles with ``loss = quantile``, none otherwise."""
    return cfg.limits.levels if cfg.optim.loss == "quantile" else ()


class ForecastTask:
    """Windows of rows -> the target at steps 1..``horizon``; MSE on the scaled target; RMSE/MAE in units."""

    def __init__(self, data: ForecastData, cfg: TrialConfig) -> None:
        self.data = data
        window = cfg.window.window
        if window > data.manifest.max_window:
            raise ValueError(
                f"window = {window}: the dataset was prepared for windows up to {data.manifest.max_window}"
            )
        # Streamed: positions are found piece by piece, as each piece is read.
        self.positions = (
            torch.empty(0, dtype=torch.long)
            if data.streamed
            else target_positions(data.splits["train"], window=window, horizon=data.horizon)
        )
        if not data.streamed and len(self.positions) == 0:
            raise ValueError(f"window = {window}: the training split has no target with that much history")
        self._resident: tuple[torch.device, SeriesArrays, torch.Tensor] | None = None

    def _train_on(self, device: torch.device) -> tuple[SeriesArrays, torch.Tensor]:
        """The training split and its positions on ``device``, copied there once per trial, not once per batch."""
        if self._resident is None or self._resident[0] != device:
            train = self.data.splits["train"].to(device)
            self._resident = (device, train, self.positions.to(device))
        return self._resident[1], self._resident[2]

    def build(self, cfg: TrialConfig) -> nn.Module:
        return build_model(
            cfg.model,
            n_features=self.data.n_features,
            target_index=self.data.fitted.target_index,
            horizon=self.data.horizon,
            categorical=self.data.fitted.categorical_codes,
            target_offset=self._target_offset(),
            quantiles=model_quantiles(cfg),
        )

    def _target_offset(self) -> float:
        fitted = self.data.fitted
        target = fitted.config.target
        return float(fitted.centre[target] / fitted.scale[target])

    def model_info(self, cfg: TrialConfig) -> dict[str, Any]:
        return {
            "task": "forecast",
            "config": asdict(cfg.model),
            "n_features": self.data.n_features,
            "target_index": self.data.fitted.target_index,
            "horizon": self.data.horizon,
            "categorical": [list(c) for c in self.data.fitted.categorical_codes],
            "target_offset": self._target_offset(),
            "quantiles": list(model_quantiles(cfg)),
        }

    def data_info(self, cfg: TrialConfig) -> dict[str, Any]:
        return {
            "window": cfg.window.window,
            "horizon": self.data.horizon,
            "dataset": self.data.manifest.name,
            "quantiles": list(cfg.limits.levels),
        }

    def train_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: TrialConfig,
        seed: int,
        device: torch.device,
        samples: int = 0,
    ) -> EpochStats:
        """One epoch: every training window in a new order, or the first ``samples`` of that order (0: all)."""
        model.train()
        if self.data.streamed:
            return self._train_streamed(model, optimizer, cfg, seed, device, samples)
        epoch = EpochAccumulator(device)
        self._train_batches(model, optimizer, cfg, self.batches(cfg, seed, device, samples), epoch)
        return epoch.stats()

    def batches(
        self, cfg: TrialConfig, seed: int, device: torch.device, samples: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """An epoch's ``(x, y, mask)`` batches of a split held in memory: every training window in an order drawn
        from ``seed``, or the first ``samples`` of it (what a trial trains on, and a pack's round)."""
        train, positions = self._train_on(device)
        # The permutation is drawn on the host from the seed, so every device sees the same batches.
        shuffle = torch.randperm(len(positions), generator=torch.Generator().manual_seed(seed))
        if samples:
            shuffle = shuffle[:samples]
        return self._windows(train, positions[shuffle.to(positions.device)], cfg)

    def _windows(
        self, train: SeriesArrays, order: torch.Tensor, cfg: TrialConfig
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(x, y, mask)`` batches of the windows ending at ``order``'s positions, in that order."""
        for start in range(0, len(order), cfg.optim.batch_size):
            batch = order[start : start + cfg.optim.batch_size]
            yield gather(train, batch, window=cfg.window.window, horizon=self.data.horizon)

    def _train_batches(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: TrialConfig,
        batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        epoch: EpochAccumulator,
    ) -> None:
        for x, y, mask in batches:
            loss = masked_loss(cfg.optim.loss, model(x), y, mask, cfg.limits.levels)
            epoch.add(loss, len(x), _step(model, optimizer, loss, cfg))

    def _train_streamed(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: TrialConfig,
        seed: int,
        device: torch.device,
        samples: int,
    ) -> EpochStats:
        """Pieces of whole series in an order drawn from ``seed``, every window of a piece in a random order, until
        ``samples`` windows (0: every window of every piece, once)."""
        epoch = EpochAccumulator(device)
        generator = torch.Generator().manual_seed(seed)
        for piece in self.data.streams["train"].shuffled(seed):
            positions = target_positions(piece, window=cfg.window.window, horizon=self.data.horizon)
            order = positions[torch.randperm(len(positions), generator=generator)]
            if samples:
                order = order[: samples - epoch.samples]
            self._train_batches(model, optimizer, cfg, self._windows(piece.to(device), order.to(device), cfg), epoch)
            del piece, positions, order  # before the next piece is read: one piece held at a time
            if samples and epoch.samples >= samples:
                break
        if not epoch.samples:
            raise ValueError(f"window = {cfg.window.window}: the training split has no target with that much history")
        return epoch.stats()

    def evaluate(self, model: nn.Module, cfg: TrialConfig, device: torch.device) -> dict[str, float]:
        fitted = self.data.fitted
        target = fitted.config.target
        scores = evaluate_model(
            model,
            self.data.split("val"),
            window=cfg.window.window,
            horizon=self.data.horizon,
            target_centre=fitted.centre[target],
            target_scale=fitted.scale[target],
            device=device,
            quantiles=cfg.limits.levels,
        )
        return selected(scores, cfg.limits.metric)


def classification_scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of the argmax of ``logits`` (or of probabilities; classes absent from both truth and
    prediction are left out of the mean)."""
    pred = logits.argmax(dim=1)
    accuracy = float((pred == labels).float().mean()) if len(labels) else math.nan
    f1s = []
    for c in range(num_classes):
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s) if f1s else math.nan}


@torch.no_grad()
def predict_logits(
    model: nn.Module, split: TextSplit, num_classes: int, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    was_training = model.training
    model.eval()
    order = torch.argsort(split.lengths, stable=True)  # similar lengths together: little padding
    out = torch.empty(len(split), num_classes)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        tokens, lengths, _ = split.batch(idx)
        out[idx] = model(tokens.to(device), lengths).float().cpu()
    model.train(was_training)
    return out


def mean_probabilities(
    models: Sequence[nn.Module], split: TextSplit, num_classes: int, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """``[documents, classes]``: the members' softmax probabilities, averaged (one member: its own)."""
    if not models:
        raise ValueError("classification: an ensemble needs at least one member")
    probs = [torch.softmax(predict_logits(m, split, num_classes, device, batch_size), dim=1) for m in models]
    return torch.stack(probs).mean(dim=0) if len(probs) > 1 else probs[0]


class ClassifyTask:
    """Token ids -> class; cross-entropy; accuracy and macro-F1."""

    def __init__(self, data: TextData, cfg: TrialConfig, embeddings_uri: str | None = None) -> None:
        self.data = data
        self.embeddings_uri = embeddings_uri
        if cfg.model.embeddings != "random" and not embeddings_uri:
            raise ValueError(f"embeddings = {cfg.model.embeddings!r} needs a vector file (--embeddings)")

    def build(self, cfg: TrialConfig) -> nn.Module:
        model = build_classifier(cfg.model, vocab_size=self.data.vocab_size, num_classes=self.data.num_classes)
        if cfg.model.embeddings != "random" and self.embeddings_uri:
            aligned = aligned_for(self.embeddings_uri, self.data.vocab, cfg.model.embedding_dim)
            with torch.no_grad():
                model.embedding.weight.copy_(torch.from_numpy(aligned.matrix))
            model.embedding.weight.requires_grad_(cfg.model.embeddings == "finetune")
        return model

    def model_info(self, cfg: TrialConfig) -> dict[str, Any]:
        return {
            "task": "classify",
            "config": asdict(cfg.model),
            "vocab_size": self.data.vocab_size,
            "num_classes": self.data.num_classes,
        }

    def data_info(self, cfg: TrialConfig) -> dict[str, Any]:
        return {"dataset": self.data.manifest.name, "max_length": self.data.manifest.task_params["max_length"]}

    def train_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: TrialConfig,
        seed: int,
        device: torch.device,
        samples: int = 0,
    ) -> EpochStats:
        """One epoch: every document in length-grouped batches of a new order, or batches of that order until
        ``samples`` documents are seen (0: all)."""
        model.train()
        epoch = EpochAccumulator(device)
        for tokens, lengths, labels in self.batches(cfg, seed, device, samples):
            loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
            epoch.add(loss, len(tokens), _step(model, optimizer, loss, cfg))
        return epoch.stats()

    def batches(
        self, cfg: TrialConfig, seed: int, device: torch.device, samples: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """An epoch's ``(tokens, lengths, labels)`` batches (lengths stay on the host, as packing wants them):
        length-grouped batches in an order drawn from ``seed``, until ``samples`` documents (0: all)."""
        train = self.data.splits["train"]
        seen = 0
        for idx in length_batches(train.lengths, cfg.optim.batch_size, torch.Generator().manual_seed(seed)):
            if samples and seen >= samples:
                break
            idx = idx[: samples - seen] if samples else idx
            tokens, lengths, labels = train.batch(idx)
            seen += len(idx)
            yield tokens.to(device), lengths, labels.to(device)

    def evaluate(self, model: nn.Module, cfg: TrialConfig, device: torch.device) -> dict[str, float]:
        val = self.data.splits["val"]
        logits = predict_logits(model, val, self.data.num_classes, device)
        loss = float(nn.functional.cross_entropy(logits, val.labels))
        scores = classification_scores(logits, val.labels, self.data.num_classes)
        return {M.VAL_LOSS: loss, M.VAL_ACCURACY: scores["accuracy"], M.VAL_MACRO_F1: scores["macro_f1"]}


Task = ForecastTask | ClassifyTask


def task_for(data: ForecastData | TextData, cfg: TrialConfig, embeddings_uri: str | None = None) -> Task:
    if isinstance(data, TextData):
        return ClassifyTask(data, cfg, embeddings_uri)
    return ForecastTask(data, cfg)


__all__ = [
    "ClassifyTask",
    "EpochAccumulator",
    "EpochStats",
    "ForecastTask",
    "StepResult",
    "Task",
    "classification_scores",
    "mean_probabilities",
    "predict_logits",
    "task_for",
]
