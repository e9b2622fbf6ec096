"""A pack: K slots of one shape trained in lockstep rounds, members joining, leaving and exploiting by slot.

The engine the pack actor of docs/design/packing.md will run, without Ray: a member is an LSTM forecaster (LSTM,
then a linear head on the last step's output) with its own learning rate, weight decay, clipping norm and Adam state;
every occupied slot trains on the same batches. What a scheduler does to a trial maps onto slots:

- ASHA stops a member: :meth:`Pack.leave` frees its slot; a compatible trial may :meth:`Pack.join` it at the next
  round, from its own initial weights or from a checkpoint;
- PBT exploits inside a pack: :meth:`Pack.exploit` copies the donor's weights and Adam state into the weaker
  member's slot (on the device, no checkpoint) and sets the new hyperparameters;
- a checkpoint (:meth:`Pack.member_state`) is an ``nn.Module`` state and a ``torch.optim.AdamW`` state dict, so a
  member moves between packs, or out of packing, through the files an unpacked trial writes.

An empty slot trains nothing: its loss is left out, so its gradients are zero, and its weights are replaced when a
member joins it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainables.packed import PackedAdamW, PackedLinear, PackedLSTM, clip_per_member


@dataclass(frozen=True)
class PackShape:
    """What every member of a pack shares: whatever fixes a parameter's shape."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    horizon: int = 1

    def model(self) -> nn.Module:
        """One member alone, as an unpacked trial builds it (the names its checkpoint uses)."""
        return MemberModel(self)


@dataclass(frozen=True)
class MemberConfig:
    """A member's values that do not change shapes."""

    lr: float
    weight_decay: float = 0.0
    grad_clip: float = math.inf
    """``inf``: no clipping."""


class MemberModel(nn.Module):
    """One member alone: the LSTM and a linear head on the last step's output."""

    def __init__(self, shape: PackShape) -> None:
        super().__init__()
        directions = 2 if shape.bidirectional else 1
        self.lstm = nn.LSTM(
            shape.input_size, shape.hidden_size, shape.num_layers, batch_first=True, bidirectional=shape.bidirectional
        )
        self.head = nn.Linear(shape.hidden_size * directions, shape.horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.lstm(x)[0][:, -1])
        return out


def _group_template(cfg: MemberConfig) -> dict[str, Any]:
    """``torch.optim.AdamW``'s parameter group for these values, every key its ``load_state_dict`` expects."""
    group = dict(torch.optim.AdamW([torch.zeros(1)], lr=cfg.lr, weight_decay=cfg.weight_decay).param_groups[0])
    group.pop("params")
    return group


class Pack:
    """``capacity`` slots of one :class:`PackShape`; members are named by the caller (a trial id)."""

    def __init__(self, shape: PackShape, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"Pack: capacity = {capacity}; must be >= 1")
        self.shape, self.capacity = shape, capacity
        directions = 2 if shape.bidirectional else 1
        self.lstm = PackedLSTM(capacity, shape.input_size, shape.hidden_size, shape.num_layers, shape.bidirectional)
        self.head = PackedLinear(capacity, shape.hidden_size * directions, shape.horizon)
        self.params = [*self.lstm.parameters(), *self.head.parameters()]
        self.optimizer = PackedAdamW(self.params, lr=torch.zeros(capacity), weight_decay=torch.zeros(capacity))
        self.clip = torch.full((capacity,), math.inf)
        self.slots: list[str | None] = [None] * capacity
        self.configs: dict[str, MemberConfig] = {}

    # -- membership ---------------------------------------------------------------------------------------------

    def slot_of(self, member: str) -> int:
        try:
            return self.slots.index(member)
        except ValueError:
            raise KeyError(f"Pack: no member {member!r} (members: {self.members})") from None

    @property
    def members(self) -> list[str]:
        return [m for m in self.slots if m is not None]

    def join(self, member: str, cfg: MemberConfig, state: dict[str, Any] | None = None) -> int:
        """Take a free slot with a member's initial weights, or its checkpoint (:meth:`member_state`'s form)."""
        if member in self.slots:
            raise ValueError(f"Pack: member {member!r} already holds slot {self.slots.index(member)}")
        if None not in self.slots:
            raise ValueError(f"Pack: all {self.capacity} slots are taken (members: {self.members})")
        slot = self.slots.index(None)
        if state is None:
            state = {"model": self.shape.model().state_dict()}
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

    # -- state --------------------------------------------------------------------------------------------------

    def member_state(self, member: str) -> dict[str, Any]:
        """``{"model": MemberModel state, "optimizer": torch.optim.AdamW state}`` of one member."""
        k = self.slot_of(member)
        model = {f"lstm.{name}": value for name, value in self.lstm.member_state(k).items()}
        model["head.weight"] = self.head.weight[k].detach().clone()
        model["head.bias"] = self.head.bias[k].detach().clone()
        step = float(self.optimizer.steps[k])
        state = {
            i: {"step": torch.tensor(step), "exp_avg": m[k].clone(), "exp_avg_sq": v[k].clone()}
            for i, (m, v) in enumerate(zip(self.optimizer.exp_avg, self.optimizer.exp_avg_sq, strict=True))
        }
        group = {**_group_template(self.configs[member]), "params": list(range(len(self.params)))}
        return {"model": model, "optimizer": {"state": state if step > 0 else {}, "param_groups": [group]}}

    def _load(self, slot: int, state: dict[str, Any], cfg: MemberConfig) -> None:
        model = state["model"]
        self.lstm.load_member(slot, {k.removeprefix("lstm."): v for k, v in model.items() if k.startswith("lstm.")})
        opt: dict[str, Any] = state.get("optimizer") or {"state": {}}
        with torch.no_grad():
            self.head.weight[slot].copy_(model["head.weight"])
            self.head.bias[slot].copy_(model["head.bias"])
            for i, (m, v) in enumerate(zip(self.optimizer.exp_avg, self.optimizer.exp_avg_sq, strict=True)):
                saved = opt["state"].get(i)
                m[slot].copy_(saved["exp_avg"] if saved else torch.zeros_like(m[slot]))
                v[slot].copy_(saved["exp_avg_sq"] if saved else torch.zeros_like(v[slot]))
        first = opt["state"].get(0)
        self.optimizer.steps[slot] = float(first["step"]) if first else 0.0
        self.optimizer.lr[slot] = cfg.lr
        self.optimizer.weight_decay[slot] = cfg.weight_decay
        self.clip[slot] = cfg.grad_clip

    # -- training -----------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, I] -> every slot's forecast [K, B, horizon]."""
        out: torch.Tensor = self.head(self.lstm(x)[:, :, -1])
        return out

    def _losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every slot's mean squared error on one batch: [K]."""
        return ((self.forward(x) - y.unsqueeze(0)) ** 2).mean(dim=(1, 2))

    def _occupied(self) -> torch.Tensor:
        return torch.tensor([m is not None for m in self.slots])

    def train_round(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """One round (an epoch) for every member on the same batches; each member's mean training loss."""
        occupied = self._occupied().float()
        total, count = torch.zeros(self.capacity), 0
        for x, y in batches:
            losses = self._losses(x, y)
            self.optimizer.zero_grad()
            (losses * occupied).sum().backward()  # members share no parameter: each gets its own gradient
            clip_per_member(self.params, self.clip)
            self.optimizer.step(active=occupied > 0)
            total += losses.detach()
            count += 1
        return {m: float(total[k]) / max(count, 1) for k, m in enumerate(self.slots) if m is not None}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        losses = self._losses(x, y)
        return {m: float(losses[k]) for k, m in enumerate(self.slots) if m is not None}


__all__ = ["MemberConfig", "MemberModel", "Pack", "PackShape"]
