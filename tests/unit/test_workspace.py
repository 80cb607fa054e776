"""rnnkit.workspace: buffers come back only once nothing refers to them."""

import pytest
import torch

from rnnkit import layers, workspace

LIKE = torch.empty(0)


@pytest.fixture(autouse=True)
def empty_pool():
    workspace.clear()
    yield
    workspace.clear()


def test_a_dropped_buffer_is_handed_out_again() -> None:
    first = workspace.empty((4, 5), LIKE)
    pointer = first.data_ptr()
    del first
    again = workspace.empty((5, 4), LIKE)  # the same size, another shape
    assert again.data_ptr() == pointer and again.shape == (5, 4)


def test_a_buffer_still_viewed_is_not_handed_out() -> None:
    first = workspace.empty((4, 5), LIKE)
    row = first[1]  # a view alone keeps the buffer in use
    del first
    second = workspace.empty((4, 5), LIKE)
    assert second.data_ptr() != row.data_ptr() - 5 * row.element_size()
    assert workspace.empty((4, 5), LIKE, dtype=torch.float64).dtype == torch.float64


def test_a_kept_storage_object_keeps_its_buffer_until_it_is_dropped() -> None:
    """``out.untyped_storage()`` kept after ``out`` is dropped still reaches the buffer."""
    first = workspace.empty((4, 5), LIKE)
    pointer = first.data_ptr()
    kept = first.untyped_storage()
    del first
    second = workspace.empty((4, 5), LIKE)
    assert second.data_ptr() != pointer == kept.data_ptr()
    del kept
    assert workspace.empty((4, 5), LIKE).data_ptr() == pointer


def test_free_buffers_beyond_the_limits_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace, "MAX_BUFFERS", 2)
    kept = [workspace.empty((n,), LIKE) for n in (1, 2, 3)]  # all in use: all stay
    assert workspace.pooled_bytes() == 6 * 4
    del kept
    workspace.empty((4,), LIKE)  # the two least recent free ones go
    assert workspace.pooled_bytes() == (3 + 4) * 4
    monkeypatch.setattr(workspace, "MAX_FREE_BYTES", 0)
    workspace.empty((5,), LIKE)
    assert workspace.pooled_bytes() == 5 * 4


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_graphs_alive_together_keep_their_own_buffers(cell: str) -> None:
    """Two forwards before either backward: each backward must see its own saved buffers."""
    torch.manual_seed(0)
    layer_cls = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.RNN}[cell]
    layer = layer_cls(3, 4, impl="loop")
    reference = layer_cls(3, 4, impl="fused")
    reference.load_state_dict(layer.state_dict())
    xs = [torch.randn(6, 2, 3) for _ in range(3)]
    outs = [layer(x)[0] for x in xs]  # three graphs alive at once
    grads = [torch.autograd.grad(out.square().sum(), layer.weight_hh_l0)[0] for out in outs]
    for x, out, grad in zip(xs, outs, grads, strict=True):
        expected = reference(x)[0]
        torch.testing.assert_close(out, expected)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), reference.weight_hh_l0)
        torch.testing.assert_close(grad, expected_grad)


def test_buffers_made_in_inference_mode_serve_training_later() -> None:
    layer = layers.LSTM(3, 4, impl="loop")
    x = torch.randn(6, 2, 3)
    with torch.inference_mode():
        layer(x)
    out, _ = layer(x)  # reuses those buffers and saves them for backward
    out.sum().backward()
    assert layer.weight_hh_l0.grad is not None
