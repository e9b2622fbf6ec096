"""A pack's slots behave as trials (trainables/pack.py): a member trains as it would alone, leaves and is replaced,
takes a donor's state in a PBT exploit, and moves out through an ordinary checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.pack import MemberConfig, MemberModel, Pack, PackShape

pytestmark = pytest.mark.unit

SHAPE = PackShape(input_size=5, hidden_size=8, num_layers=2, horizon=2)
B, T = 16, 10


class Alone:
    """One member trained by itself, as an unpacked trial trains: torch's LSTM, AdamW and clip_grad_norm_."""

    def __init__(self, cfg: MemberConfig, state: dict[str, object] | None = None, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = MemberModel(SHAPE)
        self.cfg = cfg
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None:
            self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
            self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
            for group in self.optimizer.param_groups:  # PBT's new values win over the checkpoint's
                group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay

    def train_round(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        total = 0.0
        for x, y in batches:
            loss = nn.functional.mse_loss(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            total += loss.item()
        return total / len(batches)


def _batches(seed: int, n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(B, T, SHAPE.input_size, generator=g), torch.randn(B, SHAPE.horizon, generator=g)) for _ in range(n)
    ]


def _initial(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    return {"model": MemberModel(SHAPE).state_dict()}


CONFIGS = {
    "a": MemberConfig(lr=3e-3, weight_decay=0.0),
    "b": MemberConfig(lr=1e-2, weight_decay=1e-2, grad_clip=0.5),
    "c": MemberConfig(lr=3e-2, weight_decay=0.1, grad_clip=0.1),
}


def test_members_train_as_they_would_alone() -> None:
    pack = Pack(SHAPE, capacity=4)  # one slot left empty: it must not disturb the others
    alone = {}
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        pack.join(name, cfg, _initial(seed))
        alone[name] = Alone(cfg, seed=seed)
    empty = pack.lstm.weight_hh_l0[3].detach().clone()
    for r in range(3):
        batches = _batches(r)
        packed = pack.train_round(batches)
        for name, member in alone.items():
            assert packed[name] == pytest.approx(member.train_round(batches), rel=1e-5), (name, r)
    assert torch.equal(pack.lstm.weight_hh_l0[3], empty) and pack.optimizer.steps[3] == 0  # the empty slot: untouched
    x, y = _batches(9, 1)[0]
    scores = pack.evaluate(x, y)
    for name, member in alone.items():
        with torch.no_grad():
            assert scores[name] == pytest.approx(nn.functional.mse_loss(member.model(x), y).item(), rel=1e-5)


def test_a_stopped_member_frees_its_slot_for_a_new_one() -> None:
    """ASHA stops "b" after round 1; "d" takes its slot and trains as it would alone from its first step."""
    pack = Pack(SHAPE, capacity=2)
    pack.join("a", CONFIGS["a"], _initial(0))
    slot_b = pack.join("b", CONFIGS["b"], _initial(1))
    pack.train_round(_batches(0))
    pack.leave("b")
    assert pack.members == ["a"]
    with pytest.raises(KeyError, match="no member 'b'"):
        pack.member_state("b")
    d_cfg = MemberConfig(lr=5e-3, weight_decay=1e-3, grad_clip=1.0)
    assert pack.join("d", d_cfg, _initial(7)) == slot_b
    d_alone = Alone(d_cfg, seed=7)
    for r in (1, 2):
        batches = _batches(r)
        assert pack.train_round(batches)["d"] == pytest.approx(d_alone.train_round(batches), rel=1e-5)
    with pytest.raises(ValueError, match="all 2 slots are taken"):
        pack.join("e", d_cfg)


def test_an_exploit_inside_the_pack_equals_a_restore_from_the_donors_checkpoint() -> None:
    """PBT: "a" clones "c" (weights and Adam state) with new values; it then trains as an unpacked trial restored
    from c's checkpoint with those values would."""
    pack = Pack(SHAPE, capacity=3)
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        pack.join(name, cfg, _initial(seed))
    for r in range(2):
        pack.train_round(_batches(r))
    donor = pack.member_state("c")
    explored = MemberConfig(lr=2e-2, weight_decay=0.05, grad_clip=0.2)
    pack.exploit("a", "c", explored)
    restored = Alone(explored, state=donor)
    for r in (2, 3):
        batches = _batches(r)
        assert pack.train_round(batches)["a"] == pytest.approx(restored.train_round(batches), rel=1e-5)


def test_a_member_checkpoint_is_an_ordinary_one_both_ways() -> None:
    """Out of the pack into torch's AdamW and back into another pack: training goes on the same."""
    pack = Pack(SHAPE, capacity=2)
    pack.join("a", CONFIGS["b"], _initial(3))
    pack.train_round(_batches(0))
    state = pack.member_state("a")
    assert state["optimizer"]["param_groups"][0]["lr"] == CONFIGS["b"].lr
    alone = Alone(CONFIGS["b"], state=state)
    other = Pack(SHAPE, capacity=3)
    other.join("x", CONFIGS["a"], _initial(4))
    other.join("a", CONFIGS["b"], {"model": alone.model.state_dict(), "optimizer": alone.optimizer.state_dict()})
    batches = _batches(1)
    assert other.train_round(batches)["a"] == pytest.approx(alone.train_round(batches), rel=1e-5)


def test_bad_membership_is_named() -> None:
    with pytest.raises(ValueError, match="capacity = 0"):
        Pack(SHAPE, capacity=0)
    pack = Pack(SHAPE, capacity=2)
    pack.join("a", MemberConfig(lr=1e-3))
    with pytest.raises(ValueError, match="'a' already holds slot 0"):
        pack.join("a", MemberConfig(lr=1e-3))
    assert math.isinf(pack.clip[0])
