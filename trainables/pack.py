"""A pack: K slots of one shape trained in lockstep rounds, members joining, leaving and exploiting by slot.

The engine the pack actor (:mod:`trainables.pack_server`) runs, without Ray. A member is the project's own
:class:`~trainables.model.LSTMForecaster` in its packable form (a linear head on the last state or the mean of the
states, optionally residual), with its own learning rate, weight decay, L1, clipping norm, dropouts and Adam state;
every occupied slot trains on the same batches. A member's checkpoint has the names and layout of that forecaster
and of ``torch.optim.AdamW``, so it loads into an unpacked trial, ``predict`` and ``export`` as any other.

What a scheduler does to a trial maps onto slots:

- ASHA stops a member: :meth:`Pack.leave` frees its slot; a compatible trial may :meth:`Pack.join` it at the next
  round, from its own initial weights or from a checkpoint;
- PBT exploits inside a pack: :meth:`Pack.exploit` copies the donor's weights and Adam state into the weaker
  member's slot (on the device, no file) and sets the new hyperparameters.

An empty slot, or a member sitting a round out, trains nothing: its loss is left out, so its gradients are zero,
and the optimizer skips it (weights, moments and step count stay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainables.config import ModelConfig, TrialConfig
from trainables.model import LSTMClassifier, LSTMForecaster, build_classifier, build_model
from trainables.pack_rules import NotPackable, check_packable
from trainables.packed import (
    PackedAdamW,
    PackedEmbedding,
    PackedLinear,
    PackedLSTM,
    clip_per_member,
    member_dropout,
)


@dataclass(frozen=True, kw_only=True)
class PackShape:
    """What every member of a pack shares."""

    n_features: int
    target_index: int
    horizon: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    loss: str = "mse"

    @classmethod
    def of(
        cls,
        cfg: TrialConfig,
        *,
        n_features: int,
        target_index: int,
        horizon: int,
        categorical: tuple[tuple[int, int], ...] = (),
    ) -> PackShape:
        check_packable(cfg.to_flat())
        if categorical:
            raise NotPackable(
                f"the prepared data has {len(categorical)} categorical column(s) with learned embeddings; a pack "
                "trains numeric inputs only (prepare with one-hot encoding, or run unpacked)"
            )
        return cls(
            n_features=n_features,
            target_index=target_index,
            horizon=horizon,
            hidden_size=cfg.model.hidden_size,
            num_layers=cfg.model.num_layers,
            bidirectional=cfg.model.bidirectional,
            pooling=cfg.model.pooling,
            loss=cfg.optim.loss,
        )

    def model(self, member: MemberConfig | None = None) -> LSTMForecaster:
        """One member alone, as an unpacked trial builds it (and names its checkpoint)."""
        member = member or MemberConfig(lr=1e-3)
        cfg = _model_config(self, member, residual=member.residual)
        return build_model(cfg, n_features=self.n_features, target_index=self.target_index, horizon=self.horizon)


def _model_config(shape: PackShape | ClassifierShape, member: MemberConfig, **extra: Any) -> ModelConfig:
    """The unpacked model's config for one member of a pack of ``shape``."""
    return ModelConfig(
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        bidirectional=shape.bidirectional,
        pooling=shape.pooling,
        dropout=member.dropout,
        input_dropout=member.input_dropout,
        **extra,
    )


@dataclass(frozen=True, kw_only=True)
class MemberConfig:
    """A member's values that do not change shapes."""

    lr: float
    weight_decay: float = 0.0
    grad_clip: float = math.inf
    """``inf``: no clipping."""
    l1: float = 0.0
    dropout: float = 0.0
    input_dropout: float = 0.0
    residual: bool = True

    @classmethod
    def of(cls, cfg: TrialConfig, lr: float | None = None) -> MemberConfig:
        """A trial's values (``lr``: this epoch's, after decay)."""
        return cls(
            lr=cfg.optim.lr if lr is None else lr,
            weight_decay=cfg.optim.weight_decay,
            grad_clip=cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf,
            l1=cfg.optim.l1,
            dropout=cfg.model.dropout,
            input_dropout=cfg.model.input_dropout,
            residual=cfg.model.residual,
        )


@dataclass(frozen=True)
class RoundStats:
    """One member's round, as :class:`trainables.tasks.EpochStats` reports a trial's epoch."""

    loss: float
    steps: int
    samples: int
    grad_norm: float
    clipped: float


def _group_template(cfg: MemberConfig) -> dict[str, Any]:
    """``torch.optim.AdamW``'s parameter group for these values, every key its ``load_state_dict`` expects."""
    group = dict(torch.optim.AdamW([torch.zeros(1)], lr=cfg.lr, weight_decay=cfg.weight_decay).param_groups[0])
    group.pop("params")
    return group


class SlotPack:
    """``capacity`` slots of one shape; members are named by the caller (a trial id). What a slot holds (the packed
    modules, the loss) is the subclass's: :class:`Pack` for forecasters, :class:`ClassifierPack` for text."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"Pack: capacity = {capacity}; must be >= 1")
        self.capacity, self.device = capacity, torch.device(device)
        self._build()
        self.params = [p for _, p in self._named()]
        self.weights = [p for name, p in self._named() if "bias" not in name]
        self.optimizer = PackedAdamW(self.params, lr=torch.zeros(capacity), weight_decay=torch.zeros(capacity))
        self.clip = torch.full((capacity,), math.inf)
        # Per-member values the forward pass reads, kept on the device.
        self.l1 = torch.zeros(capacity, device=self.device)
        self.dropout = torch.zeros(capacity, device=self.device)
        self.input_dropout = torch.zeros(capacity, device=self.device)
        self.residual = torch.zeros(capacity, device=self.device)
        self.slots: list[str | None] = [None] * capacity
        self.configs: dict[str, MemberConfig] = {}

    def _build(self) -> None:
        """Create the packed modules (on ``self.device``)."""
        raise NotImplementedError

    def _named(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters under the names the unpacked model gives them, in its order (its optimizer's order)."""
        raise NotImplementedError

    def alone(self, cfg: MemberConfig) -> nn.Module:
        """One member as an unpacked trial builds it (its initial weights when it joins without a checkpoint)."""
        raise NotImplementedError

    def losses(self, batch: tuple[torch.Tensor, ...], *, training: bool = False) -> torch.Tensor:
        """Every slot's loss on one batch: [K]."""
        raise NotImplementedError

    def _after_backward(self) -> None:
        """Gradient fix-ups before clipping (a padding row that must not learn)."""

    # -- membership ---------------------------------------------------------------------------------------------

    def slot_of(self, member: str) -> int:
        try:
            return self.slots.index(member)
        except ValueError:
            raise KeyError(f"Pack: no member {member!r} (members: {self.members})") from None

    @property
    def members(self) -> list[str]:
        return [m for m in self.slots if m is not None]

    @property
    def free(self) -> int:
        return self.slots.count(None)

    def join(self, member: str, cfg: MemberConfig, state: dict[str, Any] | None = None) -> int:
        """Take a free slot with a member's initial weights, or its checkpoint (:meth:`member_state`'s form)."""
        if member in self.slots:
            raise ValueError(f"Pack: member {member!r} already holds slot {self.slots.index(member)}")
        if None not in self.slots:
            raise ValueError(f"Pack: all {self.capacity} slots are taken (members: {self.members})")
        slot = self.slots.index(None)
        if state is None:
            state = {"model": self.alone(cfg).state_dict()}
        self._load(slot, state, cfg)
        self.slots[slot] = member
        self.configs[member] = cfg
        return slot

    def leave(self, member: str) -> None:
        self.slots[self.slot_of(member)] = None
        self.configs.pop(member, None)

    def exploit(self, member: str, donor: str, cfg: MemberConfig) -> None:
        """PBT inside one pack: ``member`` takes ``donor``'s weights and Adam state, then ``cfg``'s values."""
        self._load(self.slot_of(member), self.member_state(donor), cfg)
        self.configs[member] = cfg

    def configure(self, member: str, cfg: MemberConfig) -> None:
        """New values for a member's coming rounds (an epoch's decayed learning rate; PBT's mutation)."""
        self._set_values(self.slot_of(member), cfg)
        self.configs[member] = cfg

    # -- state --------------------------------------------------------------------------------------------------

    def member_state(self, member: str) -> dict[str, Any]:
        """``{"model": the unpacked model's state, "optimizer": torch.optim.AdamW state}`` of one member, on the host."""
        k = self.slot_of(member)
        model = {name: p[k].detach().cpu().clone() for name, p in self._named()}
        step = float(self.optimizer.steps[k])
        state = {
            i: {"step": torch.tensor(step), "exp_avg": m[k].cpu().clone(), "exp_avg_sq": v[k].cpu().clone()}
            for i, (m, v) in enumerate(zip(self.optimizer.exp_avg, self.optimizer.exp_avg_sq, strict=True))
        }
        group = {**_group_template(self.configs[member]), "params": list(range(len(self.params)))}
        return {"model": model, "optimizer": {"state": state if step > 0 else {}, "param_groups": [group]}}

    def _load(self, slot: int, state: dict[str, Any], cfg: MemberConfig) -> None:
        model = state["model"]
        named = self._named()
        missing = [name for name, _ in named if name not in model]
        if missing:
            raise ValueError(
                f"Pack: the member state lacks {', '.join(missing)}; is it a packable model of this shape?"
            )
        opt: dict[str, Any] = state.get("optimizer") or {"state": {}}
        with torch.no_grad():
            for name, p in named:
                p[slot].copy_(model[name])
            for i, (m, v) in enumerate(zip(self.optimizer.exp_avg, self.optimizer.exp_avg_sq, strict=True)):
                saved = opt["state"].get(i)
                m[slot].copy_(saved["exp_avg"] if saved else torch.zeros_like(m[slot]))
                v[slot].copy_(saved["exp_avg_sq"] if saved else torch.zeros_like(v[slot]))
        first = opt["state"].get(0)
        self.optimizer.steps[slot] = float(first["step"]) if first else 0.0
        self._set_values(slot, cfg)

    def _set_values(self, slot: int, cfg: MemberConfig) -> None:
        self.optimizer.lr[slot] = cfg.lr
        self.optimizer.weight_decay[slot] = cfg.weight_decay
        self.clip[slot] = cfg.grad_clip
        self.l1[slot] = cfg.l1
        self.dropout[slot] = cfg.dropout
        self.input_dropout[slot] = cfg.input_dropout
        self.residual[slot] = 1.0 if cfg.residual else 0.0

    # -- training -----------------------------------------------------------------------------------------------

    def _l1_penalty(self) -> torch.Tensor:
        k = self.capacity
        return torch.stack([p.abs().reshape(k, -1).sum(dim=1) for p in self.weights]).sum(dim=0)

    def occupied(self, members: Iterable[str] | None = None) -> torch.Tensor:
        """[K] bool: the slots of ``members`` (default: every member)."""
        chosen = set(self.members if members is None else members)
        return torch.tensor([m is not None and m in chosen for m in self.slots])

    def train_round(
        self, batches: Iterable[tuple[torch.Tensor, ...]], members: Iterable[str] | None = None
    ) -> dict[str, RoundStats]:
        """One round (an epoch) on the same batches for ``members`` (default: all); the others sit it out."""
        live = self.occupied(members)
        weight = live.to(self.device, torch.float32)
        sums = torch.zeros(3, self.capacity, dtype=torch.float64, device=self.device)  # loss x n, norm, clipped
        steps = samples = 0
        for batch in batches:
            losses = self.losses(batch, training=True)
            total = losses + self.l1 * self._l1_penalty() if bool((self.l1 > 0).any()) else losses
            self.optimizer.zero_grad()
            (total * weight).sum().backward()  # members share no parameter: each gets its own gradient
            self._after_backward()
            norms = clip_per_member(self.params, self.clip)
            self.optimizer.step(active=live)
            clipped = norms > self.clip.to(norms.device)
            n = len(batch[0])
            sums += torch.stack([losses.detach().double() * n, norms.double(), clipped.double()])
            steps += 1
            samples += n
        values = sums.cpu()
        return {
            m: RoundStats(
                loss=float(values[0, k]) / samples if samples else math.nan,
                steps=steps,
                samples=samples,
                grad_norm=float(values[1, k]) / steps if steps else math.nan,
                clipped=float(values[2, k]) / steps if steps else math.nan,
            )
            for k, m in enumerate(self.slots)
            if m is not None and bool(live[k])
        }

    @torch.no_grad()
    def evaluate(self, *batch: torch.Tensor) -> dict[str, float]:
        """Every member's loss on one batch, without dropout."""
        losses = self.losses(tuple(batch))
        return {m: float(losses[k]) for k, m in enumerate(self.slots) if m is not None}


class Pack(SlotPack):
    """Forecasters of one :class:`PackShape`: batches are ``(x [B, T, I], y [B, horizon], mask [B, horizon])``."""

    def __init__(self, shape: PackShape, capacity: int, device: torch.device | str = "cpu") -> None:
        self.shape = shape
        super().__init__(capacity, device)

    def _build(self) -> None:
        shape, k = self.shape, self.capacity
        directions = 2 if shape.bidirectional else 1
        self.lstm = PackedLSTM(k, shape.n_features, shape.hidden_size, shape.num_layers, shape.bidirectional)
        self.head = PackedLinear(k, shape.hidden_size * directions, shape.horizon)
        self.lstm.to(self.device)
        self.head.to(self.device)

    def _named(self) -> list[tuple[str, nn.Parameter]]:
        return [
            *((f"encoder.lstm.{n}", p) for n, p in self.lstm.named_parameters()),
            *((f"head.{n}", p) for n, p in self.head.named_parameters()),
        ]

    def alone(self, cfg: MemberConfig) -> nn.Module:
        return self.shape.model(cfg)

    def forward(self, x: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """[B, T, I] -> every slot's forecast [K, B, horizon], as each slot's :class:`LSTMForecaster` computes it."""
        self.lstm.train(training)
        k, shape = self.capacity, self.shape
        inputs = member_dropout(x.expand(k, *x.shape), self.input_dropout) if training else x
        out = self.lstm(inputs, dropout=self.dropout if training and shape.num_layers > 1 else None)
        pooled = pooled_states(out, shape.pooling, shape.hidden_size, shape.bidirectional, None)
        if training:
            pooled = member_dropout(pooled, self.dropout)
        forecast: torch.Tensor = self.head(pooled)
        last = x[:, -1, shape.target_index]
        return forecast + self.residual.view(k, 1, 1) * last.view(1, -1, 1)

    def losses(self, batch: tuple[torch.Tensor, ...], *, training: bool = False) -> torch.Tensor:
        """Every slot's loss on one batch, over the scored targets only: [K] (``masked_loss`` per member)."""
        x, y, mask = batch
        pred = self.forward(x, training=training)
        target = y.unsqueeze(0).expand_as(pred)
        if self.shape.loss == "mse":
            per = (pred - target) ** 2
        elif self.shape.loss == "mae":
            per = (pred - target).abs()
        else:
            per = nn.functional.huber_loss(pred, target, reduction="none", delta=1.0)
        weights = mask.to(pred.dtype).unsqueeze(0)
        return (per * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp(min=1.0)


def pooled_states(
    out: torch.Tensor, pooling: str, hidden: int, bidirectional: bool, lengths: torch.Tensor | None
) -> torch.Tensor:
    """``SequenceEncoder``'s pooling of packed outputs [K, B, T, D] (padding 0 past ``lengths``): [K, B, D]."""
    b = out.shape[1]
    if pooling == "mean":
        if lengths is None:
            return out.mean(dim=2)
        return out.sum(dim=2) / lengths.to(out.device, out.dtype).clamp(min=1.0).view(1, b, 1)
    last = out[:, :, -1] if lengths is None else out[:, torch.arange(b, device=out.device), lengths.to(out.device) - 1]
    if not bidirectional:
        return last
    # nn.LSTM's final states: the forward direction's at each sequence's last step, the backward one's at the first.
    return torch.cat([last[..., :hidden], out[:, :, 0, hidden:]], dim=-1)


@dataclass(frozen=True, kw_only=True)
class ClassifierShape:
    """What every member of a text-classifier pack shares."""

    vocab_size: int
    num_classes: int
    embedding_dim: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"

    def model(self, member: MemberConfig | None = None) -> LSTMClassifier:
        member = member or MemberConfig(lr=1e-3)
        cfg = _model_config(self, member, embedding_dim=self.embedding_dim)
        return build_classifier(cfg, vocab_size=self.vocab_size, num_classes=self.num_classes)


class ClassifierPack(SlotPack):
    """Text classifiers of one :class:`ClassifierShape` (``LSTMClassifier``: embedding, encoder over ragged
    documents, pooling, linear head; cross-entropy): batches are ``(tokens [B, T], lengths [B], labels [B])``."""

    def __init__(self, shape: ClassifierShape, capacity: int, device: torch.device | str = "cpu") -> None:
        if shape.pooling not in ("last", "mean"):
            raise NotPackable(
                f"pooling = {shape.pooling!r} cannot be packed; a packed member takes pooling in ['last', 'mean']"
            )
        self.shape = shape
        super().__init__(capacity, device)

    def _build(self) -> None:
        shape, k = self.shape, self.capacity
        directions = 2 if shape.bidirectional else 1
        self.embedding = PackedEmbedding(k, shape.vocab_size, shape.embedding_dim)
        self.lstm = PackedLSTM(k, shape.embedding_dim, shape.hidden_size, shape.num_layers, shape.bidirectional)
        self.head = PackedLinear(k, shape.hidden_size * directions, shape.num_classes)
        for module in (self.embedding, self.lstm, self.head):
            module.to(self.device)

    def _named(self) -> list[tuple[str, nn.Parameter]]:
        return [
            ("embedding.weight", self.embedding.weight),
            *((f"encoder.lstm.{n}", p) for n, p in self.lstm.named_parameters()),
            *((f"head.{n}", p) for n, p in self.head.named_parameters()),
        ]

    def alone(self, cfg: MemberConfig) -> nn.Module:
        return self.shape.model(cfg)

    def _after_backward(self) -> None:
        grad = self.embedding.weight.grad
        if grad is not None:
            grad[:, 0].zero_()  # the padding token's row, as nn.Embedding(padding_idx=0) leaves it

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """Every slot's logits: [K, B, classes]."""
        self.lstm.train(training)
        embedded = self.embedding(tokens)
        if training:
            embedded = member_dropout(embedded, self.input_dropout)
        shape = self.shape
        out = self.lstm(embedded, dropout=self.dropout if training and shape.num_layers > 1 else None, lengths=lengths)
        pooled = pooled_states(out, shape.pooling, shape.hidden_size, shape.bidirectional, lengths)
        if training:
            pooled = member_dropout(pooled, self.dropout)
        logits: torch.Tensor = self.head(pooled)
        return logits

    def losses(self, batch: tuple[torch.Tensor, ...], *, training: bool = False) -> torch.Tensor:
        tokens, lengths, labels = batch
        logits = self.forward(tokens, lengths, training=training)
        k, b, classes = logits.shape
        per = nn.functional.cross_entropy(logits.reshape(k * b, classes), labels.repeat(k), reduction="none")
        return per.view(k, b).mean(dim=1)


__all__ = [
    "ClassifierPack",
    "ClassifierShape",
    "MemberConfig",
    "Pack",
    "PackShape",
    "RoundStats",
    "SlotPack",
    "pooled_states",
]
