r"""Attention of an encoder–decoder: one decoder state reads a weighted sum of encoder outputs.

For a query ``q`` (the decoder state) and keys ``k_s`` (the encoder outputs), each kind scores
every key, the softmax over the real keys gives the weights, and the context is their sum:

    dot       (Luong et al. 2015):     score_s = q · k_s                  (needs Hq == Hk)
    general   (Luong et al. 2015):     score_s = q^T W k_s                W (Hq, Hk)
    additive  (Bahdanau et al. 2015):  score_s = v^T tanh(W_q q + W_k k_s)  W_q (A, Hq), W_k (A, Hk)
    a = softmax_{s real}(score),   context = Σ_s a_s k_s
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

AttentionKind = Literal["dot", "general", "additive"]


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

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised score of every key: query (B, Hq), keys (B, S, Hk) -> (B, S)."""
        if self.kind == "dot":
            return torch.bmm(keys, query[:, :, None]).squeeze(2)  # (B, S)
        if self.kind == "general":
            projected = query @ self.weight  # (B, Hk), q^T W
            return torch.bmm(keys, projected[:, :, None]).squeeze(2)  # (B, S)
        hidden = torch.tanh(self.query_proj(query)[:, None, :] + self.key_proj(keys))  # (B, S, A)
        return self.v(hidden).squeeze(2)  # (B, S)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Context and weights: query (B, Hq), keys (B, S, Hk), mask (B, S) -> (B, Hk), (B, S).

        Raises:
            ValueError: wrong shapes, or a row of ``mask`` with no real key.
        """
        B, S, Hk = keys.shape
        if query.shape != (B, self.query_size) or Hk != self.key_size or mask.shape != (B, S):
            raise ValueError(
                f"Attention(query_size={self.query_size}, key_size={self.key_size}) expects "
                f"query (B, {self.query_size}), keys (B, S, {self.key_size}), mask (B, S); got "
                f"{tuple(query.shape)}, {tuple(keys.shape)}, {tuple(mask.shape)}"
            )
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every row of mask needs at least one real key (True)")
        keys = keys.masked_fill(~mask[:, :, None], 0.0)  # (B, S, Hk), padding cannot leak
        scores = self.scores(query, keys).masked_fill(~mask, float("-inf"))  # (B, S)
        weights = scores.softmax(dim=1)  # (B, S), exactly 0 where mask is False
        context = torch.bmm(weights[:, None, :], keys).squeeze(1)  # (B, Hk)
        return context, weights
