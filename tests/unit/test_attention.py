"""Attention: each kind against a hand computation, masks, weights summing to 1, bad input."""

import math

import pytest
import torch

from rnnkit.tasks.attention import Attention

B, S, HQ, HK = 3, 5, 4, 6
MASK = torch.tensor(
    [[True] * 5, [True, True, False, False, False], [True, True, True, False, False]]
)
KINDS = ["dot", "general", "additive"]


def _hand(attention: Attention, query: torch.Tensor, keys: torch.Tensor) -> tuple[list, list]:
    """Context and weights of each batch row alone, over its real keys, key by key."""
    contexts, weights = [], []
    for b in range(B):
        real = [keys[b, s] for s in range(S) if MASK[b, s]]
        q = query[b]
        if attention.kind == "dot":
            scores = [float(q @ k) for k in real]
        elif attention.kind == "general":
            scores = [float(q @ attention.weight @ k) for k in real]
        else:
            W_q, W_k = attention.query_proj.weight, attention.key_proj.weight
            v = attention.v.weight[0]
            scores = [float(v @ torch.tanh(W_q @ q + W_k @ k)) for k in real]
        e = [math.exp(s - max(scores)) for s in scores]
        a = [x / sum(e) for x in e]
        contexts.append(sum(w * k for w, k in zip(a, real, strict=True)))
        weights.append(a + [0.0] * (S - len(real)))
    return contexts, weights


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_equals_a_hand_computation(kind: str) -> None:
    query_size = HK if kind == "dot" else HQ
    attention = Attention(kind, query_size, HK)
    query, keys = torch.randn(B, query_size), torch.randn(B, S, HK)
    with torch.no_grad():
        context, weights = attention(query, keys, MASK)
        contexts, hand_weights = _hand(attention, query, keys)
    assert context.shape == (B, HK) and weights.shape == (B, S)
    torch.testing.assert_close(context, torch.stack(contexts))
    torch.testing.assert_close(weights, torch.tensor(hand_weights))


def test_dot_by_hand_on_small_numbers() -> None:
    query = torch.tensor([[1.0, 0.0]])  # (1, 2)
    keys = torch.tensor([[[2.0, 5.0], [0.0, 1.0], [9.0, 9.0]]])  # (1, 3, 2)
    context, weights = Attention("dot", 2, 2)(query, keys, torch.tensor([[True, True, False]]))
    e = math.exp(2.0)  # scores 2 and 0; the third key is padding
    torch.testing.assert_close(weights, torch.tensor([[e / (e + 1), 1 / (e + 1), 0.0]]))
    torch.testing.assert_close(context, torch.tensor([[2 * e / (e + 1), (5 * e + 1) / (e + 1)]]))


@pytest.mark.parametrize("kind", KINDS)
def test_padding_gets_zero_weight_and_never_leaks(kind: str) -> None:
    query_size = HK if kind == "dot" else HQ
    attention = Attention(kind, query_size, HK)
    query, keys = torch.randn(B, query_size), torch.randn(B, S, HK)
    context, weights = attention(query, keys, MASK)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))
    assert (weights[~MASK] == 0).all() and (weights[MASK] > 0).all()
    garbage = keys.clone()
    garbage[1, 2:] = float("nan")
    garbage[2, 3:] = 1e6
    garbage.requires_grad_()
    query.requires_grad_()
    garbage_context, garbage_weights = attention(query, garbage, MASK)
    torch.testing.assert_close(garbage_context, context)
    torch.testing.assert_close(garbage_weights, weights)
    garbage_context.sum().backward()
    assert torch.isfinite(garbage.grad).all() and not garbage.grad[~MASK].any()
    assert torch.isfinite(query.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="dot attention needs query_size == key_size"):
        Attention("dot", HQ, HK)
    with pytest.raises(ValueError, match="attention must be one of"):
        Attention("cosine", HQ, HK)
    attention = Attention("general", HQ, HK)
    with pytest.raises(ValueError, match=r"expects query \(B, 4\)"):
        attention(torch.randn(B, HK), torch.randn(B, S, HK), MASK)
    empty = MASK.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="at least one real key"):
        attention(torch.randn(B, HQ), torch.randn(B, S, HK), empty)
