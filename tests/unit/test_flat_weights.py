"""Flat weights (rnnkit.layers.flat_weights): the bookkeeping of ``flatten_parameters``.

On CPU the buffer is the weights one after the other; on CUDA it has cuDNN's layout (the
``gpu`` test at the end checks that cuDNN then never compacts them). What both share is checked
here: every fused weight becomes a view of one buffer, the parameters stay the same objects
with the same values and state dict, optimizers and autograd still reach them, and the layer
flattens again by itself after ``.to()``, ``load_state_dict(assign=True)`` and deepcopy where
cuDNN runs it (made to believe so here), and never on CPU otherwise.
"""

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

from rnnkit import layers
from rnnkit.layers import flat_weights
from rnnkit.layers.stack import RecurrentStack
from tests.conftest import B, D, H, T

pytestmark = pytest.mark.usefixtures("single_thread")

# name -> (class, constructor keywords): every kind the fused kernel computes.
FUSED_KINDS = {
    "rnn_relu": (layers.RNN, {"nonlinearity": "relu", "num_layers": 2}),
    "gru_bidirectional": (layers.GRU, {"num_layers": 2, "bidirectional": True}),
    "lstm_no_bias": (layers.LSTM, {"num_layers": 2, "bias": False}),
    "lstm_proj": (layers.LSTM, {"proj_size": 2, "bidirectional": True}),
}


def make(kind: str, **extra) -> RecurrentStack:
    cls, keywords = FUSED_KINDS[kind]
    return cls(D, H, **keywords, **extra)


def fused_weights(layer: RecurrentStack) -> list[Tensor]:
    return [p for group in layer.all_weights for p in group]


def assert_one_buffer(layer: RecurrentStack) -> None:
    """Every fused weight is a contiguous view of one storage, laid one after the other in the
    kernel's order from its start, and the storage holds nothing else."""
    weights = fused_weights(layer)
    storage = weights[0].untyped_storage()
    offset = 0
    for weight in weights:
        assert weight.untyped_storage().data_ptr() == storage.data_ptr()
        assert weight.is_contiguous()
        assert weight.storage_offset() == offset
        offset += weight.numel()
    assert storage.nbytes() == offset * weights[0].element_size()


def assert_separate(layer: RecurrentStack) -> None:
    storages = {w.untyped_storage().data_ptr() for w in fused_weights(layer)}
    assert len(storages) == len(fused_weights(layer))


@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_flatten_makes_views_of_one_buffer_with_the_same_parameters(kind: str) -> None:
    layer = make(kind)
    assert_separate(layer)  # the CPU default is unchanged: no buffer until asked
    before = {name: p.detach().clone() for name, p in layer.state_dict().items()}
    objects = {name: id(p) for name, p in layer.named_parameters()}
    layer.flatten_parameters()
    assert_one_buffer(layer)
    assert {name: id(p) for name, p in layer.named_parameters()} == objects
    after = layer.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_flat_layer_computes_the_same_outputs_and_gradients(impl: str) -> None:
    plain = layers.LSTM(D, H, num_layers=2, impl=impl)
    flat = copy.deepcopy(plain)
    flat.flatten_parameters()
    assert_one_buffer(flat)
    x = torch.randn(T, B, D)
    results = []
    for layer in (plain, flat):
        out, (h, c) = layer(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        results.append([out, h, c, *(p.grad for p in layer.parameters())])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_optimizer_trains_the_flat_parameters_in_their_buffer() -> None:
    """Two AdamW steps move the flat layer's weights exactly as the plain layer's, and the
    weights are still views of the buffer afterwards (the update happened in place)."""
    plain = layers.GRU(D, H, num_layers=2)
    initial = copy.deepcopy(plain)
    flat = copy.deepcopy(plain)
    flat.flatten_parameters()
    buffer_ptr = flat.weight_ih_l0.untyped_storage().data_ptr()
    x = torch.randn(T, B, D)
    for layer in (plain, flat):
        optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            layer(x)[0].square().mean().backward()
            optimizer.step()
    assert flat.weight_hh_l1.untyped_storage().data_ptr() == buffer_ptr
    assert_one_buffer(flat)
    for (name, p), q in zip(plain.named_parameters(), flat.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)
        assert not torch.equal(q, initial.get_parameter(name)), name


def test_flatten_again_after_a_weight_is_replaced() -> None:
    layer = make("gru_bidirectional")
    layer.flatten_parameters()
    replacement = torch.randn_like(layer.weight_hh_l1_reverse)
    layer.weight_hh_l1_reverse.data = replacement.clone()
    layer.flatten_parameters()
    assert_one_buffer(layer)
    torch.testing.assert_close(layer.weight_hh_l1_reverse, replacement, rtol=0, atol=0)


def test_flatten_leaves_what_the_fused_kernel_cannot_run_or_aliased_weights() -> None:
    peephole = layers.LSTM(D, H, num_layers=2, peephole=True)
    peephole.flatten_parameters()
    assert_separate(peephole)
    one_gate = layers.GRU(D, H, reset_gate=False)
    one_gate.flatten_parameters()
    assert_separate(one_gate)

    tied = layers.RNN(H, H, num_layers=2)
    tied.weight_hh_l1 = tied.weight_hh_l0  # one parameter in two places
    tied.flatten_parameters()
    assert tied.weight_hh_l1 is tied.weight_hh_l0
    assert tied.weight_ih_l0.untyped_storage().data_ptr() != (
        tied.weight_hh_l0.untyped_storage().data_ptr()
    )


@pytest.fixture
def cudnn_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every layer believe cuDNN runs it, so that it keeps its weights flat by itself; the
    buffer is still the CPU one (flat_weights.concatenate)."""
    monkeypatch.setattr(
        RecurrentStack, "_runs_on_cudnn", lambda self: self._fused_unsupported() is None
    )


@pytest.mark.usefixtures("cudnn_everywhere")
def test_kept_flat_after_construction_moves_loads_and_copies() -> None:
    layer = make("lstm_proj")
    assert_one_buffer(layer)

    layer.double()
    assert layer.weight_ih_l0.dtype == torch.float64
    assert_one_buffer(layer)

    theirs = nn.LSTM(D, H, proj_size=2, bidirectional=True, dtype=torch.float64)
    layer.load_state_dict(theirs.state_dict(), assign=True)
    assert_one_buffer(layer)
    x = torch.randn(T, B, D, dtype=torch.float64)
    for ours, expected in zip(layer(x)[1], theirs(x)[1], strict=True):
        torch.testing.assert_close(ours, expected)

    assert_one_buffer(copy.deepcopy(layer))
    assert_separate(layers.LSTM(D, H, peephole=True))  # never for the loop-only kinds


def test_cpu_layers_are_not_flattened_by_moves_or_loads() -> None:
    layer = make("rnn_relu")
    layer.double()
    layer.load_state_dict(make("rnn_relu").double().state_dict(), assign=True)
    assert_separate(copy.deepcopy(layer))
    assert not layer._runs_on_cudnn()


def _compaction_warnings(layer: RecurrentStack, x: Tensor) -> list[str]:
    """The "not part of single contiguous chunk" warnings of one forward and backward."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = layer(x)
        out.sum().backward()
    return [str(w.message) for w in caught if "contiguous chunk" in str(w.message)]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_cudnn_never_compacts_the_weights(kind: str) -> None:
    """On CUDA the weights are in one buffer from construction, after ``.cuda()``, after
    ``load_state_dict(assign=True)`` and after deepcopy, and cuDNN says nothing about them;
    a weight replaced behind the layer's back makes it warn (the check can see the warning)."""
    x = torch.randn(T, B, D, device="cuda")
    built_there = make(kind, device="cuda", impl="fused")
    moved = make(kind, impl="fused").cuda()
    loaded = make(kind, impl="fused").cuda()
    loaded.load_state_dict(make(kind).cuda().state_dict(), assign=True)
    for layer in (built_there, moved, loaded, copy.deepcopy(moved)):
        assert flat_weights.in_one_buffer(fused_weights(layer))
        assert _compaction_warnings(layer, x) == []
    moved.weight_ih_l0.data = moved.weight_ih_l0.data.clone()
    assert _compaction_warnings(moved, x), "the warning may fire once per process (TORCH_WARN_ONCE)"
    moved.flatten_parameters()
    assert _compaction_warnings(moved, x) == []


@pytest.mark.parametrize(
    ("kind", "mode", "stride0", "proj_size"),
    [("rnn_relu", "RNN_RELU", 4, 0), ("gru_bidirectional", "GRU", 4, 0),
     ("lstm_no_bias", "LSTM", 2, 0), ("lstm_proj", "LSTM", 5, 2)],
)  # fmt: skip
def test_cudnn_is_asked_for_torch_nns_layout(monkeypatch, kind, mode, stride0, proj_size) -> None:
    """Where cuDNN runs the layer, torch's own flatten gets what torch.nn's RNNBase passes it:
    the weights in the kernel's order, the weights per layer and direction, the sizes and the
    cuDNN mode (faked here: the call itself needs a GPU)."""
    calls = []
    monkeypatch.setattr(flat_weights, "cudnn_takes", lambda weights: True)
    monkeypatch.setattr(flat_weights.cudnn_rnn, "get_cudnn_mode", lambda name: name)
    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", lambda *args: calls.append(args))
    layer = make(kind, batch_first=True)  # flattened on construction, as on CUDA
    assert len(calls) == 1
    weights, *options = calls[0]
    assert [id(w) for w in weights] == [id(w) for w in fused_weights(layer)]
    _, keywords = FUSED_KINDS[kind]
    num_layers = keywords.get("num_layers", 1)
    bidirectional = keywords.get("bidirectional", False)
    assert options == [stride0, D, mode, H, proj_size, num_layers, True, bidirectional]
