r"""Pooling a recurrent layer's per-step outputs into one vector per sequence (many-to-one).

Only the real steps of each sequence count (``t < lengths[b]``); the outputs at padded steps
may hold anything (zeros, garbage, NaN) and never reach the result or its gradients.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

PoolingMode = Literal["last", "mean", "max", "attention"]


class Pooling(nn.Module):
    r"""One vector per sequence from a (possibly bidirectional) layer's outputs ``o_t``.

    With ``n = lengths[b]`` and, for a bidirectional layer, ``o_t = [→o_t ; ←o_t]``:

        last:       [→o_{n-1} ; ←o_0]   (each direction's final state; just o_{n-1} when
                    the layer is unidirectional)
        mean:       (1/n) Σ_{t<n} o_t
        max:        max_{t<n} o_t, per feature
        attention:  s_t = v^T tanh(W o_t),  a = softmax_{t<n}(s),  Σ_{t<n} a_t o_t

    ``attention`` learns ``W`` (``attention.weight``, (K, K), no bias) and ``v``
    (``query.weight``, (1, K)) with K = num_directions·H; padded steps get exactly zero
    weight. The weights of the last call are kept in ``last_weights`` (B, T) for inspection
    (None for the other modes).

    Args:
        mode: ``"last"``, ``"mean"``, ``"max"`` or ``"attention"``.
        hidden_size: H, features per direction.
        num_directions: 1, or 2 for a bidirectional layer.

    Shapes:
        outputs (B, T, num_directions·H), lengths (B,) int64 in [1, T] -> (B, num_directions·H)
    """

    def __init__(self, mode: PoolingMode, hidden_size: int, num_directions: int) -> None:
        super().__init__()
        if mode not in get_args(PoolingMode):
            raise ValueError(f"pooling must be one of {get_args(PoolingMode)}; got {mode!r}")
        if num_directions not in (1, 2):
            raise ValueError(f"num_directions must be 1 or 2, got {num_directions}")
        self.mode = mode
        self.hidden_size = hidden_size
        self.num_directions = num_directions
        self.output_size = num_directions * hidden_size
        self.last_weights: Tensor | None = None
        if mode == "attention":
            self.attention = nn.Linear(self.output_size, self.output_size, bias=False)
            self.query = nn.Linear(self.output_size, 1, bias=False)

    def extra_repr(self) -> str:
        return (
            f"{self.mode!r}, hidden_size={self.hidden_size}, num_directions={self.num_directions}"
        )

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        """Pool outputs (B, T, num_directions·H) over the real steps -> (B, num_directions·H)."""
        if outputs.dim() != 3 or outputs.shape[-1] != self.output_size:
            raise ValueError(
                f"Pooling(hidden_size={self.hidden_size}, num_directions={self.num_directions}) "
                f"expects outputs (B, T, {self.output_size}), got shape {tuple(outputs.shape)}"
            )
        B, T, _ = outputs.shape
        lengths = lengths.to(outputs.device)  # (B,)
        if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(
                f"lengths must be (B,) = ({B},) with values in [1, {T}], got {lengths.tolist()}"
            )
        real = (torch.arange(T, device=outputs.device) < lengths[:, None])[:, :, None]  # (B, T, 1)
        if self.mode == "max":
            return outputs.masked_fill(~real, float("-inf")).amax(dim=1)  # (B, nd·H)
        outputs = outputs.masked_fill(~real, 0.0)  # (B, T, nd·H), garbage cannot leak
        if self.mode == "last":
            H = self.hidden_size
            last = outputs[torch.arange(B, device=outputs.device), lengths - 1]  # (B, nd·H)
            if self.num_directions == 1:
                return last
            return torch.cat([last[:, :H], outputs[:, 0, H:]], dim=1)  # (B, 2H)
        if self.mode == "mean":
            return outputs.sum(dim=1) / lengths[:, None].to(outputs.dtype)  # (B, nd·H)
        scores = self.query(torch.tanh(self.attention(outputs))).squeeze(2)  # (B, T)
        weights = scores.masked_fill(~real[:, :, 0], float("-inf")).softmax(dim=1)  # (B, T)
        self.last_weights = weights.detach()
        return torch.bmm(weights[:, None, :], outputs).squeeze(1)  # (B, nd·H)
