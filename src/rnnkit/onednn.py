"""oneDNN's blocked-weight products on CPU, where they beat the plain ones: :class:`StepProduct`
for the per-step products of time loops and sampling, :func:`linear` for ``F.linear``.

``torch.addmm``/``F.linear`` on CPU hand the weight to the matrix-multiply library as it lies
in memory. ``torch.ops.mkldnn._reorder_linear_weight`` copies it once into oneDNN's blocked
layout, and ``torch.ops.mkldnn._linear_pointwise`` then multiplies by it (with a bias and an
addition fused in). Whether that pays depends on the processor:

* bfloat16: on every CPU whose oneDNN has a bf16 path (AVX-512 or AVX-NE-CONVERT; plain bf16
  ``addmm`` is several times slower at small batch). Elsewhere (an AVX2-only CPU) oneDNN
  refuses bf16 weights, so they take ``torch.addmm``.
* float32: only where :func:`fp32_onednn_pays`. On a 2-core AMD EPYC (AVX-512) oneDNN was 14%
  faster on a whole LSTM(2, 512) training pass through the loop layer and 20% on MinGRU's input
  projection (forward + backward, T = 2048); on a 2-core Intel Xeon with AMX the plain
  products, which torch runs through Intel's MKL, were faster: the LSTM loop 7% and the GRU loop
  2%, and batch-1 sampling of a 2x512 LSTM 30% (bench/sampling.py: 0.59x against 0.78x of the
  bare-matmul limit). So float32 goes through oneDNN on processors other than Intel's.

For small weights oneDNN's per-call cost wins, so both fall back to the plain ops below
``ONEDNN_MIN_WEIGHTS`` elements, off CPU, and without oneDNN.
"""

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Below this many weights oneDNN's per-call cost outweighs its faster product (StepProduct).
ONEDNN_MIN_WEIGHTS = 1 << 17


def cpu_vendor() -> str:
    """The CPU's vendor string from /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``), or ``""``
    where it cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def fp32_onednn_pays() -> bool:
    """Whether float32 products of large weights run faster through oneDNN than through
    ``torch.addmm`` on this CPU: true unless it is Intel's (see the module docstring).
    Asked once, on first use; importing rnnkit does not probe the machine."""
    return torch.backends.mkldnn.is_available() and cpu_vendor() != "GenuineIntel"


@functools.cache
def bf16_onednn_works() -> bool:
    """Whether oneDNN multiplies bf16 weights on this CPU: it needs AVX-512 (BW, VL, DQ) or
    AVX-NE-CONVERT, and raises on an AVX2-only CPU."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _use_onednn(weight: Tensor) -> bool:
    """Whether a product by ``weight`` (N, K) goes through oneDNN (see the module docstring)."""
    if weight.device.type != "cpu" or weight.numel() < ONEDNN_MIN_WEIGHTS:
        return False
    if weight.dtype == torch.bfloat16:
        return bf16_onednn_works()
    return weight.dtype == torch.float32 and fp32_onednn_pays()


class StepProduct:
    """``h ↦ h @ Wᵀ (+ bias) (+ addend)``: the per-step products of a time loop, W fixed for it.

    On CPU, a bf16 W of at least ``ONEDNN_MIN_WEIGHTS`` elements where
    :func:`bf16_onednn_works`, and an fp32 one where
    :func:`fp32_onednn_pays`, is reordered once into oneDNN's blocked layout and each product
    runs ``torch.ops.mkldnn._linear_pointwise`` with the additions fused in (the reorder costs
    one copy of W per sequence). On a 2-core AMD EPYC at B = 64 that made a whole LSTM(2, 512)
    training pass 14% faster than ``torch.addmm``, but the GRUs and RNN at H = 128 10-17%
    slower, hence the size limit. Elsewhere it is ``torch.addmm``.

    Args:
        weight: (N, K), float32 or bfloat16.
        batch: B, the expected number of rows of ``h`` (oneDNN picks its layout for it; any
            number of rows works).
        bias: (N,) added to every product, or None.

    Shapes: h (B, K), addend (B, N) or None -> (B, N).
    """

    def __init__(self, weight: Tensor, batch: int, bias: Tensor | None = None) -> None:
        self._bias = bias
        self._onednn = _use_onednn(weight)
        if self._onednn:
            self._weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)
        else:
            self._weight_t = weight.t()  # (K, N)

    def __call__(self, h: Tensor, addend: Tensor | None = None) -> Tensor:
        if not self._onednn:
            if addend is None:
                if self._bias is None:
                    return h @ self._weight_t  # (B, N)
                return torch.addmm(self._bias, h, self._weight_t)  # (B, N)
            out = torch.addmm(addend, h, self._weight_t)  # (B, N)
            return out if self._bias is None else out.add_(self._bias)
        linear = torch.ops.mkldnn._linear_pointwise
        if addend is None:
            return linear(h, self._weight, self._bias, "none", [], "")  # (B, N)
        return linear.binary(h, addend.contiguous(), self._weight, self._bias, "add")  # (B, N)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, whose products run through oneDNN on CPU when that pays.

    The forward product and the input's gradient use a weight reordered into oneDNN's blocked
    layout (one copy of W per call) when W has at least ``ONEDNN_MIN_WEIGHTS`` elements, x and W
    are float32 on CPU, :func:`fp32_onednn_pays` and autocast is off; the weight's gradient is
    one ``torch.mm`` as in ``F.linear``. Otherwise this is ``F.linear``. Same numbers up to
    float rounding.

    Shapes: x (..., K), weight (N, K), bias (N,) or None -> (..., N).
    """
    if (
        x.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
        or not _use_onednn(weight)
    ):
        return F.linear(x, weight, bias)
    return _OneDNNLinear.apply(x, weight, bias)


class _OneDNNLinear(torch.autograd.Function):
    """:func:`linear` on CPU float32: x (..., K), weight (N, K), bias (N,) or None -> (..., N)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (M, K)
        out = StepProduct(weight, rows.shape[0], bias)(rows)  # (M, N)
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        return out.view(*x.shape[:-1], weight.shape[0])  # (..., N)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        rows, weight = ctx.saved_tensors  # (M, K), (N, K)
        grad = grad_out.reshape(-1, weight.shape[0])  # (M, N)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = StepProduct(weight.t(), grad.shape[0])(grad)  # (M, K)
            grad_x = grad_x.view(*grad_out.shape[:-1], weight.shape[1])  # (..., K)
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ rows  # (N, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)  # (N,)
        return grad_x, grad_weight, grad_bias
