"""The sampling limit of rnnkit.benchmark: its kernels compute the product they time, its byte
counts are the weights' bytes, and results carry their provenance. Numbers only, no timings."""

import datetime
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnkit import benchmark
from rnnkit.benchmark import (
    PRODUCT_KERNELS,
    product_kernel,
    provenance,
    step_products,
    weight_bytes_per_step,
)
from rnnkit.layers.packed import quantize_int8

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
KERNEL_DTYPES = {kernel: dtype for dtype, kernels in PRODUCT_KERNELS.items() for kernel in kernels}


@pytest.mark.parametrize("kernel", list(KERNEL_DTYPES))
def test_each_kernel_computes_the_product_it_times(kernel: str) -> None:
    """x Wᵀ in the kernel's dtype: what a step with those weights multiplies (K = 23 is padded
    for int8; the result is read in float32)."""
    if kernel == "fp32 oneDNN" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    weight, x = torch.randn(9, 23), torch.randn(1, 23)  # (N, K), (1, K)
    stored = {
        "fp32": weight,
        "bf16": weight.bfloat16().float(),
        "int8": (lambda q, s: q.float() * s.float()[:, None])(*quantize_int8(weight)),
    }[KERNEL_DTYPES[kernel]]  # (N, K)
    x_in = x if KERNEL_DTYPES[kernel] == "fp32" else x.bfloat16().float()  # (1, K)
    expected = F.linear(x_in, stored)  # (1, N)
    got = product_kernel(weight, kernel, x)().float()  # (1, N)
    tolerance = 1e-5 if KERNEL_DTYPES[kernel] == "fp32" else 2.0**-8
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=1e-5)


def test_unknown_kernel_is_named() -> None:
    with pytest.raises(ValueError, match="unknown kernel 'fp16'"):
        product_kernel(torch.randn(3, 4), "fp16", torch.randn(1, 4))


def test_a_step_of_products_calls_every_product_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = benchmark.product_kernel

    def counting(weight, kernel, x):
        product = real(weight, kernel, x)
        return lambda: calls.append((tuple(weight.shape), kernel)) or product()

    monkeypatch.setattr(benchmark, "product_kernel", counting)
    step = step_products([torch.randn(8, 6), torch.randn(8, 10)], "int8", [torch.randn(3, 4)])
    step()
    assert calls == [((8, 6), "int8"), ((8, 10), "int8"), ((3, 4), "fp32 addmm")]


def test_weight_bytes_per_step_count_each_dtype() -> None:
    weights, head = [torch.randn(8, 6), torch.randn(8, 10)], [torch.randn(3, 4)]  # 128 + 12
    assert weight_bytes_per_step(weights, "fp32") == 4 * 128
    assert weight_bytes_per_step(weights, "bf16") == 2 * 128
    assert weight_bytes_per_step(weights, "int8") == 128 + 2 * (8 + 8)  # bf16 scale per row
    assert weight_bytes_per_step(weights, "bf16", head) == 2 * 128 + 4 * 12


def test_step_limits_take_each_dtypes_fastest_kernel_and_its_bytes() -> None:
    weights = [torch.randn(8, 6)]  # 48 weights
    rates = {
        "products fp32 addmm": 100.0,
        "products fp32 oneDNN": 300.0,
        "products bf16": 400.0,
        "products int8": 500.0,
        "read fp32": 1e6,  # reads per second of a 4096-byte buffer (the smallest probe)
        "read bf16": 2e6,
        "read int8": 3e6,
    }
    limits = benchmark._step_limits(weights, rates)
    assert limits["fp32"].kernel == "fp32 oneDNN"
    assert limits["fp32"].products_chars_per_s == 300.0
    assert limits["int8"].weight_bytes_per_step == 48 + 16
    assert limits["bf16"].bandwidth_gb_s == pytest.approx(2e6 * 4096 / 1e9)
    assert limits["bf16"].bandwidth_chars_per_s == pytest.approx(2e6 * 4096 / 96)


def test_provenance_names_the_commit_and_the_date() -> None:
    record = provenance(ROOT)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert record["git_commit"] == head
    assert isinstance(record["git_dirty"], bool)
    date = datetime.datetime.fromisoformat(record["date"])
    assert abs(datetime.datetime.now(datetime.UTC) - date) < datetime.timedelta(minutes=5)
    assert record["machine"] and record["torch"] == torch.__version__


def test_provenance_outside_a_checkout_has_no_commit(tmp_path: Path) -> None:
    record = provenance(tmp_path)
    assert record["git_commit"] is None and record["git_dirty"] is None
