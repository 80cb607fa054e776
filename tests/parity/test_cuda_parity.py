"""CUDA computes what the CPU computes: every layer kind and every ``impl``, outputs, final states
and gradients (``gpu``: skipped without CUDA; ``make test-gpu`` runs them).

Both sides run in float64, where neither cuDNN nor cuBLAS may use TF32, so the two differ only
by the order of float64 sums; float64 also keeps torch's ops where Triton's float32 kernels
would run (tests/unit/test_lstm_triton.py and test_scan_triton.py check those on CUDA in
float32). A bf16 autocast step is checked against fp32 on the same device.
"""

import copy

import pytest
import torch
from torch import Tensor, nn

from rnnkit import layers
from tests.conftest import B, D, H, T

pytestmark = pytest.mark.gpu

# name -> (class, constructor keywords, the impls it has)
STACKS = ("auto", "fused", "loop")
LOOP_ONLY = ("auto", "loop")
KINDS = {
    "rnn_tanh": (layers.RNN, {}, STACKS),
    "rnn_relu": (layers.RNN, {"nonlinearity": "relu"}, STACKS),
    "gru": (layers.GRU, {}, STACKS),
    "gru_reset_before": (layers.GRU, {"reset_after": False}, LOOP_ONLY),
    "gru_one_gate": (layers.GRU, {"reset_gate": False}, LOOP_ONLY),
    "lstm": (layers.LSTM, {}, STACKS),
    "lstm_proj": (layers.LSTM, {"proj_size": 2}, STACKS),
    "lstm_peephole": (layers.LSTM, {"peephole": True}, LOOP_ONLY),
    "mingru": (layers.MinGRU, {}, ("auto", "scan", "loop")),
    "minlstm": (layers.MinLSTM, {}, ("auto", "scan", "loop")),
}
CASES = [(kind, impl) for kind, (_, _, impls) in KINDS.items() for impl in impls]
TOLERANCE = 1e-9


def make(kind: str, impl: str, **extra) -> nn.Module:
    cls, keywords, _ = KINDS[kind]
    return cls(D, H, num_layers=2, **keywords, **extra, impl=impl, dtype=torch.float64)


def run(layer: nn.Module, x: Tensor, state) -> tuple[list[Tensor], list[Tensor]]:
    """Outputs and final state parts, and the gradients of a fixed random function of them
    with respect to the input and every parameter, all returned on the CPU."""
    x = x.detach().requires_grad_()
    out, final = layer(x, state)
    results = [out, *(final if isinstance(final, tuple) else (final,))]
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(r.shape, generator=generator, dtype=r.dtype) for r in results]
    loss = sum((r * w.to(r.device)).sum() for r, w in zip(results, weights, strict=True))
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return [r.detach().cpu() for r in results], [g.cpu() for g in grads]


def assert_close_lists(ours: list[Tensor], expected: list[Tensor]) -> None:
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize(("kind", "impl"), CASES)
def test_cuda_equals_cpu(kind: str, impl: str, bidirectional: bool) -> None:
    if bidirectional and kind.startswith("min"):
        pytest.skip("MinGRU / MinLSTM run forward in time only")
    extra = {"bidirectional": True} if bidirectional else {}
    cpu = make(kind, impl, **extra)
    cuda = copy.deepcopy(cpu).cuda()
    x = torch.randn(T, B, D, dtype=torch.float64)
    outputs_cpu, grads_cpu = run(cpu, x, None)
    outputs_cuda, grads_cuda = run(cuda, x.cuda(), None)
    assert_close_lists(outputs_cuda, outputs_cpu)
    assert_close_lists(grads_cuda, grads_cpu)


@pytest.mark.parametrize("impl", STACKS)
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_cuda_equals_cpu_with_lengths_and_state(kind: str, impl: str) -> None:
    """Padded batches (fused: packed by torch) with a given initial state."""
    cpu = make(kind, impl)
    cuda = copy.deepcopy(cpu).cuda()
    x = torch.randn(T, B, D, dtype=torch.float64)
    h0 = torch.randn(2, B, H, dtype=torch.float64)
    state = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    on_cuda = tuple(s.cuda() for s in state) if kind == "lstm" else state.cuda()
    lengths = [5, 2, 4]
    out_cpu, final_cpu = cpu(x, state, lengths=lengths)
    out_cuda, final_cuda = cuda(x.cuda(), on_cuda, lengths=lengths)
    assert_close_lists([out_cuda.cpu()], [out_cpu])
    finals_cuda = final_cuda if kind == "lstm" else (final_cuda,)
    finals_cpu = final_cpu if kind == "lstm" else (final_cpu,)
    assert_close_lists([part.cpu() for part in finals_cuda], list(finals_cpu))


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm", "gru_one_gate", "lstm_peephole"])
def test_step_on_cuda_equals_forward(kind: str) -> None:
    """``step()`` (the sampling path) on CUDA equals a forward over the same steps on the CPU."""
    cpu = make(kind, "auto")
    cuda = copy.deepcopy(cpu).cuda()
    x = torch.randn(T, B, D, dtype=torch.float64)
    out_cpu, _ = cpu(x)
    state = None
    for t in range(T):
        y, state = cuda.step(x[t].cuda(), state)
        torch.testing.assert_close(y.cpu(), out_cpu[t], rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize(("kind", "impl"), [("lstm", "fused"), ("lstm", "loop"), ("gru", "loop")])
def test_bf16_autocast_on_cuda_stays_near_fp32(kind: str, impl: str) -> None:
    """Under CUDA bf16 autocast the output has torch.nn's dtype (bf16) and stays within bf16
    rounding of the fp32 output; the gradients reach every fp32 parameter."""
    cls, keywords, _ = KINDS[kind]
    layer = cls(D, H, num_layers=2, **keywords, impl=impl).cuda()
    x = torch.randn(T, B, D, device="cuda")
    reference, _ = layer(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
