"""Sampling from recurrent language models with carried state.

Temperature, top-k and top-p (nucleus) sampling, greedy decoding and beam search. Every
function takes a *model* that follows the contract of ``rnnkit.tasks.lm`` (see ``StepModel``):

    model(tokens (N, T) long, state=None) -> (logits (N, T, V), state)
    model.step(tokens (N,) long, state)   -> (logits (N, V), state)

The prompt ("prime") is fed once through ``model(...)``; after that each new token costs one
``model.step`` call that carries the state, so the prefix is never re-run. Put the model in
``eval()`` mode first if it has dropout: these functions do not change its mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = ["StepModel", "beam_search", "filter_logits", "generate_tokens", "greedy"]


class StepModel(Protocol):
    """What the samplers need from a model: a whole-sequence call and a one-token step.

    Shapes:
        ``model(tokens (N, T), state=None) -> (logits (N, T, V), state)``
        ``model.step(tokens (N,), state) -> (logits (N, V), state)``
    """

    def __call__(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set every logit outside the top-k and the top-p nucleus to ``-inf``.

    ``top_k`` keeps the k largest logits of each row (exactly k, ties broken by
    ``torch.topk``; all of them when k >= V). ``top_p`` then keeps the smallest set of tokens,
    taken from the most probable down, whose softmax probability mass reaches p; the most
    probable token is always kept. ``None`` (or ``top_p == 1``) switches a filter off. The
    input is not modified.

    Args:
        logits: (N, V) unnormalised scores, one row per sample.
        top_k: number of tokens to keep per row, >= 1, or None.
        top_p: probability mass to keep, in (0, 1], or None.

    Returns:
        (N, V) logits with the removed tokens at ``-inf`` and the kept ones unchanged.
    """
    _check_filters(top_k, top_p)
    if logits.dim() != 2:
        raise ValueError(
            f"filter_logits expects logits of shape (N, V); got shape {tuple(logits.shape)}"
        )
    if top_k is not None and top_k < logits.size(-1):
        values, indices = logits.topk(top_k, dim=-1)  # (N, k), (N, k)
        logits = torch.full_like(logits, -math.inf).scatter_(-1, indices, values)  # (N, V)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (N, V), (N, V)
        probs = sorted_logits.softmax(dim=-1)  # (N, V)
        mass_before = probs.cumsum(dim=-1) - probs  # (N, V) mass of the more probable tokens
        drop_sorted = mass_before >= top_p  # (N, V) the set already reached p without it
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # (N, V) back in vocabulary order
        logits = logits.masked_fill(drop, -math.inf)  # (N, V)
    return logits


def generate_tokens(
    model: StepModel,
    prime: Sequence[int],
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield ``length`` sampled tokens, one step at a time, carrying the model's state.

    The prime is fed once as a ``(num_samples, T)`` batch; each later token costs one
    ``model.step``. The ``num_samples`` rows are independent continuations of the same prime,
    sampled together as one batch. Everything runs under ``torch.no_grad()``; the caller's
    grad mode is untouched between tokens. Arguments are checked when this is called, not at
    the first token.

    Args:
        model: see ``StepModel``.
        prime: token ids to condition on (non-empty).
        length: number of tokens to generate, >= 0.
        temperature: logits are divided by it; 0 means greedy (argmax, no randomness).
            Probabilities are computed in float32 whatever the model's dtype.
        top_k: sample only from the k most probable tokens (see ``filter_logits``).
        top_p: sample only from the nucleus of probability mass p (see ``filter_logits``).
        num_samples: N, independent continuations sampled as one batch.
        generator: the random source; the same seed gives the same tokens, the ones that
            ``torch.multinomial(probs, 1, generator=generator)`` would draw at each step.
            None uses torch's global generator.

    Yields:
        (N,) long tensors on the model's device: the token chosen for each sample at each step.
    """
    if not 0 <= temperature < math.inf:
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 means greedy); got {temperature}"
        )
    _check_filters(top_k, top_p)
    _check_length(length)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    tokens = _prime_tensor(prime, num_samples, _device_of(model))  # (N, T)
    pick = _make_picker(temperature, top_k, top_p, generator)
    return _generate(model, tokens, length, pick)


def greedy(model: StepModel, prime: Sequence[int], length: int) -> list[int]:
    """Greedy decoding: the most probable token at each step, carrying the state.

    Args:
        model: see ``StepModel``.
        prime: token ids to condition on (non-empty).
        length: number of tokens to generate, >= 0.

    Returns:
        The ``length`` generated token ids (the prime is not included).
    """
    steps = list(generate_tokens(model, prime, length, temperature=0.0))  # length × (1,)
    return torch.cat(steps).tolist() if steps else []


@torch.no_grad()
def beam_search(model: StepModel, prime: Sequence[int], length: int, beam_size: int) -> list[int]:
    """The continuation of highest total log-probability found by a beam of ``beam_size``.

    At each step every beam is extended by every token, and the ``beam_size`` best
    (beam, token) pairs by summed log-probability survive. The beams are one batch of
    ``model.step``; their state is re-indexed along its batch dimension to follow the
    surviving beams. A state may be a tensor or a (nested) tuple or list of tensors, each
    shaped like torch's ``(L * num_directions, N, H)``: batch dimension 1. All candidates
    have the same length, so no length normalisation is needed. ``beam_size == 1`` is greedy.

    Args:
        model: see ``StepModel``.
        prime: token ids to condition on (non-empty).
        length: number of tokens to generate, >= 0.
        beam_size: number of hypotheses kept, >= 1.

    Returns:
        The ``length`` token ids of the best hypothesis (the prime is not included).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1; got {beam_size}")
    _check_length(length)
    tokens = _prime_tensor(prime, 1, _device_of(model))  # (1, T)
    if length == 0:
        return []
    logits, state = model(tokens, None)  # (1, T, V)
    log_probs = logits[:, -1].log_softmax(dim=-1, dtype=torch.float32)  # (K, V), K = 1 beam
    vocab_size = log_probs.size(-1)
    scores = log_probs.new_zeros(1)  # (K,) total log-probability of each beam
    sequences = tokens.new_empty(1, 0)  # (K, t)
    for t in range(length):
        candidates = (scores[:, None] + log_probs).view(-1)  # (K·V,)
        scores, flat = candidates.topk(min(beam_size, candidates.numel()))  # (K',), (K',)
        beams = flat.div(vocab_size, rounding_mode="floor")  # (K',) which beam each extends
        next_tokens = flat.remainder(vocab_size)  # (K',)
        sequences = torch.cat([sequences[beams], next_tokens[:, None]], dim=1)  # (K', t + 1)
        if t + 1 < length:
            logits, state = model.step(next_tokens, _select_beams(state, beams))  # (K', V)
            log_probs = logits.log_softmax(dim=-1, dtype=torch.float32)  # (K', V)
    return sequences[0].tolist()  # topk sorts, so beam 0 is the best


@torch.no_grad()
def _generate(
    model: StepModel, tokens: Tensor, length: int, pick: Callable[[Tensor], Tensor]
) -> Iterator[Tensor]:
    """The sampling loop of ``generate_tokens``; ``tokens`` is the (N, T) prime batch."""
    if length == 0:
        return
    logits, state = model(tokens, None)  # (N, T, V)
    token = pick(logits[:, -1])  # (N,)
    yield token
    for _ in range(length - 1):
        logits, state = model.step(token, state)  # (N, V)
        token = pick(logits)  # (N,)
        yield token


def _make_picker(
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Callable[[Tensor], Tensor]:
    """The per-step choice (N, V) logits -> (N,) tokens, with the settings decided once."""
    if temperature == 0:
        return _argmax
    filtering = top_k is not None or top_p is not None

    def pick(logits: Tensor) -> Tensor:
        if temperature != 1.0:
            logits = logits / temperature  # (N, V)
        if filtering:
            logits = filter_logits(logits, top_k, top_p)  # (N, V)
        return _draw(logits.softmax(dim=-1, dtype=torch.float32), generator)  # (N,)

    return pick


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row of probs (N, V) -> (N,): the draw of ``torch.multinomial(probs, 1)``.

    For one sample, ``torch.multinomial`` races exponential clocks, argmax(p / q) with
    q ~ Exp(1), which picks token v with probability p_v. Running the same race here gives the
    same tokens from the same generator state, without multinomial's dozen checking ops per
    call (softmax output is valid by construction), which would double the sampler's cost.
    """
    race = torch.empty_like(probs).exponential_(generator=generator)  # (N, V)
    return torch.div(probs, race, out=race).argmax(dim=-1)  # (N,)


def _argmax(logits: Tensor) -> Tensor:
    """Greedy choice: (N, V) -> (N,), no softmax needed."""
    return logits.argmax(dim=-1)


def _select_beams(state: Any, index: Tensor) -> Any:
    """Reorder a state along its batch dimension 1: tensors, tuples and lists of them."""
    if isinstance(state, Tensor):
        return state.index_select(1, index)  # (L, K', H)
    if isinstance(state, (tuple, list)):
        return type(state)(_select_beams(part, index) for part in state)
    raise TypeError(
        "beam_search needs a state made of tensors shaped (L, N, H), or tuples or lists of "
        f"them; the model returned {type(state).__name__}"
    )


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None to keep every token); got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (or None to keep every token); got {top_p}")


def _check_length(length: int) -> None:
    if length < 0:
        raise ValueError(f"length must be >= 0; got {length}")


def _prime_tensor(prime: Sequence[int], num_samples: int, device: torch.device) -> Tensor:
    """The prime repeated for each sample: (num_samples, T) long."""
    if len(prime) == 0:
        raise ValueError("prime must hold at least one token id; got an empty sequence")
    row = torch.as_tensor(list(prime), dtype=torch.long, device=device)  # (T,)
    return row.repeat(num_samples, 1)  # (N, T), contiguous so models may .view() it


def _device_of(model: StepModel) -> torch.device:
    """The device of the model's first parameter; CPU for a model without parameters."""
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")
