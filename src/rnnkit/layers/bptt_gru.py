r"""Whole-sequence GRUs with hand-written BPTT: torch's form, Cho et al.'s, and the one-gate GRU.

The conventions (time-major buffers, ``h_t -> h_{t+1}``, dtypes under autocast, first-order
backward) are those of :mod:`rnnkit.layers.bptt`, whose helpers these Functions share.
"""

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from rnnkit import workspace
from rnnkit.layers.bptt import (
    run_without_autocast,
    sigmoid_grad,
    states_buffer,
    steps_of,
    sum_over_steps,
    tanh_grad,
)
from rnnkit.onednn import StepProduct


class GRUSequence(Function):
    r"""A GRU over a whole sequence, in torch's form (``b_hn`` inside the reset product).

    Forward, per step, with ``gates_x = W_ih x + b_ih`` packed (r, z, n) and
    ``m = W_hh h_t + b_hh`` (the recurrent product; its n part is saved for backward)::

        r = σ(x_r + m_r)    z = σ(x_z + m_z)    n = tanh(x_n + r ⊙ m_n)
        h_{t+1} = n + z ⊙ (h_t − n)

    Backward, per step in reverse, with ``dh = ∂L/∂h_{t+1}`` and ``a`` the arguments of σ and
    tanh (``a_n = x_n + r ⊙ m_n``)::

        da_n = dh ⊙ (1 − z) ⊙ tanh'(n)     da_z = dh ⊙ (h_t − n) ⊙ σ'(z)
        da_r = da_n ⊙ m_n ⊙ σ'(r)          dm_t = (da_r, da_z, da_n ⊙ r)
        dh_t = z ⊙ dh + dm_t W_hh
        dW_hh = Σ_t dm_tᵀ h_t      db_hh = Σ dm      d gates_x = (da_r, da_z, da_n)

    Inputs: gates_x (T, B, 3H), h0 (B, H), weight_hh (3H, H), bias_hh (3H,).  Output: hs (T, B, H).
    """

    @staticmethod
    def forward(
        ctx: Any, gates_x: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor
    ) -> Tensor:
        steps, batch, gates = gates_x.shape
        hidden = gates // 3
        hs = states_buffer(h0, steps)  # (T+1, B, H)
        # Backward needs only the n part of the recurrent product m; the whole m is one step's
        # scratch. (Saving all of m, as before, was 2-4% slower with the workspace and took 3x
        # the memory: bench/layers.py rows, same process.)
        rz_all = workspace.empty((steps, batch, 2 * hidden), gates_x)  # (T, B, 2H): r, z
        n_all = workspace.empty((steps, batch, hidden), gates_x)  # (T, B, H)
        m_n_all = workspace.empty((steps, batch, hidden), gates_x)  # (T, B, H): (W_hh h_t + b_hh)_n
        m = gates_x.new_empty(batch, gates)  # (B, 3H) W_hh h_t + b_hh of the current step
        m_rz, m_n = m.split([2 * hidden, hidden], dim=1)  # (B, 2H), (B, H)
        # addmm, not StepProduct: it writes m in place, where oneDNN's result would need a copy
        # that ate its gain (measured at H = 512).
        weight_hh_t = weight_hh.t()  # (H, 3H)
        per_step = steps_of(
            gates_x[..., : 2 * hidden], gates_x[..., 2 * hidden :], rz_all, n_all, m_n_all,
            hs[:-1], hs[1:],
        )  # fmt: skip
        for x_rz, x_n, rz, n, m_n_saved, h, h_next in per_step:
            torch.addmm(bias_hh, h, weight_hh_t, out=m)  # (B, 3H)
            torch.add(x_rz, m_rz, out=rz).sigmoid_()  # r, z
            r, z = rz.chunk(2, dim=1)  # 2 × (B, H)
            torch.addcmul(x_n, r, m_n, out=n).tanh_()
            torch.addcmul(n, z, h - n, out=h_next)  # h_{t+1} = n + z ⊙ (h_t − n)
            m_n_saved.copy_(m_n)
        ctx.save_for_backward(weight_hh, hs, rz_all, n_all, m_n_all)
        return hs[1:]  # (T, B, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        weight_hh, hs, rz_all, n_all, m_n_all = ctx.saved_tensors
        steps, batch, hidden = n_all.shape
        grad_x = workspace.empty((steps, batch, 3 * hidden), rz_all)  # (T, B, 3H): ∂L/∂gates_x
        grad_m_n_all = workspace.empty(n_all.shape, n_all)  # (T, B, H): ∂L/∂m_n
        grad_m = rz_all.new_empty(batch, 3 * hidden)  # (B, 3H): ∂L/∂m of the current step
        grad_rz, grad_m_n = grad_m.split([2 * hidden, hidden], dim=1)  # (B, 2H), (B, H)
        grad_r, grad_z = grad_rz.chunk(2, dim=1)  # 2 × (B, H)
        carry = torch.zeros_like(hs[0])  # (B, H) ∂L/∂h_{t+1} through step t+1
        backwards = StepProduct(weight_hh.t(), batch)  # dm ↦ dm W_hh
        per_step = steps_of(
            grad_out, hs[:-1], m_n_all, *rz_all.chunk(2, dim=2), n_all,
            grad_x[..., : 2 * hidden], grad_x[..., 2 * hidden :], grad_m_n_all,
        )  # fmt: skip
        for step in reversed(per_step):
            grad_out_t, h, m_n, r, z, n, grad_x_rz, grad_n, grad_m_n_saved = step
            dh = grad_out_t + carry  # (B, H)
            torch.mul(dh * (1 - z), tanh_grad(n), out=grad_n)
            torch.mul(grad_n * m_n, sigmoid_grad(r), out=grad_r)
            torch.mul(dh * (h - n), sigmoid_grad(z), out=grad_z)
            torch.mul(grad_n, r, out=grad_m_n)  # m_r, m_z enter r and z as x_r, x_z do
            grad_x_rz.copy_(grad_rz)
            grad_m_n_saved.copy_(grad_m_n)
            carry = backwards(grad_m, z * dh)  # (B, H)
        needs = ctx.needs_input_grad
        grad_weight_hh = grad_bias_hh = None
        if needs[2]:
            grad_weight_rz = sum_over_steps(grad_x[..., : 2 * hidden], hs[:-1])  # (2H, H)
            grad_weight_n = sum_over_steps(grad_m_n_all, hs[:-1])  # (H, H)
            grad_weight_hh = torch.cat([grad_weight_rz, grad_weight_n])  # (3H, H)
        if needs[3]:
            grad_bias_rz = grad_x[..., : 2 * hidden].sum((0, 1))  # (2H,)
            grad_bias_hh = torch.cat([grad_bias_rz, grad_m_n_all.sum((0, 1))])  # (3H,)
        return grad_x, carry, grad_weight_hh, grad_bias_hh


def gru_sequence(
    gates_x: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
) -> tuple[Tensor, Tensor]:
    """gates_x = W_ih x + b_ih (T, B, 3H), h0 (B, H) -> outputs (T, B, H), h_T (B, H).

    Without bias, ``bias_hh`` is a zero vector that needs no gradient.
    """
    dtype = gates_x.dtype
    bias = weight_hh.new_zeros(weight_hh.shape[0]) if bias_hh is None else bias_hh  # (3H,)
    args = (h0.to(dtype), weight_hh.to(dtype), bias.to(dtype))
    out = run_without_autocast(GRUSequence, gates_x, *args)  # (T, B, H)
    return out, out[-1]


class GRUResetBeforeSequence(Function):
    r"""A GRU over a whole sequence in Cho et al.'s form: ``r`` scales h before ``W_hn``.

    Forward, per step, with ``gates_x = W_ih x + b_ih + b_hh`` packed (r, z, n) and ``W_hh`` split
    into ``W_rz`` (2H, H) and ``W_n`` (H, H)::

        (r, z) = σ(x_rz + W_rz h_t)     n = tanh(x_n + W_n (r ⊙ h_t))
        h_{t+1} = n + z ⊙ (h_t − n)

    Backward, with ``dh = ∂L/∂h_{t+1}``::

        da_z = dh ⊙ (h_t − n) ⊙ σ'(z)      da_n = dh ⊙ (1 − z) ⊙ tanh'(n)
        d(r ⊙ h_t) = da_n W_n              da_r = d(r ⊙ h_t) ⊙ h_t ⊙ σ'(r)
        dh_t = z ⊙ dh + d(r ⊙ h_t) ⊙ r + (da_r, da_z) W_rz
        dW_rz = Σ_t (da_r, da_z)ᵀ h_t     dW_n = Σ_t da_nᵀ (r ⊙ h_t)     d gates_x = da

    Inputs: gates_x (T, B, 3H), h0 (B, H), weight_hh (3H, H).  Output: hs (T, B, H).
    """

    @staticmethod
    def forward(ctx: Any, gates_x: Tensor, h0: Tensor, weight_hh: Tensor) -> Tensor:
        hidden = gates_x.shape[2] // 3
        hs = states_buffer(h0, gates_x.shape[0])  # (T+1, B, H)
        acts = workspace.empty(gates_x.shape, gates_x)  # (T, B, 3H): r, z, n
        reset_hs = workspace.empty(hs[1:].shape, hs)  # (T, B, H): r ⊙ h_t
        weight_rz, weight_n = weight_hh.split([2 * hidden, hidden])  # (2H, H), (H, H)
        batch = h0.shape[0]
        recurrent_rz, recurrent_n = StepProduct(weight_rz, batch), StepProduct(weight_n, batch)
        x_rz_all, x_n_all = gates_x.split([2 * hidden, hidden], dim=2)  # (T, B, 2H), (T, B, H)
        rz_all, n_all = acts.split([2 * hidden, hidden], dim=2)  # (T, B, 2H), (T, B, H)
        per_step = steps_of(x_rz_all, x_n_all, rz_all, n_all, reset_hs, hs[:-1], hs[1:])
        for x_rz, x_n, rz, n, reset_h, h, h_next in per_step:
            torch.sigmoid(recurrent_rz(h, x_rz), out=rz)  # r, z
            r, z = rz.chunk(2, dim=1)  # 2 × (B, H)
            torch.mul(r, h, out=reset_h)  # (B, H)
            torch.tanh(recurrent_n(reset_h, x_n), out=n)
            torch.addcmul(n, z, h - n, out=h_next)  # h_{t+1} = n + z ⊙ (h_t − n)
        ctx.save_for_backward(weight_hh, hs, acts, reset_hs)
        return hs[1:]  # (T, B, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        weight_hh, hs, acts, reset_hs = ctx.saved_tensors
        hidden = acts.shape[2] // 3
        weight_rz, weight_n = weight_hh.split([2 * hidden, hidden])  # (2H, H), (H, H)
        grad_a = workspace.empty(acts.shape, acts)  # (T, B, 3H)
        grad_rz_all = grad_a[..., : 2 * hidden]  # (T, B, 2H)
        carry = torch.zeros_like(hs[0])  # (B, H) ∂L/∂h_{t+1} through step t+1
        batch = hs.shape[1]
        backwards_rz = StepProduct(weight_rz.t(), batch)  # d(r, z) ↦ d(r, z) W_rz
        backwards_n = StepProduct(weight_n.t(), batch)  # dn ↦ dn W_n
        per_step = steps_of(
            grad_out, hs[:-1], *acts.chunk(3, dim=2), *grad_a.chunk(3, dim=2), grad_rz_all
        )
        for grad_out_t, h, r, z, n, grad_r, grad_z, grad_n, grad_rz in reversed(per_step):
            dh = grad_out_t + carry  # (B, H)
            torch.mul(dh * (h - n), sigmoid_grad(z), out=grad_z)
            torch.mul(dh * (1 - z), tanh_grad(n), out=grad_n)
            grad_reset_h = backwards_n(grad_n)  # (B, H) ∂L/∂(r ⊙ h_t)
            torch.mul(grad_reset_h * h, sigmoid_grad(r), out=grad_r)
            carry = backwards_rz(grad_rz, torch.addcmul(z * dh, grad_reset_h, r))  # (B, H)
        grad_weight_hh = None
        if ctx.needs_input_grad[2]:
            grad_weight_rz = sum_over_steps(grad_rz_all, hs[:-1])  # (2H, H)
            grad_weight_n = sum_over_steps(grad_a[..., 2 * hidden :], reset_hs)  # (H, H)
            grad_weight_hh = torch.cat([grad_weight_rz, grad_weight_n])  # (3H, H)
        return grad_a, carry, grad_weight_hh


def gru_reset_before_sequence(
    gates_x: Tensor, h0: Tensor, weight_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """gates_x (T, B, 3H) from :func:`rnnkit.cells.input_gates`, h0 (B, H) -> outputs, h_T."""
    dtype = gates_x.dtype
    out = run_without_autocast(GRUResetBeforeSequence, gates_x, h0.to(dtype), weight_hh.to(dtype))
    return out, out[-1]


class GRUOneGateSequence(Function):
    r"""The simplified GRU (update gate only) over a whole sequence.

    Forward, per step, on ``a = gates_x_t + W_hh h_t`` packed (z, n) (``gates_x`` holds both
    biases)::

        z = σ(a_z)    n = tanh(a_n)    h_{t+1} = n + z ⊙ (h_t − n)

    Backward, with ``dh = ∂L/∂h_{t+1}``::

        da_t = dh ⊙ ((h_t − n) ⊙ σ'(z), (1 − z) ⊙ tanh'(n))
        dh_t = z ⊙ dh + da_t W_hh          dW_hh = Σ_t da_tᵀ h_t       d gates_x = da

    Inputs: gates_x (T, B, 2H), h0 (B, H), weight_hh (2H, H).  Output: hs (T, B, H).
    """

    @staticmethod
    def forward(ctx: Any, gates_x: Tensor, h0: Tensor, weight_hh: Tensor) -> Tensor:
        hs = states_buffer(h0, gates_x.shape[0])  # (T+1, B, H)
        acts = workspace.empty(gates_x.shape, gates_x)  # (T, B, 2H): z, n
        recurrent = StepProduct(weight_hh, h0.shape[0])  # h ↦ x_t + W_hh h
        per_step = steps_of(gates_x, *acts.chunk(2, dim=2), hs[:-1], hs[1:])
        for x_t, z, n, h, h_next in per_step:
            a_z, a_n = recurrent(h, x_t).chunk(2, dim=1)  # 2 × (B, H) pre-activations
            torch.sigmoid(a_z, out=z)
            torch.tanh(a_n, out=n)
            torch.addcmul(n, z, h - n, out=h_next)  # h_{t+1} = n + z ⊙ (h_t − n)
        ctx.save_for_backward(weight_hh, hs, acts)
        return hs[1:]  # (T, B, H)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        weight_hh, hs, acts = ctx.saved_tensors
        grad_a = workspace.empty(acts.shape, acts)  # (T, B, 2H)
        carry = torch.zeros_like(hs[0])  # (B, H) ∂L/∂h_{t+1} through step t+1
        backwards = StepProduct(weight_hh.t(), hs.shape[1])  # da ↦ da W_hh
        per_step = steps_of(
            grad_out, hs[:-1], *acts.chunk(2, dim=2), grad_a, *grad_a.chunk(2, dim=2)
        )
        for grad_out_t, h, z, n, grad_a_t, grad_z, grad_n in reversed(per_step):
            dh = grad_out_t + carry  # (B, H)
            torch.mul(dh * (h - n), sigmoid_grad(z), out=grad_z)
            torch.mul(dh * (1 - z), tanh_grad(n), out=grad_n)
            carry = backwards(grad_a_t, z * dh)  # (B, H)
        grad_weight_hh = sum_over_steps(grad_a, hs[:-1]) if ctx.needs_input_grad[2] else None
        return grad_a, carry, grad_weight_hh


def gru_one_gate_sequence(gates_x: Tensor, h0: Tensor, weight_hh: Tensor) -> tuple[Tensor, Tensor]:
    """gates_x (T, B, 2H) from :func:`rnnkit.cells.input_gates`, h0 (B, H) -> outputs, h_T."""
    dtype = gates_x.dtype
    out = run_without_autocast(GRUOneGateSequence, gates_x, h0.to(dtype), weight_hh.to(dtype))
    return out, out[-1]
