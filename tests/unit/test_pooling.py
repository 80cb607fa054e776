"""Pooling: each mode against a hand computation, padding invariance, `last` == the GRU's h_n."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.tasks.pooling import Pooling

B, T, D, H = 3, 5, 4, 6
LENGTHS = torch.tensor([5, 2, 3])
MODES = ["last", "mean", "max", "attention"]


def _outputs(num_directions: int) -> torch.Tensor:
    return torch.randn(B, T, num_directions * H)  # (B, T, nd·H)


def _hand(pool: Pooling, outputs: torch.Tensor) -> torch.Tensor:
    """Pool each sequence alone, over its real steps only, one step at a time."""
    pooled = []
    for b, n in enumerate(LENGTHS.tolist()):
        steps = [outputs[b, t] for t in range(n)]  # n × (nd·H,)
        if pool.mode == "last":
            vector = steps[-1]
            if pool.num_directions == 2:
                vector = torch.cat([steps[-1][:H], steps[0][H:]])
        elif pool.mode == "mean":
            vector = sum(steps) / n
        elif pool.mode == "max":
            vector = steps[0]
            for step in steps[1:]:
                vector = torch.maximum(vector, step)
        else:
            W, v = pool.attention.weight, pool.query.weight[0]
            scores = torch.stack([v @ torch.tanh(W @ step) for step in steps])  # (n,)
            e = torch.exp(scores - scores.max())
            vector = sum(a * step for a, step in zip(e / e.sum(), steps, strict=True))
        pooled.append(vector)
    return torch.stack(pooled)  # (B, nd·H)


@pytest.mark.parametrize("num_directions", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_equals_a_hand_computation(mode: str, num_directions: int) -> None:
    pool = Pooling(mode, H, num_directions)
    outputs = _outputs(num_directions)
    pooled = pool(outputs, LENGTHS)
    assert pooled.shape == (B, num_directions * H) and pool.output_size == num_directions * H
    torch.testing.assert_close(pooled, _hand(pool, outputs))


@pytest.mark.parametrize("mode", MODES)
def test_garbage_padding_changes_nothing(mode: str) -> None:
    pool = Pooling(mode, H, 2)
    outputs = _outputs(2).requires_grad_()
    expected = pool(outputs, LENGTHS)
    garbage = torch.cat([outputs.detach(), torch.full((B, 2, 2 * H), 1e6)], dim=1)  # (B, T+2, 2H)
    garbage[1, 2:, :3] = float("nan")
    garbage[2, 3:] = -1e6
    garbage[1, 2:, 3:] = 1e6
    garbage.requires_grad_()
    pooled = pool(garbage, LENGTHS)
    torch.testing.assert_close(pooled, expected)
    pooled.sum().backward()
    assert torch.isfinite(garbage.grad).all()
    assert not garbage.grad[1, 2:].any() and not garbage.grad[2, 3:].any()
    if mode == "attention":
        assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


def test_attention_weights_are_kept_and_zero_on_padding() -> None:
    pool = Pooling("attention", H, 1)
    assert pool.last_weights is None
    pool(_outputs(1), LENGTHS)
    weights = pool.last_weights  # (B, T)
    assert weights.shape == (B, T)
    torch.testing.assert_close(weights.sum(1), torch.ones(B))
    assert (weights[1, 2:] == 0).all() and (weights[2, 3:] == 0).all()
    assert (weights[0] > 0).all()


def test_bidirectional_last_is_the_final_state_of_a_packed_gru() -> None:
    ours = rnnkit.GRU(D, H, bidirectional=True, batch_first=True)
    theirs = torch.nn.GRU(D, H, bidirectional=True, batch_first=True)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, D)
    pool = Pooling("last", H, 2)
    for gru in (ours, theirs):
        packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
        out, h_n = gru(packed)  # h_n (2, B, H)
        out, _ = pad_packed_sequence(out, batch_first=True)  # (B, T, 2H)
        torch.testing.assert_close(pool(out, LENGTHS), torch.cat([h_n[0], h_n[1]], dim=1))
    # The reverse direction's final state sits at step 0, not at the last real step.
    assert not torch.allclose(pool(out, LENGTHS)[:, H:], out[torch.arange(B), LENGTHS - 1, H:])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        Pooling("sum", H, 1)
    with pytest.raises(ValueError, match="num_directions"):
        Pooling("mean", H, 3)
    pool = Pooling("mean", H, 1)
    with pytest.raises(ValueError, match=r"expects outputs \(B, T, 6\)"):
        pool(torch.randn(B, T, 2 * H), LENGTHS)
    with pytest.raises(ValueError, match="lengths"):
        pool(torch.randn(B, T, H), torch.tensor([5, 0, 3]))
