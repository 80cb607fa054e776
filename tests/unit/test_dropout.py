"""rnnkit.layers.dropout: F.dropout's meaning with a faster mask on CPU."""

import pytest
import torch

from rnnkit.layers.dropout import KEEP_LEVELS, Dropout, dropout, keep_mask, keep_ones


@pytest.mark.parametrize("p", [0.1, 0.4, 0.75])
def test_drops_about_p_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.full((200, 1000), 2.0)
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005  # 200,000 draws: the standard error is ≤ 0.0011
    kept = y[y != 0]
    threshold = round((1 - p) * KEEP_LEVELS)
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0 * KEEP_LEVELS / threshold))
    assert abs(y.mean().item() - 2.0) < 0.03


def test_every_element_is_drawn_independently() -> None:
    """Neighbours share one 64-bit draw: their masks must still be uncorrelated."""
    torch.manual_seed(1)
    mask = keep_mask((100_000, 4), round(0.5 * KEEP_LEVELS)).float()  # (N, 4)
    correlation = torch.corrcoef(mask.t())  # (4, 4)
    off_diagonal = correlation[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.02
    assert (mask.mean(0) - 0.5).abs().max() < 0.01  # each of the four 16-bit shares


def test_same_seed_same_mask_and_gradient_is_the_mask() -> None:
    x = torch.randn(3, 5, 7, requires_grad=True)
    torch.manual_seed(4)
    first = dropout(x, 0.3)
    torch.manual_seed(4)
    second = dropout(x, 0.3)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    (grad,) = torch.autograd.grad(first.sum(), x)
    torch.testing.assert_close(grad, first.detach() / x.detach())


def test_identity_outside_training_or_at_zero_and_zero_at_one() -> None:
    x = torch.randn(4, 6)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_module_follows_train_and_eval_and_keeps_bf16() -> None:
    layer = Dropout(0.5)
    x = torch.ones(64, 64, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16 and (layer(x) == 0).any()
    assert layer.eval()(x) is x
    assert repr(layer) == "Dropout(p=0.5)"


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_is_named(p: float) -> None:
    with pytest.raises(ValueError, match="dropout probability must be in"):
        dropout(torch.ones(2), p)
    with pytest.raises(ValueError, match="dropout probability must be in"):
        Dropout(p)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.999])
def test_ones_mask_is_the_bool_mask_for_the_same_seed(dtype: torch.dtype, p: float) -> None:
    threshold = max(1, round((1 - p) * KEEP_LEVELS))
    torch.manual_seed(7)
    expected = keep_mask((33, 17), threshold)  # (33, 17) bool
    torch.manual_seed(7)
    ones = keep_ones((33, 17), threshold, dtype)  # (33, 17)
    assert ones.dtype == dtype
    torch.testing.assert_close(ones, expected.to(dtype), atol=0, rtol=0)


def test_probability_below_one_level_keeps_everything() -> None:
    """p < 2⁻¹⁶ rounds the threshold up to 2¹⁵ levels, which an int16 cannot hold."""
    x = torch.randn(50, 40)
    torch.testing.assert_close(dropout(x, 1e-6), x, atol=0, rtol=0)
