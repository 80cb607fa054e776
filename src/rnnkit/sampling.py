"""Sampling from recurrent language models with carried state.

Temperature, top-k and top-p (nucleus) sampling, greedy decoding and beam search. Every
function takes a *model* that follows the contract of ``rnnkit.tasks.lm`` (see ``StepModel``):

    model(tokens (N, T) long, state=None) -> (logits (N, T, V), state)
    model.step(tokens (N,) long, state)   -> (logits (N, V), state)

The prompt ("prime") is fed once through ``model(...)``; after that each new token costs one
``model.step`` call that carries the state, so the prefix is never re-run. Put the model in
``eval()`` mode first if it has dropout: these functions do not change its mode.

:func:`greedy_batch` and :func:`beam_search_batch` decode N sequences at once from given
first logits and state (a decoder that starts from an encoder's state, or from a condition),
stop each sequence at its end token and rank hypotheses by length-normalised log-probability;
:func:`beam_search` is the same search from a prime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = [
    "Hypothesis",
    "StepModel",
    "beam_search",
    "beam_search_batch",
    "filter_logits",
    "generate_tokens",
    "greedy",
    "greedy_batch",
]


class StepModel(Protocol):
    """What the samplers need from a model: a whole-sequence call and a one-token step.

    Shapes:
        ``model(tokens (N, T), state=None) -> (logits (N, T, V), state)``
        ``model.step(tokens (N,), state) -> (logits (N, V), state)``
    """

    def __call__(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    Attributes:
        tokens: the generated token ids, without the end token.
        log_prob: the summed log-probability of the generated tokens, end token included.
        score: ``log_prob / n ** length_alpha``, n the number of generated tokens (end token
            included): what the search ranks by.
        finished: whether the sequence ended with the end token (else it hit the length limit).
    """

    tokens: list[int]
    log_prob: float
    score: float
    finished: bool


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
    draw = None
    if top_k is None and top_p is None and hasattr(model, "draw"):
        draw = partial(model.draw, temperature=temperature, generator=generator)
    return _generate(model, tokens, length, pick, draw)


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


def beam_search(model: StepModel, prime: Sequence[int], length: int, beam_size: int) -> list[int]:
    """The continuation of highest total log-probability found by a beam of ``beam_size``.

    The prime is read once; then :func:`beam_search_batch` extends one source by exactly
    ``length`` tokens (no end token, so all candidates have the same length and no length
    normalisation is needed). ``beam_size == 1`` is greedy.

    Args:
        model: see ``StepModel``; its state as :func:`beam_search_batch` needs it.
        prime: token ids to condition on (non-empty).
        length: number of tokens to generate, >= 0.
        beam_size: number of hypotheses kept, >= 1.

    Returns:
        The ``length`` token ids of the best hypothesis (the prime is not included).
    """
    _check_beam_size(beam_size)
    _check_length(length)
    tokens = _prime_tensor(prime, 1, _device_of(model))  # (1, T)
    if length == 0:
        return []
    with torch.no_grad():
        logits, state = model(tokens, None)  # (1, T, V)
    (best,) = beam_search_batch(model, logits[:, -1], state, length, beam_size, length_alpha=0.0)
    return best.tokens


@torch.no_grad()
def greedy_batch(
    model: StepModel,
    logits: Tensor,
    state: Any,
    max_length: int,
    *,
    eos_id: int | None = None,
    length_alpha: float = 1.0,
) -> list[Hypothesis]:
    """Greedy decoding of N sequences at once: the most probable token at each step.

    Each sequence stops at its first ``eos_id``; the batch stops when every sequence has, or
    after ``max_length`` tokens. A finished sequence's row keeps stepping with the others (its
    tokens are ignored), so that the state stays one batch.

    Args:
        model: see ``StepModel``; only ``model.step`` is called.
        logits: (N, V) scores of the first token to generate, from the step that made ``state``.
        state: the model's state after that step, N rows.
        max_length: the most tokens per sequence (end token included), >= 1.
        eos_id: the end token, or None to generate exactly ``max_length`` tokens.
        length_alpha: the exponent of the length in :attr:`Hypothesis.score`.

    Returns:
        N hypotheses, in the order of the rows.
    """
    _check_length(max_length)
    n = logits.shape[0]
    device = logits.device
    chosen = []
    log_prob = torch.zeros(n, device=device)  # (N,)
    lengths = torch.zeros(n, dtype=torch.long, device=device)  # (N,)
    finished = torch.zeros(n, dtype=torch.bool, device=device)  # (N,)
    for t in range(max_length):
        log_probs = logits.log_softmax(dim=-1, dtype=torch.float32)  # (N, V)
        token = log_probs.argmax(dim=-1)  # (N,)
        chosen.append(token)
        log_prob += log_probs.gather(1, token[:, None]).squeeze(1).masked_fill(finished, 0.0)
        lengths += (~finished).long()
        if eos_id is not None:
            finished |= token == eos_id
        if bool(finished.all()) or t + 1 == max_length:
            break
        logits, state = model.step(token, state)  # (N, V)
    sequences = torch.stack(chosen, dim=1).tolist() if chosen else [[] for _ in range(n)]
    return _hypotheses(sequences, log_prob, lengths, finished, length_alpha)


@torch.no_grad()
def beam_search_batch(
    model: StepModel,
    logits: Tensor,
    state: Any,
    max_length: int,
    beam_size: int,
    *,
    eos_id: int | None = None,
    length_alpha: float = 1.0,
) -> list[Hypothesis]:
    """Beam search for N sequences at once, ranked by length-normalised log-probability.

    Each source keeps ``beam_size`` hypotheses (K), all N·K of them one batch of
    ``model.step``; row ``n·K + k`` is beam k of source n. At each step every live beam is
    extended by every token; a finished beam (it produced ``eos_id``) stays as it is, at its
    score. Of these candidates the K with the best score ``log_prob / n ** length_alpha``
    survive (n: the candidate's tokens, end token included; ``length_alpha`` 0 ranks by total
    log-probability, 1 by the mean per token). The search stops when every beam of every
    source has finished, or after ``max_length`` tokens. ``beam_size == 1`` is
    :func:`greedy_batch`.

    The state is re-indexed along its batch rows to follow the surviving beams: a tensor
    shaped like torch's ``(L * num_directions, N, H)`` (batch dimension 1), a (nested) tuple
    or list of them, or any object with a ``reorder(index)`` method that returns the state of
    the rows ``index`` (e.g. a decoder's state that also holds the encoder's outputs).

    Args:
        model: see ``StepModel``; only ``model.step`` is called.
        logits: (N, V) scores of the first token to generate, from the step that made ``state``.
        state: the model's state after that step, N rows.
        max_length: the most tokens per sequence (end token included), >= 1.
        beam_size: K, hypotheses kept per source, >= 1.
        eos_id: the end token, or None to generate exactly ``max_length`` tokens.
        length_alpha: the exponent of the length normalisation, >= 0.

    Returns:
        The best hypothesis of each source, N in all.
    """
    _check_beam_size(beam_size)
    _check_length(max_length)
    if beam_size == 1:
        return greedy_batch(
            model, logits, state, max_length, eos_id=eos_id, length_alpha=length_alpha
        )
    n, vocab_size = logits.shape
    k, device = beam_size, logits.device
    batch = torch.arange(n, device=device)  # (N,)
    state = _select_beams(state, batch.repeat_interleave(k))  # N·K rows
    log_probs = logits.log_softmax(dim=-1, dtype=torch.float32).repeat_interleave(k, 0)  # (N·K, V)
    scores = torch.full((n, k), -math.inf, device=device)  # (N, K) summed log-probabilities
    scores[:, 0] = 0.0  # one live beam per source at the start
    lengths = torch.zeros(n, k, dtype=torch.long, device=device)  # (N, K)
    finished = torch.zeros(n, k, dtype=torch.bool, device=device)  # (N, K)
    sequences = torch.zeros(n, k, 0, dtype=torch.long, device=device)  # (N, K, t)
    stay = torch.full((vocab_size,), -math.inf, device=device)  # (V,) a finished beam's row
    if eos_id is not None:
        stay[eos_id] = 0.0  # it repeats its end token at no cost
    for t in range(max_length):
        step_log_probs = log_probs.view(n, k, vocab_size)  # (N, K, V)
        if eos_id is not None:
            step_log_probs = torch.where(finished[:, :, None], stay, step_log_probs)
        totals = scores[:, :, None] + step_log_probs  # (N, K, V)
        new_lengths = lengths + (~finished).long()  # (N, K)
        ranked = totals / new_lengths[:, :, None].float() ** length_alpha  # (N, K, V)
        flat = ranked.view(n, k * vocab_size).topk(k, dim=1).indices  # (N, K)
        beams = flat.div(vocab_size, rounding_mode="floor")  # (N, K) which beam each extends
        tokens = flat.remainder(vocab_size)  # (N, K)
        scores = totals.view(n, -1).gather(1, flat)  # (N, K)
        lengths = new_lengths.gather(1, beams)  # (N, K)
        finished = finished.gather(1, beams)  # (N, K)
        if eos_id is not None:
            finished = finished | (tokens == eos_id)
        history = sequences.gather(1, beams[:, :, None].expand(-1, -1, t))  # (N, K, t)
        sequences = torch.cat([history, tokens[:, :, None]], dim=2)  # (N, K, t + 1)
        if bool(finished.all()) or t + 1 == max_length:
            break
        rows = (batch[:, None] * k + beams).view(-1)  # (N·K,) the row each survivor extends
        logits, state = model.step(tokens.view(-1), _select_beams(state, rows))  # (N·K, V)
        log_probs = logits.log_softmax(dim=-1, dtype=torch.float32)  # (N·K, V)
    # topk sorts by score, so beam 0 is each source's best
    return _hypotheses(
        sequences[:, 0].tolist(), scores[:, 0], lengths[:, 0], finished[:, 0], length_alpha
    )


def _hypotheses(
    sequences: list[list[int]],
    log_prob: Tensor,
    lengths: Tensor,
    finished: Tensor,
    length_alpha: float,
) -> list[Hypothesis]:
    """Hypotheses of N decoded rows: tokens cut at their length, the end token dropped."""
    result = []
    for tokens, total, length, done in zip(
        sequences, log_prob.tolist(), lengths.tolist(), finished.tolist(), strict=True
    ):
        kept = tokens[: length - 1] if done else tokens[:length]
        score = total / max(length, 1) ** length_alpha
        result.append(Hypothesis(tokens=kept, log_prob=total, score=score, finished=done))
    return result


@torch.no_grad()
def _generate(
    model: StepModel,
    tokens: Tensor,
    length: int,
    pick: Callable[[Tensor], Tensor],
    draw: Callable[..., Iterator[Tensor] | None] | None = None,
) -> Iterator[Tensor]:
    """The sampling loop of ``generate_tokens``; ``tokens`` is the (N, T) prime batch.

    ``draw(token, state, count)``, where given, may take over after the first token: it
    yields the next ``count`` tokens as ``pick`` after ``model.step`` would (up to float
    rounding, taking the generator's draws in the same order), or returns None to leave the
    steps to this loop (see ``LSTMSamplingStep.draw``)."""
    if length == 0:
        return
    logits, state = model(tokens, None)  # (N, T, V)
    token = pick(logits[:, -1])  # (N,)
    yield token
    drawn = None if draw is None or length == 1 else draw(token, state, length - 1)
    if drawn is not None:
        yield from drawn
        return
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
    """Reorder a state along its batch rows: tensors (batch dimension 1), tuples and lists of
    them, or an object with a ``reorder(index)`` method."""
    if hasattr(state, "reorder"):
        return state.reorder(index)
    if isinstance(state, Tensor):
        return state.index_select(1, index)  # (L, K', H)
    if isinstance(state, (tuple, list)):
        return type(state)(_select_beams(part, index) for part in state)
    raise TypeError(
        "beam_search needs a state made of tensors shaped (L, N, H), or tuples or lists of "
        f"them, or an object with a reorder(index) method; the model returned "
        f"{type(state).__name__}"
    )


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None to keep every token); got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (or None to keep every token); got {top_p}")


def _check_beam_size(beam_size: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1; got {beam_size}")


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
