"""rnnkit.onednn: the oneDNN products give F.linear's and addmm's numbers, gradients included."""

import pytest
import torch
import torch.nn.functional as F

from rnnkit import onednn
from rnnkit.onednn import ONEDNN_MIN_WEIGHTS, StepProduct, linear

BIG, SMALL = (512, 256), (16, 8)  # (N, K): above and below ONEDNN_MIN_WEIGHTS
assert BIG[0] * BIG[1] >= ONEDNN_MIN_WEIGHTS > SMALL[0] * SMALL[1]


@pytest.fixture(autouse=True, params=["onednn fp32", "plain fp32"])
def fp32_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with float32 products through oneDNN and through addmm, whatever the CPU
    would choose (:func:`rnnkit.onednn.fp32_onednn_pays`)."""
    pays = request.param == "onednn fp32" and torch.backends.mkldnn.is_available()
    monkeypatch.setattr(onednn, "fp32_onednn_pays", lambda: pays)
    return request.param


def test_the_path_follows_the_choice(fp32_path: str) -> None:
    """A big fp32 weight goes through oneDNN exactly when that is chosen; small ones never do."""
    big, small = torch.randn(*BIG), torch.randn(*SMALL)
    expected = fp32_path == "onednn fp32" and torch.backends.mkldnn.is_available()
    assert StepProduct(big, batch=4)._onednn is expected
    assert StepProduct(small, batch=4)._onednn is False


def test_bf16_goes_through_onednn_where_the_cpu_has_its_bf16_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Always where oneDNN multiplies bf16; on an AVX2-only CPU, whose oneDNN raises for bf16
    weights, the plain product (planted here on any CPU)."""
    weight = torch.randn(*BIG).bfloat16()  # (N, K)
    assert StepProduct(weight, batch=4)._onednn is onednn.bf16_onednn_works()
    monkeypatch.setattr(onednn, "bf16_onednn_works", lambda: False)
    h = torch.randn(4, BIG[1]).bfloat16()  # (B, K)
    product = StepProduct(weight, batch=4)
    assert product._onednn is False
    torch.testing.assert_close(product(h), h @ weight.t(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("vendor", "pays"), [("GenuineIntel", False), ("AuthenticAMD", True), ("", True)]
)
def test_fp32_onednn_pays_off_intel(
    vendor: str, pays: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule measured in the module docstring: fp32 through oneDNN except on Intel's CPUs."""
    monkeypatch.undo()  # the real function, not the fixture's stand-in
    monkeypatch.setattr(onednn, "cpu_vendor", lambda: vendor)
    onednn.fp32_onednn_pays.cache_clear()
    try:
        assert onednn.fp32_onednn_pays() is (pays and torch.backends.mkldnn.is_available())
    finally:
        onednn.fp32_onednn_pays.cache_clear()


def test_cpu_vendor_is_a_string() -> None:
    assert isinstance(onednn.cpu_vendor(), str)


@pytest.mark.parametrize("shape", [BIG, SMALL])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("transposed", [False, True])
def test_linear_equals_f_linear(shape: tuple[int, int], with_bias: bool, transposed: bool) -> None:
    """Outputs and the gradients of x, W and b, also for a non-contiguous (T, B, K) view."""
    torch.manual_seed(0)
    out_features, in_features = shape
    x = torch.randn(5, 3, in_features)  # (B, T, K)
    x = x.transpose(0, 1) if transposed else x  # (T, B, K) view when transposed
    weight = torch.randn(out_features, in_features) / in_features**0.5  # (N, K)
    bias = torch.randn(out_features) if with_bias else None  # (N,)
    grad_out = torch.randn(*x.shape[:-1], out_features)  # (..., N)
    results = []
    for fn in (F.linear, linear):
        leaves = [t.clone().requires_grad_() for t in (x, weight) + ((bias,) if with_bias else ())]
        y = fn(leaves[0], leaves[1], leaves[2] if with_bias else None)
        results.append([y.detach(), *torch.autograd.grad(y, leaves, grad_out)])
    for name, got, want in zip(("y", "grad x", "grad W", "grad b"), *results[::-1], strict=False):
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("shape", [BIG, SMALL])
def test_step_product_equals_addmm(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    out_features, in_features = shape
    weight = torch.randn(out_features, in_features) / in_features**0.5  # (N, K)
    bias, addend = torch.randn(out_features), torch.randn(4, out_features)  # (N,), (B, N)
    h = torch.randn(4, in_features)  # (B, K)
    product = StepProduct(weight, batch=4, bias=bias)
    torch.testing.assert_close(product(h), h @ weight.t() + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        product(h, addend), addend + h @ weight.t() + bias, rtol=1e-5, atol=1e-5
    )
    other_batch = torch.randn(7, in_features)  # any number of rows works
    torch.testing.assert_close(
        StepProduct(weight, batch=4)(other_batch), other_batch @ weight.t(), rtol=1e-5, atol=1e-5
    )


def test_step_product_in_bf16_is_close() -> None:
    torch.manual_seed(0)
    weight, h = torch.randn(*BIG).bfloat16(), torch.randn(4, BIG[1]).bfloat16()
    got = StepProduct(weight, batch=4)(h)  # (4, N) bf16
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), h.float() @ weight.float().t(), rtol=2e-2, atol=0.3)
