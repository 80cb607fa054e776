r"""The recurrence of :mod:`rnnkit.scan` as Triton kernels: all T steps in one launch, on CUDA.

``h_t = a_t ⊙ h_{t−1} + b_t`` is element-wise: every channel of every sequence is its own
recurrence (the class of SRU and QRNN). Each program here owns ``BLOCK_H`` channels of one
sequence and walks its T steps in order, ``h`` in registers, so that the forward reads ``a`` and
``b`` once and writes ``h`` once, the least memory traffic there is, in one launch where the
chunked scan of :mod:`rnnkit.scan` launches ``2C + N`` small kernels per call. The backward
walks back in time the same way (the equations are in :mod:`rnnkit.scan`'s docstring).
:class:`MinGRUScan` also computes MinGRU's gate inside the walk, reading the input projections
``(k, h̃)`` themselves and writing both their gradients, as :func:`rnnkit.scan.mingru_scan` does.

Arithmetic is float32 whatever the tensors' dtype; results are stored in it. :mod:`rnnkit.scan`
calls these for CUDA tensors where Triton is installed (``pip install rnnkit[gpu]``); this module
is only imported then, or by its tests, which run the kernels on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``).

``BLOCK_H`` is a first choice, not yet measured on a GPU (issue 16): smaller blocks give more
programs, hence more memory requests in flight, to a walk that has T dependent steps.

Shapes: a, b (B, T, H); h0 (B, H) -> h (B, T, H). Any strides in B and T; unit stride in H.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

BLOCK_H = 32


@triton.jit
def _scan_forward(
    a_ptr, b_ptr, h0_ptr, h_ptr,
    steps, hidden,
    a_sb, a_st, b_sb, b_st, h0_sb, h_sb, h_st,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """h_t = a_t ⊙ h_{t−1} + b_t for one sequence's block of channels."""
    seq = tl.program_id(0).to(tl.int64)
    channels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = channels < hidden
    h = tl.load(h0_ptr + seq * h0_sb + channels, mask=inside, other=0.0).to(tl.float32)
    for t in range(steps):
        a = tl.load(a_ptr + seq * a_sb + t * a_st + channels, mask=inside, other=0.0)
        b = tl.load(b_ptr + seq * b_sb + t * b_st + channels, mask=inside, other=0.0)
        h = a.to(tl.float32) * h + b.to(tl.float32)
        tl.store(h_ptr + seq * h_sb + t * h_st + channels, h, mask=inside)


@triton.jit
def _scan_backward(
    a_ptr, h_ptr, h0_ptr, grad_h_ptr, grad_a_ptr, grad_b_ptr, grad_h0_ptr,
    steps, hidden,
    a_sb, a_st, h_sb, h_st, h0_sb, gh_sb, gh_st, g_sb, g_st,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """Back in time: g_t = ∂L/∂h_t + a_{t+1} ⊙ g_{t+1}; ∂L/∂b_t = g_t; ∂L/∂a_t = g_t ⊙ h_{t−1};
    ∂L/∂h_0 = a_1 ⊙ g_1. grad_a and grad_b share the strides g_sb, g_st."""
    seq = tl.program_id(0).to(tl.int64)
    channels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = channels < hidden
    h0 = tl.load(h0_ptr + seq * h0_sb + channels, mask=inside, other=0.0).to(tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    a_next = tl.zeros([BLOCK], dtype=tl.float32)  # a_{t+1}; nothing follows the last step
    for step in range(steps):
        t = steps - 1 - step
        grad_h = tl.load(grad_h_ptr + seq * gh_sb + t * gh_st + channels, mask=inside, other=0.0)
        g = grad_h.to(tl.float32) + a_next * g
        before = tl.maximum(t - 1, 0)  # h_{t−1}, or h0 at t = 0 (the address stays valid)
        h_prev = tl.load(h_ptr + seq * h_sb + before * h_st + channels, mask=inside, other=0.0)
        h_prev = tl.where(t > 0, h_prev.to(tl.float32), h0)
        tl.store(grad_b_ptr + seq * g_sb + t * g_st + channels, g, mask=inside)
        tl.store(grad_a_ptr + seq * g_sb + t * g_st + channels, g * h_prev, mask=inside)
        a_next = tl.load(a_ptr + seq * a_sb + t * a_st + channels, mask=inside, other=0.0)
        a_next = a_next.to(tl.float32)
    tl.store(grad_h0_ptr + seq * h0_sb + channels, a_next * g, mask=inside)


@triton.jit
def _mingru_forward(
    k_ptr, c_ptr, h0_ptr, h_ptr,
    steps, hidden,
    p_sb, p_st, h0_sb, h_sb, h_st,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """z_t = σ(k_t); h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t. k and h̃ share the strides p_*."""
    seq = tl.program_id(0).to(tl.int64)
    channels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = channels < hidden
    h = tl.load(h0_ptr + seq * h0_sb + channels, mask=inside, other=0.0).to(tl.float32)
    for t in range(steps):
        offset = seq * p_sb + t * p_st + channels
        z = tl.sigmoid(tl.load(k_ptr + offset, mask=inside, other=0.0).to(tl.float32))
        candidate = tl.load(c_ptr + offset, mask=inside, other=0.0).to(tl.float32)
        h = h + z * (candidate - h)
        tl.store(h_ptr + seq * h_sb + t * h_st + channels, h, mask=inside)


@triton.jit
def _mingru_backward(
    k_ptr, c_ptr, h_ptr, h0_ptr, grad_h_ptr, grad_k_ptr, grad_c_ptr, grad_h0_ptr,
    steps, hidden,
    p_sb, p_st, h_sb, h_st, h0_sb, gh_sb, gh_st, gp_sb, gp_st,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """Back in time, with a_t = 1 − z_t: g_t = ∂L/∂h_t + a_{t+1} ⊙ g_{t+1};
    ∂L/∂h̃_t = g_t ⊙ z_t; ∂L/∂k_t = g_t ⊙ (h̃_t − h_{t−1}) ⊙ z_t ⊙ (1 − z_t);
    ∂L/∂h_0 = a_1 ⊙ g_1. grad_k and grad_c share the strides gp_*."""
    seq = tl.program_id(0).to(tl.int64)
    channels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = channels < hidden
    h0 = tl.load(h0_ptr + seq * h0_sb + channels, mask=inside, other=0.0).to(tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    a_next = tl.zeros([BLOCK], dtype=tl.float32)
    for step in range(steps):
        t = steps - 1 - step
        offset = seq * p_sb + t * p_st + channels
        z = tl.sigmoid(tl.load(k_ptr + offset, mask=inside, other=0.0).to(tl.float32))
        candidate = tl.load(c_ptr + offset, mask=inside, other=0.0).to(tl.float32)
        grad_h = tl.load(grad_h_ptr + seq * gh_sb + t * gh_st + channels, mask=inside, other=0.0)
        g = grad_h.to(tl.float32) + a_next * g
        before = tl.maximum(t - 1, 0)
        h_prev = tl.load(h_ptr + seq * h_sb + before * h_st + channels, mask=inside, other=0.0)
        h_prev = tl.where(t > 0, h_prev.to(tl.float32), h0)
        out = seq * gp_sb + t * gp_st + channels
        tl.store(grad_c_ptr + out, g * z, mask=inside)
        tl.store(grad_k_ptr + out, g * (candidate - h_prev) * z * (1.0 - z), mask=inside)
        a_next = 1.0 - z
    tl.store(grad_h0_ptr + seq * h0_sb + channels, a_next * g, mask=inside)


def _unit_stride(x: Tensor) -> Tensor:
    """x with stride 1 in its last dimension, copied only if it has another."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _grid(batch: int, hidden: int) -> tuple[int, int]:
    return batch, triton.cdiv(hidden, BLOCK_H)


class LinearScan(torch.autograd.Function):
    """``h_t = a_t ⊙ h_{t−1} + b_t`` in one kernel each way, as
    :class:`rnnkit.scan.LinearScan` (same arguments, without a chunk size).

    ``LinearScan.apply(a, b, h0)``: a, b (B, T, H); h0 (B, H), one dtype -> h (B, T, H).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        a, b, h0 = _unit_stride(a), _unit_stride(b), h0.contiguous()
        batch, steps, hidden = a.shape
        h = torch.empty(a.shape, dtype=a.dtype, device=a.device)  # (B, T, H)
        _scan_forward[_grid(batch, hidden)](
            a, b, h0, h, steps, hidden,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), h0.stride(0),
            h.stride(0), h.stride(1),
            BLOCK=BLOCK_H,
        )  # fmt: skip
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, h, h0 = ctx.saved_tensors  # (B, T, H), (B, T, H), (B, H)
        grad_h = _unit_stride(grad_h.to(a.dtype))
        batch, steps, hidden = a.shape
        grad_a = torch.empty(a.shape, dtype=a.dtype, device=a.device)  # (B, T, H)
        grad_b = torch.empty_like(grad_a)  # (B, T, H)
        grad_h0 = torch.empty_like(h0)  # (B, H)
        _scan_backward[_grid(batch, hidden)](
            a, h, h0, grad_h, grad_a, grad_b, grad_h0, steps, hidden,
            a.stride(0), a.stride(1), h.stride(0), h.stride(1), h0.stride(0),
            grad_h.stride(0), grad_h.stride(1), grad_a.stride(0), grad_a.stride(1),
            BLOCK=BLOCK_H,
        )  # fmt: skip
        return grad_a, grad_b, grad_h0


class MinGRUScan(torch.autograd.Function):
    """MinGRU's recurrence from its projections in one kernel each way, as
    :class:`rnnkit.scan.MinGRUScan` (same arguments, without a chunk size).

    ``MinGRUScan.apply(projections, h0)``: projections (B, T, 2H), ``k`` then ``h̃``; h0 (B, H)
    -> h (B, T, H) in their promoted dtype. Gradients come back in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, projections: Tensor, h0: Tensor) -> Tensor:
        dtype = torch.promote_types(projections.dtype, h0.dtype)
        ctx.input_dtypes = projections.dtype, h0.dtype
        projections, h0 = _unit_stride(projections.to(dtype)), h0.to(dtype).contiguous()
        batch, steps, double = projections.shape
        hidden = double // 2
        k, candidate = projections.chunk(2, dim=-1)  # 2 × (B, T, H) views, the same strides
        h = torch.empty((batch, steps, hidden), dtype=dtype, device=projections.device)
        _mingru_forward[_grid(batch, hidden)](
            k, candidate, h0, h, steps, hidden,
            k.stride(0), k.stride(1), h0.stride(0), h.stride(0), h.stride(1),
            BLOCK=BLOCK_H,
        )  # fmt: skip
        ctx.save_for_backward(projections, h, h0)
        return h  # (B, T, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor) -> tuple[Tensor, Tensor]:
        projections, h, h0 = ctx.saved_tensors  # (B, T, 2H), (B, T, H), (B, H)
        grad_h = _unit_stride(grad_h.to(h.dtype))
        batch, steps, hidden = h.shape
        k, candidate = projections.chunk(2, dim=-1)  # 2 × (B, T, H) views
        grad = torch.empty(projections.shape, dtype=h.dtype, device=h.device)  # (B, T, 2H)
        grad_k, grad_candidate = grad.chunk(2, dim=-1)  # 2 × (B, T, H) views
        grad_h0 = torch.empty_like(h0)  # (B, H)
        _mingru_backward[_grid(batch, hidden)](
            k, candidate, h, h0, grad_h, grad_k, grad_candidate, grad_h0, steps, hidden,
            k.stride(0), k.stride(1), h.stride(0), h.stride(1), h0.stride(0),
            grad_h.stride(0), grad_h.stride(1), grad_k.stride(0), grad_k.stride(1),
            BLOCK=BLOCK_H,
        )  # fmt: skip
        return grad.to(ctx.input_dtypes[0]), grad_h0.to(ctx.input_dtypes[1])
