r"""Attention of an encoder–decoder: one decoder state reads a weighted sum of encoder outputs.

For a query ``q`` (the decoder state) and keys ``k_s`` (the encoder outputs), each kind scores
every key, the softmax over the real keys gives the weights, and the context is their sum:

    dot       (Luong et al. 2015):     score_s = q · k_s                  (needs Hq == Hk)
    general   (Luong et al. 2015):     score_s = q^T W k_s                W (Hq, Hk)
    additive  (Bahdanau et al. 2015):  score_s = v^T tanh(W_q q + W_k k_s)  W_q (A, Hq), W_k (A, Hk)
    a = softmax_{s real}(score),   context = Σ_s a_s k_s

A decoder reads the same keys at every step: :meth:`Attention.memory` zeroes their padding and
projects them once, and :meth:`Attention.attend` scores one query (or T queries) against them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

AttentionKind = Literal["dot", "general", "additive"]


class Memory(NamedTuple):
    """Keys prepared by :meth:`Attention.memory` for reading by many queries.

    Attributes:
        keys: (B, S, Hk), zero at padded steps.
        projected: (B, S, Hq) the keys as the scores multiply them (dot: the keys; general:
            W k_s), or (B, S, A) W_k k_s (additive).
        mask: (B, S) bool, True = real.
    """

    keys: Tensor
    projected: Tensor
    mask: Tensor

    def reorder(self, index: Tensor) -> Memory:
        """The memory of the rows ``index`` (N',) (beam search's reordering)."""
        return Memory(*(part.index_select(0, index) for part in self))


class Attention(nn.Module):
    r"""Scores each key against the query and returns the softmax-weighted sum of the keys.

    Parameters: none for ``dot``; for ``general``, ``weight`` (Hq, Hk) = W; for ``additive``,
    ``query_proj`` (W_q, no bias), ``key_proj`` (W_k, no bias) and ``v`` (``v.weight`` (1, A)),
    with attention size A = Hk. Padded keys (``mask`` False) get exactly zero weight, and
    their values never reach the context or the gradients.

    Args:
        kind: ``"dot"``, ``"general"`` or ``"additive"``.
        query_size: Hq, features of the query (the decoder's hidden size).
        key_size: Hk, features of each key (the encoder's output size).

    Shapes:
        query (B, Hq), keys (B, S, Hk), mask (B, S) bool, True = real
        -> context (B, Hk), weights (B, S)
    """

    def __init__(self, kind: AttentionKind, query_size: int, key_size: int) -> None:
        super().__init__()
        if kind not in get_args(AttentionKind):
            raise ValueError(f"attention must be one of {get_args(AttentionKind)}; got {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(
                f"dot attention needs query_size == key_size, got {query_size} and {key_size}; "
                "use 'general' or 'additive' for different sizes"
            )
        self.kind = kind
        self.query_size = query_size
        self.key_size = key_size
        if kind == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size))  # (Hq, Hk)
            bound = key_size**-0.5
            nn.init.uniform_(self.weight, -bound, bound)  # nn.Linear's range for Hk inputs
        elif kind == "additive":
            self.query_proj = nn.Linear(query_size, key_size, bias=False)
            self.key_proj = nn.Linear(key_size, key_size, bias=False)
            self.v = nn.Linear(key_size, 1, bias=False)

    def extra_repr(self) -> str:
        return f"{self.kind!r}, query_size={self.query_size}, key_size={self.key_size}"

    def memory(self, keys: Tensor, mask: Tensor) -> Memory:
        """The keys made ready to be read by many queries (a decoder's every step): padding
        zeroed, and projected once by ``W`` (general) or ``W_k`` (additive).

        Raises:
            ValueError: wrong shapes, or a row of ``mask`` with no real key.
        """
        B, S, Hk = keys.shape
        if Hk != self.key_size or mask.shape != (B, S):
            raise ValueError(
                f"Attention(query_size={self.query_size}, key_size={self.key_size}) expects "
                f"keys (B, S, {self.key_size}) and mask (B, S); got {tuple(keys.shape)}, "
                f"{tuple(mask.shape)}"
            )
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every row of mask needs at least one real key (True)")
        keys = keys.masked_fill(~mask[:, :, None], 0.0)  # (B, S, Hk), padding cannot leak
        if self.kind == "dot":
            projected = keys  # (B, S, Hq)
        elif self.kind == "general":
            projected = keys @ self.weight.T  # (B, S, Hq), W k_s
        else:
            projected = self.key_proj(keys)  # (B, S, A), W_k k_s
        return Memory(keys, projected, mask)

    def scores(self, query: Tensor, memory: Memory) -> Tensor:
        """Unnormalised score of every key: query (B, T, Hq) -> (B, T, S)."""
        if self.kind in ("dot", "general"):
            return torch.bmm(query, memory.projected.transpose(1, 2))  # (B, T, S), q · (W) k_s
        hidden = torch.tanh(
            self.query_proj(query)[:, :, None, :] + memory.projected[:, None, :, :]
        )  # (B, T, S, A)
        return self.v(hidden).squeeze(3)  # (B, T, S)

    def attend(self, query: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """Context and weights of one query per row, or of T queries per row (a decoder's
        steps): query (B, Hq) -> (B, Hk), (B, S); query (B, T, Hq) -> (B, T, Hk), (B, T, S)."""
        B = memory.keys.shape[0]
        if query.dim() not in (2, 3) or query.shape[0] != B or query.shape[-1] != self.query_size:
            raise ValueError(
                f"Attention(query_size={self.query_size}, key_size={self.key_size}) expects "
                f"query (B, {self.query_size}) or (B, T, {self.query_size}) with B = {B}; got "
                f"{tuple(query.shape)}"
            )
        one = query.dim() == 2
        queries = query[:, None, :] if one else query  # (B, T, Hq)
        scores = self.scores(queries, memory)  # (B, T, S)
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))  # (B, T, S)
        weights = scores.softmax(dim=2)  # (B, T, S), exactly 0 where mask is False
        context = torch.bmm(weights, memory.keys)  # (B, T, Hk)
        if one:
            return context.squeeze(1), weights.squeeze(1)  # (B, Hk), (B, S)
        return context, weights

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Context and weights: query (B, Hq), keys (B, S, Hk), mask (B, S) -> (B, Hk), (B, S).

        A query (B, T, Hq) gives (B, T, Hk), (B, T, S). Reading the same keys again (a
        decoder's steps), :meth:`memory` once and :meth:`attend` per step cost less.

        Raises:
            ValueError: wrong shapes, or a row of ``mask`` with no real key.
        """
        return self.attend(query, self.memory(keys, mask))
