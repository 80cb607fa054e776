"""``--ensemble K`` of classify and tag: K networks of one shape in one model.

The model is the first member; the other K - 1 are built after it (so initialised apart from
it, by the same random stream) and live in its ``others``. Each member trains on its own loss
(the model's loss is their mean); the model predicts with the members' mean probability
(Lakshminarayanan et al. 2017, "deep ensembles"), computed here as the log of that mean.

With ``--member-threads`` on a CPU run of 2 or more threads, :func:`mean_member_loss` trains
the members side by side on threads of one intra-op thread each, forward and backward: the
members share no weight, so each one's gradients are its own loss's, and the step's cores
work on K small networks at once instead of each network's small matrices in turn. Each
member draws its dropout masks from a generator of its own, seeded per step from torch's
default generator, so a run is reproduced by its seed and resumes exactly, whichever thread
runs first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.layers.dropout import drawing_from


def other_members(config: ModelConfig, build: Callable[[ModelConfig], nn.Module]) -> nn.ModuleList:
    """The members after the first: ``config.ensemble - 1`` networks ``build(member_config)``,
    where the member's config is ``config`` with ``ensemble`` 1 and no ``frame_votes`` or
    ``word_votes`` or ``naive_bayes`` (a member has no members, and the model's one set of votes
    or counts stays with the first)."""
    member = dataclasses.replace(
        config, ensemble=1, frame_votes=False, word_votes=0.0, naive_bayes=0.0
    )
    return nn.ModuleList(build(member) for _ in range(config.ensemble - 1))


def log_mean_probability(logits: Tensor) -> Tensor:
    """log (1/K) Σ_k softmax(z_k) of the members' logits (K, ..., C) -> (..., C), in fp32; its
    softmax is the members' mean probability."""
    logits = logits.float()
    return logits.log_softmax(-1).logsumexp(0) - math.log(len(logits))


_pools: dict[int, ThreadPoolExecutor] = {}  # the member threads by their number, made on first use


def threads_for_members(config: ModelConfig, members: Sequence[nn.Module], device: Any) -> int:
    """How many threads train the members side by side: 1 (one after another, in this thread)
    unless ``config.member_threads``, K >= 2, training mode with gradients, a CPU device and
    2 or more torch threads; then ``min(K, torch.get_num_threads())``."""
    if not (config.member_threads and len(members) > 1 and members[0].training):
        return 1
    if not torch.is_grad_enabled() or torch.device(device).type != "cpu":
        return 1
    return min(len(members), torch.get_num_threads())


def member_parameters(members: Sequence[nn.Module]) -> list[list[nn.Parameter]]:
    """Each member's trainable parameters; the first member's without the other members'
    (which it holds in ``others``)."""
    rest = {id(p) for m in members[1:] for p in m.parameters()}
    first = [p for p in members[0].parameters() if p.requires_grad and id(p) not in rest]
    return [first, *([p for p in m.parameters() if p.requires_grad] for m in members[1:])]


def mean_member_loss(
    losses: Sequence[Callable[[], Tensor]],
    params: Sequence[list[nn.Parameter]],
    threads: int,
) -> Tensor:
    """The mean of the members' losses ``losses[k]()``, computed and differentiated on
    ``threads`` threads side by side (see the module docstring); ``params[k]`` are the
    parameters member k's gradients are taken for (:func:`member_parameters`).

    Returns a scalar whose backward hands each member's parameters the gradients already
    computed (times the incoming gradient and 1/K), as the backward of the mean would.

    Raises:
        RuntimeError: a member drew from torch's default generator on its thread (its draws
            would depend on the threads' order).
    """
    K = len(losses)
    seeds = torch.randint(2**62, (K,)).tolist()  # from the default generator: reproducible
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    default_state = torch.get_rng_state()

    def member(k: int) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        torch.set_num_threads(1)  # this thread's own OpenMP setting, for its intra-op work
        generator = torch.Generator().manual_seed(seeds[k])
        with (
            torch.enable_grad(),
            torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]),
            drawing_from(generator),
        ):
            loss = losses[k]()
        grads = torch.autograd.grad(loss, params[k], allow_unused=True)
        return loss.detach().float(), grads

    before = torch.get_num_threads()
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="rnnkit-member")
    try:
        results = list(_pools[threads].map(member, range(K)))
    finally:
        torch.set_num_threads(before)
    if not torch.equal(torch.get_rng_state(), default_state):
        raise RuntimeError(
            "an ensemble member drew from torch's default generator on a member thread; "
            "draws there must pass rnnkit.layers.dropout.current_generator()"
        )
    loss = torch.stack([value for value, _ in results]).mean()
    flat = [p for ps in params for p in ps]
    grads = [g for _, gs in results for g in gs]
    return _HandedGradients.apply(loss, grads, K, *flat)


class _HandedGradients(torch.autograd.Function):
    """Identity on a loss computed apart; its backward gives ``params`` the gradients
    ``grads`` computed with it, times the incoming gradient / K."""

    @staticmethod
    def forward(
        ctx: Any, loss: Tensor, grads: list[Tensor | None], K: int, *params: Tensor
    ) -> Tensor:
        ctx.grads, ctx.K = grads, K
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        scale = grad / ctx.K
        handed = [None if g is None else g * scale.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (None, None, None, *handed)
