"""Parity with torch.nn: same state dict, same outputs, same final states, same gradients.

Every configuration torch supports is compared, for both ``impl="loop"`` (our cells) and
``impl="fused"`` (PyTorch's kernels behind our interface), in float32 and float64.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit
from rnnkit import cells, layers
from tests.conftest import B, D, H, T

pytestmark = pytest.mark.usefixtures("single_thread")

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
# name -> (our class, torch class, constructor keywords)
KINDS = {
    "rnn_tanh": (layers.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (layers.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (layers.GRU, nn.GRU, {}),
    "lstm": (layers.LSTM, nn.LSTM, {}),
    "lstm_proj": (layers.LSTM, nn.LSTM, {"proj_size": 2}),
}
LENGTHS = [5, 2, 4]  # distinct, unsorted, one full-length


def make_pair(kind: str, dtype: torch.dtype, impl: str, **options) -> tuple[nn.Module, nn.Module]:
    """A torch.nn layer and ours, ours loaded from torch's state dict."""
    ours_cls, torch_cls, keywords = KINDS[kind]
    theirs = torch_cls(D, H, **keywords, **options, dtype=dtype)
    ours = ours_cls(D, H, **keywords, **options, dtype=dtype, impl=impl)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def as_tuple(state: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def random_state(module: nn.Module, batch: int | None, dtype: torch.dtype):
    """A random initial state in torch's layout, (L·dirs, B, size) or unbatched (L·dirs, size)."""
    stack = module.num_layers * (2 if module.bidirectional else 1)
    sizes = [module.proj_size or module.hidden_size]
    if isinstance(module, nn.LSTM):
        sizes.append(module.hidden_size)
    batch_shape = () if batch is None else (batch,)
    parts = tuple(torch.randn(stack, *batch_shape, size, dtype=dtype) for size in sizes)
    return parts if len(parts) == 2 else parts[0]


def outputs_and_grads(
    module: nn.Module, x, state, leaves: list[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """Forward, then backward of a random linear function of every output.

    Returns (outputs and final state parts, gradients w.r.t. ``leaves`` and every parameter).
    """
    out, final = module(x, state)
    out_data = out.data if isinstance(out, PackedSequence) else out
    results = [out_data, *as_tuple(final)]
    generator = torch.Generator().manual_seed(1)
    loss = sum(
        (r * torch.randn(r.shape, generator=generator, dtype=r.dtype)).sum() for r in results
    )
    grads = torch.autograd.grad(loss, [*leaves, *module.parameters()])
    return [r.detach() for r in results], list(grads)


def assert_same(theirs, ours, dtype: torch.dtype) -> None:
    tol = TOLERANCE[dtype]
    for a, b in zip(theirs, ours, strict=True):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)


def requiring_grad(state):
    return (
        tuple(s.requires_grad_() for s in state)
        if isinstance(state, tuple)
        else state.requires_grad_()
    )


@pytest.mark.parametrize("impl", ["loop", "fused"])
@pytest.mark.parametrize("batch", [1, B, None], ids=["B1", "B3", "unbatched"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_matches_torch(kind, bias, num_layers, bidirectional, batch_first, batch, impl):
    for dtype in TOLERANCE:
        options = {
            "bias": bias,
            "num_layers": num_layers,
            "bidirectional": bidirectional,
            "batch_first": batch_first,
        }
        theirs, ours = make_pair(kind, dtype, impl, **options)
        batched_shape = (batch, T, D) if batch_first else (T, batch, D)
        shape = (T, D) if batch is None else batched_shape
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        state = requiring_grad(random_state(theirs, batch, dtype))
        leaves = [x, *as_tuple(state)]
        expected = outputs_and_grads(theirs, x, state, leaves)
        got = outputs_and_grads(ours, x, state, leaves)
        assert_same(expected[0], got[0], dtype)
        assert_same(expected[1], got[1], dtype)


@pytest.mark.parametrize("impl", ["loop", "fused"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_input_matches_torch(kind, bidirectional, num_layers, impl):
    for dtype in TOLERANCE:
        theirs, ours = make_pair(
            kind, dtype, impl, num_layers=num_layers, bidirectional=bidirectional
        )
        padded = torch.randn(T, B, D, dtype=dtype, requires_grad=True)
        state = requiring_grad(random_state(theirs, B, dtype))
        leaves = [padded, *as_tuple(state)]
        results = []
        for module in (theirs, ours):
            packed = pack_padded_sequence(padded, LENGTHS, enforce_sorted=False)
            results.append(outputs_and_grads(module, packed, state, leaves))
        assert_same(results[0][0], results[1][0], dtype)
        assert_same(results[0][1], results[1][1], dtype)
        with torch.no_grad():
            their_out, our_out = theirs(packed, state)[0], ours(packed, state)[0]
        assert torch.equal(our_out.batch_sizes, their_out.batch_sizes)
        assert torch.equal(our_out.sorted_indices, their_out.sorted_indices)
        assert torch.equal(our_out.unsorted_indices, their_out.unsorted_indices)


@pytest.mark.parametrize("impl", ["loop", "fused"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_lengths_match_torch_packed(kind, bidirectional, impl):
    """forward(padded, lengths=...) equals torch on the packed batch, padded back with zeros."""
    theirs, ours = make_pair(
        kind, torch.float64, impl, num_layers=2, bidirectional=bidirectional, batch_first=True
    )
    x = torch.randn(B, T, D, dtype=torch.float64)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    their_packed, their_state = theirs(packed)
    their_out, _ = nn.utils.rnn.pad_packed_sequence(their_packed, batch_first=True)
    our_out, our_state = ours(x, lengths=torch.tensor(LENGTHS))
    assert_same([their_out, *as_tuple(their_state)], [our_out, *as_tuple(our_state)], torch.float64)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_loads_both_ways(kind):
    ours_cls, torch_cls, keywords = KINDS[kind]
    options = {"num_layers": 2, "bidirectional": True, **keywords}
    ours, theirs = ours_cls(D, H, **options), torch_cls(D, H, **options)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, D)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    fresh = ours_cls(D, H, **options)
    fresh.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(fresh(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["gru", "lstm", "lstm_proj"])
def test_fused_layer_by_layer_in_training_matches_torch(
    kind: str, bidirectional: bool, packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In training with dropout, the fused path runs the kernel one layer at a time with our
    faster dropout between layers; with that dropout made the identity, outputs, states and
    gradients equal torch's dropout-free layer."""
    from rnnkit.layers import stack

    monkeypatch.setattr(stack, "dropout", lambda x, p, training=True: x)
    theirs, ours = make_pair(
        kind, torch.float64, "fused", num_layers=3, bidirectional=bidirectional
    )
    ours.dropout = 0.5  # acts only through the patched dropout
    x = torch.randn(T, B, D, dtype=torch.float64)
    if packed:
        x = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    state = requiring_grad(random_state(theirs, B, torch.float64))
    leaves = list(as_tuple(state))
    ours_results, ours_grads = outputs_and_grads(ours, x, state, leaves)
    theirs_results, theirs_grads = outputs_and_grads(theirs, x, state, leaves)
    assert_same(theirs_results + theirs_grads, ours_results + ours_grads, torch.float64)


def test_dropout_in_train_mode_acts_between_layers() -> None:
    """Same seed, same mask; the mask zeroes about p of the first layer's outputs."""
    _, ours = make_pair("lstm", torch.float64, "fused", num_layers=2, dropout=0.5)
    x = torch.randn(T, B, D, dtype=torch.float64)
    torch.manual_seed(3)
    first = ours(x)[0]
    torch.manual_seed(3)
    torch.testing.assert_close(ours(x)[0], first, atol=0, rtol=0)
    assert not torch.allclose(ours.eval()(x)[0], first)


CELLS = {
    "rnn_tanh": (cells.RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (cells.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    "gru": (cells.GRUCell, nn.GRUCell, {}),
    "lstm": (cells.LSTMCell, nn.LSTMCell, {}),
}


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "state"])
@pytest.mark.parametrize("batch", [1, B, None], ids=["B1", "B3", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_torch(kind, bias, batch, with_state):
    ours_cls, torch_cls, keywords = CELLS[kind]
    for dtype in TOLERANCE:
        theirs = torch_cls(D, H, bias=bias, dtype=dtype, **keywords)
        ours = ours_cls(D, H, bias=bias, dtype=dtype, **keywords)
        ours.load_state_dict(theirs.state_dict())
        batch_shape = () if batch is None else (batch,)
        x = torch.randn(*batch_shape, D, dtype=dtype, requires_grad=True)
        state = None
        if with_state:
            parts = [torch.randn(*batch_shape, H, dtype=dtype, requires_grad=True)]
            parts += [torch.randn(*batch_shape, H, dtype=dtype, requires_grad=True)]
            state = tuple(parts) if kind == "lstm" else parts[0]
        results = []
        for module in (theirs, ours):
            out = as_tuple(module(x, state))
            generator = torch.Generator().manual_seed(1)
            loss = sum(
                (o * torch.randn(o.shape, generator=generator, dtype=dtype)).sum() for o in out
            )
            leaves = [x, *(as_tuple(state) if with_state else ())]
            grads = torch.autograd.grad(loss, [*leaves, *module.parameters()])
            results.append([*(o.detach() for o in out), *grads])
        assert_same(results[0], results[1], dtype)


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(list(KINDS)),
    input_size=st.integers(1, 7),
    hidden_size=st.integers(3, 9),
    num_layers=st.integers(1, 3),
    steps=st.integers(1, 6),
    batch=st.integers(1, 4),
    bidirectional=st.booleans(),
    impl=st.sampled_from(["loop", "fused", "auto"]),
)
def test_random_sizes_match_torch(
    kind, input_size, hidden_size, num_layers, steps, batch, bidirectional, impl
):
    ours_cls, torch_cls, keywords = KINDS[kind]
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "dtype": torch.float64}
    theirs = torch_cls(input_size, hidden_size, **keywords, **options)
    ours = ours_cls(input_size, hidden_size, **keywords, **options, impl=impl)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(steps, batch, input_size, dtype=torch.float64, requires_grad=True)
    expected = outputs_and_grads(theirs, x, None, [x])
    got = outputs_and_grads(ours, x, None, [x])
    assert_same(expected[0], got[0], torch.float64)
    assert_same(expected[1], got[1], torch.float64)


def test_public_names_and_all_weights():
    assert rnnkit.LSTM is layers.LSTM
    assert rnnkit.GRUCell is cells.GRUCell
    theirs, ours = make_pair("lstm_proj", torch.float32, "auto", num_layers=2, bidirectional=True)
    assert [[p.shape for p in group] for group in ours.all_weights] == [
        [p.shape for p in group] for group in theirs.all_weights
    ]
