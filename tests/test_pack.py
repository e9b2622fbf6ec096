"""A pack's slots behave as trials (trainables/pack.py): a member trains as it would alone, leaves and is replaced,
takes a donor's state in a PBT exploit, and moves out through an ordinary checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.evaluate import masked_loss
from trainables.model import l1_penalty
from trainables.pack import ClassifierPack, ClassifierShape, MemberConfig, Pack, PackShape
from trainables.pack_rules import NotPackable, check_packable, shape_key

pytestmark = pytest.mark.unit

SHAPE = PackShape(n_features=5, target_index=2, hidden_size=8, num_layers=2, horizon=2)
B, T = 16, 10
Batch = tuple[torch.Tensor, ...]


class Alone:
    """One member trained by itself, as an unpacked trial trains: the project's LSTMForecaster, torch's AdamW,
    ``masked_loss``, the L1 penalty and ``clip_grad_norm_``."""

    def __init__(
        self, cfg: MemberConfig, state: dict[str, object] | None = None, seed: int = 0, shape: PackShape = SHAPE
    ) -> None:
        torch.manual_seed(seed)
        self.model = shape.model(cfg)
        self.cfg, self.shape = cfg, shape
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None:
            self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
            self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
            for group in self.optimizer.param_groups:  # PBT's new values win over the checkpoint's
                group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay

    def train_round(self, batches: list[Batch]) -> float:
        total = 0.0
        self.model.train()
        for x, y, mask in batches:
            loss = masked_loss(self.shape.loss, self.model(x), y, mask)
            self.optimizer.zero_grad()
            (loss + self.cfg.l1 * l1_penalty(self.model) if self.cfg.l1 > 0 else loss).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            total += loss.item()
        return total / len(batches)


def _batches(seed: int, n: int = 6, shape: PackShape = SHAPE) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.rand(B, shape.horizon, generator=g) > 0.2  # some targets unobserved, as in real windows
        out.append((torch.randn(B, T, shape.n_features, generator=g), torch.randn(B, shape.horizon, generator=g), mask))
    return out


def _initial(seed: int, cfg: MemberConfig | None = None, shape: PackShape = SHAPE) -> dict[str, object]:
    torch.manual_seed(seed)
    return {"model": shape.model(cfg).state_dict()}


CONFIGS = {
    "a": MemberConfig(lr=3e-3, weight_decay=0.0),
    "b": MemberConfig(lr=1e-2, weight_decay=1e-2, grad_clip=0.5, l1=1e-3),
    "c": MemberConfig(lr=3e-2, weight_decay=0.1, grad_clip=0.1, residual=False),
}


def test_members_train_as_they_would_alone() -> None:
    pack = Pack(SHAPE, capacity=4)  # one slot left empty: it must not disturb the others
    alone = {}
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        pack.join(name, cfg, _initial(seed, cfg))
        alone[name] = Alone(cfg, seed=seed)
    empty = pack.lstm.weight_hh_l0[3].detach().clone()
    for r in range(3):
        batches = _batches(r)
        packed = pack.train_round(batches)
        for name, member in alone.items():
            assert packed[name].loss == pytest.approx(member.train_round(batches), rel=1e-5), (name, r)
    assert torch.equal(pack.lstm.weight_hh_l0[3], empty) and pack.optimizer.steps[3] == 0  # the empty slot: untouched
    x, y, mask = _batches(9, 1)[0]
    scores = pack.evaluate(x, y, mask)
    for name, member in alone.items():
        member.model.eval()
        with torch.no_grad():
            assert scores[name] == pytest.approx(masked_loss("mse", member.model(x), y, mask).item(), rel=1e-5)


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
        assert pack.train_round(batches)["d"].loss == pytest.approx(d_alone.train_round(batches), rel=1e-5)
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
        assert pack.train_round(batches)["a"].loss == pytest.approx(restored.train_round(batches), rel=1e-5)


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
    assert other.train_round(batches)["a"].loss == pytest.approx(alone.train_round(batches), rel=1e-5)


def test_bad_membership_is_named() -> None:
    with pytest.raises(ValueError, match="capacity = 0"):
        Pack(SHAPE, capacity=0)
    pack = Pack(SHAPE, capacity=2)
    pack.join("a", MemberConfig(lr=1e-3))
    with pytest.raises(ValueError, match="'a' already holds slot 0"):
        pack.join("a", MemberConfig(lr=1e-3))
    assert math.isinf(pack.clip[0])


@pytest.mark.parametrize(
    "shape",
    [
        PackShape(n_features=4, target_index=0, hidden_size=6, bidirectional=True, horizon=3, loss="huber"),
        PackShape(n_features=4, target_index=3, hidden_size=6, num_layers=2, pooling="mean", horizon=1, loss="mae"),
    ],
    ids=["bidirectional-last-huber", "stacked-mean-mae"],
)
def test_every_packable_form_trains_as_the_forecaster_alone(shape: PackShape) -> None:
    """The bidirectional "last" state is nn.LSTM's (forward at the end, backward at the start), mean pooling the
    states' mean; each loss as ``masked_loss`` computes it."""
    pack = Pack(shape, capacity=3)
    configs = [MemberConfig(lr=1e-2, grad_clip=1.0), MemberConfig(lr=3e-3, weight_decay=0.1, l1=1e-4, residual=False)]
    alone = []
    for seed, cfg in enumerate(configs):
        pack.join(f"m{seed}", cfg, _initial(seed, cfg, shape))
        alone.append(Alone(cfg, seed=seed, shape=shape))
    for r in range(3):
        batches = _batches(r, 4, shape)
        packed = pack.train_round(batches)
        for seed, member in enumerate(alone):
            assert packed[f"m{seed}"].loss == pytest.approx(member.train_round(batches), rel=1e-5), (seed, r)


def test_a_members_dropout_touches_no_neighbour_and_only_training() -> None:
    """Dropout is drawn per member: a member at 0 trains exactly as alone beside members at 0.3 and 0.5; in
    evaluation nobody drops anything."""
    pack = Pack(SHAPE, capacity=3)
    quiet = MemberConfig(lr=1e-2)
    pack.join("quiet", quiet, _initial(0))
    pack.join("d3", MemberConfig(lr=1e-2, dropout=0.3, input_dropout=0.1), _initial(0))
    pack.join("d5", MemberConfig(lr=1e-2, dropout=0.5), _initial(0))
    x, y, mask = _batches(5, 1)[0]
    before = pack.evaluate(x, y, mask)
    assert before["quiet"] == before["d3"] == before["d5"]  # same weights, no dropout in evaluation
    alone = Alone(quiet, seed=0)
    batches = _batches(1, 4)
    packed = pack.train_round(batches)
    assert packed["quiet"].loss == pytest.approx(alone.train_round(batches), rel=1e-5)
    assert packed["d3"].loss != pytest.approx(packed["quiet"].loss, rel=1e-5)


def test_a_sitting_out_member_keeps_its_state() -> None:
    """A member whose trial has not asked for the round (Tune is still deciding about it) is not trained."""
    pack = Pack(SHAPE, capacity=2)
    pack.join("a", CONFIGS["a"], _initial(0))
    pack.join("b", CONFIGS["b"], _initial(1))
    before = pack.member_state("b")
    trained = pack.train_round(_batches(0), members=["a"])
    assert set(trained) == {"a"}
    after = pack.member_state("b")
    for name, value in before["model"].items():
        assert torch.equal(value, after["model"][name]), name
    assert pack.optimizer.steps[1] == 0


def test_what_cannot_be_packed_is_named() -> None:
    with pytest.raises(
        NotPackable, match=r"head = 'decoder' cannot be packed; a packed member takes head in \['linear'\]"
    ):
        check_packable({"head": "decoder", "lr": 1e-3})
    with pytest.raises(NotPackable, match="loss = 'quantile'"):
        check_packable({"loss": "quantile"})
    with pytest.raises(NotPackable, match="pooling = 'additive'"):
        check_packable({"pooling": "additive"})
    check_packable({"head": "linear", "pooling": "mean", "loss": "huber", "lr": 0.1})
    assert shape_key({"hidden_size": 32, "window": 12, "bidirectional": True}) == "h32-l1-bi-last-w12-b128-mse-e100"


TEXT = ClassifierShape(vocab_size=30, num_classes=4, embedding_dim=6, hidden_size=8, bidirectional=True)


def _documents(seed: int, n: int = 4, shape: ClassifierShape = TEXT) -> list[Batch]:
    """Padded batches of documents of ragged lengths (token 0 is padding), as the text loader makes them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        tokens = torch.randint(1, shape.vocab_size, (B, T), generator=g)
        tokens[torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
        out.append((tokens, lengths, torch.randint(0, shape.num_classes, (B,), generator=g)))
    return out


@pytest.mark.parametrize(
    "shape",
    [TEXT, ClassifierShape(vocab_size=30, num_classes=3, embedding_dim=5, hidden_size=6, num_layers=2, pooling="mean")],
    ids=["bidirectional-last", "stacked-mean"],
)
def test_classifier_members_train_as_they_would_alone(shape: ClassifierShape) -> None:
    """Text classifiers (``LSTMClassifier``: embedding with a padding row, encoder over packed ragged sequences,
    pooling, head, cross-entropy) in one pack, each as it would train alone."""
    pack = ClassifierPack(shape, capacity=3)
    configs = [MemberConfig(lr=1e-2, grad_clip=1.0), MemberConfig(lr=3e-3, weight_decay=0.05, l1=1e-4)]
    alone = []
    for seed, cfg in enumerate(configs):
        torch.manual_seed(seed)
        model = shape.model(cfg)
        pack.join(f"m{seed}", cfg, {"model": model.state_dict()})
        alone.append((model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), cfg))
    for r in range(3):
        batches = _documents(r, shape=shape)
        packed = pack.train_round(batches)
        for seed, (model, optimizer, cfg) in enumerate(alone):
            total = 0.0
            for tokens, lengths, labels in batches:
                loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
                optimizer.zero_grad()
                (loss + cfg.l1 * l1_penalty(model) if cfg.l1 > 0 else loss).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                total += loss.item()
            assert packed[f"m{seed}"].loss == pytest.approx(total / len(batches), rel=1e-5), (seed, r)
    state = pack.member_state("m1")
    assert torch.count_nonzero(state["model"]["embedding.weight"][0]) == 0  # the padding row never learned
    for name, value in alone[1][0].state_dict().items():
        torch.testing.assert_close(state["model"][name], value, rtol=1e-4, atol=1e-6)


def test_a_pack_takes_as_many_slots_as_the_card_holds() -> None:
    """fit_capacity: --pack, or what fits in 80% of the free memory after the fixed part; never 0 slots."""
    from trainables.pack_server import fit_capacity

    gib = 2**30
    assert fit_capacity(128, per_member=100 * 2**20, fixed=2 * gib, free=80 * gib) == 128  # 62 GiB / 100 MiB > 128
    assert fit_capacity(128, per_member=1 * gib, fixed=2 * gib, free=80 * gib) == 62  # (64 - 2) GiB / 1 GiB
    assert fit_capacity(8, per_member=1 * gib, fixed=2 * gib, free=3 * gib) == 1  # not even one fits: one, not none
    assert fit_capacity(8, per_member=0, fixed=0, free=gib) == 8  # no measurable growth (CPU): as asked
