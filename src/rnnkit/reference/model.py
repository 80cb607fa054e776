r"""A character-level recurrent model in NumPy: one-hot input → cell → softmax at every step.

    xw_t = W_ih x_t + b_ih            (x_t one-hot, so this is a column of W_ih)
    state_t = cell(xw_t, state_{t−1})
    p_t = softmax(W_out h_t + b_out)
    loss = −Σ_b Σ_t log p_t[target_t]   (summed over steps and batch; min-char-rnn sums steps)

The backward pass is backpropagation through time written out by hand: the output layer for all
steps at once, then the cell's backward step from the last step to the first, then the weight
gradients of all steps with one matmul each.

State convention (what ``h0`` is and what comes back as ``h``):

* rnn, gru: an array ``h`` of shape (H,) for one sequence, (B, H) for a batch;
* lstm: a tuple ``(h, c)`` of two such arrays, in that order.

Inputs and targets are integer arrays of shape (T,) for one sequence or (B, T) for a batch.
"""

from dataclasses import dataclass

import numpy as np

from rnnkit.errors import ConfigError
from rnnkit.reference.cells import CELLS, Cache, Cell, State

#: h for rnn / gru, (h, c) for lstm; each (H,) or (B, H).
PublicState = np.ndarray | tuple[np.ndarray, np.ndarray]

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_out", "bias_out")


def one_hot(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """One-hot float64 rows for integer ids: (...,) -> (..., V)."""
    return np.eye(vocab_size)[ids]  # (..., V)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, shifted by the maximum for stability; shape unchanged."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (..., V)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (..., V)


def forward_sequence(
    cell: Cell, params: dict[str, np.ndarray], inputs: np.ndarray, state: State
) -> tuple[np.ndarray, State, list[Cache]]:
    """Run ``cell`` over the token ids ``inputs``, one step at a time.

    Shapes: inputs (B, T) int; state: tuple of (B, H) ->
    hs (B, T, H) the hidden state after each step; the final state; one cache per step.
    """
    xw = params["weight_ih"].T[inputs] + params["bias_ih"]  # (B, T, G·H)  = one_hot @ W_ihᵀ + b
    weight_hh, bias_hh = params["weight_hh"], params["bias_hh"]  # (G·H, H), (G·H,)
    hs, caches = [], []
    for t in range(inputs.shape[1]):
        state, cache = cell.forward(xw[:, t], state, weight_hh, bias_hh)
        hs.append(state[0])
        caches.append(cache)
    return np.stack(hs, axis=1), state, caches  # (B, T, H)


def backward_sequence(
    cell: Cell, params: dict[str, np.ndarray], caches: list[Cache], dhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, State]:
    """Backpropagation through time for :func:`forward_sequence`.

    ``dhs`` is the gradient of the loss w.r.t. each step's hidden output h_t, (B, T, H); the
    gradient that reaches the state from later steps is added to it on the way back. Returns
    d_xw (B, T, G·H), d_hw (B, T, G·H) (see :mod:`rnnkit.reference.cells`) and the gradient
    w.r.t. the initial state, a tuple of (B, H).
    """
    weight_hh = params["weight_hh"]  # (G·H, H)
    d_state = tuple(np.zeros_like(dhs[:, 0]) for _ in range(cell.state_len))  # k × (B, H)
    d_xw, d_hw = [], []
    for t in reversed(range(dhs.shape[1])):
        d_state = (d_state[0] + dhs[:, t], *d_state[1:])
        d_xw_t, d_hw_t, d_state = cell.backward(d_state, caches[t], weight_hh)
        d_xw.append(d_xw_t)
        d_hw.append(d_hw_t)
    return np.stack(d_xw[::-1], axis=1), np.stack(d_hw[::-1], axis=1), d_state  # (B, T, G·H) x2


@dataclass
class BPTTResult:
    """Everything one forward + backward pass computes.

    Attributes:
        loss: −log-likelihood summed over the T steps (and the B sequences of a batch).
        grads: d loss / d param for every key of ``CharRNN.params``, same shapes.
        h: the final state (see the module docstring for its type).
        d_h0: d loss / d h0, with the type and shapes of ``h0`` (a tuple (dh0, dc0) for lstm).
    """

    loss: float
    grads: dict[str, np.ndarray]
    h: PublicState
    d_h0: PublicState


class CharRNN:
    r"""A character model (rnn | gru | lstm) with hand-written backpropagation through time.

    Parameters use torch's names, shapes and gate order, so they copy one-to-one to and from
    ``torch.nn.RNN / GRU / LSTM(input_size=V, hidden_size=H)`` (suffix ``_l0``) and a
    ``torch.nn.Linear(H, V)`` (``weight_out``, ``bias_out``):

        weight_ih (G·H, V)   weight_hh (G·H, H)   bias_ih, bias_hh (G·H,)
        weight_out (V, H)    bias_out (V,)        with G = 1 (rnn), 3 (gru), 4 (lstm)

    All are float64 and initialised like torch, U(−1/√H, 1/√H), from
    ``numpy.random.default_rng(seed)``, in the order of the list above.

    Args:
        cell: "rnn" (tanh), "gru" (torch's form, ``b_hn`` inside the reset product) or "lstm".
        vocab_size: V, the number of token ids (input one-hot width and output classes).
        hidden_size: H.
        seed: seed of the initialisation.
    """

    def __init__(self, cell: str, vocab_size: int, hidden_size: int = 100, seed: int = 0):
        if cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(map(repr, CELLS))}; got {cell!r}")
        if vocab_size < 1 or hidden_size < 1:
            raise ConfigError(
                f"vocab_size and hidden_size must be positive; got {vocab_size}, {hidden_size}"
            )
        self.cell_name = cell
        self.cell = CELLS[cell]
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        V, H, GH = vocab_size, hidden_size, self.cell.num_gates * hidden_size
        shapes = {
            "weight_ih": (GH, V),
            "weight_hh": (GH, H),
            "bias_ih": (GH,),
            "bias_hh": (GH,),
            "weight_out": (V, H),
            "bias_out": (V,),
        }
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(H)
        self.params: dict[str, np.ndarray] = {
            name: rng.uniform(-bound, bound, size=shape) for name, shape in shapes.items()
        }

    @classmethod
    def from_params(cls, cell: str, params: dict[str, np.ndarray]) -> "CharRNN":
        """Rebuild a model from saved parameters (the keys and shapes of ``CharRNN.params``)."""
        if set(params) != set(PARAM_NAMES):
            raise ValueError(f"params must have the keys {PARAM_NAMES}; got {sorted(params)}")
        vocab_size, hidden_size = params["weight_out"].shape
        model = cls(cell, vocab_size, hidden_size)
        for name, value in params.items():
            expected = model.params[name].shape
            if value.shape != expected:
                raise ValueError(
                    f"{cell} parameter {name} must have shape {expected} for V={vocab_size}, "
                    f"H={hidden_size}; got {value.shape}"
                )
            model.params[name] = np.array(value, dtype=np.float64)
        return model

    def init_state(self, batch_size: int | None = None) -> PublicState:
        """Zeros in the shape of this cell's state: (H,) or (B, H); a pair (h, c) for lstm."""
        shape = (self.hidden_size,) if batch_size is None else (batch_size, self.hidden_size)
        if self.cell.state_len == 2:
            return np.zeros(shape), np.zeros(shape)
        return np.zeros(shape)

    def forward(
        self, inputs: np.ndarray, h0: PublicState | None = None
    ) -> tuple[np.ndarray, PublicState]:
        """Logits at every step and the final state, without gradients.

        Shapes: inputs (T,) or (B, T) int -> logits (T, V) or (B, T, V), h as ``h0``.
        """
        ids, batched = self._check_ids(inputs, "inputs")
        state = self._pack_state(h0, ids.shape[0], batched)
        hs, state, _ = forward_sequence(self.cell, self.params, ids, state)  # (B, T, H)
        logits = hs @ self.params["weight_out"].T + self.params["bias_out"]  # (B, T, V)
        return (logits if batched else logits[0]), self._unpack_state(state, batched)

    def loss(self, inputs: np.ndarray, targets: np.ndarray, h0: PublicState | None = None) -> float:
        """−log-likelihood of ``targets`` summed over steps and batch (no gradients)."""
        self._check_targets(inputs, targets)
        logits, _ = self.forward(inputs, h0)  # (T, V) or (B, T, V)
        logp = log_softmax(logits)  # (T, V) or (B, T, V)
        target_ids = np.asarray(targets)[..., None]  # (T, 1) or (B, T, 1)
        return float(-np.take_along_axis(logp, target_ids, axis=-1).sum())

    def loss_and_grads(
        self, inputs: np.ndarray, targets: np.ndarray, h0: PublicState | None = None
    ) -> tuple[float, dict[str, np.ndarray], PublicState]:
        """(loss, grads, h): the summed loss, d loss / d param for every param, the final state.

        Shapes: inputs, targets (T,) or (B, T) int; h0 None (zeros) or as ``init_state``.
        See :meth:`bptt` for the gradient w.r.t. ``h0`` as well.
        """
        result = self.bptt(inputs, targets, h0)
        return result.loss, result.grads, result.h

    def bptt(
        self, inputs: np.ndarray, targets: np.ndarray, h0: PublicState | None = None
    ) -> BPTTResult:
        """Forward pass, loss and backpropagation through time; also returns d loss / d h0.

        Shapes: inputs, targets (T,) or (B, T) int; h0 None (zeros) or as ``init_state``.
        """
        ids, batched = self._check_ids(inputs, "inputs")
        target_ids = self._check_targets(inputs, targets)
        p, V = self.params, self.vocab_size
        state0 = self._pack_state(h0, ids.shape[0], batched)

        # forward
        hs, state, caches = forward_sequence(self.cell, p, ids, state0)  # (B, T, H)
        logits = hs @ p["weight_out"].T + p["bias_out"]  # (B, T, V)
        logp = log_softmax(logits)  # (B, T, V)
        target_onehot = one_hot(target_ids, V)  # (B, T, V)
        loss = float(-(logp * target_onehot).sum())

        # backward: softmax + cross-entropy, output layer, then through time
        d_logits = np.exp(logp) - target_onehot  # (B, T, V)
        d_logits_2d = d_logits.reshape(-1, V)  # (B·T, V)
        grads = {
            "weight_out": d_logits_2d.T @ hs.reshape(-1, self.hidden_size),  # (V, H)
            "bias_out": d_logits_2d.sum(axis=0),  # (V,)
        }
        dhs = d_logits @ p["weight_out"]  # (B, T, H)
        d_xw, d_hw, d_state0 = backward_sequence(self.cell, p, caches, dhs)  # (B, T, G·H) x2

        # weight gradients of all steps at once: h_{t−1} is the state before step t
        GH = p["weight_hh"].shape[0]
        h_prev = np.concatenate([state0[0][:, None], hs[:, :-1]], axis=1)  # (B, T, H)
        d_xw_2d, d_hw_2d = d_xw.reshape(-1, GH), d_hw.reshape(-1, GH)  # (B·T, G·H) x2
        grads["weight_ih"] = d_xw_2d.T @ one_hot(ids.reshape(-1), V)  # (G·H, V)
        grads["bias_ih"] = d_xw_2d.sum(axis=0)  # (G·H,)
        grads["weight_hh"] = d_hw_2d.T @ h_prev.reshape(-1, self.hidden_size)  # (G·H, H)
        grads["bias_hh"] = d_hw_2d.sum(axis=0)  # (G·H,)
        return BPTTResult(
            loss=loss,
            grads={name: grads[name] for name in PARAM_NAMES},
            h=self._unpack_state(state, batched),
            d_h0=self._unpack_state(d_state0, batched),
        )

    # --- argument checks and state packing ------------------------------------------------------

    def _check_ids(self, ids: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
        """Token ids as (B, T) int64 and whether they came batched; (T,) becomes (1, T)."""
        array = np.asarray(ids)
        if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{name} must be an int array of shape (T,) or (B, T); "
                f"got dtype {array.dtype}, shape {array.shape}"
            )
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(
                f"{name} must be token ids in [0, {self.vocab_size}); "
                f"got values in [{array.min()}, {array.max()}]"
            )
        batched = array.ndim == 2
        return (array if batched else array[None]).astype(np.int64, copy=False), batched

    def _check_targets(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Target ids as (B, T) int64, checked against the shape of ``inputs``."""
        target_ids, _ = self._check_ids(targets, "targets")
        if np.shape(targets) != np.shape(inputs):
            raise ValueError(
                f"targets must have the shape of inputs {np.shape(inputs)}; got {np.shape(targets)}"
            )
        return target_ids

    def _pack_state(self, h0: PublicState | None, batch_size: int, batched: bool) -> State:
        """The public state as the internal tuple of (B, H) arrays; None means zeros."""
        if h0 is None:
            return tuple(
                np.zeros((batch_size, self.hidden_size)) for _ in range(self.cell.state_len)
            )
        parts = tuple(h0) if self.cell.state_len == 2 else (h0,)
        if self.cell.state_len == 2 and len(parts) != 2:
            raise ValueError(f"lstm state must be a tuple (h, c); got {len(parts)} arrays")
        expected = (batch_size, self.hidden_size) if batched else (self.hidden_size,)
        for part in parts:
            if np.shape(part) != expected:
                raise ValueError(
                    f"{self.cell_name} state arrays must have shape {expected} for these inputs; "
                    f"got {np.shape(part)}"
                )
        return tuple(np.asarray(part, dtype=np.float64).reshape(batch_size, -1) for part in parts)

    def _unpack_state(self, state: State, batched: bool) -> PublicState:
        """The internal tuple of (B, H) arrays as the public state (see the module docstring)."""
        parts = state if batched else tuple(part[0] for part in state)
        return parts if self.cell.state_len == 2 else parts[0]
