"""The whole-sequence Functions (hand-written BPTT) of rnnkit.layers.bptt and bptt_gru against
the autograd loop.

The autograd loop is the same layer with ``_sequence`` switched off, so both paths share the
weights, the input projection and the stacking; only the recurrence differs.
"""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from rnnkit import layers
from rnnkit.layers import bptt, bptt_gru

B, T, D, H = 3, 5, 4, 6

# name -> (layer class, options)
VARIANTS = {
    "rnn_tanh": (layers.RNN, {}),
    "rnn_relu": (layers.RNN, {"nonlinearity": "relu"}),
    "gru": (layers.GRU, {}),
    "gru_reset_before": (layers.GRU, {"reset_after": False}),
    "gru_one_gate": (layers.GRU, {"reset_gate": False}),
    "lstm": (layers.LSTM, {}),
    "lstm_peephole": (layers.LSTM, {"peephole": True}),
}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def make(name: str, dtype: torch.dtype, **extra: object) -> nn.Module:
    layer_cls, options = VARIANTS[name]
    return layer_cls(D, H, impl="loop", dtype=dtype, **options, **extra)


def initial_state(layer: nn.Module, dtype: torch.dtype) -> torch.Tensor | tuple:
    stack = layer.num_layers * layer.num_directions
    h = torch.randn(stack, B, H, dtype=dtype, requires_grad=True)
    if isinstance(layer, layers.LSTM):
        return h, torch.randn(stack, B, H, dtype=dtype, requires_grad=True)
    return h


def run(layer: nn.Module, x: torch.Tensor, hx: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward, then backward of a loss touching every output; returns values and gradients."""
    out, state = layer(x, hx)
    parts = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
    loss = loss + sum((part**2).sum() for part in parts)
    inputs = [x, *(hx if isinstance(hx, tuple) else (hx,) if hx is not None else ())]
    grads = torch.autograd.grad(loss, [*layer.parameters(), *inputs])
    return out, [*parts, *grads]


def graph_names(tensor: torch.Tensor) -> set[str]:
    """Names of every backward node that produced ``tensor``."""
    names, todo, seen = set(), [tensor.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", VARIANTS)
def test_function_equals_autograd_loop(
    name: str, bias: bool, with_state: bool, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    layer = make(name, dtype, bias=bias, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, D, dtype=dtype, requires_grad=True)
    hx = initial_state(layer, dtype) if with_state else None
    out, values = run(layer, x, hx)
    monkeypatch.setattr(layer, "_sequence", lambda layer_index, direction: None)
    expected_out, expected_values = run(layer, x, hx)
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(out, expected_out, rtol=tolerance, atol=tolerance)
    assert len(values) == len(expected_values)
    for value, expected in zip(values, expected_values, strict=True):
        torch.testing.assert_close(value, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", VARIANTS)
def test_loop_uses_the_function_only_without_lengths(name: str) -> None:
    layer = make(name, torch.float32)
    x = torch.randn(T, B, D)
    assert any(n.endswith("SequenceBackward") for n in graph_names(layer(x)[0]))
    padded = layer(x, lengths=[T, 2, 1])[0]
    assert not any(n.endswith("SequenceBackward") for n in graph_names(padded))


def test_projected_lstm_runs_the_autograd_loop() -> None:
    layer = layers.LSTM(D, H, proj_size=2, impl="loop")
    assert layer._sequence(0, 0) is None
    assert not any(
        n.endswith("SequenceBackward") for n in graph_names(layer(torch.randn(T, B, D))[0])
    )


# gradcheck perturbs every input element; smaller (still distinct) sizes keep it quick.
GT, GB, GH = 4, 2, 3


def gradcheck_inputs(gate_count: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    torch.manual_seed(1)
    gates_x = torch.randn(GT, GB, gate_count * GH, dtype=torch.float64)
    tensors = [gates_x, *(0.5 * torch.randn(shape, dtype=torch.float64) for shape in shapes)]
    return [tensor.requires_grad_() for tensor in tensors]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_gradcheck(nonlinearity: str) -> None:
    gates_x, h0, weight_hh = gradcheck_inputs(1, (GB, GH), (GH, GH))

    def fn(gates_x: torch.Tensor, h0: torch.Tensor, weight_hh: torch.Tensor) -> tuple:
        return bptt.rnn_sequence(gates_x, h0, weight_hh, nonlinearity)

    assert gradcheck(fn, (gates_x, h0, weight_hh))


@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_lstm_gradcheck(peephole: bool) -> None:
    gates_x, h0, c0, weight_hh, *vectors = gradcheck_inputs(
        4, (GB, GH), (GB, GH), (4 * GH, GH), *[(GH,)] * 3
    )

    def fn(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates_x, h0, c0, weight_hh, *vectors = args
        out, (_, c_last) = bptt.lstm_sequence(
            gates_x, (h0, c0), weight_hh, tuple(vectors) if peephole else None
        )
        return out, c_last

    assert gradcheck(fn, (gates_x, h0, c0, weight_hh, *(vectors if peephole else ())))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_gru_gradcheck(bias: bool) -> None:
    gates_x, h0, weight_hh, bias_hh = gradcheck_inputs(3, (GB, GH), (3 * GH, GH), (3 * GH,))
    inputs = (gates_x, h0, weight_hh, bias_hh if bias else None)
    assert gradcheck(bptt_gru.gru_sequence, inputs)


def test_gru_reset_before_gradcheck() -> None:
    inputs = gradcheck_inputs(3, (GB, GH), (3 * GH, GH))
    assert gradcheck(bptt_gru.gru_reset_before_sequence, tuple(inputs))


def test_gru_one_gate_gradcheck() -> None:
    inputs = gradcheck_inputs(2, (GB, GH), (2 * GH, GH))
    assert gradcheck(bptt_gru.gru_one_gate_sequence, tuple(inputs))


def test_double_backward_raises() -> None:
    gates_x, h0, weight_hh = gradcheck_inputs(1, (GB, GH), (GH, GH))
    out, _ = bptt.rnn_sequence(gates_x, h0, weight_hh, "tanh")
    (grad,) = torch.autograd.grad((out**2).sum(), weight_hh, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|twice"):
        grad.sum().backward()


@pytest.mark.parametrize("name", VARIANTS)
def test_bf16_autocast_gradients_close_to_fp32(name: str) -> None:
    """A toy: under autocast the recurrence runs in bf16; gradients stay within a few percent.
    The output has torch.nn's dtype there: float32 for the GRUs, bf16 for the others."""
    torch.manual_seed(2)
    layer = make(name, torch.float32, num_layers=2)
    x = torch.randn(20, 8, D)
    reduced = torch.float32 if isinstance(layer, layers.GRU) else torch.bfloat16

    def gradients(precision: str) -> list[torch.Tensor]:
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out, _ = layer(x)
        assert out.dtype == (reduced if precision == "bf16" else torch.float32)
        out.float().square().mean().backward()
        return [p.grad for p in layer.parameters()]

    reference, low = gradients("fp32"), gradients("bf16")
    for grad_bf16, grad_fp32 in zip(low, reference, strict=True):
        assert grad_bf16.dtype == torch.float32
        relative = (grad_bf16 - grad_fp32).norm() / grad_fp32.norm()
        assert relative < 0.05
