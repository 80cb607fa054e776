"""Sampling speed of a character LM at batch 1: `python bench/sampling.py [--quick]`.

The model is embedding (65 -> 64) -> 2-layer LSTM (hidden 512) -> linear head (512 -> 65), fp32,
random weights; every row uses the same weights and the same sampling step (softmax, then the
exponential race that ``torch.multinomial`` runs for one draw, as ``generate_tokens`` does).
Rows, in characters (steps) per second, each with the dtype of its gate weights:

  nn.LSTM per step    ``torch.nn.LSTM`` called on one-step sequences (its default path)
  cell loop           one ``torch.nn.LSTMCell`` per layer
  reference loop (addmm)
                      per layer one ``addmm`` on a pre-concatenated [W_ih | W_hh] and the gate
                      arithmetic, inlined in one loop with minimal Python. Earlier versions
                      called it the bare-matmul limit; it is not one (it holds Python and the
                      gate arithmetic, and the reduced-weight rows exceed it)
  reference loop + generate_tokens
                      the same arithmetic as a model's ``step()``, driven by
                      ``rnnkit.sampling.generate_tokens``: the cost of the sampler itself
  rnnkit LSTM.step + generate_tokens
                      ``rnnkit.layers.LSTM.step()`` driven by ``generate_tokens``
  rnnkit.tasks.lm model + generate_tokens
                      ``rnnkit.tasks.lm.LanguageModel``, its layers' plain ``step()``
  rnnkit LM packed fp32 / bf16 / int8
                      how ``LanguageModel.generate`` samples (``model.sampling_step(weights)``:
                      ``rnnkit.tasks.lm_step``; the first layer's input product is a row of a
                      per-token table, so this row skips a product, 64 of the 576 columns of
                      that layer, that the limits count). At batch 1 it runs the native
                      sampler where a C compiler is found (``rnnkit.tasks.lm_native``: the
                      whole step and the draw in C, a block of tokens per call; int8
                      weight-only with one scale per output row)
  rnnkit LM packed fp32 (torch ops)
                      the same step through torch's operations: one packed product per layer
                      (what runs without a compiler, and for several samples at once)
  reference loop fp32 / bf16 / int8 (PackedLinear)
                      the reference loop with the gate product of ``PackedLinear``
  products alone fp32 (addmm) / fp32 (oneDNN) / bf16 / int8
                      the step's matrix products and nothing else, back to back on fixed
                      inputs already in the kernel's dtype: per layer the gate product in that
                      kernel and the head's fp32 product (``rnnkit.benchmark.step_products``)
  products alone fp32 / bf16 / int8 (native)
                      the native sampler's products alone (its matrix-vector kernel on fixed
                      inputs, every step in one C call, no Python between them), where it is
                      built

The limit of each dtype is its fastest "products alone" row: no loop that computes those
products can be faster. Beside it, the weight bytes each step reads and the steps/s they allow
at the read bandwidth measured on a buffer of the same size (and main memory's, on 256 MiB).
Each row's ratio is to its own dtype's limit; the goal is ``rnnkit LM packed`` at 0.75 of it.

Then batched sampling (``num_samples`` = 1, 8, 32) through ``generate_tokens`` with the
layer's packed fp32 step (one batched step per token for all samples), and, unless
``--loss-steps 0``, the validation loss of a char LM of the same shape trained for a few hundred
steps on Tiny Shakespeare (../shared/data; skipped with a message when absent), stepped token by
token with fp32, bf16 and int8 weights (the goal: reduced within 1% of fp32). Each figure is
the median of several timed runs after a warm-up, the rows timed in interleaved rounds.
``torch.set_num_threads`` is every core unless ``--threads`` says otherwise; on a machine that
other processes keep busy, several threads spend most of each step waiting for each other at
OpenMP barriers, so compare ``--threads 1`` there (the load average is recorded with the
results). ``run(quick)`` returns the results as a dict (``bench/lm.py`` calls it),
``weights_loss(steps, quick)`` the loss check; the script prints a table and writes
bench/results/sampling.json (sampling.quick.json with ``--quick``), with the machine, the git
commit and the date (``rnnkit.benchmark.provenance``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.benchmark import (
    MEMORY_PROBE_BYTES,
    PRODUCT_KERNELS,
    provenance,
    read_buffer,
    step_products,
    weight_bytes_per_step,
)
from rnnkit.config import ModelConfig
from rnnkit.layers import LSTM
from rnnkit.layers.packed import PackedLinear
from rnnkit.native import unavailable_reason as native_unavailable_reason
from rnnkit.sampling import generate_tokens
from rnnkit.tasks import lm_native
from rnnkit.tasks.lm import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHAKESPEARE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
)
REDUCED = ("bf16", "int8")
LOSS_GOAL = 0.01  # reduced-precision validation loss within 1% of fp32
VOCAB, EMBEDDING = 65, 64
GOAL = 0.75  # the project's goal for rnnkit LM packed, as a fraction of its dtype's limit

LSTMState = tuple[list[Tensor], list[Tensor]]


class TorchLM(nn.Module):
    """Embedding -> ``torch.nn.LSTM`` -> head; ``step`` runs the LSTM on a one-step sequence."""

    def __init__(self, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBEDDING)
        self.rnn = nn.LSTM(EMBEDDING, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, VOCAB)

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        out, state = self.rnn(self.embedding(tokens), state)  # (N, T, H)
        return self.head(out), state  # (N, T, V)

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        out, state = self.rnn(self.embedding(tokens)[:, None], state)  # (N, 1, H)
        return self.head(out[:, 0]), state  # (N, V)


class CellLM(nn.Module):
    """The same weights as one ``torch.nn.LSTMCell`` per layer; state is per-layer lists."""

    def __init__(self, reference: TorchLM) -> None:
        super().__init__()
        self.embedding, self.head = reference.embedding, reference.head
        lstm = reference.rnn
        self.cells = nn.ModuleList()
        for layer in range(lstm.num_layers):
            in_size = lstm.input_size if layer == 0 else lstm.hidden_size
            cell = nn.LSTMCell(in_size, lstm.hidden_size)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).data = getattr(lstm, f"{name}_l{layer}").data
            self.cells.append(cell)

    def step(self, tokens: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        x = self.embedding(tokens)  # (N, E)
        hs, cs = [], []
        for cell, h, c in zip(self.cells, *state, strict=True):
            x, c = cell(x, (h, c))  # (N, H), (N, H)
            hs.append(x)
            cs.append(c)
        return self.head(x), (hs, cs)  # (N, V)


class ReferenceLM(nn.Module):
    """The same weights as plain tensors: per layer ``[W_ih | W_hh]`` (4H, D + H), b (4H,)."""

    def __init__(self, reference: TorchLM) -> None:
        super().__init__()
        lstm = reference.rnn
        self.embedding_weight = reference.embedding.weight.detach()  # (V, E)
        self.head_weight_t = reference.head.weight.detach().t()  # (H, V)
        self.head_bias = reference.head.bias.detach()  # (V,)
        self.weights_t = []  # L × (D + H, 4H), transposed views for addmm
        self.biases = []  # L × (4H,)
        for layer in range(lstm.num_layers):
            w_ih, w_hh = (
                getattr(lstm, f"{n}_l{layer}").detach() for n in ("weight_ih", "weight_hh")
            )
            b_ih, b_hh = (getattr(lstm, f"{n}_l{layer}").detach() for n in ("bias_ih", "bias_hh"))
            self.weights_t.append(torch.cat([w_ih, w_hh], dim=1).t())  # (D + H, 4H)
            self.biases.append(b_ih + b_hh)  # (4H,)

    def forward(self, tokens: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """A prime of T steps, one ``step`` at a time: (N, T) -> (N, T, V)."""
        if state is None:
            zeros = torch.zeros(tokens.shape[0], self.head_weight_t.shape[0])  # (N, H)
            state = ([zeros] * len(self.biases), [zeros] * len(self.biases))  # L × (N, H)
        outputs = []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t], state)  # (N, V)
            outputs.append(logits)
        return torch.stack(outputs, dim=1), state  # (N, T, V)

    def step(self, tokens: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        x = self.embedding_weight[tokens]  # (N, E)
        hs, cs = [], []
        for weight_t, bias, h, c in zip(self.weights_t, self.biases, *state, strict=True):
            x, c = _lstm_update(torch.addmm(bias, torch.cat([x, h], 1), weight_t), c)
            hs.append(x)
            cs.append(c)
        return torch.addmm(self.head_bias, x, self.head_weight_t), (hs, cs)  # (N, V)


def _lstm_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Gate arithmetic in few ops: gates (N, 4H) packed (i, f, g, o), c (N, H) -> h', c'."""
    hidden = c.shape[1]
    i, f, _, o = gates.sigmoid().chunk(4, 1)  # 4 × (N, H); g's sigmoid goes unused
    g = gates[:, 2 * hidden : 3 * hidden].tanh()  # (N, H)
    c = torch.addcmul(f * c, i, g)  # (N, H)
    return o * c.tanh(), c  # (N, H), (N, H)


class RnnkitLM(nn.Module):
    """Embedding -> ``rnnkit.layers.LSTM`` -> head, stepping with the layer's ``step()``.

    The embedding and the head are the same plain tensor ops as ``ReferenceLM``'s, so that this
    row differs from "reference loop + generate_tokens" only in the recurrent layer.
    """

    def __init__(self, reference: TorchLM, lstm_class: type[nn.Module]) -> None:
        super().__init__()
        lstm = reference.rnn
        self.embedding_weight = reference.embedding.weight.detach()  # (V, E)
        self.head_weight_t = reference.head.weight.detach().t()  # (H, V)
        self.head_bias = reference.head.bias.detach()  # (V,)
        self.rnn = lstm_class(lstm.input_size, lstm.hidden_size, lstm.num_layers, batch_first=True)
        self.rnn.load_state_dict(lstm.state_dict())

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        out, state = self.rnn(self.embedding_weight[tokens], state)  # (N, T, H)
        return out @ self.head_weight_t + self.head_bias, state  # (N, T, V)

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, state = self.rnn.step(self.embedding_weight[tokens], state)  # (N, H)
        return torch.addmm(self.head_bias, y, self.head_weight_t), state  # (N, V)


def _zero_lists(model: TorchLM, batch: int) -> LSTMState:
    zeros = torch.zeros(batch, model.rnn.hidden_size)  # (N, H)
    return [zeros] * model.rnn.num_layers, [zeros] * model.rnn.num_layers


def _draw(probs: Tensor, generator: torch.Generator) -> Tensor:
    """probs (N, V) -> (N,): the draw of ``torch.multinomial(probs, 1)`` (its exponential race),
    as ``generate_tokens`` samples, so that every row pays the same for sampling."""
    race = torch.empty_like(probs).exponential_(generator=generator)  # (N, V)
    return torch.div(probs, race, out=race).argmax(dim=-1)  # (N,)


def _sample_with_step(
    step: Callable[[Tensor, Any], tuple[Tensor, Any]], state: Any, length: int
) -> Callable[[], None]:
    """A loop that samples ``length`` tokens by calling ``step`` (rows i and ii)."""

    def sample() -> None:
        generator = torch.Generator().manual_seed(0)
        token, carried = torch.zeros(1, dtype=torch.long), state  # (1,)
        for _ in range(length):
            logits, carried = step(token, carried)  # (1, V)
            token = _draw(logits.softmax(-1), generator)  # (1,)

    return sample


def _sample_reference(reference: ReferenceLM, length: int) -> Callable[[], None]:
    """The reference loop: the whole sampling loop in one function, minimal Python per token."""
    products = [
        partial(torch.addmm, bias, mat2=weight_t)  # (1, D + H) -> (1, 4H)
        for weight_t, bias in zip(reference.weights_t, reference.biases, strict=True)
    ]
    return _reference_loop(reference, products, length)


def _sample_reference_packed(
    reference: ReferenceLM, weights: str, length: int
) -> Callable[[], None]:
    """The reference loop with each layer's gate product by ``PackedLinear`` in ``weights``."""
    products = [
        PackedLinear(weight_t.t(), bias, weights)  # (1, D + H) -> (1, 4H)
        for weight_t, bias in zip(reference.weights_t, reference.biases, strict=True)
    ]
    return _reference_loop(reference, products, length)


def _reference_loop(
    reference: ReferenceLM, products: list[Callable[[Tensor], Tensor]], length: int
) -> Callable[[], None]:
    """The reference sampling loop; ``products[l]`` maps layer l's ``[x | h]`` (1, D + H) to
    its gate pre-activations (1, 4H), bias included."""
    embedding, head_w, head_b = (
        reference.embedding_weight,
        reference.head_weight_t,
        reference.head_bias,
    )

    def sample() -> None:
        generator = torch.Generator().manual_seed(0)
        token = torch.zeros(1, dtype=torch.long)  # (1,)
        hs = [torch.zeros(1, head_w.shape[0])] * len(products)  # L × (1, H)
        cs = list(hs)  # L × (1, H)
        for _ in range(length):
            x = embedding[token]  # (1, E)
            for layer, product in enumerate(products):
                gates = product(torch.cat([x, hs[layer]], 1))  # (1, 4H)
                x, cs[layer] = _lstm_update(gates, cs[layer])  # (1, H), (1, H)
                hs[layer] = x
            token = _draw(torch.addmm(head_b, x, head_w).softmax(-1), generator)  # (1,)

    return sample


def _products_alone(reference: ReferenceLM, kernel: str, length: int) -> Callable[[], None]:
    """``length`` steps of the products alone: per layer the gate product in ``kernel`` and
    the head's in fp32 (:func:`rnnkit.benchmark.step_products`)."""
    gate_weights = [weight_t.t() for weight_t in reference.weights_t]  # L × (4H, D + H)
    step = step_products(gate_weights, kernel, [reference.head_weight_t.t()])
    return _repeated(step, length)


def _native_products(model: LanguageModel, weights: str, length: int) -> Callable[[], None]:
    """``length`` steps of the native sampler's products alone with ``weights``, in one C
    call."""
    stepper, _ = model.sampling_step(weights, [])
    state = torch.randn(model.rnn.num_layers, model.rnn.hidden_size)  # (L, H)
    return partial(stepper._native.products, state, length)


def _repeated(fn: Callable[[], object], length: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(length):
            fn()

    return run


def _packed(layer: nn.Module, weights: str) -> contextlib.AbstractContextManager[None]:
    """``layer.packed_step(weights)``, or nothing where the layer has no packed step."""
    if hasattr(layer, "packed_step"):
        return layer.packed_step(weights)
    return contextlib.nullcontext()


def _sample_packed(
    model: nn.Module, layer: nn.Module, weights: str, num_samples: int, length: int
) -> Callable[[], None]:
    """``_sample_generate`` inside ``layer.packed_step(weights)``, as ``generate`` samples."""
    sample = _sample_generate(model, num_samples, length)

    def packed_sample() -> None:
        with _packed(layer, weights):
            sample()

    return packed_sample


class _StepOnly:
    """A sampling step without its native ``draw``: ``generate_tokens`` steps it through torch."""

    def __init__(self, stepper: Any) -> None:
        self.stepper = stepper

    def __call__(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        return self.stepper(tokens, state)

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.stepper.step(tokens, state)


def _sample_lm(
    model: LanguageModel, weights: str, length: int, native: bool = True
) -> Callable[[], None]:
    """``_sample_generate`` of the step that ``model.generate`` samples with (without its
    native sampler unless ``native``)."""
    stepper, block = model.sampling_step(weights, [])
    sample = _sample_generate(stepper if native else _StepOnly(stepper), 1, length)

    def lm_sample() -> None:
        with block:
            sample()

    return lm_sample


def _sample_generate(model: nn.Module, num_samples: int, length: int) -> Callable[[], None]:
    """Rows driven by ``generate_tokens``: a one-token prime, then ``length - 1`` steps."""

    def sample() -> None:
        generator = torch.Generator().manual_seed(0)
        for _ in generate_tokens(model, [0], length, num_samples=num_samples, generator=generator):
            pass

    return sample


def _seconds(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _steps_per_second(
    makers: dict[str, Callable[[int], Callable[[], None]]], repeats: int, seconds: float
) -> dict[str, float]:
    """Median sampling steps per second of each ``makers[name](length)``.

    ``length`` is chosen per row so that one timed run lasts about ``seconds`` (the rows differ
    in speed by 10x and more). Each run is warmed up once, then the rows are timed in
    interleaved rounds, so that a change in the machine's load hits every row alike.
    """
    probe = 20
    loops, lengths = {}, {}
    for name, make in makers.items():
        _seconds(make(probe))  # warm-up: first-call allocations, oneDNN primitives, caches
        rate = probe / _seconds(make(probe))
        lengths[name] = max(probe, min(5000, round(rate * seconds)))
        loops[name] = make(lengths[name])
    times: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, loop in loops.items():
            times[name].append(_seconds(loop))
    return {name: lengths[name] / statistics.median(times[name]) for name in makers}


def _check_same_numbers(torch_lm: TorchLM, others: dict[str, nn.Module]) -> None:
    """Every model's ``step`` gives nn.LSTM's logits over a few steps (guards the bench)."""
    tokens = torch.randint(VOCAB, (3, 6))  # (N, T)
    expected, _ = torch_lm(tokens)  # (N, T, V)
    for name, model in others.items():
        state = _zero_lists(torch_lm, 3) if isinstance(model, (CellLM, ReferenceLM)) else None
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)  # (N, V)
            torch.testing.assert_close(logits, expected[:, t], atol=1e-4, rtol=1e-4, msg=name)


def _language_model(reference: TorchLM) -> LanguageModel:
    """``rnnkit.tasks.lm.LanguageModel`` holding the reference's weights."""
    lstm = reference.rnn
    config = ModelConfig(
        cell="lstm",
        num_layers=lstm.num_layers,
        hidden_size=lstm.hidden_size,
        embedding_size=EMBEDDING,
    )
    model = LanguageModel(config, VOCAB)
    weights = {"embedding.weight": reference.embedding.weight}
    weights.update({f"head.{name}": value for name, value in reference.head.state_dict().items()})
    weights.update({f"rnn.{name}": value for name, value in lstm.state_dict().items()})
    model.load_state_dict(weights)
    return model.eval()


# Row name -> dtype of its gate weights, where not fp32.
ROW_DTYPES = {
    **{f"rnnkit LM packed {w}": w for w in REDUCED},
    **{f"reference loop {w} (PackedLinear)": w for w in REDUCED},
    **{f"products alone {w}": w for w in REDUCED},
    **{f"products alone {w} (native)": w for w in REDUCED},
}


@torch.no_grad()
def run(quick: bool, threads: int | None = None) -> dict[str, Any]:
    """Measure every row and the limits; returns the settings, the rows, the limits, the
    batched figures and the provenance.

    ``threads`` (default: every core of the machine) is passed to ``torch.set_num_threads``.
    """
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    hidden, layers = (64, 2) if quick else (512, 2)
    seconds, repeats = (0.2, 1) if quick else (0.5, 7)  # per timed run; timed runs per row
    torch.manual_seed(0)
    torch_lm = TorchLM(hidden, layers).eval()
    reference = ReferenceLM(torch_lm)
    cells = CellLM(torch_lm)
    rnnkit_lm = RnnkitLM(torch_lm, LSTM).eval()
    language_model = _language_model(torch_lm)
    models = {"cell loop": cells, "reference": reference, "rnnkit": rnnkit_lm}
    _check_same_numbers(torch_lm, models | {"rnnkit LM": language_model})

    loops: dict[str, Callable[[int], Callable[[], None]]] = {
        "nn.LSTM per step": partial(_sample_with_step, torch_lm.step, None),
        "cell loop (nn.LSTMCell)": partial(_sample_with_step, cells.step, _zero_lists(torch_lm, 1)),
        "reference loop (addmm)": partial(_sample_reference, reference),
        "reference loop + generate_tokens": partial(_sample_generate, reference, 1),
        "rnnkit LSTM.step + generate_tokens": partial(_sample_generate, rnnkit_lm, 1),
        "rnnkit.tasks.lm model + generate_tokens": partial(_sample_generate, language_model, 1),
    }
    for weights in ("fp32", *REDUCED):
        loops[f"rnnkit LM packed {weights}"] = partial(_sample_lm, language_model, weights)
    loops["rnnkit LM packed fp32 (torch ops)"] = partial(
        _sample_lm, language_model, "fp32", native=False
    )
    for weights in ("fp32", *REDUCED):
        loops[f"reference loop {weights} (PackedLinear)"] = partial(
            _sample_reference_packed, reference, weights
        )
    kernels = [kernel for names in PRODUCT_KERNELS.values() for kernel in names]
    if not torch.backends.mkldnn.is_available():
        kernels.remove("fp32 oneDNN")
    products_rows = {}
    for kernel in kernels:
        name = f"products alone {kernel}".replace("fp32 addmm", "fp32 (addmm)")
        name = name.replace("fp32 oneDNN", "fp32 (oneDNN)")
        products_rows[name] = kernel
        loops[name] = partial(_products_alone, reference, kernel)
    native = lm_native.load() is not None
    for weights in ("fp32", *REDUCED) if native else ():
        products_rows[f"products alone {weights} (native)"] = f"{weights} native"
        loops[f"products alone {weights} (native)"] = partial(
            _native_products, language_model, weights
        )
    # The bytes of weights one step reads, per dtype: the gate weights and the fp32 head.
    gate_weights = [weight_t.t() for weight_t in reference.weights_t]  # L × (4H, D + H)
    head = [reference.head_weight_t.t()]  # (V, H)
    step_bytes = {w: weight_bytes_per_step(gate_weights, w, head) for w in ("fp32", *REDUCED)}
    memory_bytes = MEMORY_PROBE_BYTES >> 3 if quick else MEMORY_PROBE_BYTES
    reads = {f"read {w}": partial(_repeated, read_buffer(n)) for w, n in step_bytes.items()}
    reads["read memory"] = partial(_repeated, read_buffer(memory_bytes))
    load_before = os.getloadavg()[0]
    rates = _steps_per_second(loops | reads, repeats, seconds)
    rows = {name: rates[name] for name in loops}

    limits = {}
    for dtype in ("fp32", *REDUCED):
        kernels = [*PRODUCT_KERNELS[dtype], f"{dtype} native"]
        names = [n for n, k in products_rows.items() if k in kernels]
        fastest = max(names, key=lambda n: rows[n])
        read_bytes = max(step_bytes[dtype], 4096) // 4 * 4  # the probe's buffer
        gb_s = rates[f"read {dtype}"] * read_bytes / 1e9
        limits[dtype] = {
            "row": fastest,
            "products_chars_per_s": rows[fastest],
            "weight_bytes_per_step": step_bytes[dtype],
            "bandwidth_gb_s": gb_s,
            "bandwidth_chars_per_s": gb_s * 1e9 / step_bytes[dtype],
        }
    reference_rate = rows["reference loop (addmm)"]

    sizes = (1, 8, 32)
    steps = _steps_per_second(
        {str(n): partial(_sample_packed, rnnkit_lm, rnnkit_lm.rnn, "fp32", n) for n in sizes},
        repeats,
        seconds,
    )
    batched = {
        n: {"chars_per_s": n * steps[str(n)], "chars_per_s_per_sample": steps[str(n)]}
        for n in sizes
    }
    return {
        "model": {"vocab": VOCAB, "embedding": EMBEDDING, "hidden": hidden, "layers": layers},
        "quick": quick,
        "threads": threads,
        "native": native or native_unavailable_reason("lstm_sample"),
        "provenance": provenance(ROOT),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "seconds_per_timed_run": seconds,
        "repeats": repeats,
        "rows": {
            name: {
                "chars_per_s": value,
                "dtype": ROW_DTYPES.get(name, "fp32"),
                "ratio_to_limit": value
                / limits[ROW_DTYPES.get(name, "fp32")]["products_chars_per_s"],
                "ratio_to_reference_loop": value / reference_rate,
            }
            for name, value in rows.items()
        },
        "limits": limits,
        "memory": {"bytes": memory_bytes, "gb_s": rates["read memory"] * memory_bytes / 1e9},
        "goal": {
            "ratio": GOAL,
            "rnnkit_lm_packed_ratio_to_limit": {
                w: rows[f"rnnkit LM packed {w}"] / limits[w]["products_chars_per_s"]
                for w in ("fp32", *REDUCED)
            },
        },
        "batched_model": "rnnkit",
        "batched": batched,
    }


@torch.no_grad()
def _stepped_loss(model: nn.Module, ids: Tensor, streams: int, weights: str) -> float:
    """Mean next-token loss (nats) of ``ids`` (M,) cut into ``streams`` rows, read one token at
    a time through ``model.step`` inside ``model.rnn.packed_step(weights)``."""
    length = (ids.numel() - 1) // streams
    inputs = ids[: streams * length].view(streams, length)  # (S, T)
    targets = ids[1 : streams * length + 1].view(streams, length)  # (S, T)
    total, state = 0.0, None
    with _packed(model.rnn, weights):
        for t in range(length):
            logits, state = model.step(inputs[:, t], state)  # (S, V)
            total += torch.nn.functional.cross_entropy(
                logits, targets[:, t], reduction="sum"
            ).item()
    return total / inputs.numel()


def weights_loss(steps: int, quick: bool) -> dict[str, Any] | None:
    """Validation loss with fp32, bf16 and int8 sampling weights of a freshly trained char LM.

    ``rnnkit.training.train`` trains a 2-layer LSTM (H=512 as the speed rows; H=64 with
    ``quick``) on Tiny Shakespeare for ``steps`` steps (first 90% train); the loss is then
    measured on the last 10% (its first 16 000 tokens; 2 000 with ``quick``) by stepping the
    model token by token with each kind of weights. None, with a message, when the corpus is
    absent.
    """
    if not SHAKESPEARE.exists():
        print(f"weights loss check: skipped, {SHAKESPEARE} is absent")
        return None
    from rnnkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from rnnkit.data.text import load_lm_data
    from rnnkit.training import train
    from rnnkit.training.checkpoint import load

    model_cfg = ModelConfig(cell="lstm", num_layers=2, hidden_size=64 if quick else 512)
    train_cfg = TrainConfig(
        batch_size=16 if quick else 32,
        seq_len=32 if quick else 100,
        max_steps=steps,
        eval_every=steps,
        log_every=max(1, steps // 5),
        device="cpu",
    )
    data = DataConfig(path=str(SHAKESPEARE), val_frac=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunConfig(out=str(Path(tmp) / "lm"), model=model_cfg, data=data, train=train_cfg)
        start = time.perf_counter()
        train(run, force=True)
        train_seconds = time.perf_counter() - start
        model = load(run.out).eval()
    ids = load_lm_data(data, model.vocab).val[: 2000 if quick else 16000]  # (M,)
    losses = {weights: _stepped_loss(model, ids, 16, weights) for weights in ("fp32", *REDUCED)}
    return {
        "model": dataclasses.asdict(model_cfg),
        "train_steps": steps,
        "train_seconds": train_seconds,
        "val_tokens": ids.numel() - 1,
        "loss": losses,
        "relative_to_fp32": {w: losses[w] / losses["fp32"] - 1 for w in REDUCED},
        "goal": LOSS_GOAL,
    }


def _print_table(results: dict[str, Any]) -> None:
    model, where = results["model"], results["provenance"]
    print(
        f"sampling, batch 1: char LM V={model['vocab']} E={model['embedding']} "
        f"{model['layers']}-layer LSTM H={model['hidden']}, {results['threads']} threads "
        f"(torch.set_num_threads), torch {where['torch']}, {where['machine']}, commit "
        f"{(where['git_commit'] or 'unknown')[:12]}{' (modified)' if where['git_dirty'] else ''}, "
        f"{where['date']}, load average {results['load_average_1min']['before']:.1f} -> "
        f"{results['load_average_1min']['after']:.1f}"
    )
    print(f"{'row':40s} {'dtype':>5s} {'chars/s':>10s} {'x limit':>8s} {'x ref loop':>10s}")
    for name, row in results["rows"].items():
        print(
            f"{name:40s} {row['dtype']:>5s} {row['chars_per_s']:10.0f} "
            f"{row['ratio_to_limit']:8.2f} {row['ratio_to_reference_loop']:10.2f}"
        )
    print(
        "\nlimit per dtype: the step's products alone (the fastest kernel), and the weight bytes"
        " per step at the read bandwidth measured on a buffer of that size"
    )
    print(f"{'dtype':5s} {'products/s':>10s} {'KiB/step':>9s} {'GB/s':>6s} {'bandwidth/s':>11s}")
    for dtype, limit in results["limits"].items():
        print(
            f"{dtype:5s} {limit['products_chars_per_s']:10.0f} "
            f"{limit['weight_bytes_per_step'] / 1024:9.0f} {limit['bandwidth_gb_s']:6.1f} "
            f"{limit['bandwidth_chars_per_s']:11.0f}   ({limit['row']})"
        )
    memory = results["memory"]
    print(f"main memory: {memory['gb_s']:.1f} GB/s read ({memory['bytes'] >> 20} MiB buffer)")
    goal = results["goal"]
    judged = ", ".join(f"{w} {r:.2f}" for w, r in goal["rnnkit_lm_packed_ratio_to_limit"].items())
    print(f"goal: rnnkit LM packed >= {goal['ratio']:.2f} x its dtype's limit; now {judged}")
    print(f"\nbatched sampling through generate_tokens ({results['batched_model']} model)")
    print(f"{'num_samples':>12s} {'chars/s total':>14s} {'per sample':>11s}")
    for num_samples, row in results["batched"].items():
        print(f"{num_samples:12d} {row['chars_per_s']:14.0f} {row['chars_per_s_per_sample']:11.0f}")
    check = results.get("weights_loss")
    if check:
        print(
            f"\nvalidation loss by weights while sampling (2-layer LSTM "
            f"H={check['model']['hidden_size']}, {check['train_steps']} training steps, "
            f"{check['val_tokens']} tokens)"
        )
        for weights, loss in check["loss"].items():
            change = check["relative_to_fp32"].get(weights)
            versus = "" if change is None else f" {change:+7.2%} vs fp32"
            print(f"  {weights:5s} {loss:.4f} nats/char{versus}")
        print(f"goal: within {check['goal']:.0%} of fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, one repeat (smoke test)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: all cores)")
    parser.add_argument(
        "--loss-steps",
        type=int,
        default=300,
        help="training steps of the model for the validation-loss check; 0 skips it",
    )
    args = parser.parse_args()
    results = run(args.quick, args.threads)
    if args.loss_steps > 0:
        results["weights_loss"] = weights_loss(args.loss_steps, args.quick)
    _print_table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("sampling.quick.json" if args.quick else "sampling.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
