"""The LSTM family as one builder: stacked or bidirectional encoders, four poolings, chosen initialisation, and a
head per task. Pure functions of a config: nothing here knows about training or Tune."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from trainables.config import ModelConfig

Pooling = Literal["last", "mean", "additive", "dot"]
POOLINGS: tuple[str, ...] = ("last", "mean", "additive", "dot")
InitScheme = Literal["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"]
HEADS: tuple[str, ...] = ("linear", "decoder")
INIT_SCHEMES: tuple[str, ...] = (
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
)


def init_matrix(weight: torch.Tensor, scheme: str) -> None:
    """Initialise one ``[rows, cols]`` matrix in place ("default" keeps PyTorch's uniform init)."""
    if scheme == "default":
        return
    if scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity="linear")
    elif scheme == "kaiming_normal":
        nn.init.kaiming_normal_(weight, nonlinearity="linear")
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight)
    else:
        raise ValueError(f"model.init = {scheme!r}: must be one of {', '.join(INIT_SCHEMES)}")


def init_lstm(lstm: nn.LSTM, *, input_scheme: str, recurrent_scheme: str, forget_bias: float | None) -> None:
    """Input weights get ``input_scheme``; recurrent weights get ``recurrent_scheme`` per gate block (so
    "orthogonal" makes each of the four ``[hidden, hidden]`` blocks orthogonal); the forget gate's bias is set."""
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        with torch.no_grad():
            if name.startswith("weight_ih"):
                for block in param.split(hidden, dim=0):
                    init_matrix(block, input_scheme)
            elif name.startswith("weight_hh"):
                for block in param.split(hidden, dim=0):
                    init_matrix(block, recurrent_scheme)
            elif name.startswith("bias") and forget_bias is not None:
                # Gates are ordered input, forget, cell, output; the two bias vectors add up.
                param.zero_()
                if name.startswith("bias_ih"):
                    param[hidden : 2 * hidden] = forget_bias


class SequenceEncoder(nn.Module):
    """LSTM over ``[batch, time, features]`` (padded steps skipped via packing) pooled to ``[batch, out_dim]``."""

    def __init__(self, cfg: ModelConfig, input_size: int) -> None:
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"model.pooling = {cfg.pooling!r}: must be one of {', '.join(POOLINGS)}")
        self.pooling = cfg.pooling
        self.lstm = nn.LSTM(
            input_size=input_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
            batch_first=True,
        )
        init_lstm(self.lstm, input_scheme=cfg.init, recurrent_scheme=cfg.recurrent_init, forget_bias=cfg.forget_bias)
        self.out_dim = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        if cfg.pooling == "additive":
            self.score = nn.Sequential(nn.Linear(self.out_dim, self.out_dim), nn.Tanh(), nn.Linear(self.out_dim, 1))
        elif cfg.pooling == "dot":
            self.query = nn.Parameter(torch.randn(self.out_dim) / math.sqrt(self.out_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = x.shape[1]
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out_packed, (h, _) = self.lstm(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=steps)
            mask = torch.arange(steps, device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)
        else:
            out, (h, _) = self.lstm(x)
            mask = torch.ones(x.shape[0], steps, dtype=torch.bool, device=x.device)
        if self.pooling == "last":
            # Final states of the last layer; with packing they are taken at each sequence's true length.
            pooled: torch.Tensor = torch.cat([h[-2], h[-1]], dim=1) if self.lstm.bidirectional else h[-1]
            return pooled
        weights = mask.unsqueeze(-1).to(out.dtype)
        if self.pooling == "mean":
            mean: torch.Tensor = (out * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return mean
        scores = (
            self.score(out).squeeze(-1) if self.pooling == "additive" else out @ self.query / math.sqrt(self.out_dim)
        )
        scores = scores.masked_fill(~mask, float("-inf"))
        attention = torch.softmax(scores, dim=1).unsqueeze(-1)
        attended: torch.Tensor = (attention * out).sum(dim=1)
        return attended


class DecoderHead(nn.Module):
    """Multi-step head: an LSTM cell unrolled over the horizon, started from the encoder's summary.

    Each step is fed the previous step's forecast (the first step the last observed target), never a true future
    value, so training and forecasting see the same inputs.
    """

    def __init__(
        self, in_dim: int, hidden_size: int, horizon: int, *, level_gain: bool = False, outputs: int = 1, fed: int = 0
    ) -> None:
        super().__init__()
        self.horizon = horizon
        self.outputs = outputs
        """Values per step: 1, or one per quantile."""
        self.fed = fed
        """Which of a step's outputs the next step is fed (the median's, with quantiles)."""
        self.init_h = nn.Linear(in_dim, hidden_size)
        self.init_c = nn.Linear(in_dim, hidden_size)
        self.cell = nn.LSTMCell(1, hidden_size)
        self.out = gain_head(hidden_size, outputs, level_gain)
        self.level_gain = level_gain

    def forward(self, summary: torch.Tensor, last: torch.Tensor, level: torch.Tensor, residual: bool) -> torch.Tensor:
        """``[batch, horizon * outputs]``, step-major."""
        h, c = torch.tanh(self.init_h(summary)), self.init_c(summary)
        prev = last.unsqueeze(1)
        steps = []
        for _ in range(self.horizon):
            h, c = self.cell(prev, (h, c))
            step = apply_gain(self.out(h), level, self.outputs, self.level_gain)
            if residual:
                step = step + last.unsqueeze(1)
            steps.append(step)
            prev = step[:, self.fed : self.fed + 1]
        return torch.cat(steps, dim=1)


WINDOW_NORM_EPS = 1e-4
"""Added to a window's target variance (scaled units): a flat window is divided by 0.01, not by zero."""


def gain_head(in_dim: int, horizon: int, level_gain: bool) -> nn.Linear:
    """The head's output layer: ``horizon`` changes, and with ``level_gain`` as many gains, which start at zero."""
    layer = nn.Linear(in_dim, 2 * horizon if level_gain else horizon)
    if level_gain:
        with torch.no_grad():
            layer.weight[horizon:].zero_()
            layer.bias[horizon:].zero_()
    return layer


def apply_gain(out: torch.Tensor, level: torch.Tensor, horizon: int, level_gain: bool) -> torch.Tensor:
    """``[batch, horizon]`` forecasts: the changes, plus each gain times the current level when ``level_gain``."""
    if not level_gain:
        return out
    return out[:, :horizon] + out[:, horizon:] * level.unsqueeze(1)


class LSTMForecaster(nn.Module):
    """Encoder over a window of rows and a head that forecasts steps ``1..horizon`` ahead: ``[batch, horizon]``.

    ``head = "linear"`` maps the encoder's summary to all steps at once; ``"decoder"`` unrolls :class:`DecoderHead`.
    With ``residual`` the head predicts the change from the last observed (scaled) target, so an untrained model
    starts at the persistence forecast instead of at zero.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        n_features: int,
        target_index: int,
        horizon: int = 1,
        categorical: tuple[tuple[int, int], ...] = (),
        target_offset: float = 0.0,
        quantiles: tuple[float, ...] = (),
    ) -> None:
        super().__init__()
        check_quantiles(quantiles, "model.quantiles")
        if n_features < 1:
            raise ValueError(f"model.n_features = {n_features}: must be >= 1")
        if not 0 <= target_index < n_features:
            raise ValueError(f"model.target_index = {target_index}: must be in [0, {n_features})")
        if horizon < 1:
            raise ValueError(f"model.horizon = {horizon}: must be >= 1")
        if cfg.head not in HEADS:
            raise ValueError(f"model.head = {cfg.head!r}: must be one of {', '.join(HEADS)}")
        self.residual = cfg.residual
        self.level_gain = cfg.level_gain
        self.window_norm = cfg.window_norm
        self.target_offset = target_offset
        """Centre / scale of the target: the scaled last value plus this is the level in units of the scale."""
        self.target_index = target_index
        self.horizon = horizon
        self.quantiles = tuple(float(q) for q in quantiles)
        """Empty: one forecast per step, ``[batch, horizon]``; else ``[batch, horizon, len(quantiles)]``, ascending."""
        outputs = max(1, len(self.quantiles))
        coded = {index for index, _ in categorical}
        if any(not 0 <= i < n_features or i == target_index for i in coded) or any(n < 2 for _, n in categorical):
            raise ValueError(f"model.categorical = {categorical}: (feature index, codes >= 2), never the target")
        self.categorical = tuple(categorical)
        self.register_buffer(
            "numeric_index", torch.tensor([i for i in range(n_features) if i not in coded]), persistent=False
        )
        self.code_embeddings = nn.ModuleList(nn.Embedding(n, embedding_size(n)) for _, n in categorical)
        width = n_features - len(coded) + sum(embedding_size(n) for _, n in categorical)
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.encoder = SequenceEncoder(cfg, width)
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.head: nn.Module = (
            DecoderHead(
                self.encoder.out_dim,
                cfg.hidden_size,
                horizon,
                level_gain=cfg.level_gain,
                outputs=outputs,
                fed=median_index(self.quantiles),
            )
            if cfg.head == "decoder"
            else gain_head(self.encoder.out_dim, horizon * outputs, cfg.level_gain)
        )

    @property
    def lstm(self) -> nn.LSTM:
        return self.encoder.lstm

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Numeric features as they are, each categorical code column replaced by its learned embedding."""
        if not self.categorical:
            return x
        numeric_index: torch.Tensor = self.numeric_index  # type: ignore[assignment]  # a registered buffer
        parts = [x[..., numeric_index]]
        parts += [emb(x[..., i].long()) for (i, _), emb in zip(self.categorical, self.code_embeddings, strict=True)]
        return torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.window_norm:
            return self._forward(x, self.target_offset)
        history = x[..., self.target_index]
        centre = history.mean(dim=1, keepdim=True)
        spread = (history.var(dim=1, unbiased=False, keepdim=True) + WINDOW_NORM_EPS).sqrt()
        x = x.clone()
        x[..., self.target_index] = (history - centre) / spread
        # The level in units of the scale, seen from the normalised window: (v + offset) / spread, v = n*spread + centre.
        out = self._forward(x, (centre + self.target_offset) / spread)
        if self.quantiles:
            return out * spread.unsqueeze(-1) + centre.unsqueeze(-1)
        return out * spread + centre

    def _forward(self, x: torch.Tensor, offset: torch.Tensor | float) -> torch.Tensor:
        summary = self.head_dropout(self.encoder(self.input_dropout(self.embed(x))))
        last = x[:, -1, self.target_index]
        level = last + (offset.squeeze(1) if isinstance(offset, torch.Tensor) else offset)
        if isinstance(self.head, DecoderHead):
            out: torch.Tensor = self.head(summary, last, level, self.residual)
        else:
            out = apply_gain(self.head(summary), level, self.horizon * max(1, len(self.quantiles)), self.level_gain)
            if self.residual:
                out = out + last.unsqueeze(1)
        if not self.quantiles:
            return out
        # Sorted, so quantile forecasts never cross (the monotone rearrangement; its gradient flows to each value).
        return out.view(len(out), self.horizon, len(self.quantiles)).sort(dim=-1).values


def check_quantiles(quantiles: tuple[float, ...], key: str) -> None:
    """Quantile levels: each strictly between 0 and 1, ascending, no repeats."""
    if any(not 0.0 < q < 1.0 for q in quantiles) or list(quantiles) != sorted(set(quantiles)):
        raise ValueError(f"{key} = {list(quantiles)}: levels must lie strictly between 0 and 1, ascending, no repeats")


def median_index(quantiles: tuple[float, ...]) -> int:
    """The level closest to 0.5 (the lower on a tie): its forecast is the point forecast (0 without quantiles)."""
    # Rounded, so 0.05 and 0.95 tie as they do on paper, not by float error.
    return min(range(len(quantiles)), key=lambda i: round(abs(quantiles[i] - 0.5), 9)) if quantiles else 0


def point_forecast(out: torch.Tensor, quantiles: tuple[float, ...]) -> torch.Tensor:
    """``[batch, horizon]``: the output itself, or the median level's slice of a quantile output."""
    return out[..., median_index(quantiles)] if quantiles else out


def levels_of(model: nn.Module) -> tuple[float, ...]:
    """The quantile levels a model forecasts (none for a point forecaster)."""
    return tuple(getattr(model, "quantiles", ()))


def shared_levels(levels: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
    """The levels every member forecasts; none when they differ (or forecast points)."""
    distinct = set(levels)
    return distinct.pop() if len(distinct) == 1 else ()


def mean_forecast(
    outs: Sequence[torch.Tensor], levels: Sequence[tuple[float, ...]]
) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Members' outputs as one, with the levels it holds: averaged level by level when every member forecasts the
    same levels, else the members' point forecasts averaged (no levels). One member: its output as it is."""
    shared = shared_levels(levels)
    if not shared:
        outs = [point_forecast(o, q) for o, q in zip(outs, levels, strict=True)]
    return (torch.stack(list(outs)).mean(dim=0) if len(outs) > 1 else outs[0]), shared


class LSTMClassifier(nn.Module):
    """Token ids -> embedding -> encoder (packed: padding costs nothing) -> pooled state -> class logits."""

    def __init__(self, cfg: ModelConfig, *, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        if vocab_size < 3:
            raise ValueError(f"model.vocab_size = {vocab_size}: must be >= 3")
        if num_classes < 2:
            raise ValueError(f"model.num_classes = {num_classes}: must be >= 2")
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.encoder = SequenceEncoder(cfg, cfg.embedding_dim)
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.encoder.out_dim, num_classes)

    @property
    def lstm(self) -> nn.LSTM:
        return self.encoder.lstm

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder(self.input_dropout(self.embedding(tokens)), lengths)
        logits: torch.Tensor = self.head(self.head_dropout(pooled))
        return logits


def embedding_size(codes: int) -> int:
    """Width of a categorical embedding: half the codes, between 2 and 16 (a rule of thumb that keeps small
    vocabularies cheap)."""
    return max(2, min(16, (codes + 1) // 2))


def build_model(
    cfg: ModelConfig,
    *,
    n_features: int,
    target_index: int,
    horizon: int = 1,
    categorical: tuple[tuple[int, int], ...] = (),
    target_offset: float = 0.0,
    quantiles: tuple[float, ...] = (),
) -> LSTMForecaster:
    return LSTMForecaster(
        cfg,
        n_features=n_features,
        target_index=target_index,
        horizon=horizon,
        categorical=categorical,
        target_offset=target_offset,
        quantiles=quantiles,
    )


def classifier_from_info(info: dict[str, Any]) -> LSTMClassifier:
    """The classifier a checkpoint's or export's ``model_config`` describes (weights not loaded)."""
    return build_classifier(
        ModelConfig(**info["config"]), vocab_size=int(info["vocab_size"]), num_classes=int(info["num_classes"])
    )


def forecaster_from_info(info: dict[str, Any]) -> LSTMForecaster:
    """The forecaster a checkpoint's or export's ``model_config`` describes (weights not loaded)."""
    return build_model(
        ModelConfig(**info["config"]),
        n_features=int(info["n_features"]),
        target_index=int(info["target_index"]),
        horizon=int(info.get("horizon", 1)),
        categorical=tuple((int(i), int(n)) for i, n in info.get("categorical", [])),
        target_offset=float(info.get("target_offset", 0.0)),
        quantiles=tuple(float(q) for q in info.get("quantiles", ())),
    )


def build_classifier(cfg: ModelConfig, *, vocab_size: int, num_classes: int) -> LSTMClassifier:
    return LSTMClassifier(cfg, vocab_size=vocab_size, num_classes=num_classes)


def set_dropout(model: LSTMForecaster | LSTMClassifier, p: float, input_p: float | None = None) -> None:
    """Apply (possibly PBT-mutated) dropout to a built model; nn.LSTM reads ``dropout`` at every forward."""
    if model.lstm.num_layers > 1:
        model.lstm.dropout = p
    model.head_dropout.p = p
    if input_p is not None:
        model.input_dropout.p = input_p


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute weights (matrices and embeddings; biases are left alone)."""
    terms = [p.abs().sum() for name, p in model.named_parameters() if p.requires_grad and "bias" not in name]
    return torch.stack(terms).sum() if terms else torch.zeros(())


__all__ = [
    "HEADS",
    "INIT_SCHEMES",
    "POOLINGS",
    "DecoderHead",
    "LSTMClassifier",
    "LSTMForecaster",
    "SequenceEncoder",
    "build_classifier",
    "build_model",
    "check_quantiles",
    "classifier_from_info",
    "embedding_size",
    "forecaster_from_info",
    "init_lstm",
    "init_matrix",
    "l1_penalty",
    "levels_of",
    "mean_forecast",
    "median_index",
    "point_forecast",
    "set_dropout",
    "shared_levels",
]
