"""A pack of K members computes and trains as K separate models (trainables/packed.py; docs/design/packing.md).

The separate runs use torch's own ``nn.LSTM`` (oneDNN here), ``nn.Linear``, ``AdamW`` and ``clip_grad_norm_``; the
pack has its own kernels, so the bar is float rounding: relative 1e-5 on losses over 25 steps of training with a
different learning rate, weight decay and clipping norm per member."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from trainables.packed import PackedAdamW, PackedEmbedding, PackedLinear, PackedLSTM, clip_per_member

pytestmark = pytest.mark.unit

K, B, T, IN, H = 4, 16, 12, 5, 8


def _lstms(layers: int, bidirectional: bool, seed: int = 0) -> list[nn.LSTM]:
    torch.manual_seed(seed)
    return [nn.LSTM(IN, H, layers, batch_first=True, bidirectional=bidirectional) for _ in range(K)]


@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, False), (2, True)])
def test_forward_equals_each_members_nn_lstm(layers: int, bidirectional: bool) -> None:
    lstms = _lstms(layers, bidirectional)
    pack = PackedLSTM.from_lstms(lstms)
    shared = torch.randn(B, T, IN)
    own = torch.randn(K, B, T, IN)
    out_shared, out_own = pack(shared), pack(own)
    assert out_shared.shape == (K, B, T, H * (2 if bidirectional else 1))
    for k, lstm in enumerate(lstms):
        torch.testing.assert_close(out_shared[k], lstm(shared)[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out_own[k], lstm(own[k])[0], rtol=1e-5, atol=1e-6)


def test_a_member_leaves_and_enters_as_an_nn_lstm_state() -> None:
    lstms = _lstms(2, True)
    pack = PackedLSTM.from_lstms(lstms)
    alone = nn.LSTM(IN, H, 2, batch_first=True, bidirectional=True)
    alone.load_state_dict(pack.member_state(2))
    x = torch.randn(B, T, IN)
    torch.testing.assert_close(alone(x)[0], lstms[2](x)[0])
    pack.load_member(0, lstms[3].state_dict())  # a PBT exploit inside one pack: member 0 takes member 3's weights
    torch.testing.assert_close(pack(x)[0], pack(x)[3])


def test_bad_shapes_are_named() -> None:
    pack = PackedLSTM(K, IN, H)
    with pytest.raises(ValueError, match=r"input of shape \(16, 12, 3\); expected \[B, T, 5\]"):
        pack(torch.randn(B, T, 3))
    with pytest.raises(ValueError, match="member 1 differs in shape"):
        PackedLSTM.from_lstms([nn.LSTM(IN, H, batch_first=True), nn.LSTM(IN, H + 1, batch_first=True)])
    with pytest.raises(ValueError, match="must be >= 1"):
        PackedLSTM(0, IN, H)


def _step_alone(
    models: list[nn.Module],
    optimizers: list[torch.optim.Optimizer],
    clips: list[float],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> list[float]:
    """One step of each member trained alone, as an unpacked trial steps: torch's AdamW and clip_grad_norm_."""
    losses = []
    for model, optimizer, clip in zip(models, optimizers, clips, strict=True):
        loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


class _Alone(nn.Module):
    def __init__(self, lstm: nn.LSTM, head: nn.Linear) -> None:
        super().__init__()
        self.lstm, self.head = lstm, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1]).squeeze(-1)


def test_training_a_pack_equals_training_each_member_alone() -> None:
    """Per-member learning rate, weight decay and clipping norm; the same batches; 25 steps."""
    lrs, decays, clips = [1e-3, 3e-3, 1e-2, 3e-2], [0.0, 1e-4, 1e-2, 0.1], [math.inf, 1.0, 0.5, 0.1]
    lstms = _lstms(2, False, seed=1)
    torch.manual_seed(2)
    heads = [nn.Linear(H, 1) for _ in range(K)]
    pack_lstm, pack_head = PackedLSTM.from_lstms(lstms), PackedLinear.from_linears(heads)
    alone = [_Alone(lstm, head) for lstm, head in zip(lstms, heads, strict=True)]
    optimizers = [
        torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd) for m, lr, wd in zip(alone, lrs, decays, strict=True)
    ]
    params = [*pack_lstm.parameters(), *pack_head.parameters()]
    packed = PackedAdamW(params, lr=torch.tensor(lrs), weight_decay=torch.tensor(decays))
    g = torch.Generator().manual_seed(3)
    for step in range(25):
        x, y = torch.randn(B, T, IN, generator=g), torch.randn(B, generator=g)
        losses_alone = _step_alone(alone, optimizers, clips, nn.functional.mse_loss, x, y)
        forecast = pack_head(pack_lstm(x)[:, :, -1]).squeeze(-1)  # [K, B]
        member_losses = ((forecast - y) ** 2).mean(dim=1)
        packed.zero_grad()
        member_losses.sum().backward()  # members share no parameter: each gets its own gradient
        clip_per_member(params, torch.tensor(clips))
        packed.step()
        assert member_losses.tolist() == pytest.approx(losses_alone, rel=1e-5), f"step {step}"
    for k, model in enumerate(alone):
        for name, value in pack_lstm.member_state(k).items():
            torch.testing.assert_close(value, getattr(model.lstm, name), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pack_head.weight[k], model.head.weight, rtol=1e-4, atol=1e-5)


class _Classifier(nn.Module):
    def __init__(self, embedding: nn.Embedding, lstm: nn.LSTM, head: nn.Linear) -> None:
        super().__init__()
        self.embedding, self.lstm, self.head = embedding, lstm, head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embedding(tokens))[0].mean(dim=1))


def test_training_a_pack_of_classifiers_equals_training_each_alone() -> None:
    """Token embeddings, a bidirectional LSTM, mean pooling and a linear head over 3 classes, with cross-entropy;
    per-member learning rate, weight decay and clipping; the same token batches; 20 steps."""
    vocab, dim, classes = 40, 6, 3
    lrs, decays, clips = [2e-3, 1e-2, 3e-2, 5e-3], [0.0, 1e-3, 0.05, 0.2], [math.inf, 2.0, 0.3, 1.0]
    torch.manual_seed(4)
    embeddings = [nn.Embedding(vocab, dim) for _ in range(K)]
    lstms = [nn.LSTM(dim, H, batch_first=True, bidirectional=True) for _ in range(K)]
    heads = [nn.Linear(2 * H, classes) for _ in range(K)]
    alone = [_Classifier(e, lstm, h) for e, lstm, h in zip(embeddings, lstms, heads, strict=True)]
    pack_emb = PackedEmbedding.from_embeddings(embeddings)
    pack_lstm, pack_head = PackedLSTM.from_lstms(lstms), PackedLinear.from_linears(heads)
    optimizers = [
        torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd) for m, lr, wd in zip(alone, lrs, decays, strict=True)
    ]
    params = [*pack_emb.parameters(), *pack_lstm.parameters(), *pack_head.parameters()]
    packed = PackedAdamW(params, lr=torch.tensor(lrs), weight_decay=torch.tensor(decays))
    g = torch.Generator().manual_seed(5)
    for step in range(20):
        tokens, labels = torch.randint(0, vocab, (B, T), generator=g), torch.randint(0, classes, (B,), generator=g)
        losses_alone = _step_alone(alone, optimizers, clips, nn.functional.cross_entropy, tokens, labels)
        logits = pack_head(pack_lstm(pack_emb(tokens)).mean(dim=2))  # [K, B, classes]
        member_losses = torch.stack([nn.functional.cross_entropy(logits[k], labels) for k in range(K)])
        packed.zero_grad()
        member_losses.sum().backward()
        clip_per_member(params, torch.tensor(clips))
        packed.step()
        assert member_losses.tolist() == pytest.approx(losses_alone, rel=1e-5), f"step {step}"
    for k, model in enumerate(alone):
        torch.testing.assert_close(pack_emb.weight[k], model.embedding.weight, rtol=1e-4, atol=1e-5)


def test_clipping_is_per_member_and_reports_each_norm() -> None:
    w = nn.Parameter(torch.zeros(2, 3))
    w.grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]])  # norms 5 and 0.5
    norms = clip_per_member([w], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(w.grad[0].norm(), torch.tensor(1.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad[1], torch.tensor([0.3, 0.4, 0.0]))  # under its norm: untouched


@pytest.mark.parametrize("bidirectional", [False, True])
def test_ragged_sequences_equal_nn_lstm_on_packed_sequences(bidirectional: bool) -> None:
    """Padded batches of documents: each member's outputs and final states equal ``nn.LSTM`` run on
    ``pack_padded_sequence`` (padding skipped, the backward direction starting at each sequence's last step)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    lstms = _lstms(2, bidirectional)
    pack = PackedLSTM.from_lstms(lstms)
    lengths = torch.tensor([T, 1, 5, T - 3, 2, 7, T, 4] * (B // 8))
    x = torch.randn(B, T, IN)
    out = pack(x, lengths=lengths)
    for k, lstm in enumerate(lstms):
        packed, (h, _) = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=T)
        torch.testing.assert_close(out[k], expected, rtol=1e-5, atol=1e-6)
        last = out[k, torch.arange(B), lengths - 1, :H]
        torch.testing.assert_close(last, h[-2] if bidirectional else h[-1], rtol=1e-5, atol=1e-6)
        if bidirectional:
            torch.testing.assert_close(out[k, :, 0, H:], h[-1], rtol=1e-5, atol=1e-6)
