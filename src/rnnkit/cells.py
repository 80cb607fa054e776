r"""One time step of each recurrent cell: RNN, GRU (three forms) and LSTM (projection, peephole).

Every equation lives once, in a small pure function below; the cell modules, the time loop of
:mod:`rnnkit.layers` and the layers' single-step path for sampling all call these functions.

Two kinds of step function exist, by what the recurrent product needs:

* **summed gates** (RNN, LSTM, the one-gate GRU): the pre-activations are one sum
  ``W_ih x + b_ih + W_hh h + b_hh``. ``*_update(gates, ...)`` holds the equations on that sum, and
  ``*_step(gates_x, state, weight_hh, ...)`` adds ``W_hh h`` to ``gates_x``, which must already
  hold *both* biases (``W_ih x + b_ih + b_hh``; see :func:`input_gates`), so that a step is one
  ``addmm`` followed by the update.
* **split gates** (GRU with a reset gate): ``r`` multiplies part of the recurrent product, so
  ``gru_step`` / ``gru_reset_before_step`` take ``gates_x = W_ih x + b_ih`` and add ``b_hh``
  themselves.

Parameters use torch's names, shapes and gate order (LSTM ``i, f, g, o``; GRU ``r, z, n``), so the
state dict of a ``torch.nn.RNNCell`` / ``GRUCell`` / ``LSTMCell`` loads unchanged.
"""

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Nonlinearity = Literal["tanh", "relu"]
LSTMState = tuple[Tensor, Tensor]
Peephole = tuple[Tensor, Tensor, Tensor]


def input_gates(
    x: Tensor,
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    linear: Callable[..., Tensor] = F.linear,
) -> Tensor:
    """``W_ih x + b_ih + b_hh``: the part of a summed-gate step that does not depend on ``h``.

    ``linear`` computes the product; the layers' whole-sequence path passes
    :func:`rnnkit.onednn.linear`, the same numbers faster on CPU.

    Shapes: x (..., D), weight_ih (G·H, D), biases (G·H,) or None  ->  (..., G·H).
    """
    bias = None if bias_ih is None or bias_hh is None else bias_ih + bias_hh  # (G·H,)
    return linear(x, weight_ih, bias)  # (..., G·H)


# --- Elman RNN ---------------------------------------------------------------------------------


def rnn_update(gates: Tensor, nonlinearity: Nonlinearity) -> Tensor:
    """h' = tanh(gates) or relu(gates); gates = W_ih x + b_ih + W_hh h + b_hh.  (B, H) -> (B, H)"""
    return torch.tanh(gates) if nonlinearity == "tanh" else torch.relu(gates)


def rnn_step(gates_x: Tensor, h: Tensor, weight_hh: Tensor, nonlinearity: Nonlinearity) -> Tensor:
    """One RNN step: gates_x (B, H) from :func:`input_gates`, h (B, H), weight_hh (H, H) -> h'."""
    return rnn_update(torch.addmm(gates_x, h, weight_hh.t()), nonlinearity)


# --- GRU -------------------------------------------------------------------------------------


def gru_step(gates_x: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None) -> Tensor:
    """One GRU step in torch's form (reset after the recurrent product: ``b_hn`` inside ``r ⊙``).

    gates_x = W_ih x + b_ih (B, 3H), h (B, H), weight_hh (3H, H), bias_hh (3H,) or None -> (B, H).
    """
    gates_h = F.linear(h, weight_hh, bias_hh)  # (B, 3H)
    x_rz, x_n = gates_x.split([2 * h.shape[1], h.shape[1]], dim=1)  # (B, 2H), (B, H)
    h_rz, h_n = gates_h.split([2 * h.shape[1], h.shape[1]], dim=1)  # (B, 2H), (B, H)
    r, z = torch.sigmoid(x_rz + h_rz).chunk(2, dim=1)  # 2 × (B, H)
    n = torch.tanh(x_n + r * h_n)  # (B, H)
    return gru_blend(n, z, h)


def gru_reset_before_step(
    gates_x: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
) -> Tensor:
    """One GRU step in Cho et al.'s form: ``r`` multiplies ``h`` before ``W_hn``.

    gates_x = W_ih x + b_ih (B, 3H), h (B, H), weight_hh (3H, H), bias_hh (3H,) or None -> (B, H).
    """
    hidden = h.shape[1]
    w_rz, w_n = weight_hh.split([2 * hidden, hidden])  # (2H, H), (H, H)
    # (2H,), (H,) or None
    b_rz, b_n = (None, None) if bias_hh is None else bias_hh.split([2 * hidden, hidden])
    x_rz, x_n = gates_x.split([2 * hidden, hidden], dim=1)  # (B, 2H), (B, H)
    r, z = torch.sigmoid(x_rz + F.linear(h, w_rz, b_rz)).chunk(2, dim=1)  # 2 × (B, H)
    n = torch.tanh(x_n + F.linear(r * h, w_n, b_n))  # (B, H)
    return gru_blend(n, z, h)


def gru_minimal_update(gates: Tensor, h: Tensor) -> Tensor:
    """The one-gate GRU on summed gates (B, 2H) packed (z, n); h (B, H) -> (B, H)."""
    z, n = gates.chunk(2, dim=1)  # 2 × (B, H)
    return gru_blend(torch.tanh(n), torch.sigmoid(z), h)


def gru_minimal_step(gates_x: Tensor, h: Tensor, weight_hh: Tensor) -> Tensor:
    """One step of the one-gate GRU. gates_x (B, 2H) from :func:`input_gates`, weight_hh (2H, H)."""
    return gru_minimal_update(torch.addmm(gates_x, h, weight_hh.t()), h)


def gru_blend(n: Tensor, z: Tensor, h: Tensor) -> Tensor:
    """h' = (1 − z) ⊙ n + z ⊙ h, written as n + z ⊙ (h − n) as torch does.  (B, H) each."""
    return n + z * (h - n)


# --- LSTM ------------------------------------------------------------------------------------


def lstm_update(
    gates: Tensor,
    c: Tensor,
    weight_hr: Tensor | None = None,
    peephole: Peephole | None = None,
) -> LSTMState:
    """The LSTM equations on summed gates (B, 4H) packed (i, f, g, o) and the cell c (B, H).

    With ``peephole = (w_ci, w_cf, w_co)``, each (H,), ``w_ci ⊙ c`` and ``w_cf ⊙ c`` are added to
    the i and f pre-activations and ``w_co ⊙ c'`` to o. With ``weight_hr`` (P, H), the returned h
    is projected to (B, P). Returns (h', c').
    """
    if peephole is None:  # few ops, for the one-step path: one sigmoid for all gates
        i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)  # 4 × (B, H), g's sigmoid unused
        g = gates.narrow(1, 2 * c.shape[1], c.shape[1])  # (B, H)
        c = torch.addcmul(f * c, i, torch.tanh(g))  # (B, H)
        h = o * torch.tanh(c)  # (B, H)
        return h if weight_hr is None else F.linear(h, weight_hr), c  # (B, P or H), (B, H)
    i, f, g, o = gates.chunk(4, dim=1)  # 4 × (B, H)
    w_ci, w_cf, w_co = peephole
    i = i + w_ci * c  # (B, H)
    f = f + w_cf * c  # (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    o = o + w_co * c  # (B, H)
    h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
    if weight_hr is not None:
        h = F.linear(h, weight_hr)  # (B, P)
    return h, c


def lstm_step(
    gates_x: Tensor,
    state: LSTMState,
    weight_hh: Tensor,
    weight_hr: Tensor | None = None,
    peephole: Peephole | None = None,
) -> LSTMState:
    """One LSTM step. gates_x (B, 4H) from :func:`input_gates`, state (h (B, P or H), c (B, H)),
    weight_hh (4H, P or H) -> (h', c')."""
    h, c = state
    return lstm_update(torch.addmm(gates_x, h, weight_hh.t()), c, weight_hr, peephole)


# --- The gates of one step, for inspection ------------------------------------------------------
#
# The same equations as the step functions above, written out once more so that the gates after
# their nonlinearity come back with the new state (rnnkit.inspect reads them; tests/unit/
# test_inspect_steps.py checks that the states equal the step functions' to the last bit). The
# step functions above stay the ones that training and sampling run.

GRUGates = tuple[Tensor, Tensor]
"""(r, z) of a GRU step, each (B, H), after σ."""


def gru_step_gates(
    gates_x: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
) -> tuple[Tensor, GRUGates]:
    """:func:`gru_step` returning (h', (r, z)).  gates_x (B, 3H), h (B, H) -> (B, H), 2 × (B, H)."""
    gates_h = F.linear(h, weight_hh, bias_hh)  # (B, 3H)
    x_rz, x_n = gates_x.split([2 * h.shape[1], h.shape[1]], dim=1)  # (B, 2H), (B, H)
    h_rz, h_n = gates_h.split([2 * h.shape[1], h.shape[1]], dim=1)  # (B, 2H), (B, H)
    r, z = torch.sigmoid(x_rz + h_rz).chunk(2, dim=1)  # 2 × (B, H)
    n = torch.tanh(x_n + r * h_n)  # (B, H)
    return gru_blend(n, z, h), (r, z)


def gru_reset_before_step_gates(
    gates_x: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
) -> tuple[Tensor, GRUGates]:
    """:func:`gru_reset_before_step` returning (h', (r, z)); shapes as there."""
    hidden = h.shape[1]
    w_rz, w_n = weight_hh.split([2 * hidden, hidden])  # (2H, H), (H, H)
    # (2H,), (H,) or None
    b_rz, b_n = (None, None) if bias_hh is None else bias_hh.split([2 * hidden, hidden])
    x_rz, x_n = gates_x.split([2 * hidden, hidden], dim=1)  # (B, 2H), (B, H)
    r, z = torch.sigmoid(x_rz + F.linear(h, w_rz, b_rz)).chunk(2, dim=1)  # 2 × (B, H)
    n = torch.tanh(x_n + F.linear(r * h, w_n, b_n))  # (B, H)
    return gru_blend(n, z, h), (r, z)


def gru_minimal_step_gates(
    gates_x: Tensor, h: Tensor, weight_hh: Tensor
) -> tuple[Tensor, tuple[Tensor]]:
    """:func:`gru_minimal_step` returning (h', (z,)).  gates_x (B, 2H), h (B, H)."""
    z, n = torch.addmm(gates_x, h, weight_hh.t()).chunk(2, dim=1)  # 2 × (B, H)
    z = torch.sigmoid(z)  # (B, H)
    return gru_blend(torch.tanh(n), z, h), (z,)


LSTMGates = tuple[Tensor, Tensor, Tensor]
"""(i, f, o) of an LSTM step, each (B, H), after σ (peepholes included)."""


def lstm_step_gates(
    gates_x: Tensor,
    state: LSTMState,
    weight_hh: Tensor,
    weight_hr: Tensor | None = None,
    peephole: Peephole | None = None,
) -> tuple[LSTMState, LSTMGates]:
    """:func:`lstm_step` returning ((h', c'), (i, f, o)); shapes as there."""
    h, c = state
    gates = torch.addmm(gates_x, h, weight_hh.t())  # (B, 4H)
    if peephole is None:  # as lstm_update, operation for operation
        i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)  # 4 × (B, H), g's sigmoid unused
        g = gates.narrow(1, 2 * c.shape[1], c.shape[1])  # (B, H)
        c = torch.addcmul(f * c, i, torch.tanh(g))  # (B, H)
    else:
        i, f, g, o = gates.chunk(4, dim=1)  # 4 × (B, H)
        w_ci, w_cf, w_co = peephole
        i = torch.sigmoid(i + w_ci * c)  # (B, H)
        f = torch.sigmoid(f + w_cf * c)  # (B, H)
        c = f * c + i * torch.tanh(g)  # (B, H)
        o = torch.sigmoid(o + w_co * c)  # (B, H)
    h = o * torch.tanh(c)  # (B, H)
    if weight_hr is not None:
        h = F.linear(h, weight_hr)  # (B, P)
    return (h, c), (i, f, o)


def mingru_gates(projections: Tensor) -> tuple[Tensor, Tensor]:
    """MinGRU's update gate and candidate from ``Linear(x)`` packed (z, h̃):
    (..., 2H) -> z = σ(k) (..., H), h̃ (..., H); then h_t = (1 − z) ⊙ h_{t−1} + z ⊙ h̃."""
    k, candidate = projections.chunk(2, dim=-1)  # 2 × (..., H)
    return torch.sigmoid(k), candidate


def minlstm_gates(projections: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """MinLSTM's normalised gates and candidate from ``Linear(x)`` packed (f, i, h̃):
    (..., 3H) -> f' (..., H), i' = 1 − f' (..., H), h̃ (..., H); then h_t = f' ⊙ h_{t−1} + i' ⊙ h̃.

    ``f' = f / (f + i)`` is computed as ``σ(log σ(k_f) − log σ(k_i))``, as the layer does."""
    k_f, k_i, candidate = projections.chunk(3, dim=-1)  # 3 × (..., H)
    f_norm = torch.sigmoid(F.logsigmoid(k_f) - F.logsigmoid(k_i))  # (..., H)
    return f_norm, 1 - f_norm, candidate


# --- Cell modules ----------------------------------------------------------------------------


class _Cell(nn.Module):
    """Parameters, initialisation and input checks shared by the three cells."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_gates: int,
        state_size: int,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"{type(self).__name__}: input_size and hidden_size must be positive; "
                f"got input_size={input_size}, hidden_size={hidden_size}"
            )
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate_size = num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gate_size, input_size, **factory))  # (G·H, D)
        self.weight_hh = nn.Parameter(torch.empty(gate_size, state_size, **factory))  # (G·H, H)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))  # (G·H,)
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))  # (G·H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(−1/√H, 1/√H), as torch initialises its cells."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def _batched(self, x: Tensor) -> tuple[Tensor, bool]:
        """Check x is (B, D) or (D,); return it as (B, D) and whether it was batched."""
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}(input_size={self.input_size}) expects input of shape "
                f"(B, {self.input_size}) or ({self.input_size},); got x.shape={tuple(x.shape)}"
            )
        return (x, True) if x.dim() == 2 else (x.unsqueeze(0), False)  # (B, D)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor | LSTMState:
        """Zeros of shape (B, H), on the weights' device and dtype unless given (LSTM: a pair)."""
        return self._zeros(batch_size, self.hidden_size, device, dtype)

    def _zeros(
        self,
        batch_size: int,
        size: int,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> Tensor:
        return torch.zeros(
            batch_size,
            size,
            device=device or self.weight_ih.device,
            dtype=dtype or self.weight_ih.dtype,
        )  # (B, size)

    def _check_state(self, state: Tensor, batch_size: int, size: int, batched: bool) -> Tensor:
        """Check a state tensor against the input's batch; return it as (B, size)."""
        expected = (batch_size, size) if batched else (size,)
        if tuple(state.shape) != expected:
            raise ValueError(
                f"{type(self).__name__} expects a state of shape {expected} for this input; "
                f"got {tuple(state.shape)}"
            )
        return state if batched else state.unsqueeze(0)  # (B, size)


class RNNCell(_Cell):
    r"""One time step of an Elman RNN, drop-in for ``torch.nn.RNNCell``.

        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)        (relu instead of tanh if asked)

    Args:
        input_size: D, features per input step.
        hidden_size: H, features in ``h``.
        bias: if False, the cell has no ``bias_ih`` / ``bias_hh``.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Parameters: weight_ih (H, D), weight_hh (H, H), bias_ih and bias_hh (H,).

    Shapes:
        x: (B, D) or (D,);  h: (B, H) or (H,), zeros if None  ->  h': like h
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: Nonlinearity = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, 1, hidden_size, device, dtype)
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """x (B, D) or (D,), h (B, H) or (H,) or None -> h' (B, H) or (H,)."""
        x, batched = self._batched(input)  # (B, D)
        h = self.init_state(x.shape[0], device=x.device, dtype=x.dtype) if hx is None else hx
        h = self._check_state(h, x.shape[0], self.hidden_size, batched or hx is None)  # (B, H)
        gates_x = input_gates(x, self.weight_ih, self.bias_ih, self.bias_hh)  # (B, H)
        h = rnn_step(gates_x, h, self.weight_hh, self.nonlinearity)  # (B, H)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bias={self.bias}, "
            f"nonlinearity={self.nonlinearity!r}"
        )


class GRUCell(_Cell):
    r"""One time step of a gated recurrent unit, drop-in for ``torch.nn.GRUCell``.

    ``reset_after=True`` (torch's and cuDNN's form; ``b_hn`` sits inside the reset product)::

        r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    ``reset_after=False`` (Cho et al. 2014, as in Ng's course): ``r`` scales ``h`` before ``W_hn``::

        n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)

    ``reset_gate=False`` is the simplified GRU with the update gate only (no ``r``; both forms
    then coincide, so ``reset_after`` has no effect)::

        z = σ(W_iz x + b_iz + W_hz h + b_hz)      n = tanh(W_in x + b_in + W_hn h + b_hn)
        h' = (1 − z) ⊙ n + z ⊙ h

    Args:
        input_size: D, features per input step.
        hidden_size: H, features in ``h``.
        bias: if False, the cell has no ``bias_ih`` / ``bias_hh``.
        reset_after: where the reset gate acts, as above.
        reset_gate: if False, drop ``r``: weights are (2H, ·) packed (z, n).

    Parameters: weight_ih (3H, D), weight_hh (3H, H), bias_ih and bias_hh (3H,), packed (r, z, n).

    Shapes:
        x: (B, D) or (D,);  h: (B, H) or (H,), zeros if None  ->  h': like h
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        reset_after: bool = True,
        reset_gate: bool = True,
    ) -> None:
        num_gates = 3 if reset_gate else 2
        super().__init__(input_size, hidden_size, bias, num_gates, hidden_size, device, dtype)
        self.reset_after = reset_after
        self.reset_gate = reset_gate
        self.reset_parameters()

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """x (B, D) or (D,), h (B, H) or (H,) or None -> h' (B, H) or (H,)."""
        x, batched = self._batched(input)  # (B, D)
        h = self.init_state(x.shape[0], device=x.device, dtype=x.dtype) if hx is None else hx
        h = self._check_state(h, x.shape[0], self.hidden_size, batched or hx is None)  # (B, H)
        if not self.reset_gate:
            gates_x = input_gates(x, self.weight_ih, self.bias_ih, self.bias_hh)  # (B, 2H)
            h = gru_minimal_step(gates_x, h, self.weight_hh)  # (B, H)
        else:
            gates_x = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 3H)
            step = gru_step if self.reset_after else gru_reset_before_step
            h = step(gates_x, h, self.weight_hh, self.bias_hh)  # (B, H)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bias={self.bias}, "
            f"reset_after={self.reset_after}, reset_gate={self.reset_gate}"
        )


class LSTMCell(_Cell):
    r"""One time step of a long short-term memory cell, drop-in for ``torch.nn.LSTMCell``.

        i = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f ⊙ c + i ⊙ g                        h' = o ⊙ tanh(c')

    With ``proj_size = P > 0`` (as ``torch.nn.LSTM``): ``h' = W_hr (o ⊙ tanh(c'))``, so h is
    (B, P) and ``weight_hh`` is (4H, P).

    With ``peephole=True`` (Gers & Schmidhuber 2000), diagonal weights let the gates see the cell:
    ``w_ci ⊙ c`` and ``w_cf ⊙ c`` are added inside i and f, and ``w_co ⊙ c'`` inside o. They are
    the parameters ``weight_ci``, ``weight_cf``, ``weight_co`` (H,) and are initialised like every
    other parameter, U(−1/√H, 1/√H); zero them for a cell that starts as a plain LSTM.

    Gates are packed in torch's order (i, f, g, o): ``weight_ih`` is (4H, D).

    Args:
        input_size: D, features per input step.
        hidden_size: H, features in ``c`` (and in ``h`` without projection).
        bias: if False, the cell has no ``bias_ih`` / ``bias_hh``.
        proj_size: P; 0 for no projection.
        peephole: add the peephole connections above.

    Shapes:
        x: (B, D) or (D,);  state: (h (B, P or H), c (B, H)) or unbatched, zeros if None
        ->  (h', c') like the state
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        proj_size: int = 0,
        peephole: bool = False,
    ) -> None:
        if not 0 <= proj_size < hidden_size:
            raise ValueError(
                f"LSTMCell: proj_size must be in [0, hidden_size={hidden_size}); got {proj_size}"
            )
        state_size = proj_size or hidden_size
        super().__init__(input_size, hidden_size, bias, 4, state_size, device, dtype)
        factory = {"device": device, "dtype": dtype}
        self.proj_size = proj_size
        self.peephole = peephole
        if proj_size:
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, **factory))  # (P, H)
        else:
            self.register_parameter("weight_hr", None)
        if peephole:
            self.weight_ci = nn.Parameter(torch.empty(hidden_size, **factory))  # (H,)
            self.weight_cf = nn.Parameter(torch.empty(hidden_size, **factory))  # (H,)
            self.weight_co = nn.Parameter(torch.empty(hidden_size, **factory))  # (H,)
        self.reset_parameters()

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> LSTMState:
        """Zeros (h (B, P or H), c (B, H)), on the weights' device and dtype unless given."""
        h = self._zeros(batch_size, self.proj_size or self.hidden_size, device, dtype)
        return h, self._zeros(batch_size, self.hidden_size, device, dtype)

    def forward(self, input: Tensor, hx: LSTMState | None = None) -> LSTMState:
        """x (B, D) or (D,), (h, c) or None -> (h', c'), batched like x."""
        x, batched = self._batched(input)  # (B, D)
        state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype) if hx is None else hx
        state_batched = batched or hx is None
        h = self._check_state(
            state[0], x.shape[0], self.proj_size or self.hidden_size, state_batched
        )
        c = self._check_state(state[1], x.shape[0], self.hidden_size, state_batched)  # (B, H)
        gates_x = input_gates(x, self.weight_ih, self.bias_ih, self.bias_hh)  # (B, 4H)
        peephole = (self.weight_ci, self.weight_cf, self.weight_co) if self.peephole else None
        h, c = lstm_step(gates_x, (h, c), self.weight_hh, self.weight_hr, peephole)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bias={self.bias}, "
            f"proj_size={self.proj_size}, peephole={self.peephole}"
        )
