"""A language model's sampling step in as few tensor operations as the LSTM allows.

At batch 1 a step of a 2x512 LSTM language model is three matrix products (about 13 MB of
weights read) and a few dozen operations on vectors of a few hundred numbers. On a 2-core CPU
each such operation costs a few microseconds whatever its size, so the small ones together cost
nearly as much as the products (bench/sampling.py). :class:`LSTMSamplingStep` does the same
arithmetic as :meth:`LanguageModel.step` with fewer of them:

* The first layer's input product depends only on the token: ``W_ih E[v] + b_ih + b_hh`` is
  computed once for every token v into a table (V, 4H), so a step reads one row of it and adds
  it to the recurrent product inside oneDNN (where V·4H is small, as in character models).
* Every gate is a sigmoid: ``tanh(x) = 2σ(2x) − 1``, so the rows of the cell candidate g are
  multiplied by 2 once (exact in binary floating point) and one sigmoid over all 4H
  pre-activations replaces three sigmoids and a tanh; then
  ``c' = f ⊙ c + i ⊙ (2σ(2g) − 1)`` is three in-place operations.
* Every intermediate lives in a buffer made once: the sigmoids land in fixed (N, 4H) buffers
  whose four gate views are cut once, and each layer writes its new ``h`` straight into the
  input buffer ``[h_{l−1}, h_l]`` of the layer above, so no concatenation is needed.
* The banned tokens (not text) get a bias of −inf in the head.

The products are :class:`rnnkit.layers.packed.PackedLinear`'s (fp32, bf16 or int8 weights),
so the fp32 step gives :meth:`LanguageModel.step`'s logits up to float rounding.

At batch 1, where a C compiler is found, :meth:`LSTMSamplingStep.draw` goes further: the native
sampler (:mod:`rnnkit.tasks.lm_native`) runs the whole step and the draw in C, a block of tokens
per call, and ``generate_tokens`` hands the steps over to it. The packed products above are
still built for several samples at once and for machines without the library.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rnnkit.layers.packed import PackedLinear, Weights
from rnnkit.tasks import lm_native
from rnnkit.tasks.lm_native import NativeLSTMSampler

if TYPE_CHECKING:
    from rnnkit.tasks.lm import LanguageModel

# The token table (V, 4H) of the first layer is used while it has at most this many numbers
# (64 MiB of fp32): always for characters, not for a 50,000-word vocabulary.
MAX_TABLE_NUMBERS = 1 << 24


def fast_step_fits(model: LanguageModel) -> bool:
    """Whether :class:`LSTMSamplingStep` can step ``model``: an LSTM language model without
    projection or peepholes."""
    rnn = model.rnn
    return (
        model.config.cell == "lstm"
        and not getattr(rnn, "proj_size", 0)
        and not getattr(rnn, "peephole", False)
        and getattr(rnn, "bias", True)
        and not getattr(rnn, "bidirectional", False)
    )


@dataclass
class _Buffers:
    """The state of N samples between steps, in the step's own layout.

    ``reads[l]`` is what layer l's product reads: ``[h_{l−1}, h_l]`` (N, 2H) for l >= 1; for
    layer 0 its own ``h`` (N, H) with the token table, else ``[x, h_0]`` (N, D + H).
    ``writes[l]`` (N, H) is where layer l puts its new h: the first half of the input of the
    layer above, or (the last layer) its own slot, which the head reads as ``top``.
    ``own[l]`` (N, H) is the slot from which layer l reads its h at the next step; where it is
    not ``writes[l]`` the new h is copied there. ``cells[l]`` (N, H); ``gates[l]`` the
    (N, 4H) sigmoid buffer and its four (N, H) views i, f, g, o.
    """

    reads: list[Tensor]
    writes: list[Tensor]
    own: list[Tensor]
    cells: list[Tensor]
    gates: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]

    @property
    def top(self) -> Tensor:
        """The last layer's h (N, H), the head's input."""
        return self.writes[-1]


class LSTMSamplingStep:
    """``step(tokens, state)`` of an LSTM language model for sampling, with packed weights.

    A snapshot of the model's weights at construction (later changes are not seen). The model
    is used in eval mode (no dropout). ``__call__`` (the prime) runs the model's own forward;
    ``step`` continues from its state, or from the state ``step`` returned. Banned tokens get
    logits of −inf in both.

    Args:
        model: a language model for which :func:`fast_step_fits`.
        weights: how the gate weights are stored: ``"fp32"``, ``"bf16"`` or ``"int8"``
            (see :class:`rnnkit.layers.packed.PackedLinear`).
        banned: token ids that are never sampled.

    Shapes:
        __call__: tokens (N, T) -> logits (N, T, V), state in torch's layout
        step: tokens (N,) -> logits (N, V), state (opaque between steps; :meth:`state_of`)
    """

    def __init__(self, model: LanguageModel, weights: Weights, banned: list[int]) -> None:
        if not fast_step_fits(model):
            raise ValueError("LSTMSamplingStep needs an LSTM language model without projection")
        self.model = model
        rnn = model.rnn
        self.num_layers, self.hidden_size = rnn.num_layers, rnn.hidden_size
        hidden = self.hidden_size
        device = model.head.weight.device
        doubled = torch.ones(4 * hidden, device=device)  # (4H,)
        doubled[2 * hidden : 3 * hidden] = 2.0  # the g rows: tanh(x) = 2σ(2x) − 1
        with torch.no_grad():
            weight_ih, weight_hh = _weight(rnn, "weight_ih", 0), _weight(rnn, "weight_hh", 0)
            bias = _weight(rnn, "bias_ih", 0) + _weight(rnn, "bias_hh", 0)  # (4H,)
            self.input_size = weight_ih.shape[1]
            self._table: Tensor | None = None
            if model.vocab_size * 4 * hidden <= MAX_TABLE_NUMBERS:
                every = model.embed(torch.arange(model.vocab_size, device=device))  # (V, D)
                table = torch.addmm(bias, every.to(weight_ih.dtype), weight_ih.t())  # (V, 4H)
                self._table = (table * doubled).contiguous()  # (V, 4H), g rows doubled
                first = PackedLinear(weight_hh * doubled[:, None], None, weights)  # (4H, H)
            else:
                both = torch.cat([weight_ih, weight_hh], 1)  # (4H, D + H)
                first = PackedLinear(both * doubled[:, None], bias * doubled, weights)
            self._products = [first]
            for layer in range(1, self.num_layers):
                weight_ih = _weight(rnn, "weight_ih", layer)  # (4H, H)
                both = torch.cat([weight_ih, _weight(rnn, "weight_hh", layer)], 1)  # (4H, 2H)
                bias = _weight(rnn, "bias_ih", layer) + _weight(rnn, "bias_hh", layer)  # (4H,)
                self._products.append(
                    PackedLinear(both * doubled[:, None], bias * doubled, weights)
                )
            self._head_weight_t = model.head.weight.detach().t().contiguous()  # (H, V)
            self._head_bias = model.head.bias.detach().clone()  # (V,)
            self._head_bias[banned] = -math.inf
        self._banned = torch.tensor(banned, dtype=torch.long, device=device)
        self._native: NativeLSTMSampler | None = None
        library = lm_native.load() if self._native_fits(weights, device) else None
        if library is not None:
            self._native = NativeLSTMSampler(library, model, table, self._head_bias, weights)

    def _native_fits(self, weights: Weights, device: torch.device) -> bool:
        """Whether the native sampler can step this model: float32 on the CPU, with the
        token table (any ``weights``)."""
        return (
            device.type == "cpu" and self._table is not None and self._table.dtype == torch.float32
        )

    def draw(
        self,
        tokens: Tensor,
        state: object,
        count: int,
        temperature: float,
        generator: torch.Generator | None,
    ) -> Iterator[Tensor] | None:
        """``count`` tokens drawn by the native sampler (:mod:`rnnkit.tasks.lm_native`) after
        ``tokens`` (1,) and the prime's ``state``, or None where it cannot run here (no
        compiler, more than one sample): then the caller steps with
        :meth:`step`. With fp32 weights the same tokens as :meth:`step` with
        ``generate_tokens``'s draw, up to float rounding; with reduced weights the products
        keep the state in float32 where :meth:`step` rounds it to bf16, so a few tokens may
        differ."""
        if self._native is None or tokens.shape[0] != 1 or isinstance(state, _Buffers):
            return None
        return self._native.draw(int(tokens[0]), state, count, temperature, generator)

    @torch.no_grad()
    def __call__(self, tokens: Tensor, state: object = None) -> tuple[Tensor, object]:
        """The prime: the model's forward in eval mode, banned tokens at −inf.

        tokens (N, T) -> logits (N, T, V), state (h, c) in torch's layout."""
        self.model.eval()
        logits, state = self.model(tokens, state)  # (N, T, V)
        return logits.index_fill_(-1, self._banned, -math.inf), state

    @torch.no_grad()
    def step(self, tokens: Tensor, state: object) -> tuple[Tensor, _Buffers]:
        """One token more: tokens (N,) -> logits (N, V), the state for the next step.

        ``state`` is the prime's ``(h, c)`` ((L, N, H) each) or what ``step`` returned; the
        returned state is the buffers of the one passed in, overwritten by this step.
        """
        buffers = state if isinstance(state, _Buffers) else self._buffers(state)
        products, reads = self._products, buffers.reads
        for layer in range(self.num_layers):
            if layer > 0:
                gates = products[layer](reads[layer])  # (N, 4H)
            elif self._table is not None:
                gates = products[0](reads[0], self._table[tokens])  # (N, 4H)
            else:
                reads[0][:, : self.input_size] = self.model.embed(tokens)  # (N, D)
                gates = products[0](reads[0])  # (N, 4H)
            sigmoids, i, f, g, o = buffers.gates[layer]
            torch.sigmoid(gates, out=sigmoids)  # (N, 4H): σ(i), σ(f), σ(2g), σ(o)
            cell = buffers.cells[layer].mul_(f).addcmul_(i, g, value=2.0).sub_(i)  # (N, H)
            h = torch.tanh(cell, out=buffers.writes[layer]).mul_(o)  # (N, H)
            if buffers.own[layer] is not h:
                buffers.own[layer].copy_(h)
        return torch.addmm(self._head_bias, buffers.top, self._head_weight_t), buffers  # (N, V)

    def state_of(self, buffers: _Buffers) -> tuple[Tensor, Tensor]:
        """The torch-layout state ``(h, c)``, (L, N, H) each, of the step's buffers."""
        return torch.stack(buffers.own), torch.stack(buffers.cells)  # (L, N, H) each

    def _buffers(self, state: object) -> _Buffers:
        """Buffers holding the torch-layout state ``(h, c)`` ((L, N, H) each)."""
        h_0, c_0 = state  # type: ignore[misc]
        count, hidden, layers = h_0.shape[1], self.hidden_size, self.num_layers
        new = h_0.new_zeros
        above = [new(count, 2 * hidden) for _ in range(1, layers)]  # [h_{l−1}, h_l], l >= 1
        writes = [part[:, :hidden] for part in above] + [None]
        own = [None] + [part[:, hidden:] for part in above]
        if self._table is not None:
            own[0] = writes[0] if layers > 1 else new(count, hidden)  # (N, H)
            reads = [own[0], *above]
        else:
            first = new(count, self.input_size + hidden)  # [x, h_0]
            own[0] = first[:, self.input_size :]
            reads = [first, *above]
        writes[-1] = own[-1]
        for slot, h in zip(own, h_0.unbind(0), strict=True):
            slot.copy_(h)
        gates = []
        for _ in range(layers):
            sigmoids = new(count, 4 * hidden)  # (N, 4H)
            gates.append((sigmoids, *sigmoids.chunk(4, dim=1)))
        cells = [c.clone() for c in c_0.unbind(0)]  # L × (N, H)
        return _Buffers(reads=reads, writes=writes, own=own, cells=cells, gates=gates)


def _weight(rnn: torch.nn.Module, name: str, layer: int) -> Tensor:
    """The layer's parameter ``{name}_l{layer}``, detached."""
    return getattr(rnn, f"{name}_l{layer}").detach()
