r"""A language model's recurrent layers run step by step, keeping every state and gate.

The models are left as they are (no hooks): this module reads a layer's parameters by torch's
names (``weight_ih_l{k}``, ``weight_hh_l{k}``, ...) and runs the gate-returning step functions
of :mod:`rnnkit.cells`, the same equations as the layers' own loop, layer after layer, over a
chunk of steps. For each layer it returns ``h`` at every step, an LSTM's cell ``c``, and the
gates after their σ:

    rnn       none                      gru (every form)   r, z   (one-gate GRU: z)
    lstm      i, f, o (with peepholes)  mingru             z
    minlstm   f', i' (normalised, f' + i' = 1)

RNN, GRU and LSTM layers step through time (the input projection of all steps is one product
before the loop, as in the layers). MinGRU and MinLSTM have gates that see only the input, so
their gates come from one product and their states from :func:`rnnkit.scan.linear_scan`.

A :class:`Clamp` holds chosen units at fixed values after every step (ablation): an ``h`` unit is
overwritten; an LSTM's ``c`` unit is overwritten and that step's ``h`` recomputed from it,
``h = o ⊙ tanh(c)`` (projected with ``proj_size``), with ``o`` as the step computed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import (
    gru_minimal_step_gates,
    gru_reset_before_step_gates,
    gru_step_gates,
    input_gates,
    lstm_step_gates,
    mingru_gates,
    minlstm_gates,
    rnn_step,
)
from rnnkit.layers import GRU, LSTM, RNN, MinGRU, MinLSTM
from rnnkit.scan import linear_scan

LayerState = Tensor | tuple[Tensor, Tensor]
"""One layer's state: h (B, H), or (h (B, P or H), c (B, H)) for an LSTM."""


def cell_name(rnn: nn.Module) -> str:
    """``"rnn"``, ``"gru"``, ``"lstm"``, ``"mingru"`` or ``"minlstm"``: the kind of layer."""
    for cls, name in ((LSTM, "lstm"), (GRU, "gru"), (RNN, "rnn")):
        if isinstance(rnn, cls):
            return name
    for cls, name in ((MinGRU, "mingru"), (MinLSTM, "minlstm")):
        if isinstance(rnn, cls):
            return name
    raise TypeError(f"rnnkit.inspect runs rnnkit's recurrent layers; got {type(rnn).__name__}")


def gate_names(rnn: nn.Module) -> tuple[str, ...]:
    """The σ gates of the layer's cell, in the order of its equations (see the module doc)."""
    name = cell_name(rnn)
    if name == "gru":
        return ("r", "z") if rnn.reset_gate else ("z",)
    return {"rnn": (), "lstm": ("i", "f", "o"), "mingru": ("z",), "minlstm": ("f", "i")}[name]


def has_cell_state(rnn: nn.Module) -> bool:
    """Whether the layer has an LSTM's cell state c besides h."""
    return isinstance(rnn, LSTM)


def check_unidirectional(rnn: nn.Module) -> None:
    """A language model reads forwards; a bidirectional layer cannot be run step by step."""
    if getattr(rnn, "bidirectional", False):
        raise ValueError("rnnkit.inspect runs layers forwards; this one is bidirectional")


@dataclass
class Clamp:
    """Units of one layer held at fixed values after every step, per batch row.

    Attributes:
        h_mask, h_value: (B, P or H) which ``h`` units to hold (True) and at what.
        c_mask, c_value: (B, H) the same for an LSTM's ``c``; None for other cells.
    """

    h_mask: Tensor
    h_value: Tensor
    c_mask: Tensor | None = None
    c_value: Tensor | None = None


@dataclass
class LayerSteps:
    """One layer's values at every step of a chunk.

    Attributes:
        h: (B, T, P or H) the layer's output after each step.
        c: (B, T, H) an LSTM's cell after each step; None for other cells.
        gates: name -> (B, T, H), the σ gates of each step (empty unless asked for).
        step_h: the T tensors (B, P or H) that carried h from step to step, when asked for:
            the gradient of a loss with respect to one of them is ∂loss/∂h_t through every
            path (the next step and the next layer).
    """

    h: Tensor
    c: Tensor | None
    gates: dict[str, Tensor]
    step_h: list[Tensor] = field(default_factory=list)


def initial_states(rnn: nn.Module, batch_size: int, like: Tensor) -> list[LayerState]:
    """Zero states of every layer, on ``like``'s device and dtype."""
    out_size = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    states: list[LayerState] = []
    for _ in range(rnn.num_layers):
        h = like.new_zeros(batch_size, out_size)  # (B, P or H)
        if has_cell_state(rnn):
            states.append((h, like.new_zeros(batch_size, rnn.hidden_size)))  # + c (B, H)
        else:
            states.append(h)
    return states


def run_layer(
    rnn: nn.Module,
    layer: int,
    x: Tensor,
    state: LayerState,
    *,
    clamp: Clamp | None = None,
    gates: bool = False,
    step_h: bool = False,
) -> tuple[LayerSteps, LayerState]:
    """Run layer ``layer`` of ``rnn`` over x (B, T, D) from ``state``.

    Args:
        clamp: units to hold fixed after every step.
        gates: keep the σ gates of every step.
        step_h: keep the per-step h tensors (for gradients; MinGRU and MinLSTM then step
            through time instead of scanning).

    Returns:
        The layer's :class:`LayerSteps` and its state after the last step.
    """
    check_unidirectional(rnn)
    if isinstance(rnn, MinGRU | MinLSTM):
        return _run_minimal(rnn, layer, x, state, clamp, gates, step_h)
    return _run_stepped(rnn, layer, x, state, clamp, gates, step_h)


def _param(rnn: nn.Module, name: str, layer: int) -> Tensor | None:
    """The parameter ``{name}_l{layer}`` of the layer, or None where it has none."""
    return getattr(rnn, f"{name}_l{layer}", None)


def _run_stepped(
    rnn: nn.Module,
    layer: int,
    x: Tensor,
    state: LayerState,
    clamp: Clamp | None,
    keep_gates: bool,
    keep_step_h: bool,
) -> tuple[LayerSteps, LayerState]:
    """RNN, GRU and LSTM: the input projection of all steps, then one step at a time."""
    weight_ih, weight_hh = _param(rnn, "weight_ih", layer), _param(rnn, "weight_hh", layer)
    bias_ih, bias_hh = _param(rnn, "bias_ih", layer), _param(rnn, "bias_hh", layer)
    name = cell_name(rnn)
    x_steps = x.transpose(0, 1)  # (T, B, D): time-major, so that each step's gates are contiguous
    if name == "gru" and rnn.reset_gate:  # r splits the recurrent product: b_hh stays apart
        gates_x = F.linear(x_steps, weight_ih, bias_ih)  # (T, B, 3H)
    else:
        gates_x = input_gates(x_steps, weight_ih, bias_ih, bias_hh)  # (T, B, G·H)
    weight_hr = _param(rnn, "weight_hr", layer)
    peephole = None
    if getattr(rnn, "peephole", False):
        peephole = tuple(_param(rnn, p, layer) for p in ("weight_ci", "weight_cf", "weight_co"))

    hs, cs, gate_steps = [], [], []
    for gates_t in gates_x.unbind(0):  # (B, G·H) each
        step_gates: tuple[Tensor, ...] = ()
        if name == "rnn":
            state = rnn_step(gates_t, state, weight_hh, rnn.nonlinearity)  # (B, H)
        elif name == "gru" and not rnn.reset_gate:
            state, step_gates = gru_minimal_step_gates(gates_t, state, weight_hh)
        elif name == "gru":
            step = gru_step_gates if rnn.reset_after else gru_reset_before_step_gates
            state, step_gates = step(gates_t, state, weight_hh, bias_hh)
        else:
            state, step_gates = lstm_step_gates(gates_t, state, weight_hh, weight_hr, peephole)
        if clamp is not None:
            state = _clamped(state, step_gates, clamp, weight_hr)
        if isinstance(state, tuple):
            hs.append(state[0])
            cs.append(state[1])
        else:
            hs.append(state)
        if keep_gates:
            gate_steps.append(step_gates)
    names = gate_names(rnn)
    gates = {}
    if keep_gates and names:
        per_gate = zip(*gate_steps, strict=True)
        gates = {g: torch.stack(s, dim=1) for g, s in zip(names, per_gate, strict=True)}
    steps = LayerSteps(
        h=torch.stack(hs, dim=1),  # (B, T, P or H)
        c=torch.stack(cs, dim=1) if cs else None,  # (B, T, H)
        gates=gates,  # (B, T, H) each
        step_h=hs if keep_step_h else [],
    )
    return steps, state


def _clamped(
    state: LayerState, step_gates: tuple[Tensor, ...], clamp: Clamp, weight_hr: Tensor | None
) -> LayerState:
    """The state after a step with the clamp's units overwritten (see the module doc)."""
    if not isinstance(state, tuple):
        return torch.where(clamp.h_mask, clamp.h_value, state)  # (B, H)
    h, c = state
    if clamp.c_mask is not None:
        c = torch.where(clamp.c_mask, clamp.c_value, c)  # (B, H)
        h = step_gates[2] * torch.tanh(c)  # (B, H): o ⊙ tanh(c)
        if weight_hr is not None:
            h = F.linear(h, weight_hr)  # (B, P)
    return torch.where(clamp.h_mask, clamp.h_value, h), c


def _run_minimal(
    rnn: nn.Module,
    layer: int,
    x: Tensor,
    h0: Tensor,
    clamp: Clamp | None,
    keep_gates: bool,
    keep_step_h: bool,
) -> tuple[LayerSteps, Tensor]:
    """MinGRU and MinLSTM: gates from one product, h_t = a_t ⊙ h_{t−1} + b_t by a scan."""
    projections = F.linear(x, _param(rnn, "weight_ih", layer), _param(rnn, "bias_ih", layer))
    if isinstance(rnn, MinGRU):
        z, candidate = mingru_gates(projections)  # (B, T, H) each
        a, b, gates = 1 - z, z * candidate, {"z": z}  # (B, T, H) each
    else:
        f_norm, i_norm, candidate = minlstm_gates(projections)  # (B, T, H) each
        a, b, gates = f_norm, i_norm * candidate, {"f": f_norm, "i": i_norm}
    step_h: list[Tensor] = []
    if keep_step_h:  # one tensor per step, so that each has its own gradient
        h = h0
        for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):
            h = torch.addcmul(b_t, a_t, h)  # (B, H)
            if clamp is not None:
                h = torch.where(clamp.h_mask, clamp.h_value, h)  # (B, H)
            step_h.append(h)
        hs = torch.stack(step_h, dim=1)  # (B, T, H)
    else:
        hs = linear_scan(a, b, h0)  # (B, T, H)
        if clamp is not None:  # units never feed each other: holding one is overwriting it
            hs = torch.where(clamp.h_mask.unsqueeze(1), clamp.h_value.unsqueeze(1), hs)
    steps = LayerSteps(h=hs, c=None, gates=gates if keep_gates else {}, step_h=step_h)
    return steps, hs[:, -1]


def run_model(
    model: nn.Module,
    tokens: Tensor,
    states: list[LayerState],
    *,
    clamps: list[Clamp | None] | None = None,
    gates: bool = False,
    logits: bool = True,
    step_h: bool = False,
) -> tuple[list[LayerSteps], Tensor | None, list[LayerState]]:
    """A language model (``embed``, ``rnn``, ``head``) over tokens (B, T), in eval-mode numbers.

    Args:
        states: every layer's state before the first step (:func:`initial_states`).
        clamps: per layer, units to hold fixed, or None.
        gates, step_h: as :func:`run_layer`.
        logits: compute the head's next-token logits.

    Returns:
        Per layer :class:`LayerSteps`, the logits (B, T, V) or None, the states after.
    """
    x = model.embed(tokens)  # (B, T, E)
    per_layer, finals = [], []
    for layer in range(model.rnn.num_layers):
        clamp = None if clamps is None else clamps[layer]
        steps, state = run_layer(
            model.rnn, layer, x, states[layer], clamp=clamp, gates=gates, step_h=step_h
        )
        per_layer.append(steps)
        finals.append(state)
        x = steps.h  # (B, T, P or H)
    return per_layer, model.head(x) if logits else None, finals
