"""Reduced sampling weights (rnnkit.layers.packed), checked element by element on rows whose
magnitudes differ by 100x: int8 with one scale per row, ``s = max|W_row| / 127`` and
``|q·s − W| <= s/2``; bf16 within its rounding of each weight. A tolerance on the whole output,
or one scale per tensor, would hide the small rows' errors behind the large rows' size."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.layers.packed import PackedLinear, quantize_int8

pytestmark = pytest.mark.usefixtures("single_thread")

N, K = 12, 23  # output rows, inputs; K is not a multiple of 16, which the int8 kernel pads
BF16_ROUNDING = 2.0**-8  # relative error of rounding to bf16 (8 significant bits)


def rows_100x_apart(seed: int = 0) -> Tensor:
    """(N, K) weights whose rows' magnitudes run from 0.01 to 1, a factor of 100."""
    generator = torch.Generator().manual_seed(seed)
    magnitudes = torch.logspace(-2, 0, N)  # (N,)
    return torch.randn(N, K, generator=generator) * magnitudes[:, None]  # (N, K)


def effective_weights(packed: PackedLinear) -> Tensor:
    """The (N, K) matrix the packed product multiplies by, read back by multiplying the
    identity: row k of I_K picks column k of W (the bias is None)."""
    return packed(torch.eye(K)).t()  # (N, K)


def test_int8_scales_are_each_rows_max_over_127() -> None:
    weight = rows_100x_apart()
    q, s = quantize_int8(weight)
    assert (q.dtype, q.shape, s.dtype, s.shape) == (torch.int8, (N, K), torch.bfloat16, (N,))
    row_max = weight.abs().amax(dim=1)  # (N,)
    torch.testing.assert_close(s.float(), row_max / 127, rtol=BF16_ROUNDING, atol=0)
    # Each row spends the whole int8 range on itself, the small rows included.
    assert q.abs().amax(dim=1).tolist() == [127] * N


def test_int8_error_is_at_most_half_a_step_of_its_own_row() -> None:
    weight = rows_100x_apart().double()  # (N, K)
    q, s = quantize_int8(weight)
    step = s.double()[:, None]  # (N, 1)
    error = (q.double() * step - weight).abs()  # (N, K)
    assert (error <= step / 2 * (1 + 1e-6)).all()
    # The step is the row's own: max|W_row| / 127, up to bf16's rounding of it.
    own_step = weight.abs().amax(dim=1, keepdim=True) / 127  # (N, 1)
    assert (error <= own_step / 2 * (1 + BF16_ROUNDING)).all()


def test_int8_zero_row_stays_zero() -> None:
    weight = rows_100x_apart()
    weight[3] = 0.0
    q, s = quantize_int8(weight)
    assert torch.isfinite(s.float()).all() and (q[3] == 0).all()


def test_packed_int8_multiplies_by_the_per_row_quantized_weights() -> None:
    """Through the real kernel: the product equals x·(q·s)ᵀ up to its bf16 result, so each
    output row is within half a step of its own row of W."""
    weight = rows_100x_apart()
    q, s = quantize_int8(weight)
    dequantized = q.float() * s.float()[:, None]  # (N, K)
    got = effective_weights(PackedLinear(weight, None, "int8"))  # (N, K)
    torch.testing.assert_close(got, dequantized, rtol=BF16_ROUNDING, atol=0)
    own_step = weight.abs().amax(dim=1, keepdim=True) / 127  # (N, 1)
    assert ((got - weight).abs() <= own_step * (0.5 + 127 * BF16_ROUNDING)).all()


def test_packed_bf16_keeps_each_weight_to_bf16_rounding() -> None:
    weight = rows_100x_apart()
    got = effective_weights(PackedLinear(weight, None, "bf16"))  # (N, K)
    assert torch.equal(got, weight.bfloat16().float())
    assert ((got - weight).abs() <= BF16_ROUNDING * weight.abs()).all()


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_reduced_products_add_the_bias_in_float32(weights: str) -> None:
    """y = (x Wᵀ rounded once to bf16) + b, b added in float32: a bias of 10 next to products
    of 0.01 keeps the small rows' digits."""
    weight = rows_100x_apart()
    bias = torch.full((N,), 10.0) + torch.linspace(0, 1, N)  # (N,)
    x = torch.randn(3, K)  # (B, K)
    if weights == "int8":
        q, s = quantize_int8(weight)
        stored = q.double() * s.double()[:, None]  # (N, K)
    else:
        stored = weight.bfloat16().double()  # (N, K)
    product = F.linear(x.bfloat16().double(), stored)  # (B, N), x is rounded to bf16
    got = PackedLinear(weight, bias, weights)(x)  # (B, N)
    assert got.dtype == torch.float32
    error = (got.double() - bias.double() - product).abs()  # (B, N)
    # the product's one rounding to bf16, and float32's of the sum with the bias
    assert (error <= BF16_ROUNDING * product.abs() + 2.0**-23 * 12).all()
