"""The fused LSTM step kernels of rnnkit.layers.lstm_triton against the step in plain torch.

Run as tests/unit/test_scan_triton.py says: under ``TRITON_INTERPRET=1`` on CPU tensors, or
compiled where CUDA is present; skipped where Triton is absent (CI). Small fp32 cases, the
references in float64: the step's equations by autograd, and the whole loop LSTM (with and
without peepholes) run with and without the kernels.
"""

import copy

import pytest
import torch

from rnnkit import layers
from rnnkit.layers import bptt
from tests.conftest import B, D, H, T, triton_device

DEVICE, pytestmark = triton_device()

from rnnkit.layers import lstm_triton  # noqa: E402  (after the skips: it imports triton)

WIDTHS = [H, lstm_triton.BLOCK + 3]  # a masked block; several blocks


def _step(a, c, peephole):
    """LSTMSequence's step in torch: a (B, 4H), c (B, H) -> i, f, g, o, c', tanh(c'), h'."""
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
    if peephole is not None:
        a_i, a_f = a_i + peephole[0] * c, a_f + peephole[1] * c
    i, f, g = a_i.sigmoid(), a_f.sigmoid(), a_g.tanh()
    c_next = f * c + i * g
    o = (a_o + peephole[2] * c_next if peephole is not None else a_o).sigmoid()
    return i, f, g, o, c_next, c_next.tanh(), o * c_next.tanh()


def _peephole(use: bool, hidden: int):
    return tuple(torch.randn(hidden) for _ in range(3)) if use else None


def _on_device(values):
    return None if values is None else tuple(v.to(DEVICE) for v in values)


@pytest.mark.parametrize("hidden", WIDTHS)
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_step_forward_matches_the_equations(hidden: int, peephole: bool) -> None:
    a, c = torch.randn(B, 4 * hidden) * 2, torch.randn(B, hidden)
    weights = _peephole(peephole, hidden)
    expected = _step(
        a.double(), c.double(), None if weights is None else [w.double() for w in weights]
    )
    outputs = [torch.full((B, hidden), float("nan"), device=DEVICE) for _ in range(7)]
    i, f, g, o, c_next, tanh_c, h_next = outputs
    lstm_triton.step_forward(
        a.to(DEVICE), c.to(DEVICE), _on_device(weights), (i, f, g, o), c_next, tanh_c, h_next
    )
    for ours, reference in zip(outputs, expected, strict=True):
        torch.testing.assert_close(ours.cpu().double(), reference, rtol=1e-5, atol=1e-6)


def test_step_forward_stores_bf16_buffers() -> None:
    """Under bf16 autocast the gates and activations are bf16 and c stays float32: each value is
    computed in float32 and rounded once, where it is stored."""
    hidden = H
    a, c = torch.randn(B, 4 * hidden), torch.randn(B, hidden)
    expected = _step(a.bfloat16().double(), c.double(), None)
    acts = [torch.empty(B, hidden, dtype=torch.bfloat16, device=DEVICE) for _ in range(4)]
    c_next, tanh_c = (torch.empty(B, hidden, device=DEVICE) for _ in range(2))
    h_next = torch.empty(B, hidden, dtype=torch.bfloat16, device=DEVICE)
    lstm_triton.step_forward(
        a.bfloat16().to(DEVICE), c.to(DEVICE), None, tuple(acts), c_next, tanh_c, h_next
    )
    outputs = [*acts, c_next, tanh_c, h_next]
    for ours, reference in zip(outputs, expected, strict=True):
        rounded = reference.to(ours.dtype).double()  # the reference, stored in our buffer's dtype
        torch.testing.assert_close(ours.cpu().double(), rounded, rtol=1e-2, atol=1e-5)
    assert c_next.dtype == torch.float32 and h_next.dtype == torch.bfloat16


@pytest.mark.parametrize("hidden", WIDTHS)
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_step_backward_matches_autograd(hidden: int, peephole: bool) -> None:
    """grad_a = ∂L/∂a and the returned ∂L/∂c_t for L = <grad_out + dh_carry, h'> + <dc, c'>,
    given the forward's saved activations; grad_out a strided view, as steps_of gives it."""
    a = torch.randn(B, 4 * hidden, dtype=torch.float64, requires_grad=True)
    c = torch.randn(B, hidden, dtype=torch.float64, requires_grad=True)
    weights = _peephole(peephole, hidden)
    weights64 = None if weights is None else [w.double() for w in weights]
    i, f, g, o, c_next, tanh_c, h_next = _step(a, c, weights64)
    grad_out = torch.randn(B, 2 * hidden)[:, :hidden]  # (B, H), unit stride, row stride 2H
    dh_carry, dc = torch.randn(B, hidden), torch.randn(B, hidden)
    loss = ((grad_out + dh_carry).double() * h_next).sum() + (dc.double() * c_next).sum()
    expected_a, expected_c = torch.autograd.grad(loss, [a, c])

    saved = [x.detach().float().to(DEVICE) for x in (i, f, g, o)]
    grad_a = torch.full((B, 4 * hidden), float("nan"), device=DEVICE)
    dc_prev = lstm_triton.step_backward(
        grad_out.to(DEVICE),
        dh_carry.to(DEVICE),
        dc.to(DEVICE),
        tuple(saved),
        c.detach().float().to(DEVICE),
        tanh_c.detach().float().to(DEVICE),
        _on_device(weights),
        grad_a,
    )
    torch.testing.assert_close(grad_a.cpu().double(), expected_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dc_prev.cpu().double(), expected_c, rtol=1e-5, atol=1e-5)


def _run(layer: layers.LSTM, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs, final states and every gradient, the loss reading the outputs through a sum
    (an expanded gradient), the final cell state and the first layer's final h."""
    x = x.to(next(layer.parameters()).device).requires_grad_()
    out, (h_n, c_n) = layer(x)
    (out.sum() + (c_n * c_n).sum() + h_n[0].sum()).backward()
    return [
        t.detach().cpu() for t in (out, h_n, c_n, x.grad, *(p.grad for p in layer.parameters()))
    ]


@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_loop_lstm_with_the_kernels_equals_it_without(peephole: bool, monkeypatch) -> None:
    plain = layers.LSTM(D, H, num_layers=2, peephole=peephole, impl="loop")
    fused = copy.deepcopy(plain).to(DEVICE)
    x = torch.randn(T, B, D)
    expected = _run(plain, x)
    # LSTMSequence takes the kernels for any tensor (the interpreter's are CPU tensors).
    monkeypatch.setattr(bptt, "_fused_lstm_step", lambda tensor: lstm_triton)
    for ours, reference in zip(_run(fused, x), expected, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_cpu_tensors_keep_the_torch_ops() -> None:
    assert bptt._fused_lstm_step(torch.zeros(2, 3)) is None


@pytest.mark.gpu
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_loop_lstm_on_cuda_runs_the_kernels_and_matches_the_cpu(peephole: bool) -> None:
    assert bptt._fused_lstm_step(torch.zeros(2, 3, device="cuda")) is lstm_triton
    # float64 keeps torch's ops (the kernels compute in float32)
    assert bptt._fused_lstm_step(torch.zeros(2, 3, device="cuda", dtype=torch.float64)) is None
    cpu = layers.LSTM(D, H, num_layers=2, peephole=peephole, impl="loop")
    cuda = copy.deepcopy(cpu).cuda()
    x = torch.randn(T, B, D)
    for ours, reference in zip(_run(cuda, x), _run(cpu, x), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
