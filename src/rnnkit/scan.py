r"""The element-wise linear recurrence behind MinGRU and MinLSTM, computed in parallel over time.

Both minimal RNNs of Feng et al. (2024, "Were RNNs All We Needed?") reduce to

    h_t = a_t ⊙ h_{t−1} + b_t,      t = 1 … T,      h_0 given,

whose coefficients ``a_t`` and ``b_t`` depend on the input ``x_t`` only, never on ``h``, so all
``T`` states can be computed without stepping through time one step at a time.

``impl="loop"`` is the plain sequential reference: ``T`` steps, each over a ``(B, H)`` tensor,
differentiated by autograd.

``impl="scan"`` is a chunked scan that does the same multiplications and additions in a different
order ("reduce, carry, rescan"). The ``T`` steps are split into ``N = ⌈T / C⌉`` chunks of ``C``:

    1. reduce:  each chunk is one affine map  h_end = A ⊙ h_start + S,  with A = Π a_t over the
                chunk and S the chunk's final state when started from 0; C steps over
                (B, N, H) tensors give it for every chunk at once.
    2. carry:   N steps over (B, H) tensors give each chunk's true start state,
                h_start(n+1) = A_n ⊙ h_start(n) + S_n.
    3. rescan:  the recurrence itself, run in all chunks at once from their true start states;
                C steps over (B, N, H) tensors.

Python runs ``2C + N`` steps instead of ``T``, and the work stays O(B·T·H) (a doubling scan such as
Hillis–Steele does O(B·T·H·log C) and measured slower here). There are no logarithms, exponentials
or divisions, so the result is as exact as the sequential loop: the two differ only by the rounding
of reassociated products, and when ``|a_t| ≤ 1`` (always, in MinGRU and MinLSTM) no partial product
can overflow. The paper's log-space scan (``logcumsumexp``) is not used: it needs positive ``b_t``
(hence its ``g``) and a logarithm and an exponential per element, which cost far more on a CPU.

The backward pass is the same scan run backwards in time (``g_t`` is the total gradient of the loss
with respect to ``h_t``, ``∂L/∂h_t`` the part that arrives directly at ``h_t``):

    g_t = ∂L/∂h_t + a_{t+1} ⊙ g_{t+1},    g_{T+1} = 0
    ∂L/∂b_t = g_t,    ∂L/∂a_t = g_t ⊙ h_{t−1},    ∂L/∂h_0 = a_1 ⊙ g_1

so autograd keeps only ``a``, ``h`` and ``h_0`` for it, not the scan's intermediate values.

On CUDA, where Triton is installed, ``impl="scan"`` runs :mod:`rnnkit.scan_triton` instead: one
kernel walks all T steps of each channel in order (the chunk size has no meaning there).

Shapes: a, b (B, T, H); h0 (B, H)  ->  h (B, T, H), the state after every step.
"""

import importlib
import importlib.util
from functools import cache
from types import ModuleType
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from rnnkit import workspace

ScanImpl = Literal["scan", "loop"]

# The dtypes that the Triton kernels take (on CUDA): they compute in float32.
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Steps per chunk, by measurement (bench/scan.py, forward + backward, B=16, H=512, 2-core CPU):
# C = 32 was the fastest or within noise of it at T = 512 and 2048; C ≤ 8 and C ≥ 256 were slower.
DEFAULT_CHUNK_SIZE = 32


def linear_scan(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    *,
    impl: ScanImpl = "scan",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    r"""All states of the recurrence ``h_t = a_t ⊙ h_{t−1} + b_t`` (see the module docstring).

    Args:
        a: (B, T, H) coefficients that multiply the previous state.
        b: (B, T, H) terms added at each step.
        h0: (B, H) state before the first step; None means zeros. The recurrence runs in the
            promoted dtype of ``a``, ``b`` and ``h0``.
        impl: ``"scan"`` (chunked parallel scan with its own backward) or ``"loop"`` (one step at a
            time, differentiated by autograd). Both give the same numbers up to rounding.
        chunk_size: C, steps per chunk of the ``"scan"`` implementation.

    Returns:
        h: (B, T, H), ``h[:, t]`` is the state after step ``t``.
    """
    if impl not in ("scan", "loop"):
        raise ValueError(f"impl must be one of 'scan', 'loop'; got {impl!r}")
    if a.dim() != 3 or a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(
            f"a and b must both have shape (B, T, H) with T ≥ 1; "
            f"got a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}"
        )
    batch, _, hidden = a.shape
    if h0 is None:
        h0 = a.new_zeros(batch, hidden)  # (B, H)
    elif h0.shape != (batch, hidden):
        raise ValueError(
            f"h0 must have shape (B, H) = {(batch, hidden)} to match a and b; "
            f"got h0.shape={tuple(h0.shape)}"
        )
    # One dtype for all three, the one torch's own arithmetic would give: under autocast, bf16
    # coefficients with an fp32 state make an fp32 recurrence (as in the loop), not a bf16 one.
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype)
    a, b, h0 = a.to(dtype), b.to(dtype), h0.to(dtype)
    if impl == "loop":
        return _loop_scan(a, b, h0)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of steps; got {chunk_size}")
    if (kernels := _triton_kernels(a)) is not None:
        return kernels.LinearScan.apply(a, b, h0)
    return LinearScan.apply(a, b, h0, chunk_size)


def _triton_kernels(x: Tensor) -> ModuleType | None:
    """:mod:`rnnkit.scan_triton` (one kernel for all steps, no chunks) for a CUDA tensor of a
    dtype it computes exactly enough (not float64: its arithmetic is float32) and of fewer than
    2³¹ elements (its offsets are 32-bit), where Triton is installed; else None, and the chunked
    scan runs."""
    if not x.is_cuda or x.dtype not in TRITON_DTYPES or x.numel() >= 2**31:
        return None
    return _import_triton_kernels()


@cache
def _import_triton_kernels() -> ModuleType | None:
    if importlib.util.find_spec("triton") is None:
        return None
    return importlib.import_module("rnnkit.scan_triton")


class LinearScan(torch.autograd.Function):
    """``h_t = a_t ⊙ h_{t−1} + b_t`` by the chunked scan, with the reverse-time scan as backward.

    ``LinearScan.apply(a, b, h0, chunk_size)``: a, b (B, T, H); h0 (B, H) -> h (B, T, H).
    Differentiable once, with respect to ``a``, ``b`` and ``h0``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor, h0: Tensor, chunk_size: int) -> Tensor:
        h = _chunked_scan(a, b, h0, chunk_size, reverse=False)  # (B, T, H)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        a, h, h0 = ctx.saved_tensors  # (B, T, H), (B, T, H), (B, H)
        a_next = _append_steps(a[:, 1:], 1, 0.0)  # (B, T, H): a_{t+1}, and 0 after the last step
        g = _chunked_scan(
            a_next, grad_h, torch.zeros_like(h0), ctx.chunk_size, reverse=True
        )  # (B, T, H): g_t = ∂L/∂h_t + a_{t+1} ⊙ g_{t+1}
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(g)  # (B, T, H): g_t ⊙ h_{t−1}
            torch.mul(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
            torch.mul(g[:, 0], h0, out=grad_a[:, 0])
        if ctx.needs_input_grad[2]:
            grad_h0 = a[:, 0] * g[:, 0]  # (B, H)
        return grad_a, g, grad_h0, None


def _loop_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The recurrence one step at a time: a, b (B, T, H); h0 (B, H) -> (B, T, H)."""
    h = h0  # (B, H)
    states = []
    # unbind, not a[:, t]: its backward is one stack, where T selects would each add a (B, T, H)
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):
        h = a_t * h + b_t  # (B, H)
        states.append(h)
    return torch.stack(states, dim=1)  # (B, T, H)


def _chunked_scan(a: Tensor, b: Tensor, h0: Tensor, chunk_size: int, reverse: bool) -> Tensor:
    """Reduce, carry, rescan (module docstring), without autograd.

    Forwards: h_t = a_t ⊙ h_{t−1} + b_t from h_0 = h0. With ``reverse``: h_t = a_t ⊙ h_{t+1} + b_t
    from h_{T+1} = h0. a, b (B, T, H); h0 (B, H) -> (B, T, H).
    """
    steps = a.shape[1]
    chunk = min(chunk_size, steps)  # C
    num_chunks = -(-steps // chunk)  # N
    pad = num_chunks * chunk - steps
    if pad:  # steps with a = 1, b = 0 after the end leave every state unchanged
        a = _append_steps(a, pad, 1.0)  # (B, N·C, H)
        b = _append_steps(b, pad, 0.0)  # (B, N·C, H)
    a = a.unflatten(1, (num_chunks, chunk))  # (B, N, C, H)
    b = b.unflatten(1, (num_chunks, chunk))  # (B, N, C, H)
    positions = range(chunk - 1, -1, -1) if reverse else range(chunk)
    # With one chunk (C ≥ T), it starts from h0: steps 1 and 2 have nothing to do.
    start = h0.unsqueeze(1) if num_chunks == 1 else _chunk_starts(a, b, h0, reverse)  # (B, N, H)

    # 3. rescan: the recurrence inside all chunks at once, from their true start states.
    out = workspace.empty(b.shape, b)  # (B, N, C, H)
    h = start  # (B, N, H)
    for c in positions:
        h = torch.addcmul(b[:, :, c], a[:, :, c], h, out=out[:, :, c])  # (B, N, H)
    return out.flatten(1, 2)[:, :steps]  # (B, T, H)


def _chunk_starts(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """Steps 1 and 2 of the scan: the true start state of every chunk.

    a, b (B, N, C, H); h0 (B, H) -> (B, N, H); with ``reverse`` time runs backwards.
    """
    num_chunks, chunk = a.shape[1], a.shape[2]
    positions = range(chunk - 1, -1, -1) if reverse else range(chunk)
    chunks = range(num_chunks - 1, -1, -1) if reverse else range(num_chunks)
    # 1. reduce: every chunk as one affine map h_end = A ⊙ h_start + S.
    first, *rest = positions
    prod_a = a.prod(dim=2)  # (B, N, H): A
    total = b[:, :, first].clone()  # (B, N, H): S, built up step by step from a zero start
    for c in rest:
        torch.addcmul(b[:, :, c], a[:, :, c], total, out=total)

    # 2. carry: the true start state of every chunk.
    start = torch.empty_like(total)  # (B, N, H)
    h = h0  # (B, H)
    for n in chunks:
        start[:, n] = h
        h = torch.addcmul(total[:, n], prod_a[:, n], h)  # (B, H)
    return start


def _append_steps(x: Tensor, count: int, value: float) -> Tensor:
    """x (B, T, H) followed by ``count`` steps filled with ``value``: (B, T + count, H).

    One copy, where ``F.pad`` would first fill the whole result and then copy x into it.
    """
    filler = x.new_full((x.shape[0], count, x.shape[2]), value)  # (B, count, H)
    return torch.cat([x, filler], dim=1)  # (B, T + count, H)


def mingru_scan(projections: Tensor, h0: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    r"""MinGRU's recurrence straight from its input projections, by the chunked scan.

        z_t = σ(k_t)        h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t

    The same numbers as ``linear_scan(1 − z, z ⊙ h̃, h0)`` up to rounding, but one autograd node
    instead of five: the forward keeps only ``z``, the projections and the states, and the
    backward writes both gradients into one ``(B, T, 2H)`` tensor, the layout that the input
    projection's backward wants, with

        ∂L/∂h̃_t = g_t ⊙ z_t        ∂L/∂k_t = g_t ⊙ (h̃_t − h_{t−1}) ⊙ z_t ⊙ (1 − z_t)

    (``g_t`` as in the module docstring). At T = 2048 each ``(B, T, H)`` temporary is tens of
    megabytes, so the passes over memory that this saves are most of the time outside the
    projection's matrix products.

    Args:
        projections: (B, T, 2H), ``k_t`` (the update gate before σ) then ``h̃_t`` on the last
            dimension, as MinGRU's ``weight_ih`` packs them.
        h0: (B, H) state before the first step. The recurrence runs in the promoted dtype of
            ``projections`` and ``h0``.
        chunk_size: C, steps per chunk of the scan.

    Returns:
        h: (B, T, H), ``h[:, t]`` is the state after step ``t``.
    """
    if projections.dim() != 3 or projections.shape[2] % 2 or projections.shape[1] == 0:
        raise ValueError(
            f"projections must have shape (B, T, 2H) with T ≥ 1; got {tuple(projections.shape)}"
        )
    batch, _, double = projections.shape
    if h0.shape != (batch, double // 2):
        raise ValueError(
            f"h0 must have shape (B, H) = {(batch, double // 2)} to match the projections; "
            f"got h0.shape={tuple(h0.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of steps; got {chunk_size}")
    if (kernels := _triton_kernels(projections)) is not None:
        return kernels.MinGRUScan.apply(projections, h0)
    return MinGRUScan.apply(projections, h0, chunk_size)


class MinGRUScan(torch.autograd.Function):
    """:func:`mingru_scan` with its hand-written backward.

    ``MinGRUScan.apply(projections, h0, chunk_size)``: projections (B, T, 2H); h0 (B, H) ->
    h (B, T, H). Differentiable once, with respect to ``projections`` and ``h0``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, projections: Tensor, h0: Tensor, chunk_size: int) -> Tensor:
        dtype = torch.promote_types(projections.dtype, h0.dtype)
        ctx.input_dtypes = projections.dtype, h0.dtype
        projections, h0 = projections.to(dtype), h0.to(dtype)
        k, candidate = projections.chunk(2, dim=-1)  # 2 × (B, T, H) views
        z = torch.sigmoid(k, out=workspace.empty(k.shape, k))  # (B, T, H)
        a = torch.neg(z, out=workspace.empty(z.shape, z)).add_(1)  # (B, T, H): 1 − z
        b = torch.mul(z, candidate, out=workspace.empty(z.shape, z))  # (B, T, H): z ⊙ h̃
        h = _chunked_scan(a, b, h0, chunk_size, reverse=False)
        ctx.save_for_backward(z, projections, h, h0)
        ctx.chunk_size = chunk_size
        return h  # (B, T, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        z, projections, h, h0 = ctx.saved_tensors  # (B, T, H), (B, T, 2H), (B, T, H), (B, H)
        candidate = projections.chunk(2, dim=-1)[1]  # (B, T, H): h̃
        buffer = workspace.empty(z.shape, z)  # (B, T, H), reused below
        torch.neg(z[:, 1:], out=buffer[:, :-1]).add_(1)  # a_{t+1} = 1 − z_{t+1}
        buffer[:, -1] = 0  # no step after the last
        g = _chunked_scan(buffer, grad_h.to(z.dtype), torch.zeros_like(h0), ctx.chunk_size, True)
        grad = workspace.empty(projections.shape, projections)  # (B, T, 2H)
        grad_k, grad_candidate = grad.chunk(2, dim=-1)  # 2 × (B, T, H) views
        torch.mul(g, z, out=grad_candidate)  # ∂L/∂h̃ = g ⊙ z
        torch.sub(candidate[:, 1:], h[:, :-1], out=grad_k[:, 1:])  # h̃_t − h_{t−1}
        torch.sub(candidate[:, 0], h0, out=grad_k[:, 0])
        torch.addcmul(z, z, z, value=-1, out=buffer)  # σ'(k) = z (1 − z)
        grad_k.mul_(g).mul_(buffer)  # ∂L/∂k
        grad_h0 = None
        if ctx.needs_input_grad[1]:
            grad_h0 = (g[:, 0] - grad_candidate[:, 0]).to(ctx.input_dtypes[1])  # (1 − z_1) ⊙ g_1
        return grad.to(ctx.input_dtypes[0]), grad_h0, None
