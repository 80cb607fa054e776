r"""One time step of each cell, forward and backward, in NumPy float64.

Every step works on a batch of B rows. The input-to-hidden product of all steps is computed
before the time loop (``CharRNN`` indexes ``weight_ih`` with the token ids, which equals the
one-hot product ``W_ih x``), so a step receives ``xw = W_ih x_t + b_ih`` of shape (B, G·H) and
only the recurrent product ``hw = W_hh h + b_hh`` and the gate arithmetic happen here.

A state is a tuple: ``(h,)`` for rnn and gru, ``(h, c)`` for lstm, each (B, H). The backward
step takes the gradient of the loss w.r.t. the new state (same tuple layout) and returns

    d_xw      (B, G·H)  gradient w.r.t. xw, from which the caller forms d weight_ih, d bias_ih
    d_hw      (B, G·H)  gradient w.r.t. hw, from which the caller forms d weight_hh, d bias_hh
    d_state   the gradient w.r.t. the previous state, same layout as the state

so the weight gradients of all steps are formed with one matmul after the loop, mirroring the
forward pass. Gate order and packing are torch's: rnn (1 gate), gru (r, z, n), lstm (i, f, g, o).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

State = tuple[np.ndarray, ...]
Cache = tuple[np.ndarray, ...]


def sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^(−a)), element-wise; any shape."""
    return 1.0 / (1.0 + np.exp(-a))


# --- vanilla RNN --------------------------------------------------------------------------------


def rnn_step_forward(
    xw: np.ndarray, state: State, weight_hh: np.ndarray, bias_hh: np.ndarray
) -> tuple[State, Cache]:
    r"""h' = tanh(W_ih x + b_ih + W_hh h + b_hh).

    Shapes: xw (B, H); state ((B, H),); weight_hh (H, H); bias_hh (H,) -> state ((B, H),).
    """
    (h,) = state  # (B, H)
    h_new = np.tanh(xw + h @ weight_hh.T + bias_hh)  # (B, H)
    return (h_new,), (h_new,)


def rnn_step_backward(
    d_state: State, cache: Cache, weight_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, State]:
    r"""Backward of :func:`rnn_step_forward`: da = dh' ⊙ (1 − h'²);  dh = W_hhᵀ da.

    Shapes: d_state ((B, H),) -> d_xw (B, H), d_hw (B, H), d_state ((B, H),).
    """
    (dh_new,) = d_state  # (B, H)
    (h_new,) = cache  # (B, H)
    da = dh_new * (1.0 - h_new**2)  # (B, H)  through tanh
    dh = da @ weight_hh  # (B, H)
    return da, da, (dh,)


# --- GRU ----------------------------------------------------------------------------------------


def gru_step_forward(
    xw: np.ndarray, state: State, weight_hh: np.ndarray, bias_hh: np.ndarray
) -> tuple[State, Cache]:
    r"""One GRU step in torch's form (``b_hn`` sits inside the reset product).

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    Shapes: xw (B, 3H); state ((B, H),); weight_hh (3H, H); bias_hh (3H,) -> state ((B, H),).
    """
    (h,) = state  # (B, H)
    H = h.shape[-1]
    hw = h @ weight_hh.T + bias_hh  # (B, 3H)
    r = sigmoid(xw[:, :H] + hw[:, :H])  # (B, H)
    z = sigmoid(xw[:, H : 2 * H] + hw[:, H : 2 * H])  # (B, H)
    hn = hw[:, 2 * H :]  # (B, H)  W_hn h + b_hn
    n = np.tanh(xw[:, 2 * H :] + r * hn)  # (B, H)
    h_new = (1.0 - z) * n + z * h  # (B, H)
    return (h_new,), (h, r, z, n, hn)


def gru_step_backward(
    d_state: State, cache: Cache, weight_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, State]:
    r"""Backward of :func:`gru_step_forward`.

        dn = dh' ⊙ (1 − z)      dz = dh' ⊙ (h − n)      dh (direct) = dh' ⊙ z
        da_n = dn ⊙ (1 − n²)    dr = da_n ⊙ (W_hn h + b_hn)
        da_r = dr ⊙ r(1 − r)    da_z = dz ⊙ z(1 − z)
        d_xw = [da_r, da_z, da_n]      d_hw = [da_r, da_z, r ⊙ da_n]
        dh = dh (direct) + W_hhᵀ d_hw

    Shapes: d_state ((B, H),) -> d_xw (B, 3H), d_hw (B, 3H), d_state ((B, H),).
    """
    (dh_new,) = d_state  # (B, H)
    h, r, z, n, hn = cache  # 5 × (B, H)
    dn = dh_new * (1.0 - z)  # (B, H)
    dz = dh_new * (h - n)  # (B, H)
    da_n = dn * (1.0 - n**2)  # (B, H)  through tanh
    da_r = da_n * hn * r * (1.0 - r)  # (B, H)  through r ⊙ hn, then σ
    da_z = dz * z * (1.0 - z)  # (B, H)  through σ
    d_xw = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H)
    d_hw = np.concatenate([da_r, da_z, r * da_n], axis=1)  # (B, 3H)
    dh = dh_new * z + d_hw @ weight_hh  # (B, H)
    return d_xw, d_hw, (dh,)


# --- LSTM ---------------------------------------------------------------------------------------


def lstm_step_forward(
    xw: np.ndarray, state: State, weight_hh: np.ndarray, bias_hh: np.ndarray
) -> tuple[State, Cache]:
    r"""One LSTM step, gates in torch's order (i, f, g, o).

        i = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f ⊙ c + i ⊙ g                        h' = o ⊙ tanh(c')

    Shapes: xw (B, 4H); state ((B, H), (B, H)); weight_hh (4H, H); bias_hh (4H,)
    -> state ((B, H), (B, H)).
    """
    h, c = state  # (B, H), (B, H)
    H = h.shape[-1]
    a = xw + h @ weight_hh.T + bias_hh  # (B, 4H)
    i = sigmoid(a[:, :H])  # (B, H)
    f = sigmoid(a[:, H : 2 * H])  # (B, H)
    g = np.tanh(a[:, 2 * H : 3 * H])  # (B, H)
    o = sigmoid(a[:, 3 * H :])  # (B, H)
    c_new = f * c + i * g  # (B, H)
    tanh_c = np.tanh(c_new)  # (B, H)
    h_new = o * tanh_c  # (B, H)
    return (h_new, c_new), (c, i, f, g, o, tanh_c)


def lstm_step_backward(
    d_state: State, cache: Cache, weight_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, State]:
    r"""Backward of :func:`lstm_step_forward`.

        do = dh' ⊙ tanh(c')          dc = dc' + dh' ⊙ o ⊙ (1 − tanh²(c'))
        di = dc ⊙ g    df = dc ⊙ c   dg = dc ⊙ i    dc (previous) = dc ⊙ f
        da = [di ⊙ i(1 − i), df ⊙ f(1 − f), dg ⊙ (1 − g²), do ⊙ o(1 − o)]
        dh (previous) = W_hhᵀ da

    Shapes: d_state ((B, H), (B, H)) -> d_xw (B, 4H), d_hw (B, 4H), d_state ((B, H), (B, H)).
    """
    dh_new, dc_new = d_state  # (B, H), (B, H)
    c, i, f, g, o, tanh_c = cache  # 6 × (B, H)
    do = dh_new * tanh_c  # (B, H)
    dc = dc_new + dh_new * o * (1.0 - tanh_c**2)  # (B, H)
    da = np.concatenate(
        [
            dc * g * i * (1.0 - i),  # (B, H)  input gate
            dc * c * f * (1.0 - f),  # (B, H)  forget gate
            dc * i * (1.0 - g**2),  # (B, H)  candidate
            do * o * (1.0 - o),  # (B, H)  output gate
        ],
        axis=1,
    )  # (B, 4H)
    dh = da @ weight_hh  # (B, H)
    return da, da, (dh, dc * f)


# --- registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """The step functions of one cell kind, its number of gates G and of state arrays."""

    num_gates: int
    state_len: int  # 1: (h,);  2: (h, c)
    forward: Callable[[np.ndarray, State, np.ndarray, np.ndarray], tuple[State, Cache]]
    backward: Callable[[State, Cache, np.ndarray], tuple[np.ndarray, np.ndarray, State]]


CELLS: dict[str, Cell] = {
    "rnn": Cell(1, 1, rnn_step_forward, rnn_step_backward),
    "gru": Cell(3, 1, gru_step_forward, gru_step_backward),
    "lstm": Cell(4, 2, lstm_step_forward, lstm_step_backward),
}
