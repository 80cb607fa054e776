r"""A count-based n-gram model with Witten–Bell interpolation, the baseline of the error analysis.

For a context h of k tokens (k = 0 … n − 1) and h' the same without its first token,

    P_k(w | h) = (c(h w) + T(h) · P_{k−1}(w | h')) / (c(h) + T(h))      if c(h) > 0
               = P_{k−1}(w | h')                                          otherwise

with c the counts in the training text, T(h) the number of distinct tokens seen after h, and
P_{−1} uniform over the vocabulary: each order backs off to the one below in proportion to how
many new continuations its context has shown (Witten & Bell 1991). Every probability is > 0.

Counting all n-grams of a few million tokens up to n = 20 would not fit in memory as Python
dictionaries, and is not needed: only the contexts that occur in the text being scored matter.
Each context and (context, token) pair is hashed to 64 bits (a SplitMix64 mix per token, so
no structure of the text survives in the hash; a collision among the ~10⁸ keys of a large run
has probability ~10⁻³), the text's hashes are sorted once, and the training text's are looked
up in them with ``np.searchsorted``, one order at a time, all in NumPy; a training position
whose k-token context is not in the text is dropped before order k + 1.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PAIR = np.uint64(0xD6E8FEB86659FD93)
_ONE = np.uint64(1)
DENSE_LIMIT = 1 << 24
"""Largest (contexts × V) table of counts; beyond it, (context, token) pairs are hashed."""


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _extend(context: np.ndarray, tokens: np.ndarray, k: int) -> np.ndarray:
    """Hashes of the contexts one token longer: position i adds ``tokens[i − k]`` (k ≥ 1).

    context (M,) uint64 of the (k − 1)-token contexts before each position -> (M,); positions
    i < k get a value that is never used.
    """
    earlier = np.zeros_like(tokens)
    earlier[k:] = tokens[:-k]
    return _mix(context ^ (earlier + _ONE) * _GOLDEN)


def _pairs(context: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Hashes of (context, next token)."""
    return _mix(context ^ (tokens + _ONE) * _PAIR)


def _lookup(keys: np.ndarray, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each key in ``sorted_keys`` and whether it is there."""
    index = np.searchsorted(sorted_keys, keys).clip(max=max(len(sorted_keys) - 1, 0))
    found = sorted_keys[index] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
    return index, found


def _pair_counts(
    train_context: np.ndarray,
    train_next: np.ndarray,
    index: np.ndarray,
    query: np.ndarray,
    query_next: np.ndarray,
    at: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """c(h w) and T(h) of the queries from hashed (context, token) pairs.

    train_context, train_next, index (m,): each training position's context hash, token and
    the index of its context among the text's; query, query_next, at (n,): the same for the
    text's positions. Returns two (n,) int arrays.
    """
    seen_pairs = _pairs(train_context, train_next)  # (m,)
    distinct, first, seen = np.unique(seen_pairs, return_index=True, return_counts=True)
    followers = np.bincount(index[first], minlength=int(at.max()) + 1)  # T(h) per context
    query_pairs = _pairs(query, query_next)  # (n,)
    position, found = _lookup(query_pairs, distinct)
    return np.where(found, seen[position], 0), followers[at]


def ngram_probabilities(
    train: np.ndarray, ids: np.ndarray, order: int, vocab_size: int
) -> np.ndarray:
    """P(ids[i] | ids[i − n + 1 : i]) for i = 1 … N − 1 under the n-gram model of ``train``.

    Args:
        train: (M,) int token ids of the training text.
        ids: (N,) int token ids of the text to score, N ≥ 2.
        order: n ≥ 1 (contexts of up to n − 1 tokens; fewer at the start of the text).
        vocab_size: V, for the uniform distribution below the unigram.

    Returns:
        (N − 1,) float64 probabilities, each in (0, 1].
    """
    if order < 1:
        raise ValueError(f"order must be at least 1; got {order}")
    train_tokens = np.asarray(train, dtype=np.uint64)  # (M,)
    tokens = np.asarray(ids, dtype=np.uint64)  # (N,)
    targets, positions = tokens[1:], np.arange(1, len(tokens))  # (N − 1,) each
    probs = np.full(len(targets), 1.0 / vocab_size)  # (N − 1,) P_{−1}
    text_context = np.zeros(len(tokens), dtype=np.uint64)  # (N,) empty contexts
    # Training positions whose context (so far) occurs in the text, and its hash: a context of
    # k + 1 tokens can only occur if its last k do, so the set only shrinks with the order.
    alive = np.arange(len(train_tokens))  # (m,)
    train_context = np.zeros(len(train_tokens), dtype=np.uint64)  # (m,)
    for k in range(order):
        if k > 0:
            long_enough = alive >= k
            alive, train_context = alive[long_enough], train_context[long_enough]
            train_context = _mix(train_context ^ (train_tokens[alive - k] + _ONE) * _GOLDEN)
            text_context = _extend(text_context, tokens, k)
        valid = positions >= k  # (N − 1,) enough tokens before
        if not valid.any():
            break
        query = text_context[1:][valid]  # (n,) contexts of the scored positions
        contexts = np.unique(query)
        index, found = _lookup(train_context, contexts)
        alive, train_context, index = alive[found], train_context[found], index[found]
        context_count = np.bincount(index, minlength=len(contexts))  # c(h)
        at = np.searchsorted(contexts, query)  # (n,)
        c_h = context_count[at]
        if len(contexts) * vocab_size <= DENSE_LIMIT:  # a (contexts, V) table of counts
            keys = index * vocab_size + train_tokens[alive].astype(np.int64)  # (m,)
            table = np.bincount(keys, minlength=len(contexts) * vocab_size)
            table = table.reshape(len(contexts), vocab_size)  # (C, V)
            t_h = (table > 0).sum(1)[at]  # T(h)
            c_hw = table[at, targets[valid].astype(np.int64)]  # c(h w)
        else:  # too many for a table: count the hashed pairs
            c_hw, t_h = _pair_counts(
                train_context, train_tokens[alive], index, query, targets[valid], at
            )
        lower = probs[valid]
        probs[valid] = np.where(c_h > 0, (c_hw + t_h * lower) / np.maximum(c_h + t_h, 1), lower)
    return probs
