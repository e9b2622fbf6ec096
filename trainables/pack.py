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
from trainables.model import LSTMForecaster, build_model
from trainables.pack_rules import NotPackable, check_packable
from trainables.packed import PackedAdamW, PackedLinear, PackedLSTM, clip_per_member, member_dropout


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
        cfg = ModelConfig(
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            pooling=self.pooling,
            dropout=member.dropout,
            input_dropout=member.input_dropout,
            residual=member.residual,
        )
        return build_model(cfg, n_features=self.n_features, target_index=self.target_index, horizon=self.horizon)


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


class Pack:
    """``capacity`` slots of one :class:`PackShape`; members are named by the caller (a trial id)."""

    def __init__(self, shape: PackShape, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"Pack: capacity = {capacity}; must be >= 1")
        self.shape, self.capacity, self.device = shape, capacity, torch.device(device)
        directions = 2 if shape.bidirectional else 1
        self.lstm = PackedLSTM(capacity, shape.n_features, shape.hidden_size, shape.num_layers, shape.bidirectional)
        self.head = PackedLinear(capacity, shape.hidden_size * directions, shape.horizon)
        self.lstm.to(self.device)
        self.head.to(self.device)
        self.params = [*self.lstm.parameters(), *self.head.parameters()]
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

    def _named(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters under the names :class:`LSTMForecaster` gives them, in its order."""
        return [
            *((f"encoder.lstm.{n}", p) for n, p in self.lstm.named_parameters()),
            *((f"head.{n}", p) for n, p in self.head.named_parameters()),
        ]

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
            state = {"model": self.shape.model(cfg).state_dict()}
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
        """``{"model": LSTMForecaster state, "optimizer": torch.optim.AdamW state}`` of one member, on the host."""
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
            raise ValueError(f"Pack: the member state lacks {', '.join(missing)}; is it a packable forecaster?")
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

    def forward(self, x: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """[B, T, I] -> every slot's forecast [K, B, horizon], as each slot's :class:`LSTMForecaster` computes it."""
        self.lstm.train(training)
        k, shape = self.capacity, self.shape
        inputs = member_dropout(x.expand(k, *x.shape), self.input_dropout) if training else x
        out = self.lstm(inputs, dropout=self.dropout if training and shape.num_layers > 1 else None)
        if shape.pooling == "mean":
            pooled = out.mean(dim=2)
        elif shape.bidirectional:
            # nn.LSTM's final states: the forward direction's at the last step, the backward one's at the first.
            h = shape.hidden_size
            pooled = torch.cat([out[:, :, -1, :h], out[:, :, 0, h:]], dim=-1)
        else:
            pooled = out[:, :, -1]
        if training:
            pooled = member_dropout(pooled, self.dropout)
        forecast: torch.Tensor = self.head(pooled)
        last = x[:, -1, shape.target_index]
        return forecast + self.residual.view(k, 1, 1) * last.view(1, -1, 1)

    def losses(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """Every slot's loss on one batch, over the scored targets only: [K] (``masked_loss`` per member)."""
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

    def _l1_penalty(self) -> torch.Tensor:
        k = self.capacity
        return torch.stack([p.abs().reshape(k, -1).sum(dim=1) for p in self.weights]).sum(dim=0)

    def occupied(self, members: Iterable[str] | None = None) -> torch.Tensor:
        """[K] bool: the slots of ``members`` (default: every member)."""
        chosen = set(self.members if members is None else members)
        return torch.tensor([m is not None and m in chosen for m in self.slots])

    def train_round(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], members: Iterable[str] | None = None
    ) -> dict[str, RoundStats]:
        """One round (an epoch) on the same batches for ``members`` (default: all); the others sit it out."""
        live = self.occupied(members)
        weight = live.to(self.device, torch.float32)
        sums = torch.zeros(3, self.capacity, dtype=torch.float64, device=self.device)  # loss x n, norm, clipped
        steps = samples = 0
        for x, y, mask in batches:
            losses = self.losses(x, y, mask, training=True)
            total = losses + self.l1 * self._l1_penalty() if bool((self.l1 > 0).any()) else losses
            self.optimizer.zero_grad()
            (total * weight).sum().backward()  # members share no parameter: each gets its own gradient
            norms = clip_per_member(self.params, self.clip)
            self.optimizer.step(active=live)
            clipped = norms > self.clip.to(norms.device)
            sums += torch.stack([losses.detach().double() * len(x), norms.double(), clipped.double()])
            steps += 1
            samples += len(x)
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
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
        losses = self.losses(x, y, torch.ones_like(y, dtype=torch.bool) if mask is None else mask)
        return {m: float(losses[k]) for k, m in enumerate(self.slots) if m is not None}


__all__ = ["MemberConfig", "Pack", "PackShape", "RoundStats"]
