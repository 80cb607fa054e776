r"""Whole-sequence recurrences with hand-written backpropagation through time (BPTT).

``impl="loop"`` runs each layer-and-direction through one of these ``torch.autograd.Function``\ s
(the GRUs are in :mod:`rnnkit.layers.bptt_gru`) when the batch has no ``lengths``. Padded input
with ``lengths`` and ``PackedSequence`` input fall back to the autograd loop of
:func:`rnnkit.layers.time_loop.run_direction`, which freezes finished sequences, and so does an
LSTM with ``proj_size``; the Functions hold no mask. They compute the same numbers as that loop
over :mod:`rnnkit.cells`' step functions, faster, as cuDNN does:

* **forward** runs the time loop without autograd recording and writes every step's gate
  activations and state into preallocated (T, ...) buffers, which are all that backward needs;
* **backward** runs the reverse time loop by hand: each step's element-wise derivatives, written
  straight into a (T, B, G·H) buffer of gate gradients while that step's activations are in
  cache, and one ``(B, G·H) @ (G·H, H)`` product that carries the gradient to the previous state;
* the weight gradient is accumulated after the reverse loop as **one** large product,
  ``dW_hh = Σ_t d_gates_tᵀ h_{t−1}`` = ``(G·H, T·B) @ (T·B, H)`` (:func:`sum_over_steps`),
  instead of autograd's T small ones.

On CPU at B = 64 the per-step products already run near the matrix-multiply peak, so the
floating-point work is the same as autograd's; what goes is autograd's per-step graph, its
element-wise backward kernels and the per-step weight-gradient accumulation. ``bench/layers.py``
measures the result beside ``torch.nn``.

The input projection ``W_ih x + b`` of all steps stays outside, under ordinary autograd: a
Function receives it as ``gates_x`` and returns its gradient.

Conventions shared by every Function here. Tensors are time-major inside, ``gates_x`` (T, B, G·H)
and outputs (T, B, H); step t (0-based) maps ``h_t`` to ``h_{t+1}``, so ``hs`` (T+1, B, H) holds
h_0 (the initial state) then the T outputs. ``σ'`` is ``σ(1 − σ)``, ``tanh'`` is ``1 − tanh²``. The
recurrence runs in the dtype of ``gates_x``: float32 normally, bfloat16 under
``torch.autocast(dtype=torch.bfloat16)`` (the input projection is then computed in bf16, and the
wrappers cast ``weight_hh`` and ``h_0`` once per sequence); an LSTM's cell state c stays in its own
dtype (float32) for accuracy. Backward is first-order only (``once_differentiable``): gradcheck of
first derivatives passes; double backward raises.

On CUDA, where Triton is installed, the LSTM's step does its element-wise work in one kernel each
way (:mod:`rnnkit.layers.lstm_triton`), not in a dozen launches; elsewhere the torch ops below run.
"""

import importlib
import importlib.util
from functools import cache
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from rnnkit import workspace
from rnnkit.cells import Nonlinearity
from rnnkit.onednn import StepProduct
from rnnkit.scan import TRITON_DTYPES

LSTMState = tuple[Tensor, Tensor]


def steps_of(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Per-step views of (T, ...) tensors: ``[(a_0, b_0, ...), (a_1, b_1, ...), ...]``.

    One ``unbind`` per tensor, so the time loops index nothing themselves (at small sizes, the
    Python cost of indexing is a large part of a step).
    """
    return list(zip(*(tensor.unbind(0) for tensor in tensors), strict=True))


def states_buffer(h0: Tensor, steps: int) -> Tensor:
    """A (T+1, B, H) buffer holding h_0 in row 0; the forward loop fills rows 1..T."""
    hs = workspace.empty((steps + 1, *h0.shape), h0)  # (T+1, B, H)
    hs[0] = h0
    return hs


def sum_over_steps(grad: Tensor, inputs: Tensor) -> Tensor:
    """``Σ_t grad_tᵀ inputs_t`` as one matrix product: the weight gradient of all steps.

    Shapes: grad (T, B, G·H), inputs (T, B, K) -> (G·H, K).
    """
    return grad.flatten(0, 1).t() @ inputs.flatten(0, 1)  # (G·H, T·B) @ (T·B, K)


def sigmoid_grad(s: Tensor) -> Tensor:
    """σ'(a) from s = σ(a): s − s², as one fused op.  Any shape."""
    return torch.addcmul(s, s, s, value=-1)


def tanh_grad(t: Tensor) -> Tensor:
    """tanh'(a) from t = tanh(a): 1 − t², as one fused op.  Any shape."""
    return torch.addcmul(t.new_ones(()), t, t, value=-1)


def run_without_autocast(function: type[Function], gates_x: Tensor, *args: Any) -> Any:
    """``function.apply(gates_x, *args)`` with autocast off: the dtypes are already chosen."""
    with torch.autocast(gates_x.device.type, enabled=False):
        return function.apply(gates_x, *args)


# --- Elman RNN ---------------------------------------------------------------------------------


class RNNSequence(Function):
    r"""An Elman RNN over a whole sequence.

    Forward, per step:  ``h_{t+1} = φ(a_t)``,  ``a_t = gates_x_t + W_hh h_t``  (φ = tanh or relu;
    ``gates_x`` holds both biases).

    Backward, with ``dh_{t+1}`` = ∂L/∂h_{t+1} (the output's gradient plus what flows back from
    step t+1)::

        da_t = dh_{t+1} ⊙ φ'(a_t)          φ'(a_t) = 1 − h_{t+1}² (tanh) or [h_{t+1} > 0] (relu)
        dh_t (through step t) = da_t W_hh
        dW_hh = Σ_t da_tᵀ h_t              d gates_x = da

    Inputs: gates_x (T, B, H), h0 (B, H), weight_hh (H, H), nonlinearity.  Output: hs (T, B, H).
    """

    @staticmethod
    def forward(
        ctx: Any, gates_x: Tensor, h0: Tensor, weight_hh: Tensor, nonlinearity: Nonlinearity
    ) -> Tensor:
        hs = states_buffer(h0, gates_x.shape[0])  # (T+1, B, H)
        recurrent = StepProduct(weight_hh, h0.shape[0])  # h ↦ x_t + W_hh h
        for x_t, h, h_next in steps_of(gates_x, hs[:-1], hs[1:]):
            a = recurrent(h, x_t)  # (B, H)
            torch.tanh(a, out=h_next) if nonlinearity == "tanh" else torch.clamp_min(
                a, 0, out=h_next
            )
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(weight_hh, hs)
        return hs[1:]  # (T, B, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        weight_hh, hs = ctx.saved_tensors
        grad_a = workspace.empty(hs[1:].shape, hs)  # (T, B, H)
        carry = torch.zeros_like(hs[0])  # (B, H) ∂L/∂h_{t+1} through step t+1
        backwards = StepProduct(weight_hh.t(), hs.shape[1])  # da ↦ da W_hh
        for grad_out_t, h_next, grad_a_t in reversed(steps_of(grad_out, hs[1:], grad_a)):
            dh_da = tanh_grad(h_next) if ctx.nonlinearity == "tanh" else h_next > 0  # (B, H)
            torch.mul(grad_out_t + carry, dh_da, out=grad_a_t)  # (B, H)
            carry = backwards(grad_a_t)  # (B, H)
        grad_weight_hh = sum_over_steps(grad_a, hs[:-1]) if ctx.needs_input_grad[2] else None
        return grad_a, carry, grad_weight_hh, None


def rnn_sequence(
    gates_x: Tensor, h0: Tensor, weight_hh: Tensor, nonlinearity: Nonlinearity
) -> tuple[Tensor, Tensor]:
    """gates_x (T, B, H) from :func:`rnnkit.cells.input_gates`, h0 (B, H) -> outputs, h_T."""
    dtype = gates_x.dtype
    args = (h0.to(dtype), weight_hh.to(dtype), nonlinearity)
    out = run_without_autocast(RNNSequence, gates_x, *args)  # (T, B, H)
    return out, out[-1]


# --- LSTM ----------------------------------------------------------------------------------------


class LSTMSequence(Function):
    r"""An LSTM over a whole sequence, optionally with peephole connections.

    Forward, per step, on the pre-activations ``a = gates_x_t + W_hh h_t`` packed (i, f, g, o)::

        i = σ(a_i + w_ci ⊙ c_t)    f = σ(a_f + w_cf ⊙ c_t)    g = tanh(a_g)
        c_{t+1} = f ⊙ c_t + i ⊙ g
        o = σ(a_o + w_co ⊙ c_{t+1})          h_{t+1} = o ⊙ tanh(c_{t+1})

    (the ``w_c*`` terms only with peepholes). Backward, per step in reverse, with
    ``dh = ∂L/∂h_{t+1}`` and ``dc`` = ∂L/∂c_{t+1} from the later steps::

        da_o = dh ⊙ tanh(c_{t+1}) ⊙ σ'(o)
        dc += dh ⊙ o ⊙ tanh'(c_{t+1})  [+ da_o ⊙ w_co]
        da_i = dc ⊙ g ⊙ σ'(i)    da_f = dc ⊙ c_t ⊙ σ'(f)    da_g = dc ⊙ i ⊙ tanh'(g)
        dh_t = da_t W_hh          dc_t = dc ⊙ f  [+ da_i ⊙ w_ci + da_f ⊙ w_cf]

    and after it ``dW_hh = Σ_t da_tᵀ h_t``, ``dw_ci = Σ da_i ⊙ c_t``, ``dw_cf = Σ da_f ⊙ c_t``,
    ``dw_co = Σ da_o ⊙ c_{t+1}`` (sums over steps and batch), ``d gates_x = da``.

    Inputs: gates_x (T, B, 4H), h0 (B, H), c0 (B, H), weight_hh (4H, H), and the peephole weights
    w_ci, w_cf, w_co (H,) or all None.  Outputs: hs (T, B, H), c_T (B, H).
    """

    @staticmethod
    def forward(
        ctx: Any,
        gates_x: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        weight_ci: Tensor | None,
        weight_cf: Tensor | None,
        weight_co: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        steps = gates_x.shape[0]
        peephole = weight_ci is not None
        hs = states_buffer(h0, steps)  # (T+1, B, H)
        cs = states_buffer(c0, steps)  # (T+1, B, H), in c's own dtype
        # One (T, B, H) buffer per gate rather than one (T, B, 4H): each stays under glibc's
        # mmap threshold, so its memory is reused between calls instead of faulted in afresh.
        acts = [workspace.empty(hs[1:].shape, hs) for _ in range(4)]  # 4 × (T, B, H): i, f, g, o
        tanh_cs = workspace.empty(cs[1:].shape, cs)  # (T, B, H): tanh(c_{t+1})
        recurrent = StepProduct(weight_hh, h0.shape[0])  # h ↦ x_t + W_hh h
        fused = _fused_lstm_step(gates_x)
        peephole_weights = (weight_ci, weight_cf, weight_co) if peephole else None
        per_step = steps_of(gates_x, *acts, hs[:-1], hs[1:], cs[:-1], cs[1:], tanh_cs)
        for x_t, i, f, g, o, h, h_next, c, c_next, tanh_c in per_step:
            a = recurrent(h, x_t)  # (B, 4H) pre-activations
            if fused is not None:  # the rest of the step in one kernel
                fused.step_forward(a, c, peephole_weights, (i, f, g, o), c_next, tanh_c, h_next)
                continue
            a_i, a_f, a_g, a_o = a.chunk(4, dim=1)  # 4 × (B, H)
            if peephole:
                a_i.addcmul_(weight_ci, c)
                a_f.addcmul_(weight_cf, c)
            torch.sigmoid(a_i, out=i)
            torch.sigmoid(a_f, out=f)
            torch.tanh(a_g, out=g)
            torch.mul(f, c, out=c_next).addcmul_(i, g)  # c_{t+1} = f ⊙ c_t + i ⊙ g
            if peephole:
                a_o.addcmul_(weight_co, c_next)
            torch.sigmoid(a_o, out=o)
            torch.tanh(c_next, out=tanh_c)
            torch.mul(o, tanh_c, out=h_next)  # h_{t+1} = o ⊙ tanh(c_{t+1})
        ctx.save_for_backward(weight_hh, weight_ci, weight_cf, weight_co, hs, cs, tanh_cs, *acts)
        return hs[1:], cs[-1]  # (T, B, H), (B, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor, grad_c_last: Tensor) -> tuple[Tensor | None, ...]:
        weight_hh, weight_ci, weight_cf, weight_co, hs, cs, tanh_cs, *acts = ctx.saved_tensors
        peephole = weight_ci is not None
        steps, batch, hidden = tanh_cs.shape
        grad_a = workspace.empty((steps, batch, 4 * hidden), hs)  # (T, B, 4H), in the gates' dtype
        grad_i_all, grad_f_all, grad_g_all, grad_o_all = grad_a.chunk(4, dim=2)  # 4 × (T, B, H)
        dh_carry = torch.zeros_like(hs[0])  # (B, H) ∂L/∂h_{t+1} through step t+1
        dc = grad_c_last  # (B, H) ∂L/∂c_{t+1} through step t+1
        backwards = StepProduct(weight_hh.t(), batch)  # da ↦ da W_hh
        fused = _fused_lstm_step(grad_out)
        if fused is not None:  # its kernel reads rows of unit stride
            grad_out, dc = grad_out.contiguous(), dc.contiguous()
        peephole_weights = (weight_ci, weight_cf, weight_co) if peephole else None
        per_step = steps_of(
            grad_out, grad_a, grad_i_all, grad_f_all, grad_g_all, grad_o_all,
            *acts, cs[:-1], tanh_cs,
        )  # fmt: skip
        for grad_out_t, grad_a_t, grad_i, grad_f, grad_g, grad_o, i, f, g, o, c, tanh_c in reversed(
            per_step
        ):
            if fused is not None:  # the step's element-wise work in one kernel
                acts_t = (i, f, g, o)
                dc = fused.step_backward(
                    grad_out_t, dh_carry, dc, acts_t, c, tanh_c, peephole_weights, grad_a_t
                )  # (B, H)
                dh_carry = backwards(grad_a_t)  # (B, H)
                continue
            dh = grad_out_t + dh_carry  # (B, H)
            torch.mul(dh * tanh_c, sigmoid_grad(o), out=grad_o)
            dc = torch.addcmul(dc, dh * o, tanh_grad(tanh_c))  # (B, H)
            if peephole:
                dc.addcmul_(grad_o, weight_co)
            torch.mul(dc * g, sigmoid_grad(i), out=grad_i)
            torch.mul(dc * c, sigmoid_grad(f), out=grad_f)
            torch.mul(dc * i, tanh_grad(g), out=grad_g)
            dh_carry = backwards(grad_a_t)  # (B, H)
            dc = dc * f  # (B, H)
            if peephole:
                dc.addcmul_(grad_i, weight_ci).addcmul_(grad_f, weight_cf)
        needs = ctx.needs_input_grad
        grad_weight_hh = sum_over_steps(grad_a, hs[:-1]) if needs[3] else None  # (4H, H)
        peephole_grads: tuple[Tensor | None, ...] = (None, None, None)
        if peephole:
            peephole_grads = (
                (grad_i_all * cs[:-1]).sum((0, 1)),  # (H,)
                (grad_f_all * cs[:-1]).sum((0, 1)),  # (H,)
                (grad_o_all * cs[1:]).sum((0, 1)),  # (H,)
            )
        return grad_a, dh_carry, dc, grad_weight_hh, *peephole_grads


def _fused_lstm_step(x: Tensor) -> ModuleType | None:
    """:mod:`rnnkit.layers.lstm_triton` (a step's element-wise work in one kernel) for CUDA
    tensors where Triton is installed, but not float64 ones (its arithmetic is float32); else
    None, and the torch ops run."""
    return _import_lstm_triton() if x.is_cuda and x.dtype in TRITON_DTYPES else None


@cache
def _import_lstm_triton() -> ModuleType | None:
    if importlib.util.find_spec("triton") is None:
        return None
    return importlib.import_module("rnnkit.layers.lstm_triton")


def lstm_sequence(
    gates_x: Tensor,
    state: LSTMState,
    weight_hh: Tensor,
    peephole: tuple[Tensor, Tensor, Tensor] | None,
) -> tuple[Tensor, LSTMState]:
    """gates_x (T, B, 4H) from :func:`rnnkit.cells.input_gates`, (h0, c0) -> outputs, (h_T, c_T)."""
    h0, c0 = state
    dtype = gates_x.dtype
    args = (h0.to(dtype), c0, weight_hh.to(dtype), *(peephole or (None, None, None)))
    out, c_last = run_without_autocast(LSTMSequence, gates_x, *args)  # (T, B, H), (B, H)
    return out, (out[-1], c_last)
