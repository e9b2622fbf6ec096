"""K same-shape LSTMs trained as one: stacked parameters, one batched recurrent product per time step.

The first step of packed trials (docs/design/packing.md): the layers and the optimizer that let K members share
every kernel launch. A member computes what it would compute alone (``nn.LSTM``, ``nn.Linear``,
``torch.optim.AdamW`` and ``clip_grad_norm_``) up to float rounding; ``tests/test_packed.py`` checks it. For GPUs
only: on CPU, K ``nn.LSTM`` calls one after another are 4-9x faster than this formulation (measured, issue 22).

Shapes: K members, batch B, time T, inputs I, hidden H. Inputs are ``[B, T, I]`` (the same batch for every member,
as a pack trains) or ``[K, B, T, I]``; outputs carry K first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def _stacked(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach().clone() for t in tensors]))


class PackedLSTM(nn.Module):
    """``members`` LSTMs of one shape. Parameter names follow ``nn.LSTM``'s (``weight_ih_l0``, ``bias_hh_l1_reverse``)
    with a leading member axis, so member ``k``'s slice of each is that member's ``nn.LSTM`` state."""

    def __init__(
        self, members: int, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False
    ) -> None:
        super().__init__()
        if members < 1 or input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"PackedLSTM: members, input_size, hidden_size and num_layers must be >= 1 (got {members}, "
                f"{input_size}, {hidden_size}, {num_layers})"
            )
        self.members, self.input_size, self.hidden_size = members, input_size, hidden_size
        self.num_layers, self.bidirectional = num_layers, bidirectional
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's default initialisation
        for name, shape in self._shapes():
            self.register_parameter(name, nn.Parameter(torch.empty(members, *shape).uniform_(-bound, bound)))

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"] if self.bidirectional else [""]

    def _shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        h, directions = self.hidden_size, 2 if self.bidirectional else 1
        shapes = []
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else h * directions
            for suffix in self._suffixes():
                shapes += [
                    (f"weight_ih_l{layer}{suffix}", (4 * h, width)),
                    (f"weight_hh_l{layer}{suffix}", (4 * h, h)),
                    (f"bias_ih_l{layer}{suffix}", (4 * h,)),
                    (f"bias_hh_l{layer}{suffix}", (4 * h,)),
                ]
        return shapes

    @classmethod
    def from_lstms(cls, lstms: Sequence[nn.LSTM]) -> PackedLSTM:
        """One pack holding these LSTMs' current weights (all of one shape, ``batch_first``, with biases)."""
        first = lstms[0]
        for i, lstm in enumerate(lstms):
            same = (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional) == (
                first.input_size,
                first.hidden_size,
                first.num_layers,
                first.bidirectional,
            )
            if not same or not lstm.batch_first or not lstm.bias or lstm.proj_size:
                raise ValueError(
                    f"PackedLSTM.from_lstms: member {i} differs in shape from member 0, or is not batch_first with "
                    "biases and no projection; a pack holds one shape"
                )
        pack = cls(len(lstms), first.input_size, first.hidden_size, first.num_layers, first.bidirectional)
        for name, _ in pack._shapes():
            setattr(pack, name, _stacked([getattr(lstm, name) for lstm in lstms]))
        return pack

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k`` as an ``nn.LSTM`` state dict (what its own checkpoint holds)."""
        return {name: getattr(self, name)[k].detach().clone() for name, _ in self._shapes()}

    def load_member(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Member ``k`` takes an ``nn.LSTM`` state (a PBT exploit's donor, a restored checkpoint)."""
        with torch.no_grad():
            for name, _ in self._shapes():
                getattr(self, name)[k].copy_(state[name])

    def _direction(
        self, x: torch.Tensor, layer: int, suffix: str, reverse: bool, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """One layer, one direction, every member: ``x`` [K, B, T, W] -> [K, B, T, H]. ``valid`` [T, B] marks the
        steps inside each sequence: outside, the state is held and the output is 0 (``nn.LSTM`` on a packed
        sequence, so the forward direction ends at each sequence's last step and the backward one starts there)."""
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}{suffix}"), getattr(self, f"weight_hh_l{layer}{suffix}")
        bias = getattr(self, f"bias_ih_l{layer}{suffix}") + getattr(self, f"bias_hh_l{layer}{suffix}")
        k, b, t, _ = x.shape
        # Every member's input projection for every step at once: one batched GEMM.
        projected = torch.baddbmm(bias[:, None, :], x.reshape(k, b * t, -1), w_ih.transpose(1, 2)).view(k, b, t, -1)
        h = x.new_zeros(k, b, self.hidden_size)
        c = x.new_zeros(k, b, self.hidden_size)
        w_hh_t = w_hh.transpose(1, 2)
        steps = range(t - 1, -1, -1) if reverse else range(t)
        outputs: list[torch.Tensor] = [h] * t
        for step in steps:
            gates = torch.baddbmm(projected[:, :, step], h, w_hh_t)  # the one recurrent product per step
            i, f, g, o = gates.chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if valid is None:
                h, c = h_new, c_new
                outputs[step] = h
            else:
                inside = valid[step].view(1, b, 1)
                h, c = torch.where(inside, h_new, h), torch.where(inside, c_new, c)
                outputs[step] = torch.where(inside, h_new, torch.zeros_like(h_new))
        return torch.stack(outputs, dim=2)

    def forward(
        self, x: torch.Tensor, dropout: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, T, I] or [K, B, T, I] -> every step's output [K, B, T, H * directions] (``nn.LSTM``'s ``output``).

        ``dropout`` [K]: each member's probability between layers in training (``nn.LSTM``'s ``dropout``).
        ``lengths`` [B]: each sequence's true length; steps past it are padding (0 in the output), as
        ``pack_padded_sequence`` and ``pad_packed_sequence`` around ``nn.LSTM`` make them."""
        given = tuple(x.shape)
        if x.dim() == 3:
            x = x.unsqueeze(0).expand(self.members, *x.shape)
        if x.dim() != 4 or x.shape[0] != self.members or x.shape[-1] != self.input_size:
            raise ValueError(
                f"PackedLSTM: input of shape {given}; expected [B, T, {self.input_size}] or "
                f"[{self.members}, B, T, {self.input_size}]"
            )
        valid = None
        if lengths is not None:
            steps = torch.arange(x.shape[2], device=x.device).unsqueeze(1)
            valid = steps < lengths.to(x.device).unsqueeze(0)  # [T, B]
        for layer in range(self.num_layers):
            parts = [self._direction(x, layer, "", False, valid)]
            if self.bidirectional:
                parts.append(self._direction(x, layer, "_reverse", True, valid))
            x = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
            if dropout is not None and self.training and layer < self.num_layers - 1:
                x = member_dropout(x, dropout)
        return x


def member_dropout(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Dropout on [K, ...] with member k's probability ``p[k]``, scaled as ``nn.Dropout`` scales; a member at 0
    passes unchanged (multiplied by exactly 1)."""
    if not bool((p > 0).any()):
        return x
    keep = (1 - p).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    mask = (torch.rand_like(x) < keep).to(x.dtype)
    return x * mask / keep


class PackedLinear(nn.Module):
    """``members`` ``nn.Linear`` layers of one shape: [K, ..., in] -> [K, ..., out]."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, out_features).uniform_(-bound, bound))

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> PackedLinear:
        out, width = linears[0].weight.shape
        pack = cls(len(linears), width, out)
        pack.weight = _stacked([m.weight for m in linears])
        pack.bias = _stacked([m.bias for m in linears])
        return pack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        flat = x.reshape(k, -1, x.shape[-1])
        out = torch.baddbmm(self.bias[:, None, :], flat, self.weight.transpose(1, 2))
        return out.view(*x.shape[:-1], -1)


class PackedEmbedding(nn.Module):
    """``members`` ``nn.Embedding`` tables of one shape: token ids [B, T] (shared) or [K, B, T] -> [K, B, T, dim]."""

    def __init__(self, members: int, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, num_embeddings, embedding_dim))  # nn.Embedding's N(0, 1)

    @classmethod
    def from_embeddings(cls, embeddings: Sequence[nn.Embedding]) -> PackedEmbedding:
        rows, dim = embeddings[0].weight.shape
        pack = cls(len(embeddings), rows, dim)
        pack.weight = _stacked([e.weight for e in embeddings])
        return pack

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        k, rows = self.weight.shape[0], self.weight.shape[1]
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(0).expand(k, *tokens.shape)
        # Member k's rows sit at k * rows in the flattened tables: one gather for every member.
        offsets = (torch.arange(k, device=tokens.device) * rows).view(k, 1, 1)
        return self.weight.reshape(k * rows, -1)[tokens + offsets]


def clip_per_member(parameters: Iterable[torch.Tensor], max_norm: torch.Tensor) -> torch.Tensor:
    """``clip_grad_norm_`` for each member on its own slices: ``max_norm`` [K] (``inf``: no clipping). Returns each
    member's total gradient norm before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    k = max_norm.shape[0]
    norms = torch.stack([g.reshape(k, -1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    coef = torch.clamp(max_norm.to(norms.device, norms.dtype) / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(k, *([1] * (g.dim() - 1))))
    return norms


class PackedAdamW:
    """AdamW over stacked parameters with a learning rate and a weight decay per member (tensors [K]) and a step
    count per member (a member that joined later, or took a donor's state, has its own). Betas and eps are shared:
    they are not search dimensions. Each member's update is ``torch.optim.AdamW``'s."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: torch.Tensor,
        weight_decay: torch.Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.weight_decay = lr.detach().clone().double(), weight_decay.detach().clone().double()
        self.betas, self.eps = betas, eps
        k = self.lr.shape[0]
        self.steps = torch.zeros(k, dtype=torch.float64)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _per_member(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # Per-member values live on the host (a few numbers); the tensors they scale may be on a GPU.
        return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One update of every member, or of the members where ``active`` [K] is true (the others keep their
        weights, moments and step count: an empty slot of a pack)."""
        beta1, beta2 = self.betas
        live = torch.ones_like(self.steps, dtype=torch.bool) if active is None else active.to("cpu", torch.bool)
        self.steps += live.double()
        steps = self.steps.clamp(min=1)  # a member that never stepped is not updated; keep its corrections finite
        correction1 = 1 - beta1**steps
        correction2_sqrt = (1 - beta2**steps).sqrt()
        step_size = self.lr / correction1
        decay = 1 - self.lr * self.weight_decay
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            mask = self._per_member(live, p).to(torch.bool)
            new_p = p * self._per_member(decay, p)
            new_m = m.lerp(g, 1 - beta1)
            new_v = (v * beta2).addcmul_(g, g, value=1 - beta2)
            denom = (new_v.sqrt() / self._per_member(correction2_sqrt, p)).add_(self.eps)
            new_p.sub_(self._per_member(step_size, p) * new_m / denom)
            p.copy_(torch.where(mask, new_p, p))
            m.copy_(torch.where(mask, new_m, m))
            v.copy_(torch.where(mask, new_v, v))


__all__ = ["PackedAdamW", "PackedEmbedding", "PackedLSTM", "PackedLinear", "clip_per_member", "member_dropout"]
