r"""A linear-chain conditional random field over per-step tag scores (Lafferty et al. 2001).

For emissions ``e`` (the tagger's per-step scores) and a tag sequence ``y`` of length ``n``:

    score(y) = start[y_0] + Σ_{t<n} e_t[y_t] + Σ_{0<t<n} transitions[y_{t-1}, y_t] + end[y_{n-1}]
    log p(y | x) = score(y) - log Z,    log Z = logsumexp over all C^n sequences y' of score(y')

``log Z`` comes from the forward algorithm in log space (``torch.logsumexp``), the best path
from the Viterbi algorithm; both are batched over B. Padded steps (``t >= lengths[b]``) are
masked out: they never change a sentence's numbers, and padded tags may hold any value
(e.g. -100).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FORBIDDEN = -1e4
"""The score added to a transition that :meth:`LinearChainCRF.constrain_bio` rules out."""


class LinearChainCRF(nn.Module):
    r"""Sequence-level tag scores: start, emission, transition and end scores of a path.

    Parameters (initialised to zeros, so an untrained CRF equals per-step softmax):
        transitions: (C, C), ``transitions[i, j]`` is the score of tag i followed by tag j.
        start: (C,), the score of a sentence starting with each tag.
        end: (C,), the score of a sentence ending with each tag.

    Buffers ``transition_constraints`` (C, C) and ``start_constraints`` (C,) are added to
    ``transitions`` and ``start`` in every computation; they are zero unless
    :meth:`constrain_bio` forbids some moves, and they are never trained.

    ``forward`` is :meth:`log_likelihood`.

    Args:
        num_tags: C, the number of tags.

    Shapes:
        emissions (B, T, C) float; tags (B, T) int64; lengths (B,) int64 in [1, T]
        log_likelihood / score / log_partition -> (B,);  decode -> B lists of lengths[b] ints
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be at least 1, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # (C, C)
        self.start = nn.Parameter(torch.zeros(num_tags))  # (C,)
        self.end = nn.Parameter(torch.zeros(num_tags))  # (C,)
        self.register_buffer("transition_constraints", torch.zeros(num_tags, num_tags))
        self.register_buffer("start_constraints", torch.zeros(num_tags))

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def constrain_bio(self, tag_names: list[str]) -> None:
        """Forbid (score -1e4) the moves that break BIO: ``O -> I-X``, ``B-X / I-X -> I-Y``
        with Y != X, and starting a sentence with ``I-X``.

        Call it only when the training tags are valid BIO: a gold sequence that breaks a rule
        then scores about -1e4 and its loss explodes.

        Args:
            tag_names: the C tag names in id order: ``O``, ``B-<type>`` or ``I-<type>``.

        Raises:
            ValueError: a name is none of these, or there are not C names.
        """
        if len(tag_names) != self.num_tags:
            raise ValueError(
                f"constrain_bio got {len(tag_names)} tag names for {self.num_tags} tags"
            )
        bad = [name for name in tag_names if name != "O" and name[:2] not in ("B-", "I-")]
        if bad:
            names = ", ".join(map(repr, bad))
            raise ValueError(f"tags are not BIO (O, B-<type>, I-<type>): {names}")
        transitions = torch.zeros_like(self.transition_constraints)  # (C, C)
        start = torch.zeros_like(self.start_constraints)  # (C,)
        for j, to in enumerate(tag_names):
            if not to.startswith("I-"):
                continue
            start[j] = FORBIDDEN
            for i, before in enumerate(tag_names):
                if before[2:] != to[2:] or before == "O":
                    transitions[i, j] = FORBIDDEN
        self.transition_constraints.copy_(transitions)
        self.start_constraints.copy_(start)

    def _check(self, emissions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Validate the shapes; return lengths on the emissions' device and the step mask."""
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(
                f"LinearChainCRF(num_tags={self.num_tags}) expects emissions (B, T, "
                f"{self.num_tags}), got shape {tuple(emissions.shape)}"
            )
        B, T, _ = emissions.shape
        lengths = lengths.to(emissions.device)  # (B,)
        if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(
                f"lengths must be (B,) = ({B},) with values in [1, {T}], got {lengths.tolist()}"
            )
        mask = torch.arange(T, device=emissions.device) < lengths[:, None]  # (B, T)
        return lengths, mask

    def score(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """``score(y)`` of the given tags (see the module docstring): (B, T, C), (B, T) -> (B,)."""
        lengths, mask = self._check(emissions, lengths)
        tags = torch.where(mask, tags, 0)  # (B, T), padded tags may be -100
        transitions = self.transitions + self.transition_constraints  # (C, C)
        start = self.start + self.start_constraints  # (C,)
        emitted = emissions.gather(2, tags[:, :, None]).squeeze(2)  # (B, T)
        moved = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (lengths - 1)[:, None]).squeeze(1)  # (B,)
        return (
            start[tags[:, 0]]
            + torch.where(mask, emitted, 0).sum(1)
            + torch.where(mask[:, 1:], moved, 0).sum(1)
            + self.end[last]
        )  # (B,)

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """``log Z`` by the forward algorithm: (B, T, C) -> (B,).

        α_0 = start + e_0;   α_t[j] = logsumexp_i(α_{t-1}[i] + transitions[i, j]) + e_t[j]
        log Z = logsumexp_j(α_{n-1}[j] + end[j])      (α stays frozen past the length n)
        """
        _, mask = self._check(emissions, lengths)
        transitions = self.transitions + self.transition_constraints  # (C, C)
        alpha = self.start + self.start_constraints + emissions[:, 0]  # (B, C)
        for t in range(1, emissions.shape[1]):
            moved = torch.logsumexp(alpha[:, :, None] + transitions, dim=1)  # (B, C)
            alpha = torch.where(mask[:, t, None], moved + emissions[:, t], alpha)  # (B, C)
        return torch.logsumexp(alpha + self.end, dim=1)  # (B,)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """``log p(tags | x) = score(tags) - log Z``: (B, T, C), (B, T), (B,) -> (B,)."""
        return self.score(emissions, tags, lengths) - self.log_partition(emissions, lengths)

    forward = log_likelihood

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """The loss: negative log likelihood summed over the batch and divided by the number
        of real tokens, ``-Σ_b log p(tags_b | x_b) / Σ_b lengths[b]`` (nats per token, like the
        softmax tagger's cross entropy). Returns a scalar."""
        total = self.log_likelihood(emissions, tags, lengths).sum()  # ()
        return -total / lengths.sum().to(total.device)

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        """The best tag path of each sentence by the Viterbi algorithm.

            δ_0 = start + e_0;   δ_t[j] = max_i(δ_{t-1}[i] + transitions[i, j]) + e_t[j]
            the path ends at argmax_j(δ_{n-1}[j] + end[j]) and follows the argmax pointers back.

        Returns:
            B lists of tag ids, list b of length ``lengths[b]``.
        """
        lengths, mask = self._check(emissions, lengths)
        transitions = self.transitions + self.transition_constraints  # (C, C)
        delta = self.start + self.start_constraints + emissions[:, 0]  # (B, C)
        pointers = []
        for t in range(1, emissions.shape[1]):
            best, previous = (delta[:, :, None] + transitions).max(dim=1)  # (B, C), (B, C)
            delta = torch.where(mask[:, t, None], best + emissions[:, t], delta)  # (B, C)
            pointers.append(previous)
        last = (delta + self.end).argmax(dim=1)  # (B,)
        back = torch.stack(pointers, dim=1).tolist() if pointers else []  # (B, T-1, C)
        paths = []
        for b, (n, tag) in enumerate(zip(lengths.tolist(), last.tolist(), strict=True)):
            path = [tag]
            for t in range(n - 1, 0, -1):  # pointers[t - 1] leads from step t to step t - 1
                path.append(back[b][t - 1][path[-1]])
            paths.append(path[::-1])
        return paths
