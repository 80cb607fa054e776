"""``--ensemble K`` of classify and tag: K networks of one shape in one model.

The model is the first member; the other K - 1 are built after it (so initialised apart from
it, by the same random stream) and live in its ``others``. Each member trains on its own loss
(the model's loss is their mean); the model predicts with the members' mean probability
(Lakshminarayanan et al. 2017, "deep ensembles"), computed here as the log of that mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from torch import Tensor, nn

from rnnkit.config import ModelConfig


def other_members(config: ModelConfig, build: Callable[[ModelConfig], nn.Module]) -> nn.ModuleList:
    """The members after the first: ``config.ensemble - 1`` networks ``build(member_config)``,
    where the member's config is ``config`` with ``ensemble`` 1 and no ``frame_votes`` or
    ``word_votes`` (a member has no members, and the model's one set of votes stays with the
    first)."""
    member = dataclasses.replace(config, ensemble=1, frame_votes=False, word_votes=0.0)
    return nn.ModuleList(build(member) for _ in range(config.ensemble - 1))


def log_mean_probability(logits: Tensor) -> Tensor:
    """log (1/K) Σ_k softmax(z_k) of the members' logits (K, ..., C) -> (..., C), in fp32; its
    softmax is the members' mean probability."""
    logits = logits.float()
    return logits.log_softmax(-1).logsumexp(0) - math.log(len(logits))
