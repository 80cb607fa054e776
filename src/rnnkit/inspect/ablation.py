r"""Ablation: how much the loss rises when one cell is held at a constant value.

The text is read once per ablated cell, all as one batch: row 0 as the model is, row ``j`` with
cell ``j`` held at its value after every step (:class:`rnnkit.inspect.steps.Clamp`). The result
is each row's mean next-token loss minus row 0's, in nats per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.inspect.activations import CHUNK
from rnnkit.inspect.steps import Clamp, has_cell_state, initial_states, run_model

Unit = tuple[int, str, int, float]
"""(layer, kind, index, value): kind ``"h"``, or ``"c"`` for an LSTM's cell state."""


def _clamps(model: nn.Module, units: Sequence[Unit], like: Tensor) -> list[Clamp]:
    """One :class:`Clamp` per layer, row ``j + 1`` holding ``units[j]``."""
    rnn = model.rnn
    batch = len(units) + 1
    out_size = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    clamps = []
    for layer in range(rnn.num_layers):
        h_mask = torch.zeros(batch, out_size, dtype=torch.bool, device=like.device)  # (B, P/H)
        h_value = like.new_zeros(batch, out_size)  # (B, P or H)
        c_mask = c_value = None
        if has_cell_state(rnn):
            c_mask = torch.zeros(batch, rnn.hidden_size, dtype=torch.bool, device=like.device)
            c_value = like.new_zeros(batch, rnn.hidden_size)  # (B, H)
        for row, (unit_layer, kind, index, value) in enumerate(units, start=1):
            if unit_layer != layer:
                continue
            if kind == "h":
                h_mask[row, index], h_value[row, index] = True, value
            elif c_mask is not None:
                c_mask[row, index], c_value[row, index] = True, value
            else:
                raise ValueError(f"kind 'c' needs an LSTM; this model has {type(rnn).__name__}")
        clamps.append(Clamp(h_mask, h_value, c_mask, c_value))
    return clamps


def ablation_deltas(
    model: nn.Module, ids: Tensor, units: Sequence[Unit], chunk_size: int = CHUNK
) -> list[float]:
    """The loss change (nats per token) over ids (N,), N ≥ 2, with each unit held at its value.

    Returns one float per unit, in order: positive when holding the cell hurts the model.
    """
    model.eval()
    like = model.head.weight
    device = like.device
    ids = ids.to(device)
    batch = len(units) + 1
    clamps = _clamps(model, units, like)
    inputs = ids[:-1].expand(batch, -1)  # (B, N - 1)
    targets = ids[1:]  # (N - 1,)
    totals = torch.zeros(batch, dtype=torch.float64, device=device)  # (B,)
    with torch.no_grad():
        states = initial_states(model.rnn, batch, like)
        for start in range(0, inputs.shape[1], chunk_size):
            span = slice(start, start + chunk_size)
            _, logits, states = run_model(model, inputs[:, span], states, clamps=clamps)
            log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, C, V)
            chosen = targets[span].expand(batch, -1).unsqueeze(2)  # (B, C, 1)
            totals -= log_probs.gather(2, chosen).squeeze(2).double().sum(1)  # (B,)
    losses = totals / targets.numel()  # (B,)
    return (losses[1:] - losses[0]).tolist()
