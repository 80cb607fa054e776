"""The Triton kernels of rnnkit.scan_triton against the recurrence in plain torch.

Triton compiles for GPUs only. These tests run its kernels on CPU tensors under its interpreter,

    TRITON_INTERPRET=1 PYTHONPATH=src:TRITON_DIR python -m pytest tests/unit/test_scan_triton.py

or compiled on CUDA where a GPU is present (all marked gpu then, and the dispatch from
rnnkit.scan is checked too); they skip where Triton is absent (CI) and, without the
interpreter, where CUDA is. Small fp32 cases
(the interpreter runs each program in Python), checked in float64 against rnnkit.scan's loop.
"""

import pytest
import torch

from rnnkit import scan
from tests.conftest import triton_device

DEVICE, pytestmark = triton_device()

from rnnkit import scan_triton  # noqa: E402  (after the skips: it imports triton)

# (B, T, H): H not a multiple of the block (masked channels), T = 1, and several blocks.
SHAPES = [(3, 5, 6), (2, 1, 4), (2, 7, scan_triton.BLOCK_H + 3)]


def _grads(output: torch.Tensor, inputs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed))
    loss = (output * weight.to(output)).sum()
    return list(torch.autograd.grad(loss, inputs))


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(DEVICE).requires_grad_()


def _close(ours: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(ours.double().cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_linear_scan_kernel_matches_the_loop(shape: tuple[int, int, int]) -> None:
    batch, steps, hidden = shape
    a = torch.rand(batch, steps, hidden) * 1.2 - 0.1  # some |a| > 1 and some a < 0
    b, h0 = torch.randn(batch, steps, hidden), torch.randn(batch, hidden)
    reference = [x.double().requires_grad_() for x in (a, b, h0)]
    expected = scan.linear_scan(*reference, impl="loop")
    ours = [_leaf(x) for x in (a, b, h0)]
    h = scan_triton.LinearScan.apply(*ours)
    assert h.shape == shape and h.dtype == torch.float32
    _close(h, expected.detach())
    for grad, grad_expected in zip(_grads(h, ours, 1), _grads(expected, reference, 1), strict=True):
        _close(grad, grad_expected)


def test_linear_scan_kernel_reads_strided_inputs() -> None:
    """Time-major views (B, T, H) of (T, B, H) tensors, as MinLSTM's layers hand them over."""
    steps, batch, hidden = 6, 3, 5
    a = torch.rand(steps, batch, hidden).transpose(0, 1)  # (B, T, H) view
    b = torch.randn(steps, batch, hidden).transpose(0, 1)
    h0 = torch.randn(batch, hidden)
    expected = scan.linear_scan(a.double(), b.double(), h0.double(), impl="loop")
    h = scan_triton.LinearScan.apply(a.to(DEVICE), b.to(DEVICE), h0.to(DEVICE))
    _close(h, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_mingru_kernel_matches_its_equations(shape: tuple[int, int, int]) -> None:
    batch, steps, hidden = shape
    projections = torch.randn(steps, batch, 2 * hidden).transpose(0, 1) * 2  # (B, T, 2H) view
    h0 = torch.randn(batch, hidden)
    reference = [projections.double().requires_grad_(), h0.double().requires_grad_()]
    k, candidate = reference[0].chunk(2, dim=-1)
    z = torch.sigmoid(k)
    expected = scan.linear_scan(1 - z, z * candidate, reference[1], impl="loop")
    ours = [_leaf(projections), _leaf(h0)]
    h = scan_triton.MinGRUScan.apply(*ours)
    assert h.shape == shape and h.dtype == torch.float32
    _close(h, expected.detach())
    for grad, grad_expected in zip(_grads(h, ours, 2), _grads(expected, reference, 2), strict=True):
        _close(grad, grad_expected)


def test_mingru_kernel_keeps_the_inputs_dtypes_in_its_gradients() -> None:
    """bf16 projections (autocast's) with an fp32 state: an fp32 recurrence, as the chunked
    scan's, and each gradient in its input's dtype."""
    batch, steps, hidden = 2, 4, 3
    projections = _leaf(torch.randn(batch, steps, 2 * hidden).to(torch.bfloat16))
    h0 = _leaf(torch.randn(batch, hidden))
    h = scan_triton.MinGRUScan.apply(projections, h0)
    assert h.dtype == torch.float32
    expected = scan.mingru_scan(projections.detach().cpu(), h0.detach().cpu())
    torch.testing.assert_close(h.detach().cpu(), expected, rtol=1e-5, atol=1e-5)
    grad_projections, grad_h0 = torch.autograd.grad(h.sum(), [projections, h0])
    assert (grad_projections.dtype, grad_h0.dtype) == (torch.bfloat16, torch.float32)


def test_cpu_tensors_keep_the_chunked_scan() -> None:
    """rnnkit.scan hands only CUDA tensors to the kernels: CPU runs exactly as before."""
    assert scan._triton_kernels(torch.zeros(2, 3, 4)) is None


@pytest.mark.gpu
def test_scan_on_cuda_runs_the_kernels_and_matches_the_cpu() -> None:
    a, b = torch.rand(4, 50, 64), torch.randn(4, 50, 64)
    h0 = torch.randn(4, 64)
    assert scan._triton_kernels(a.cuda()) is scan_triton
    assert scan._triton_kernels(a.cuda().double()) is None  # float64 keeps the chunked scan
    expected = scan.linear_scan(a, b, h0)
    torch.testing.assert_close(scan.linear_scan(a.cuda(), b.cuda(), h0.cuda()).cpu(), expected)
    projections = torch.randn(4, 50, 128)
    expected = scan.mingru_scan(projections, h0)
    torch.testing.assert_close(scan.mingru_scan(projections.cuda(), h0.cuda()).cpu(), expected)
