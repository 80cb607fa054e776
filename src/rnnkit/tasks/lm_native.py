"""Batch-1 sampling of an LSTM language model in one C call per block of tokens.

Through torch a batch-1 step of a 2x512 LSTM language model is three matrix products and about
twenty small operations. Each product streams megabytes of weights through the caches, so each
small operation after it starts cold: on a 2-core AMD EPYC the small ones cost about 40% of the
step, although their arithmetic is a few microseconds (bench/sampling.py). The native sampler
(``rnnkit/csrc/lstm_sample.c``, compiled on first use by :mod:`rnnkit.native`) runs the whole
step, products included, and the draw of the next token in C, split over the cores, for a block
of tokens per call.

It draws the same tokens as :func:`rnnkit.sampling.generate_tokens` with the model's own step,
up to float rounding: the softmax of ``logits / temperature`` raced against Exp(1) draws that
come from the caller's generator in the same order (``torch.multinomial``'s draw for one
sample), or the first largest logit when the temperature is 0.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rnnkit import native
from rnnkit.layers.packed import Weights, quantize_int8

if TYPE_CHECKING:
    from rnnkit.tasks.lm import LanguageModel

# The C kernel's codes of the gate weights' storage (enum in lstm_sample.c).
KINDS = {"fp32": 0, "bf16": 1, "int8": 2}

# Tokens drawn per C call: long enough that Python's share is small, short enough that the
# text still streams (a block is a few milliseconds).
BLOCK = 64


class _Model(ctypes.Structure):
    """``Model`` of lstm_sample.c: sizes, pointers to the weights and to the state."""

    _fields_ = (  # in the order of the C struct
        *((name, ctypes.c_int64) for name in ("layers", "hidden", "vocab", "threads", "kind")),
        ("table", ctypes.c_void_p),
        *((name, ctypes.POINTER(ctypes.c_void_p)) for name in ("weights", "scales", "biases")),
        *((name, ctypes.c_void_p) for name in ("head_weight", "head_bias", "h", "cells", "logits")),
        *((name, ctypes.c_int64) for name in ("parity", "token")),
    )


def _pointers(tensors: list[Tensor]) -> ctypes.Array:
    """A C array of the tensors' data pointers (the tensors must outlive it)."""
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def load() -> ctypes.CDLL | None:
    """The compiled lstm_sample.c with its functions typed, or None (see :mod:`rnnkit.native`)."""
    library = native.library("lstm_sample")
    if library is None:
        return None
    sample = library.rnnkit_lstm_sample
    sample.argtypes = [
        ctypes.POINTER(_Model),
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_float,
        ctypes.c_void_p,
    ]
    sample.restype = None
    products = library.rnnkit_lstm_products
    products.argtypes = [ctypes.POINTER(_Model), ctypes.c_int64, ctypes.c_void_p]
    products.restype = None
    return library


class NativeLSTMSampler:
    """Draws tokens of a float32 LSTM language model at batch 1 with the native kernel.

    A snapshot of the weights at construction, on the CPU: the token table
    ``E W_ih0ᵀ + b_ih0 + b_hh0`` (V, 4H), layer 0's ``W_hh`` (4H, H), ``[W_ih | W_hh]``
    (4H, 2H) and ``b_ih + b_hh`` of the layers above, and the head, banned tokens at −inf.
    The gate weights are stored as ``weights`` says: float32, bfloat16, or int8 with one scale
    per row as :func:`rnnkit.layers.packed.quantize_int8` makes them (``W ≈ q · s``); the
    products multiply them, widened to float32, by the float32 state and sum in float32 (the
    torch path rounds the state to bf16 for reduced weights, so its logits differ slightly).
    The table, the biases and the head stay float32.

    Args:
        library: :func:`load`'s library.
        model: an LSTM language model for which
            :func:`rnnkit.tasks.lm_step.fast_step_fits`, float32 on the CPU.
        table: the token table (V, 4H) described above.
        head_bias: (V,) the head's bias with −inf at banned tokens.
        weights: ``"fp32"``, ``"bf16"`` or ``"int8"``.
    """

    def __init__(
        self,
        library: ctypes.CDLL,
        model: LanguageModel,
        table: Tensor,
        head_bias: Tensor,
        weights: Weights = "fp32",
    ) -> None:
        rnn = model.rnn
        layers, hidden = rnn.num_layers, rnn.hidden_size
        self._library = library
        self.weights = weights
        with torch.no_grad():
            full = [rnn.weight_hh_l0.detach().float()]  # (4H, H)
            biases = [torch.zeros(4 * hidden)]  # layer 0's biases are in the table
            for layer in range(1, layers):
                parts = [getattr(rnn, f"weight_{kind}_l{layer}").detach() for kind in ("ih", "hh")]
                full.append(torch.cat(parts, 1).float())  # (4H, 2H)
                bias = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
                biases.append(bias.detach().float().contiguous())  # (4H,)
        self._scales: list[Tensor] = []
        if weights == "int8":
            quantized = [quantize_int8(weight) for weight in full]  # (4H, K) int8, (4H,) bf16
            self._weights = [q.contiguous() for q, _ in quantized]
            self._scales = [s.float().contiguous() for _, s in quantized]  # L × (4H,)
        elif weights == "bf16":
            self._weights = [weight.bfloat16().contiguous() for weight in full]
        else:
            self._weights = [weight.contiguous() for weight in full]
        self._table = table.float().contiguous()  # (V, 4H)
        self._biases = biases
        self._head_weight = model.head.weight.detach().float().contiguous()  # (V, H)
        self._head_bias = head_bias.float().contiguous()  # (V,)
        self._pointers = _pointers(self._weights)
        self._scale_pointers = _pointers(self._scales) if self._scales else None
        self._bias_pointers = _pointers(biases)
        self.layers, self.hidden, self.vocab = layers, hidden, self._table.shape[0]

    def draw(
        self,
        token: int,
        state: tuple[Tensor, Tensor],
        count: int,
        temperature: float,
        generator: torch.Generator | None,
    ) -> Iterator[Tensor]:
        """Yield ``count`` tokens, (1,) long each, continuing from ``token`` and ``state``.

        ``state`` is the torch-layout ``(h, c)`` ((L, 1, H) each) after the step that gave
        ``token``; it is copied, not changed. ``temperature`` 0 is greedy; otherwise each
        token takes one (1, V) block of Exp(1) draws from ``generator``, in order.
        """
        model, _buffers = self._start(token, state)  # the model points into the buffers
        sample = self._library.rnnkit_lstm_sample
        done = 0
        while done < count:
            rows = min(BLOCK, count - done)
            races = None
            if temperature > 0:
                races = torch.empty(rows, self.vocab).exponential_(generator=generator)  # (R, V)
            out = torch.empty(rows, dtype=torch.long)  # (R,)
            race_pointer = None if races is None else races.data_ptr()
            sample(ctypes.byref(model), rows, race_pointer, temperature, out.data_ptr())
            done += rows
            yield from out.split(1)

    def step(
        self, token: int, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step from ``token`` and the torch-layout ``state`` ((L, 1, H) each): the
        logits (1, V) and the new state, as the model's own ``step`` (for tests)."""
        model, (h, cells, logits) = self._start(token, state)
        out = torch.empty(1, dtype=torch.long)  # (1,)
        self._library.rnnkit_lstm_sample(ctypes.byref(model), 1, None, 0.0, out.data_ptr())
        shape = (self.layers, 1, self.hidden)
        return logits[None].clone(), (h[1].reshape(shape).clone(), cells.reshape(shape).clone())

    def _start(
        self, token: int, state: tuple[Tensor, Tensor]
    ) -> tuple[_Model, tuple[Tensor, Tensor, Tensor]]:
        """The C model at ``token`` and a copy of ``state``, and its buffers: h (2, L, H)
        whose half 0 holds the state, cells (L, H), logits (V,). The model points into the
        buffers: keep them while it is used."""
        h_0, c_0 = state
        h = torch.zeros(2, self.layers, self.hidden)  # (2, L, H): the halves alternate
        h[0].copy_(h_0.reshape(self.layers, self.hidden))
        cells = c_0.reshape(self.layers, self.hidden).float().clone()  # (L, H)
        logits = torch.empty(self.vocab)  # (V,)
        model = _Model(
            layers=self.layers,
            hidden=self.hidden,
            vocab=self.vocab,
            threads=torch.get_num_threads(),
            kind=KINDS[self.weights],
            table=self._table.data_ptr(),
            weights=self._pointers,
            scales=self._scale_pointers,
            biases=self._bias_pointers,
            head_weight=self._head_weight.data_ptr(),
            head_bias=self._head_bias.data_ptr(),
            h=h.data_ptr(),
            cells=cells.data_ptr(),
            logits=logits.data_ptr(),
            parity=0,
            token=token,
        )
        return model, (h, cells, logits)

    def products(self, state: Tensor, repeats: int) -> None:
        """The step's matrix products alone, ``repeats`` times, on the fixed h ``state``
        (L, H): the limit of any step that computes them (bench/sampling.py)."""
        cells = torch.zeros_like(state)  # (L, H): the products do not read it
        model, _buffers = self._start(0, (state, cells))  # the model points into the buffers
        scratch = torch.empty(self.hidden + self.vocab)
        self._library.rnnkit_lstm_products(ctypes.byref(model), repeats, scratch.data_ptr())
