r"""Ablation: how much the loss rises when one cell is held at a constant value.

The text is read once per ablated cell, all as one batch: row 0 as the model is, row ``j`` with
cell ``j`` held at its value after every step (:class:`rnnkit.inspect.steps.Clamp`). The result
is each row's mean next-token loss minus row 0's, in nats per token. A text longer than
``segment`` tokens is cut into segments read side by side, each from a zero state, the held
and the free model alike: fewer, larger steps (see :mod:`rnnkit.inspect.activations`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.text import IGNORE_INDEX
from rnnkit.data.vocab import Vocab
from rnnkit.inspect.activations import CHUNK
from rnnkit.inspect.steps import Clamp, has_cell_state, initial_states, run_model

Unit = tuple[int, str, int, float]
"""(layer, kind, index, value): kind ``"h"``, or ``"c"`` for an LSTM's cell state."""


SEGMENT = 500
"""Tokens per segment of the ablation text (see the module doc)."""


def _clamps(model: nn.Module, units: Sequence[Unit], like: Tensor, copies: int) -> list[Clamp]:
    """One :class:`Clamp` per layer for ``copies`` × (len(units) + 1) rows: in each group of
    len(units) + 1 rows, row ``j + 1`` holds ``units[j]``."""
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
        repeat = (copies, 1)
        clamps.append(
            Clamp(
                h_mask.repeat(repeat),
                h_value.repeat(repeat),
                None if c_mask is None else c_mask.repeat(repeat),
                None if c_value is None else c_value.repeat(repeat),
            )
        )  # (copies·B, ·) each
    return clamps


def ablation_deltas(
    model: nn.Module,
    ids: Tensor,
    units: Sequence[Unit],
    *,
    segment: int = SEGMENT,
    chunk_size: int = CHUNK,
) -> list[float]:
    """The loss change (nats per token) over ids (N,), N ≥ 2, with each unit held at its value.

    Returns one float per unit, in order: positive when holding the cell hurts the model.
    """
    model.eval()
    like = model.head.weight
    device = like.device
    ids = ids.to(device)
    rows = len(units) + 1
    count = ids.numel() - 1  # predictions
    segments = -(-count // segment)  # ceil
    length = -(-count // segments)  # steps per segment
    inputs = torch.full((segments * length,), Vocab.pad_id, device=device)  # (S·L,)
    targets = torch.full((segments * length,), IGNORE_INDEX, device=device)  # (S·L,)
    inputs[:count], targets[:count] = ids[:-1], ids[1:]
    # Each segment once per row: batch row r·rows + j is segment r with unit j − 1 held.
    inputs = inputs.view(segments, 1, length).expand(-1, rows, -1).reshape(-1, length)
    targets = targets.view(segments, 1, length).expand(-1, rows, -1).reshape(-1, length)
    clamps = _clamps(model, units, like, segments)
    totals = torch.zeros(segments * rows, dtype=torch.float64, device=device)  # (S·rows,)
    with torch.no_grad():
        states = initial_states(model.rnn, segments * rows, like)
        for start in range(0, length, chunk_size):
            span = slice(start, start + chunk_size)
            _, logits, states = run_model(model, inputs[:, span], states, clamps=clamps)
            losses = F.cross_entropy(
                logits.float().transpose(1, 2), targets[:, span], reduction="none"
            )  # (S·rows, C), 0 at padding
            totals += losses.double().sum(1)
    per_row = totals.view(segments, rows).sum(0) / count  # (rows,)
    return (per_row[1:] - per_row[0]).tolist()
