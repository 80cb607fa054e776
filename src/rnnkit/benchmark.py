"""The speed table of this machine, as ``rnnkit bench`` prints it; measured, never asserted.

Three measurements, each beside a reference timed in the same run (fp32 on the CPU, with
``torch.set_num_threads(threads)`` where ``threads`` is given):

- **matmul**: the peak of a square matrix product ``(n, n) @ (n, n)`` in fp32 and bf16, in
  GFLOP/s (2·n³ FLOPs per product).
- **training**: tokens/s of whole training steps of ``rnnkit.layers.RNN / GRU / LSTM`` with
  ``impl="auto"`` beside ``torch.nn``'s module of the same size starting from the same weights,
  the ratio of the two, and each one's model-FLOP utilisation against the measured fp32 peak
  (see :func:`training_flops_per_token`). One timed step is, for both modules alike:
  ``zero_grad(set_to_none=True)``, forward, ``backward()`` of the outputs' sum, and
  ``AdamW.step()`` over the module's parameters (see :func:`training_step`).
- **sampling**: characters/s at batch 1 of an LSTM stepped with ``LSTM.step`` inside
  ``LSTM.packed_step(weights)`` (its output is the next step's input; as ``generate`` samples),
  with fp32, bf16 and int8 weights, beside ``torch.nn.LSTM`` called on one-step sequences and
  beside the fp32 bare limit: per layer one ``addmm`` on the concatenated ``[W_ih | W_hh]`` and
  the gate arithmetic.

Every figure is a median over ``repeats`` rounds after a warm-up; the rows of one table are timed
in interleaved rounds, so that a burst of load from elsewhere touches all of them alike.
:meth:`BenchResult.to_dict` gives the JSON of ``rnnkit bench --json``, with the keys ``torch``,
``machine``, ``threads``, ``config``, ``matmul`` (``n``, ``fp32_gflops``, ``bf16_gflops``),
``training`` (a list of ``cell``, ``impl``, ``tokens_per_s``, ``torch_nn_tokens_per_s``,
``ratio_to_torch_nn``, ``flops_per_token``, ``mfu``, ``torch_nn_mfu``) and ``sampling``
(``chars_per_s``, ``torch_nn_chars_per_s``, ``limit_chars_per_s``, ``ratio_to_limit``,
``bf16_chars_per_s``, ``int8_chars_per_s``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit import layers
from rnnkit.config import BenchConfig
from rnnkit.layers.packed import WEIGHTS

log = logging.getLogger(__name__)

CELLS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "rnn": (layers.RNN, nn.RNN),
    "gru": (layers.GRU, nn.GRU),
    "lstm": (layers.LSTM, nn.LSTM),
}


@dataclass(frozen=True)
class MatmulPeak:
    """Square matrix-product throughput; GFLOP/s counts 2·n³ FLOPs per product."""

    n: int
    fp32_gflops: float
    bf16_gflops: float


@dataclass(frozen=True)
class TrainingRow:
    """Training steps (forward + backward + AdamW step) of one cell type: ours (``impl="auto"``,
    which ran ``impl``) and ``torch.nn``'s; ``mfu`` = flops_per_token · tokens/s ÷ the fp32
    matmul peak."""

    cell: str
    impl: str
    tokens_per_s: float
    torch_nn_tokens_per_s: float
    ratio_to_torch_nn: float
    flops_per_token: int
    mfu: float
    torch_nn_mfu: float


@dataclass(frozen=True)
class SamplingSpeed:
    """Characters (steps) per second at batch 1 of an L × H LSTM: ours with fp32 weights
    (``chars_per_s``, ``ratio_to_limit``), bf16 and int8 weights, torch.nn's, the fp32 limit."""

    chars_per_s: float
    torch_nn_chars_per_s: float
    limit_chars_per_s: float
    ratio_to_limit: float
    bf16_chars_per_s: float
    int8_chars_per_s: float


@dataclass(frozen=True)
class BenchResult:
    """Everything ``rnnkit bench`` reports; ``to_dict()`` is its JSON."""

    torch: str
    machine: str
    threads: int
    config: BenchConfig
    matmul: MatmulPeak
    training: list[TrainingRow]
    sampling: SamplingSpeed

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, strings and numbers, ready for ``json.dumps``."""
        return dataclasses.asdict(self)


# --- timing ------------------------------------------------------------------------------------


def _calls_per_round(run: Callable[[], object], seconds: float) -> int:
    """How many calls of ``run`` last at least ``seconds``, probing with doubling counts."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4 or calls >= 1 << 16:
            return max(1, math.ceil(calls * seconds / max(elapsed, 1e-9)))
        calls *= 2


def _calls_per_second(
    runs: dict[str, Callable[[], object]], config: BenchConfig
) -> dict[str, float]:
    """Median calls/s of each run over ``config.repeats`` interleaved rounds.

    Each run is warmed up once (first-call allocations, oneDNN primitives, caches) and given
    its own number of calls per round, so that a round lasts about ``seconds_per_round``.
    """
    counts = {}
    for name, run in runs.items():
        run()
        counts[name] = _calls_per_round(run, config.seconds_per_round)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(config.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                run()
            times[name].append(time.perf_counter() - start)
    return {name: counts[name] / statistics.median(times[name]) for name in runs}


# --- matrix multiply ---------------------------------------------------------------------------


def matmul_peak(config: BenchConfig) -> MatmulPeak:
    """GFLOP/s of ``torch.mm`` on (n, n) @ (n, n) in fp32 and bf16, n = ``config.matmul_size``."""
    n = config.matmul_size
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)  # (n, n) each
        out = torch.empty(n, n, dtype=dtype)  # (n, n)
        runs[str(dtype)] = lambda a=a, b=b, out=out: torch.mm(a, b, out=out)
    rates = _calls_per_second(runs, config)
    flops = 2 * n**3
    return MatmulPeak(
        n=n,
        fp32_gflops=flops * rates[str(torch.float32)] / 1e9,
        bf16_gflops=flops * rates[str(torch.bfloat16)] / 1e9,
    )


# --- training ----------------------------------------------------------------------------------


def training_flops_per_token(module: nn.Module) -> int:
    """FLOPs of one token's forward + backward through the recurrent weight matrices.

    With N = Σ_l G·H·(D_l + H) the weights of every ``weight_ih_l{l}`` (G·H, D_l) and
    ``weight_hh_l{l}`` (G·H, H) (G = 1, 3, 4 gates for RNN, GRU, LSTM), a token costs N
    multiply-adds forward and 2N backward (the gradients of the inputs and of the weights),
    each multiply-add counted as 2 FLOPs: ``flops_per_token = 2·N + 4·N = 6·N``. Biases, gate
    nonlinearities, the elementwise state updates and the optimizer step are not counted.
    """
    weights = sum(
        p.numel()
        for name, p in module.named_parameters()
        if name.startswith(("weight_ih_l", "weight_hh_l"))
    )
    return 6 * weights


# AdamW's cost does not depend on its learning rate; one this small keeps the weights, and so the
# work of every timed step, nearly the same over thousands of steps on the outputs' sum.
OPTIMIZER_LR = 1e-6


def training_step(module: nn.Module, x: Tensor) -> Callable[[], None]:
    """A closure running one training step of ``module`` on x (T, B, D): forward + backward +
    optimizer step.

    The optimizer is ``torch.optim.AdamW`` (``rnnkit train``'s default) over
    ``module.parameters()`` with lr :data:`OPTIMIZER_LR` and torch's other defaults, built here
    so that each module has its own; gradients are set to None before each step.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=OPTIMIZER_LR)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)[0]  # (T, B, H)
        out.sum().backward()
        optimizer.step()

    return run


def training_rows(config: BenchConfig, peak_gflops: float) -> list[TrainingRow]:
    """Training tokens/s (forward + backward + AdamW step) of each cell type beside torch.nn's.

    In fp32, both modules are (H, H, L) and start from the same weights; they are fed x (T, B, H)
    that requires its gradient (as an embedding's output does), so that backward does the full
    4·N FLOPs.
    """
    hidden, num_layers = config.hidden_size, config.num_layers
    x = torch.randn(config.seq_len, config.batch_size, hidden, requires_grad=True)  # (T, B, H)
    tokens = config.seq_len * config.batch_size
    rows = []
    for cell, (ours_cls, torch_cls) in CELLS.items():
        log.info("bench: training %s, %d x H=%d", cell, num_layers, hidden)
        reference = torch_cls(hidden, hidden, num_layers)
        ours = ours_cls(hidden, hidden, num_layers, impl="auto")
        ours.load_state_dict(reference.state_dict())
        rates = _calls_per_second(
            {"ours": training_step(ours, x), "torch.nn": training_step(reference, x)},
            config,
        )
        flops = training_flops_per_token(ours)
        speed, torch_speed = tokens * rates["ours"], tokens * rates["torch.nn"]
        rows.append(
            TrainingRow(
                cell=cell,
                impl=ours.resolved_impl,
                tokens_per_s=speed,
                torch_nn_tokens_per_s=torch_speed,
                ratio_to_torch_nn=speed / torch_speed,
                flops_per_token=flops,
                mfu=flops * speed / (peak_gflops * 1e9),
                torch_nn_mfu=flops * torch_speed / (peak_gflops * 1e9),
            )
        )
    return rows


# --- sampling ----------------------------------------------------------------------------------


def _lstm_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Gate arithmetic in few ops: gates (1, 4H) packed (i, f, g, o), c (1, H) -> h', c'."""
    hidden = c.shape[1]
    i, f, _, o = gates.sigmoid().chunk(4, 1)  # 4 × (1, H); g's sigmoid goes unused
    g = gates[:, 2 * hidden : 3 * hidden].tanh()  # (1, H)
    c = torch.addcmul(f * c, i, g)  # (1, H)
    return o * c.tanh(), c  # (1, H), (1, H)


def _bare_lstm(reference: nn.LSTM) -> Callable[[Tensor, list[Tensor], list[Tensor]], Tensor]:
    """The limit: x (1, H), per-layer h and c lists of (1, H), updated in place -> y (1, H)."""
    weights_t, biases = [], []
    for layer in range(reference.num_layers):
        w_ih, w_hh, b_ih, b_hh = (
            getattr(reference, f"{name}_l{layer}").detach()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        weights_t.append(torch.cat([w_ih, w_hh], dim=1).t())  # (D + H, 4H)
        biases.append(b_ih + b_hh)  # (4H,)

    def step(x: Tensor, hs: list[Tensor], cs: list[Tensor]) -> Tensor:
        for layer, (weight_t, bias) in enumerate(zip(weights_t, biases, strict=True)):
            gates = torch.addmm(bias, torch.cat([x, hs[layer]], 1), weight_t)  # (1, 4H)
            x, cs[layer] = _lstm_update(gates, cs[layer])  # (1, H), (1, H)
            hs[layer] = x
        return x  # (1, H)

    return step


@torch.no_grad()
def sampling_speed(config: BenchConfig) -> SamplingSpeed:
    """Steps/s at batch 1 of an L × H LSTM, each step's output the next step's input.

    Five loops with the same weights: ``rnnkit.layers.LSTM.step`` inside ``packed_step`` with
    fp32, bf16 and int8 weights, ``torch.nn.LSTM`` on one-step sequences (1, 1, H), and the bare
    limit of :func:`_bare_lstm`. The fp32 loops are first checked to compute the same numbers
    over a few steps.
    """
    hidden, num_layers = config.hidden_size, config.num_layers
    log.info("bench: sampling, LSTM %d x H=%d at batch 1", num_layers, hidden)
    reference = nn.LSTM(hidden, hidden, num_layers).eval()
    bare = _bare_lstm(reference)
    x0 = torch.randn(1, hidden)  # (1, H)
    zeros = torch.zeros(num_layers, 1, hidden)  # (L, 1, H)

    def torch_step(carry: list[Any]) -> None:
        out, carry[1] = reference(carry[0][None], carry[1])  # (1, 1, H)
        carry[0] = out[0]  # (1, H)

    def bare_step(carry: list[Any]) -> None:
        carry[0] = bare(carry[0], carry[1], carry[2])  # (1, H)

    steps: dict[str, Callable[[list[Any]], None]] = {"torch.nn": torch_step, "bare": bare_step}
    with contextlib.ExitStack() as packed:
        for weights in WEIGHTS:  # one module each: a module holds one packed copy at a time
            ours = layers.LSTM(hidden, hidden, num_layers).eval()
            ours.load_state_dict(reference.state_dict())
            packed.enter_context(ours.packed_step(weights))

            def ours_step(carry: list[Any], ours: layers.LSTM = ours) -> None:
                carry[0], carry[1] = ours.step(*carry)  # (1, H), ((L, 1, H), (L, 1, H))

            steps[weights] = ours_step

        def start(kind: str) -> list[Any]:
            if kind == "bare":
                return [x0, list(zeros), list(zeros)]  # x, L × (1, H), L × (1, H)
            return [x0, (zeros, zeros)]

        outputs = {}
        for kind in ("fp32", "torch.nn", "bare"):
            carry = start(kind)
            for _ in range(3):
                steps[kind](carry)
            outputs[kind] = carry[0]  # (1, H)
        torch.testing.assert_close(outputs["fp32"], outputs["torch.nn"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["bare"], outputs["torch.nn"], atol=1e-5, rtol=1e-4)

        carries = {kind: start(kind) for kind in steps}
        rates = _calls_per_second(
            {kind: lambda s=step, c=carries[kind]: s(c) for kind, step in steps.items()}, config
        )
    return SamplingSpeed(
        chars_per_s=rates["fp32"],
        torch_nn_chars_per_s=rates["torch.nn"],
        limit_chars_per_s=rates["bare"],
        ratio_to_limit=rates["fp32"] / rates["bare"],
        bf16_chars_per_s=rates["bf16"],
        int8_chars_per_s=rates["int8"],
    )


# --- the whole table ---------------------------------------------------------------------------


def _machine() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one, else what platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Measure the matmul peak, training and sampling on the CPU; returns every figure.

    The global RNG and torch's thread count are restored afterwards.
    """
    threads_before = torch.get_num_threads()
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            log.info("bench: matrix multiply, n=%d", config.matmul_size)
            peak = matmul_peak(config)
            training = training_rows(config, peak.fp32_gflops)
            sampling = sampling_speed(config)
        return BenchResult(
            torch=torch.__version__,
            machine=_machine(),
            threads=torch.get_num_threads(),
            config=config,
            matmul=peak,
            training=training,
            sampling=sampling,
        )
    finally:
        torch.set_num_threads(threads_before)
