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
  with fp32, bf16 and int8 weights, beside ``torch.nn.LSTM`` called on one-step sequences, a
  reference loop (per layer one ``addmm`` on the concatenated ``[W_ih | W_hh]`` and the gate
  arithmetic, in fp32) and, per dtype, the true limit: the step's matrix products alone, back
  to back, in the fastest kernel for that dtype, and the steps/s that reading the step's
  weight bytes allows at the read bandwidth measured for a buffer of that size
  (:class:`StepLimit`).

Every figure is a median over ``repeats`` rounds after a warm-up; the rows of one table are timed
in interleaved rounds, so that a burst of load from elsewhere touches all of them alike.
:meth:`BenchResult.to_dict` gives the JSON of ``rnnkit bench --json``, with the keys ``torch``,
``machine``, ``threads``, ``config``, ``matmul`` (``n``, ``fp32_gflops``, ``bf16_gflops``),
``training`` (a list of ``cell``, ``impl``, ``tokens_per_s``, ``torch_nn_tokens_per_s``,
``ratio_to_torch_nn``, ``flops_per_token``, ``mfu``, ``torch_nn_mfu``) and ``sampling`` (the
fields of :class:`SamplingSpeed`; ``limits`` maps ``fp32``, ``bf16``, ``int8`` to the fields of
:class:`StepLimit`). :func:`provenance` gives the machine, the commit and the date that
``bench/`` writes beside its results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit import layers
from rnnkit.config import BenchConfig
from rnnkit.layers.packed import INT8_K_MULTIPLE, WEIGHTS, quantize_int8
from rnnkit.onednn import StepProduct

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
class StepLimit:
    """What bounds a sampling step whose weights are one dtype.

    ``products_chars_per_s``: steps/s of the step's products alone (:func:`step_products`) in
    ``kernel``, the fastest for the dtype. ``weight_bytes_per_step``: the bytes they read
    (:func:`weight_bytes_per_step`). ``bandwidth_gb_s``: the read bandwidth measured on a
    buffer of that size (the cache level the weights live in), and ``bandwidth_chars_per_s``
    the steps/s that reading the weights once per step at it allows. For weights of a few KiB
    (``--quick``) each read's fixed cost dominates and the bandwidth comes out low.
    """

    kernel: str
    products_chars_per_s: float
    weight_bytes_per_step: int
    bandwidth_gb_s: float
    bandwidth_chars_per_s: float


@dataclass(frozen=True)
class SamplingSpeed:
    """Characters (steps) per second at batch 1 of an L × H LSTM and what bounds them.

    ``chars_per_s``, ``bf16_chars_per_s``, ``int8_chars_per_s``: rnnkit's ``LSTM.step`` inside
    ``packed_step`` with those weights. ``torch_nn_chars_per_s``: ``torch.nn.LSTM`` on one-step
    sequences. ``reference_loop_chars_per_s``: a minimal fp32 loop, per layer one ``addmm`` on
    ``[W_ih | W_hh]`` and the gate arithmetic (what earlier versions called the bare-matmul
    limit; rnnkit's reduced weights exceed it). ``limits``: per dtype, the true limit
    (:class:`StepLimit`); ``limit_chars_per_s`` is fp32's products alone, and each
    ``*ratio_to_limit`` rnnkit's speed over its own dtype's. ``memory_gb_s``: the read
    bandwidth on a buffer of :data:`MEMORY_PROBE_BYTES`, main memory's.
    """

    chars_per_s: float
    bf16_chars_per_s: float
    int8_chars_per_s: float
    torch_nn_chars_per_s: float
    reference_loop_chars_per_s: float
    limit_chars_per_s: float
    ratio_to_limit: float
    bf16_ratio_to_limit: float
    int8_ratio_to_limit: float
    limits: dict[str, StepLimit]
    memory_gb_s: float


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


# --- sampling ---------------------------------------------------------------------------------

# The kernel of each product in a step, by the dtype of the weights: fp32 is whichever of the two
# plain and oneDNN kernels is faster here (rnnkit picks one by CPU vendor, see rnnkit.onednn).
PRODUCT_KERNELS: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32 addmm", "fp32 oneDNN"),
    "bf16": ("bf16",),
    "int8": ("int8",),
}
# Bytes read per weight by each dtype's kernel (int8 also reads one bf16 scale per row).
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
# The buffer of the memory-bandwidth probe: far larger than any cache.
MEMORY_PROBE_BYTES = 256 << 20


def product_kernel(weight: Tensor, kernel: str, x: Tensor) -> Callable[[], Tensor]:
    """One product ``x Wᵀ`` by ``weight`` (N, K) in ``kernel`` (a name in
    :data:`PRODUCT_KERNELS`) on the fixed input x (1, K), converted here once to the kernel's
    dtype and layout: no bias, no cast, nothing but the product. () -> (1, N).

    ``"fp32 addmm"`` is ``torch.mm``; ``"fp32 oneDNN"`` multiplies by the weight reordered into
    oneDNN's blocked layout; ``"bf16"`` is :class:`rnnkit.onednn.StepProduct` (oneDNN where
    the CPU has its bf16 path); ``"int8"`` is ``torch._weight_int8pack_mm`` on the per-row
    quantized weight of :func:`rnnkit.layers.packed.quantize_int8`, as ``PackedLinear`` runs
    them.
    """
    weight, x = weight.detach().float(), x.detach().float()  # (N, K), (1, K)
    if kernel == "fp32 addmm":
        weight_t = weight.t()  # (K, N)
        return lambda: torch.mm(x, weight_t)  # (1, N)
    if kernel == "fp32 oneDNN":
        blocked = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 1)
        return lambda: torch.ops.mkldnn._linear_pointwise(x, blocked, None, "none", [], "")
    if kernel == "bf16":
        x_bf16, product = x.bfloat16(), StepProduct(weight.bfloat16(), 1)  # (1, K)
        return lambda: product(x_bf16)  # (1, N) bf16
    if kernel == "int8":
        pad = -weight.shape[1] % INT8_K_MULTIPLE
        quantized, scales = quantize_int8(weight)  # (N, K) int8, (N,) bf16
        quantized = nn.functional.pad(quantized, (0, pad))  # (N, K + pad)
        x_bf16 = nn.functional.pad(x, (0, pad)).bfloat16()  # (1, K + pad)
        return lambda: torch._weight_int8pack_mm(x_bf16, quantized, scales)  # (1, N) bf16
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {_kernel_names()}")


def _kernel_names() -> list[str]:
    return [kernel for kernels in PRODUCT_KERNELS.values() for kernel in kernels]


def step_products(
    weights: Sequence[Tensor], kernel: str, fp32_weights: Sequence[Tensor] = ()
) -> Callable[[], None]:
    """The matrix products of one sampling step alone, back to back: one by each of
    ``weights`` (N, K) in ``kernel`` and one by each of ``fp32_weights`` (a head kept in fp32)
    with ``torch.mm``. Their inputs are fixed, so no product waits for another: the limit of
    a step that computes them."""
    products = [product_kernel(w, kernel, torch.randn(1, w.shape[1])) for w in weights]
    products += [product_kernel(w, "fp32 addmm", torch.randn(1, w.shape[1])) for w in fp32_weights]

    def step() -> None:
        for product in products:
            product()

    return step


def weight_bytes_per_step(
    weights: Sequence[Tensor], dtype: str, fp32_weights: Sequence[Tensor] = ()
) -> int:
    """Bytes of weights one step's products read: each of ``weights`` (N, K) stored as
    ``dtype`` (int8 with its N bf16 scales), each of ``fp32_weights`` as float32."""
    total = sum(w.numel() * WEIGHT_BYTES[dtype] for w in weights)
    if dtype == "int8":
        total += sum(2 * w.shape[0] for w in weights)
    return total + sum(4 * w.numel() for w in fp32_weights)


def read_buffer(nbytes: int) -> Callable[[], Tensor]:
    """A closure reading a float32 buffer of ``nbytes`` (at least 4 KiB) once, by
    ``torch.sum``; bytes read per call: ``max(nbytes, 4096) // 4 * 4``."""
    buffer = torch.rand(max(nbytes, 4096) // 4)  # (nbytes / 4,)
    return lambda: buffer.sum()


def _lstm_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Gate arithmetic in few ops: gates (1, 4H) packed (i, f, g, o), c (1, H) -> h', c'."""
    hidden = c.shape[1]
    i, f, _, o = gates.sigmoid().chunk(4, 1)  # 4 × (1, H); g's sigmoid goes unused
    g = gates[:, 2 * hidden : 3 * hidden].tanh()  # (1, H)
    c = torch.addcmul(f * c, i, g)  # (1, H)
    return o * c.tanh(), c  # (1, H), (1, H)


def _packed_weights(reference: nn.LSTM) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer ``[W_ih | W_hh]`` (4H, D + H) and ``b_ih + b_hh`` (4H,), as ``packed_step``."""
    weights, biases = [], []
    for layer in range(reference.num_layers):
        w_ih, w_hh, b_ih, b_hh = (
            getattr(reference, f"{name}_l{layer}").detach()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        weights.append(torch.cat([w_ih, w_hh], dim=1))  # (4H, D + H)
        biases.append(b_ih + b_hh)  # (4H,)
    return weights, biases


def _reference_loop(reference: nn.LSTM) -> Callable[[Tensor, list[Tensor], list[Tensor]], Tensor]:
    """x (1, H), per-layer h and c lists of (1, H), updated in place -> y (1, H)."""
    weights, biases = _packed_weights(reference)
    weights_t = [w.t() for w in weights]  # L × (D + H, 4H)

    def step(x: Tensor, hs: list[Tensor], cs: list[Tensor]) -> Tensor:
        for layer, (weight_t, bias) in enumerate(zip(weights_t, biases, strict=True)):
            gates = torch.addmm(bias, torch.cat([x, hs[layer]], 1), weight_t)  # (1, 4H)
            x, cs[layer] = _lstm_update(gates, cs[layer])  # (1, H), (1, H)
            hs[layer] = x
        return x  # (1, H)

    return step


def _limit_runs(weights: list[Tensor]) -> dict[str, Callable[[], object]]:
    """The runs timed for :class:`StepLimit`: each kernel's step of products, and a read of
    each dtype's weight bytes and of :data:`MEMORY_PROBE_BYTES`."""
    kernels = _kernel_names()
    if not torch.backends.mkldnn.is_available():
        kernels.remove("fp32 oneDNN")
    runs: dict[str, Callable[[], object]] = {
        f"products {kernel}": step_products(weights, kernel) for kernel in kernels
    }
    for dtype in PRODUCT_KERNELS:
        runs[f"read {dtype}"] = read_buffer(weight_bytes_per_step(weights, dtype))
    runs["read memory"] = read_buffer(MEMORY_PROBE_BYTES)
    return runs


def _step_limits(weights: list[Tensor], rates: dict[str, float]) -> dict[str, StepLimit]:
    """Per dtype, its :class:`StepLimit` from the rates of :func:`_limit_runs`' runs."""
    limits = {}
    for dtype, kernels in PRODUCT_KERNELS.items():
        timed = [k for k in kernels if f"products {k}" in rates]
        fastest = max(timed, key=lambda k: rates[f"products {k}"])
        nbytes = weight_bytes_per_step(weights, dtype)
        buffer_bytes = max(nbytes, 4096) // 4 * 4
        gb_s = rates[f"read {dtype}"] * buffer_bytes / 1e9
        limits[dtype] = StepLimit(
            kernel=fastest,
            products_chars_per_s=rates[f"products {fastest}"],
            weight_bytes_per_step=nbytes,
            bandwidth_gb_s=gb_s,
            bandwidth_chars_per_s=gb_s * 1e9 / nbytes,
        )
    return limits


@torch.no_grad()
def sampling_speed(config: BenchConfig) -> SamplingSpeed:
    """Steps/s at batch 1 of an L × H LSTM, each step's output the next step's input, and the
    limits of :class:`SamplingSpeed`, all timed in the same interleaved rounds.

    Five loops with the same weights: ``rnnkit.layers.LSTM.step`` inside ``packed_step`` with
    fp32, bf16 and int8 weights, ``torch.nn.LSTM`` on one-step sequences (1, 1, H), and the
    reference loop of :func:`_reference_loop`; the fp32 loops are first checked to compute
    the same numbers over a few steps. Then each kernel's step of products alone, and the
    reads of the bandwidth probes.
    """
    hidden, num_layers = config.hidden_size, config.num_layers
    log.info("bench: sampling, LSTM %d x H=%d at batch 1", num_layers, hidden)
    reference = nn.LSTM(hidden, hidden, num_layers).eval()
    reference_loop = _reference_loop(reference)
    x0 = torch.randn(1, hidden)  # (1, H)
    zeros = torch.zeros(num_layers, 1, hidden)  # (L, 1, H)

    def torch_step(carry: list[Any]) -> None:
        out, carry[1] = reference(carry[0][None], carry[1])  # (1, 1, H)
        carry[0] = out[0]  # (1, H)

    def reference_step(carry: list[Any]) -> None:
        carry[0] = reference_loop(carry[0], carry[1], carry[2])  # (1, H)

    steps: dict[str, Callable[[list[Any]], None]] = {
        "torch.nn": torch_step,
        "reference": reference_step,
    }
    with contextlib.ExitStack() as packed:
        for weights in WEIGHTS:  # one module each: a module holds one packed copy at a time
            ours = layers.LSTM(hidden, hidden, num_layers).eval()
            ours.load_state_dict(reference.state_dict())
            packed.enter_context(ours.packed_step(weights))

            def ours_step(carry: list[Any], ours: layers.LSTM = ours) -> None:
                carry[0], carry[1] = ours.step(*carry)  # (1, H), ((L, 1, H), (L, 1, H))

            steps[weights] = ours_step

        def start(kind: str) -> list[Any]:
            if kind == "reference":
                return [x0, list(zeros), list(zeros)]  # x, L × (1, H), L × (1, H)
            return [x0, (zeros, zeros)]

        outputs = {}
        for kind in ("fp32", "torch.nn", "reference"):
            carry = start(kind)
            for _ in range(3):
                steps[kind](carry)
            outputs[kind] = carry[0]  # (1, H)
        torch.testing.assert_close(outputs["fp32"], outputs["torch.nn"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["reference"], outputs["torch.nn"], atol=1e-5, rtol=1e-4)

        carries = {kind: start(kind) for kind in steps}
        runs: dict[str, Callable[[], object]] = {
            kind: lambda s=step, c=carries[kind]: s(c) for kind, step in steps.items()
        }
        weights_per_step, _ = _packed_weights(reference)
        runs |= _limit_runs(weights_per_step)
        rates = _calls_per_second(runs, config)
    limits = _step_limits(weights_per_step, rates)
    return SamplingSpeed(
        chars_per_s=rates["fp32"],
        bf16_chars_per_s=rates["bf16"],
        int8_chars_per_s=rates["int8"],
        torch_nn_chars_per_s=rates["torch.nn"],
        reference_loop_chars_per_s=rates["reference"],
        limit_chars_per_s=limits["fp32"].products_chars_per_s,
        ratio_to_limit=rates["fp32"] / limits["fp32"].products_chars_per_s,
        bf16_ratio_to_limit=rates["bf16"] / limits["bf16"].products_chars_per_s,
        int8_ratio_to_limit=rates["int8"] / limits["int8"].products_chars_per_s,
        limits=limits,
        memory_gb_s=rates["read memory"] * MEMORY_PROBE_BYTES / 1e9,
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


def provenance(repository: Path) -> dict[str, Any]:
    """Where and when a benchmark ran, for its JSON: the machine (CPU model, logical cores,
    platform, Python, torch, torch's threads), the git commit of ``repository`` and whether
    its tracked files differed from it (None for both outside a git checkout), and the date
    (UTC, ISO 8601)."""
    commit = dirty = None
    try:
        commit = _git(repository, "rev-parse", "HEAD")
        dirty = _git(repository, "status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "machine": _machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _git(repository: Path, *args: str) -> str:
    command = ["git", "-C", str(repository), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


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
