r"""A model's hidden states and gates over a whole text, chunk by chunk, memory bounded.

:func:`trace` runs the model over every token of a text and yields, one chunk at a time, the
values after each token was read: per layer ``h``, an LSTM's ``c`` and the σ gates, and the
next-token logits. Consumers reduce each chunk to what they need (sums, counts, a few cells), so
a long text never has all its activations in memory at once.

Streams. On one long sequence each step is a matrix-vector product, bound by memory bandwidth.
So the text is cut into ``S`` contiguous segments read side by side as a batch; each segment is
preceded by ``warmup`` tokens of the text before it, read only to bring the state where a
single pass would have it (those steps' values are dropped). ``streams=1`` reads the text in
one pass with the state carried from the first token to the last: exact. With S > 1 a segment's
first steps see ``warmup`` tokens of history instead of all of it; a character model's state
keeps little from further back (``tests/unit/test_inspect_activations.py`` measures it on an
untrained one). The approximation depends on ``warmup`` only; more streams cost more warm-up
steps but fewer, larger steps, which matters most on a busy machine, where every small
operation waits for its threads: the default reads one stream per :data:`SEGMENT` tokens, at
most :data:`MAX_STREAMS` (for 100,000 tokens: 64 streams of 2,063 steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnkit.data.vocab import Vocab
from rnnkit.inspect.steps import initial_states, run_model

WARMUP = 500
"""Tokens read before each segment but the first (see the module doc)."""
SEGMENT = 1500
"""With ``streams=None``, each stream reads at least this many kept tokens."""
MAX_STREAMS = 64
CHUNK = 128
"""Steps per stream in one chunk."""


@dataclass(frozen=True)
class StreamPlan:
    """Which positions of the text each stream reads, and which of its steps are kept.

    Attributes:
        read: (S, R) int64 the position read at each step; -1 after the text's end (padding).
        keep: (S, R) bool True where the step's values are yielded; every position of the
            text is kept exactly once.
    """

    read: Tensor
    keep: Tensor


def plan_streams(num_tokens: int, streams: int | None = None, warmup: int = WARMUP) -> StreamPlan:
    """Cut ``num_tokens`` positions into ``streams`` segments (see the module doc).

    ``streams=None`` picks ``min(MAX_STREAMS, num_tokens // SEGMENT)`` (at least 1). Stream
    ``s`` keeps segment ``[s·L, (s+1)·L)`` and reads from ``warmup`` tokens before it; the
    first stream, which has nothing before it, reads as far on past its segment instead, so
    that all streams are equally long.
    """
    if num_tokens < 1:
        raise ValueError(f"plan_streams needs at least 1 token, got {num_tokens}")
    if streams is None:
        streams = min(MAX_STREAMS, max(1, num_tokens // SEGMENT))
    if streams < 1:
        raise ValueError(f"streams must be at least 1; got {streams}")
    streams = min(streams, num_tokens)
    length = math.ceil(num_tokens / streams)  # L, kept steps per stream
    streams = math.ceil(num_tokens / length)  # no stream left empty
    warmup = warmup if streams > 1 else 0
    steps = torch.arange(length + warmup)  # (R,)
    starts = (torch.arange(streams) * length - warmup).clamp(min=0)  # (S,)
    read = starts.unsqueeze(1) + steps  # (S, R)
    first_kept = torch.arange(streams) * length  # (S,)
    keep = (read >= first_kept.unsqueeze(1)) & (read < (first_kept + length).unsqueeze(1))
    keep &= read < num_tokens  # (S, R)
    read = read.masked_fill(read >= num_tokens, -1)  # (S, R)
    return StreamPlan(read=read, keep=keep)


@dataclass
class LayerTrace:
    """One layer's values at the positions of a :class:`Trace`.

    Attributes:
        h: (n, P or H) the layer's output after reading each token.
        c: (n, H) an LSTM's cell; None for other cells.
        gates: name -> (n, H), the σ gates (see :mod:`rnnkit.inspect.steps`); empty if not asked.
    """

    h: Tensor
    c: Tensor | None
    gates: dict[str, Tensor]


@dataclass
class Trace:
    """Values after reading the tokens at ``positions``, in no particular order.

    Attributes:
        positions: (n,) int64 positions in the text.
        layers: one :class:`LayerTrace` per layer.
        logits: (n, V) next-token logits (they score the token at ``positions + 1``), or None.
    """

    positions: Tensor
    layers: list[LayerTrace]
    logits: Tensor | None


def trace(
    model: nn.Module,
    ids: Tensor,
    *,
    streams: int | None = None,
    warmup: int = WARMUP,
    chunk_size: int = CHUNK,
    gates: bool = False,
    logits: bool = False,
) -> Iterator[Trace]:
    """Run ``model`` (a :class:`rnnkit.tasks.lm.LanguageModel`) over ids (N,), chunk by chunk.

    The model is put in eval mode. Each chunk covers up to ``chunk_size`` steps of every stream
    (see the module doc); together the chunks cover every position once.

    Args:
        gates: include the σ gates.
        logits: include the next-token logits.

    Yields:
        :class:`Trace` chunks.
    """
    model.eval()
    plan = plan_streams(ids.numel(), streams, warmup)
    device = next(model.parameters()).device
    ids = ids.to(device)
    read, keep = plan.read.to(device), plan.keep.to(device)  # (S, R) each
    tokens = ids[read.clamp(min=0)].masked_fill(read < 0, Vocab.pad_id)  # (S, R)
    with torch.no_grad():
        states = initial_states(model.rnn, read.shape[0], model.head.weight)
        for start in range(0, read.shape[1], chunk_size):
            span = slice(start, start + chunk_size)
            per_layer, chunk_logits, states = run_model(
                model, tokens[:, span], states, gates=gates, logits=logits
            )
            mask = keep[:, span]  # (S, C)
            if not mask.any():
                continue
            layers = [
                LayerTrace(
                    h=steps.h[mask],  # (n, P or H)
                    c=None if steps.c is None else steps.c[mask],  # (n, H)
                    gates={name: value[mask] for name, value in steps.gates.items()},
                )
                for steps in per_layer
            ]
            yield Trace(
                positions=read[:, span][mask],  # (n,)
                layers=layers,
                logits=None if chunk_logits is None else chunk_logits[mask],  # (n, V)
            )


def activations(model: nn.Module, ids: Tensor, **options: object) -> Trace:
    """Every chunk of :func:`trace` in one :class:`Trace`, ordered by position (short texts).

    ``options`` are :func:`trace`'s. Its tensors are (N, ·): all of the text at once.
    """
    chunks = list(trace(model, ids, **options))
    positions = torch.cat([chunk.positions for chunk in chunks])  # (N,)
    order = positions.argsort()  # (N,)

    def joined(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts)[order]  # (N, ·)

    layers = []
    for layer in range(len(chunks[0].layers)):
        parts = [chunk.layers[layer] for chunk in chunks]
        layers.append(
            LayerTrace(
                h=joined([p.h for p in parts]),
                c=None if parts[0].c is None else joined([p.c for p in parts]),
                gates={g: joined([p.gates[g] for p in parts]) for g in parts[0].gates},
            )
        )
    logits = None if chunks[0].logits is None else joined([c.logits for c in chunks])
    return Trace(positions=positions[order], layers=layers, logits=logits)
