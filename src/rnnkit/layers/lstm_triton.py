r"""The element-wise work of one LSTM step as one Triton kernel each way, for the loop on CUDA.

:class:`rnnkit.layers.bptt.LSTMSequence` computes each step as one matrix product and then a
dozen element-wise ops (three sigmoids, two tanh, the products and sums of ``c`` and ``h``, and
with peepholes three more), each a kernel launch on a GPU; backward has as many. At the sizes
of issue 16 a launch costs more than its arithmetic, so the loop ran at 0.10-0.17x of cuDNN.
Here all of a step's element-wise work is one launch forward and one backward, with the same
equations as ``LSTMSequence``'s docstring; the matrix products stay where they are.

Arithmetic is float32 whatever the buffers' dtype (bf16 under autocast), rounded once when
stored, where the torch ops round after each op; ``tanh(x)`` is computed as ``2σ(2x) − 1``, which
Triton's interpreter runs too. :class:`~rnnkit.layers.bptt.LSTMSequence` calls these for CUDA
tensors where Triton is installed; this module is only imported then, or by its tests, which
run the kernels on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``).

``BLOCK`` is a first choice, not yet measured on a GPU (issue 16).

Shapes, per step: pre-activations ``a`` (B, 4H) packed (i, f, g, o) with unit stride in H; the
states and activations (B, H) contiguous; peephole weights (H,).
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 256


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _step_forward(
    a_ptr, c_ptr, w_ci_ptr, w_cf_ptr, w_co_ptr,
    i_ptr, f_ptr, g_ptr, o_ptr, c_next_ptr, tanh_c_ptr, h_next_ptr,
    hidden, a_row,
    PEEPHOLE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """i, f, g, o, c_{t+1} = f ⊙ c_t + i ⊙ g, tanh(c_{t+1}), h_{t+1} = o ⊙ tanh(c_{t+1})."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < hidden
    gates = a_ptr + row * a_row + cols
    a_i = tl.load(gates, mask=inside, other=0.0).to(tl.float32)
    a_f = tl.load(gates + hidden, mask=inside, other=0.0).to(tl.float32)
    a_g = tl.load(gates + 2 * hidden, mask=inside, other=0.0).to(tl.float32)
    a_o = tl.load(gates + 3 * hidden, mask=inside, other=0.0).to(tl.float32)
    state = row * hidden + cols
    c = tl.load(c_ptr + state, mask=inside, other=0.0).to(tl.float32)
    if PEEPHOLE:
        a_i += tl.load(w_ci_ptr + cols, mask=inside, other=0.0).to(tl.float32) * c
        a_f += tl.load(w_cf_ptr + cols, mask=inside, other=0.0).to(tl.float32) * c
    i = tl.sigmoid(a_i)
    f = tl.sigmoid(a_f)
    g = _tanh(a_g)
    c_next = f * c + i * g
    if PEEPHOLE:
        a_o += tl.load(w_co_ptr + cols, mask=inside, other=0.0).to(tl.float32) * c_next
    o = tl.sigmoid(a_o)
    tanh_c = _tanh(c_next)
    tl.store(i_ptr + state, i, mask=inside)
    tl.store(f_ptr + state, f, mask=inside)
    tl.store(g_ptr + state, g, mask=inside)
    tl.store(o_ptr + state, o, mask=inside)
    tl.store(c_next_ptr + state, c_next, mask=inside)
    tl.store(tanh_c_ptr + state, tanh_c, mask=inside)
    tl.store(h_next_ptr + state, o * tanh_c, mask=inside)


@triton.jit
def _step_backward(
    grad_out_ptr, dh_carry_ptr, dc_ptr, i_ptr, f_ptr, g_ptr, o_ptr, c_ptr, tanh_c_ptr,
    w_ci_ptr, w_cf_ptr, w_co_ptr, grad_a_ptr, dc_prev_ptr,
    hidden, grad_out_row, grad_a_row,
    PEEPHOLE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """The gate gradients of one step into grad_a (B, 4H), and ∂L/∂c_t into dc_prev."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < hidden
    state = row * hidden + cols
    grad_out = tl.load(grad_out_ptr + row * grad_out_row + cols, mask=inside, other=0.0)
    dh = grad_out.to(tl.float32) + tl.load(dh_carry_ptr + state, mask=inside, other=0.0).to(
        tl.float32
    )
    i = tl.load(i_ptr + state, mask=inside, other=0.0).to(tl.float32)
    f = tl.load(f_ptr + state, mask=inside, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + state, mask=inside, other=0.0).to(tl.float32)
    o = tl.load(o_ptr + state, mask=inside, other=0.0).to(tl.float32)
    c = tl.load(c_ptr + state, mask=inside, other=0.0).to(tl.float32)
    tanh_c = tl.load(tanh_c_ptr + state, mask=inside, other=0.0).to(tl.float32)
    dc = tl.load(dc_ptr + state, mask=inside, other=0.0).to(tl.float32)
    grad_o = dh * tanh_c * o * (1.0 - o)
    dc += dh * o * (1.0 - tanh_c * tanh_c)
    if PEEPHOLE:
        dc += grad_o * tl.load(w_co_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    grad_i = dc * g * i * (1.0 - i)
    grad_f = dc * c * f * (1.0 - f)
    grad_g = dc * i * (1.0 - g * g)
    dc_prev = dc * f
    if PEEPHOLE:
        dc_prev += grad_i * tl.load(w_ci_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        dc_prev += grad_f * tl.load(w_cf_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    grads = grad_a_ptr + row * grad_a_row + cols
    tl.store(grads, grad_i, mask=inside)
    tl.store(grads + hidden, grad_f, mask=inside)
    tl.store(grads + 2 * hidden, grad_g, mask=inside)
    tl.store(grads + 3 * hidden, grad_o, mask=inside)
    tl.store(dc_prev_ptr + state, dc_prev, mask=inside)


def _grid(state: Tensor) -> tuple[int, int]:
    return state.shape[0], triton.cdiv(state.shape[1], BLOCK)


def step_forward(
    a: Tensor,
    c: Tensor,
    peephole: tuple[Tensor, Tensor, Tensor] | None,
    acts: tuple[Tensor, Tensor, Tensor, Tensor],
    c_next: Tensor,
    tanh_c: Tensor,
    h_next: Tensor,
) -> None:
    """One step's element-wise forward, written into ``acts`` (i, f, g, o), ``c_next``,
    ``tanh_c`` and ``h_next``. a (B, 4H); c and every output (B, H), contiguous."""
    assert a.stride(1) == 1 and all(x.is_contiguous() for x in (c, *acts, c_next, tanh_c, h_next))
    weights = peephole or (c, c, c)  # not read without peepholes
    _step_forward[_grid(c)](
        a, c, *weights, *acts, c_next, tanh_c, h_next, c.shape[1], a.stride(0),
        PEEPHOLE=peephole is not None, BLOCK=BLOCK,
    )  # fmt: skip


def step_backward(
    grad_out: Tensor,
    dh_carry: Tensor,
    dc: Tensor,
    acts: tuple[Tensor, Tensor, Tensor, Tensor],
    c: Tensor,
    tanh_c: Tensor,
    peephole: tuple[Tensor, Tensor, Tensor] | None,
    grad_a: Tensor,
) -> Tensor:
    """One step's element-wise backward: the gate gradients into ``grad_a`` (B, 4H), and
    ∂L/∂c_t returned, (B, H) in ``dc``'s dtype. grad_out (B, H) with unit stride in H; the
    other inputs (B, H), contiguous."""
    assert grad_out.stride(1) == 1 and grad_a.stride(1) == 1
    dc_prev = torch.empty_like(dc)  # (B, H)
    weights = peephole or (c, c, c)  # not read without peepholes
    _step_backward[_grid(c)](
        grad_out, dh_carry, dc, *acts, c, tanh_c, *weights, grad_a, dc_prev,
        c.shape[1], grad_out.stride(0), grad_a.stride(0),
        PEEPHOLE=peephole is not None, BLOCK=BLOCK,
    )  # fmt: skip
    return dc_prev
