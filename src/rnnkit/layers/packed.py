"""A weight matrix stored once for fast products at small batch: fp32, bf16 or int8.

Sampling multiplies a handful of rows by the same weights thousands of times. At batch 1 that
product reads every weight once per step, so its speed is the speed of memory, and fewer bytes
per weight are faster. :class:`PackedLinear` keeps ``W`` in one of three forms:

* ``fp32``: the weights' own dtype; on CPU reordered once into oneDNN's blocked layout
  (:class:`StepProduct`).
* ``bf16``: bfloat16 weights. On CPU they are reordered once into oneDNN's blocked layout and
  multiplied by ``torch.ops.mkldnn._linear_pointwise`` (x is rounded to bf16, sums are
  accumulated in fp32, the result is rounded to bf16), where the CPU has oneDNN's bf16 path
  (AVX-512 or AVX-NE-CONVERT; elsewhere a plain bf16 product, see :class:`StepProduct`).
* ``int8``: weight-only int8 with one scale per output row (:func:`quantize_int8`),
  ``W ≈ q * s`` with ``s = max|W_row| / 127``; on CPU ``torch._weight_int8pack_mm`` (x in bf16,
  result in bf16).

The result is float32 in every form: the bias is added in float32. Measured at batch 1 on a
2-core AVX-512 machine (bench/sampling.py), bf16 and int8 run the product about twice as fast as
fp32; plain ``F.linear`` on bf16 tensors is 10x slower there than fp32, hence the private
kernels. Other devices use plain ``F.linear`` on the reduced weights.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.onednn import StepProduct

Weights = Literal["fp32", "bf16", "int8"]
WEIGHTS: tuple[Weights, ...] = ("fp32", "bf16", "int8")

# torch._weight_int8pack_mm on CPU reads past the end of rows whose length is not a multiple
# of 16 (torch 2.13: wrong results, then a crash), so the input dimension is zero-padded.
INT8_K_MULTIPLE = 16


def check_weights(weights: str) -> None:
    """Raise ValueError unless ``weights`` is one of ``WEIGHTS``."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Weight-only int8 with one scale per output row: ``W ≈ q * s[:, None]``.

    ``s = max|W_row| / 127``, rounded to bf16 (the dtype the CPU kernel takes scales in), and
    ``q = round(W / s)``: every row's largest weight maps to ±127 and ``|q·s − W| <= s/2``
    elementwise (bf16 moves s by at most 2⁻⁸ of itself, so ``|W / s|`` stays below 127.5 and
    the clamp to [−127, 127] clips nothing). An all-zero row gets a tiny scale and q = 0.

    Shapes: weight (N, K) float  ->  q (N, K) int8, s (N,) bfloat16
    """
    weight = weight.detach().float()  # (N, K)
    scales = (weight.abs().amax(dim=1).clamp_min(1e-30) / 127).bfloat16()  # (N,)
    quantized = weight / scales.float()[:, None]  # (N, K)
    return quantized.round_().clamp_(-127, 127).to(torch.int8), scales


class PackedLinear:
    """``y = x Wᵀ + b`` with ``W`` kept as fp32, bf16 or int8 (see the module docstring).

    A snapshot: later changes to the tensors it was built from are not seen.

    Args:
        weight: (N, K) float weights; ``"fp32"`` keeps their dtype as it is.
        bias: (N,) or None.
        weights: ``"fp32"``, ``"bf16"`` or ``"int8"``.

    Shapes:
        x: (B, K) in the weights' dtype, addend (B, N) or None  ->  (B, N) in the same dtype
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, weights: Weights = "fp32") -> None:
        check_weights(weights)
        weight = weight.detach()
        self.weights = weights
        self.dtype = weight.dtype
        self.bias = None if bias is None else bias.detach().clone()  # (N,)
        self._pad = 0
        on_cpu = weight.device.type == "cpu"
        if weights == "fp32":
            self._fp32 = StepProduct(weight.clone(), 1, self.bias)
        elif weights == "bf16" and on_cpu and torch.backends.mkldnn.is_available():
            self._bf16_step = StepProduct(weight.bfloat16(), 1)
            self._product = self._bf16_onednn
        elif weights == "bf16":
            self._weight = weight.bfloat16()  # (N, K)
            self._product = self._bf16
        else:
            self._weight, self._scales = quantize_int8(weight)  # (N, K) int8, (N,) bf16
            if on_cpu:
                self._pad = -weight.shape[1] % INT8_K_MULTIPLE
                self._weight = F.pad(self._weight, (0, self._pad))  # (N, K + pad)
                self._product = self._int8_cpu
            else:
                self._product = self._int8

    def __call__(self, x: Tensor, addend: Tensor | None = None) -> Tensor:
        """x (B, K), addend (B, N) or None -> x Wᵀ + b (+ addend) (B, N); fp32 fuses the
        addition into the product."""
        if self.weights == "fp32":
            return self._fp32(x, addend)  # (B, N)
        out = self._product(x)  # (B, N) bf16
        if addend is None:
            return out.to(self.dtype) if self.bias is None else torch.add(self.bias, out)
        if self.bias is not None:
            addend = addend + self.bias  # (B, N)
        return torch.add(addend, out)  # (B, N), the addend's dtype by type promotion

    def _bf16_onednn(self, x: Tensor) -> Tensor:
        return self._bf16_step(x.bfloat16())  # (B, N) bf16

    def _bf16(self, x: Tensor) -> Tensor:
        return F.linear(x.bfloat16(), self._weight)  # (B, N) bf16

    def _int8_cpu(self, x: Tensor) -> Tensor:
        if self._pad:
            x = F.pad(x, (0, self._pad))  # (B, K + pad)
        return torch._weight_int8pack_mm(x.bfloat16(), self._weight, self._scales)  # (B, N)

    def _int8(self, x: Tensor) -> Tensor:
        return F.linear(x.bfloat16(), self._weight.bfloat16()) * self._scales  # (B, N)
