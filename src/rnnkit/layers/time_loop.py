"""The one loop over time: a step function run over a sequence, with padding and reversal.

Layers hand :func:`run_direction` the input projection of all steps (one matmul, done before the
loop) and a step function bound to the recurrent weights; only ``h @ W_hh^T`` and the gate
arithmetic happen inside the loop.
"""

from collections.abc import Callable

import torch
from torch import Tensor

# h (B, H) for RNN and GRU; (h (B, H), c (B, H)) for LSTM.
State = Tensor | tuple[Tensor, Tensor]
StepFn = Callable[[Tensor, State], State]
# A whole sequence at once: gates_x (T, B, G·H) time-major, state -> outputs (T, B, H), final state.
SequenceFn = Callable[[Tensor, State], tuple[Tensor, State]]


def hidden_of(state: State) -> Tensor:
    """The output part of a state: h itself, or h of an LSTM's (h, c)."""
    return state[0] if isinstance(state, tuple) else state


def keep_where(mask: Tensor, new: State, old: State) -> State:
    """``new`` where mask (B, 1) is True, else ``old``; element-wise over (h, c) pairs."""
    if isinstance(new, tuple):
        return tuple(torch.where(mask, n, o) for n, o in zip(new, old, strict=True))  # (B, ·)
    return torch.where(mask, new, old)  # (B, H)


def step_mask(lengths: Tensor, num_steps: int) -> Tensor:
    """True where step t is a real step of sequence b.  lengths (B,) -> (B, T)."""
    steps = torch.arange(num_steps, device=lengths.device)  # (T,)
    return steps < lengths.unsqueeze(1)  # (B, T)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence within its own length; padded steps stay where they are.

    x (B, T, F), lengths (B,) or None (all sequences full) -> (B, T, F). Applying it twice gives x.
    """
    if lengths is None:
        return x.flip(1)  # (B, T, F)
    steps = torch.arange(x.shape[1], device=x.device)  # (T,)
    last = lengths.unsqueeze(1) - 1  # (B, 1)
    index = torch.where(steps < lengths.unsqueeze(1), last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(2).expand_as(x))  # (B, T, F)


def run_direction(
    step: StepFn,
    gates_x: Tensor,
    state: State,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, State]:
    """Run ``step`` over every time step of ``gates_x``.

    With ``lengths``, each sequence's state is frozen after its last real step and the outputs at
    padded steps are zero; ``reverse`` runs each sequence backwards within its own length.

    Shapes:
        gates_x: (B, T, G·H), the input projection of every step;  state: (B, H) or a pair;
        lengths: (B,) or None  ->  outputs (B, T, H), final state like ``state``
    """
    if reverse:
        gates_x = reverse_padded(gates_x, lengths)  # (B, T, G·H)
    outputs = []
    # Stacked time-major (the (B, T, H) results are views), as torch's kernels lay out theirs.
    if lengths is None:
        for gates_t in gates_x.unbind(1):
            state = step(gates_t, state)
            outputs.append(hidden_of(state))
        out = torch.stack(outputs).transpose(0, 1)  # (B, T, H)
    else:
        mask = step_mask(lengths, gates_x.shape[1]).unsqueeze(2)  # (B, T, 1)
        for gates_t, mask_t in zip(gates_x.unbind(1), mask.unbind(1), strict=True):
            state = keep_where(mask_t, step(gates_t, state), state)
            outputs.append(hidden_of(state))
        out = torch.stack(outputs).transpose(0, 1).masked_fill(~mask, 0.0)  # (B, T, H)
    if reverse:
        out = reverse_padded(out, lengths)  # (B, T, H)
    return out, state


def run_sequence(
    run: SequenceFn,
    project: Callable[[Tensor], Tensor],
    x: Tensor,
    state: State,
    reverse: bool = False,
) -> tuple[Tensor, State]:
    """Run a whole-sequence function (:mod:`rnnkit.layers.bptt`) on full-length sequences.

    The input projection is computed time-major, so each step's gates are one contiguous block
    (and, for input that was time-major to begin with, no copy is made).

    Shapes:
        x: (B, T, D);  state: (B, H) or a pair  ->  outputs (B, T, H), final state
    """
    gates_x = project(x.transpose(0, 1))  # (T, B, G·H)
    if reverse:
        gates_x = gates_x.flip(0)  # (T, B, G·H)
    out, state = run(gates_x, state)  # (T, B, H)
    if reverse:
        out = out.flip(0)  # (T, B, H)
    return out.transpose(0, 1), state  # (B, T, H)
