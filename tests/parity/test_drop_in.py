"""Drop-in in every mode: what a caller may do with torch.nn's outputs works on ours.

* The workspace never hands out storage a caller can still reach: an output's storage kept
  after the output is dropped, or a buffer reached through the graph, stays as it was while
  the layer runs again.
* In-place ops on the output (``F.dropout(out, inplace=True)``, ``masked_fill_``,
  ``ReLU(inplace=True)``) work in training and give the numbers of the same op out of place.
* Under CPU bf16 autocast the output and final state have torch.nn's dtypes, with autograd
  recording or not.
* ``impl="auto"`` equals torch.nn at H=32 (where it trains RNN and GRU with the loop) and at a
  size whose products go through oneDNN (``rnnkit.onednn.ONEDNN_MIN_WEIGHTS``).
"""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import layers, onednn, workspace
from rnnkit.onednn import ONEDNN_MIN_WEIGHTS

pytestmark = pytest.mark.usefixtures("single_thread")

T, B, D = 5, 3, 4  # distinct from every hidden size below
# name -> (our class, torch.nn's class of the base cell, keywords of ours)
KINDS: dict[str, tuple[type[nn.Module], type[nn.Module], dict]] = {
    "rnn": (layers.RNN, nn.RNN, {}),
    "gru": (layers.GRU, nn.GRU, {}),
    "lstm": (layers.LSTM, nn.LSTM, {}),
    "lstm_proj": (layers.LSTM, nn.LSTM, {"proj_size": 3}),
    "gru_reset_before": (layers.GRU, nn.GRU, {"reset_after": False}),
    "gru_one_gate": (layers.GRU, nn.GRU, {"reset_gate": False}),
    "lstm_peephole": (layers.LSTM, nn.LSTM, {"peephole": True}),
}
TORCH_KINDS = ["rnn", "gru", "lstm", "lstm_proj"]  # those torch.nn computes itself
MINIMAL = {"mingru": layers.MinGRU, "minlstm": layers.MinLSTM}
# The buffers of the whole-sequence functions and scans, which ``save_for_backward``.
SAVING_NODES = {
    "RNNSequenceBackward",
    "GRUSequenceBackward",
    "LSTMSequenceBackward",
    "MinGRUScanBackward",
    "LinearScanBackward",
}


def make_pair(kind: str, hidden: int, impl: str, **options) -> tuple[nn.Module, nn.Module]:
    """torch.nn's layer of the base cell and ours, ours loaded with torch's weights where the
    state dicts match (the variants keep their own random weights)."""
    ours_cls, torch_cls, keywords = KINDS[kind]
    torch_keywords = {k: v for k, v in keywords.items() if k == "proj_size"}
    theirs = torch_cls(D, hidden, **torch_keywords, **options)
    ours = ours_cls(D, hidden, **keywords, **options, impl=impl)
    shapes = {name: value.shape for name, value in theirs.state_dict().items()}
    if {name: value.shape for name, value in ours.state_dict().items()} == shapes:
        ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def parts(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


# --- the workspace never hands out reachable storage ---------------------------------------


def read_storage(storage: torch.UntypedStorage) -> Tensor:
    """A float32 copy of everything in ``storage``; keeps no reference to it."""
    return torch.empty(0).set_(storage).clone()  # (nbytes / 4,)


def run_again(layer: nn.Module, times: int = 3) -> None:
    """Forward and backward of fresh inputs, so that the pool hands its free buffers out."""
    for _ in range(times):
        out, _ = layer(torch.randn(T, B, D, requires_grad=True))
        out.square().sum().backward()


def recurrent_layers() -> dict[str, Callable[[], nn.Module]]:
    return {
        "rnn loop": lambda: layers.RNN(D, 7, impl="loop"),
        "gru loop": lambda: layers.GRU(D, 7, impl="loop"),
        "gru auto": lambda: layers.GRU(D, 32),
        "lstm loop": lambda: layers.LSTM(D, 7, impl="loop"),
        "mingru scan": lambda: layers.MinGRU(D, 7, impl="scan"),
        "minlstm scan": lambda: layers.MinLSTM(D, 7, impl="scan"),
    }


@pytest.mark.parametrize("name", list(recurrent_layers()))
def test_a_kept_output_storage_is_never_reused(name: str) -> None:
    """The caller keeps ``out.untyped_storage()``, drops ``out``, runs the layer again."""
    workspace.clear()
    layer = recurrent_layers()[name]()
    out, _ = layer(torch.randn(T, B, D, requires_grad=True))
    out.square().sum().backward()
    kept = out.untyped_storage()
    before = read_storage(kept)
    del out
    run_again(layer)
    assert torch.equal(read_storage(kept), before)


@pytest.mark.parametrize("name", list(recurrent_layers()))
def test_a_storage_reached_through_the_graph_is_never_reused(name: str) -> None:
    """The caller keeps the storage of every tensor the layer saved for backward (reached
    through ``grad_fn``), runs backward, which frees those tensors, and the layer again."""
    workspace.clear()
    layer = recurrent_layers()[name]()
    out, _ = layer(torch.randn(T, B, D, requires_grad=True))
    kept = [t.untyped_storage() for t in saved_buffers(out) if t is not None]
    assert kept, "no whole-sequence function or scan saved anything"
    before = [read_storage(storage) for storage in kept]
    out.square().sum().backward()
    del out
    run_again(layer)
    for storage, values in zip(kept, before, strict=True):
        assert torch.equal(read_storage(storage), values)


def saved_buffers(out: Tensor) -> list[Tensor | None]:
    """The tensors that the layer's whole-sequence functions and scans saved for backward."""
    found, todo, seen = [], [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() in SAVING_NODES:
            found += list(node.saved_tensors)
        todo += [next_node for next_node, _ in node.next_functions]
    return found


# --- in-place ops on the output ------------------------------------------------------------

# name -> (in place, the same out of place); the dropout mask comes from the seed set before it
OPS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "dropout": (
        lambda out: F.dropout(out, 0.5, training=True, inplace=True),
        lambda out: F.dropout(out, 0.5, training=True),
    ),
    "masked_fill_": (
        lambda out: out.masked_fill_(checkerboard(out), 0.0),
        lambda out: out.masked_fill(checkerboard(out), 0.0),
    ),
    "relu_inplace": (nn.ReLU(inplace=True), nn.ReLU()),
}


def checkerboard(out: Tensor) -> Tensor:
    """A fixed mask of out's shape: every other element."""
    return (torch.arange(out.numel()) % 2 == 0).view(out.shape)


def after_op(
    module: nn.Module, x: Tensor, op: Callable[[Tensor], Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """op on the output, then backward of a weighted sum; (output and state, gradients)."""
    out, state = module(x)
    torch.manual_seed(5)  # the same dropout mask for both modules
    out = op(out)
    weights = torch.linspace(-1, 1, out.numel()).view(out.shape)
    loss = (out * weights).sum() + sum(part.square().sum() for part in parts(state))
    grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return [out.detach(), *(p.detach() for p in parts(state))], list(grads)


# torch.nn.LSTM's CPU kernel (oneDNN) saves its output for backward, so torch refuses in-place
# ops on it, and so does ours with impl="fused" or "auto" (the same kernel); the loop accepts.
IN_PLACE_CASES = [
    (kind, impl)
    for kind in TORCH_KINDS
    for impl in ("auto", "loop", "fused")
    if not (kind == "lstm" and impl != "loop")
]


@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize(("kind", "impl"), IN_PLACE_CASES)
def test_in_place_ops_on_the_output_match_torch(kind, impl, op, batch_first) -> None:
    """In training at H=32, where impl="auto" trains RNN and GRU with the loop."""
    theirs, ours = make_pair(kind, 32, impl, num_layers=2, batch_first=batch_first)
    in_place, out_of_place = OPS[op]
    x = torch.randn((B, T, D) if batch_first else (T, B, D), requires_grad=True)
    expected = after_op(theirs, x, out_of_place)
    got = after_op(ours, x, in_place)
    for want, have in zip(expected[0] + expected[1], got[0] + got[1], strict=True):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("impl", ["auto", "scan"])
@pytest.mark.parametrize("name", list(MINIMAL))
def test_in_place_ops_on_minimal_outputs_match_the_loop(name, impl, op, batch_first) -> None:
    layer_cls = MINIMAL[name]
    reference = layer_cls(D, 7, num_layers=2, batch_first=batch_first, impl="loop")
    ours = layer_cls(D, 7, num_layers=2, batch_first=batch_first, impl=impl)
    ours.load_state_dict(reference.state_dict())
    in_place, out_of_place = OPS[op]
    x = torch.randn((B, T, D) if batch_first else (T, B, D), requires_grad=True)
    expected = after_op(reference, x, out_of_place)
    got = after_op(ours, x, in_place)
    for want, have in zip(expected[0] + expected[1], got[0] + got[1], strict=True):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)


# --- dtypes under autocast -----------------------------------------------------------------


def autocast_dtypes(module: nn.Module, x: Tensor, grad: bool) -> list[torch.dtype]:
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
        out, state = module(x)
    return [out.dtype, *(part.dtype for part in parts(state))]


# 32: the loop below oneDNN's size; 256: every kind's W_hh (G·H, H) of at least
# ONEDNN_MIN_WEIGHTS elements but the RNN's, whose bf16 loop then uses the plain product.
AUTOCAST_CASES = [
    (kind, impl)
    for kind in KINDS
    for impl in ("auto", "loop", "fused")
    if impl != "fused" or kind in TORCH_KINDS
]


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("hidden", [32, 256])
@pytest.mark.parametrize(("kind", "impl"), AUTOCAST_CASES)
def test_autocast_dtypes_equal_torch(kind: str, impl: str, hidden: int, grad: bool) -> None:
    """The variants torch lacks have the dtypes of its base cell. Where torch's oneDNN LSTM
    cannot run bf16 (an AVX2-only CPU), the dtypes it gives a bf16 module are the reference."""
    theirs, ours = make_pair(kind, hidden, impl)
    x = torch.randn(T, B, D)
    try:
        expected = autocast_dtypes(theirs, x, grad)
    except RuntimeError as error:  # oneDNN's bf16 LSTM on a CPU without AVX-512
        assert "primitive descriptor" in str(error)
        assert not onednn.bf16_onednn_works()
        if impl == "fused":
            return  # ours is the same kernel
        expected = autocast_dtypes(theirs.to(torch.bfloat16), x.bfloat16(), grad)
    assert autocast_dtypes(ours, x, grad) == expected


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_autocast_outputs_are_close_to_float32(kind: str) -> None:
    """The same weights under bf16 autocast, with autograd and without, stay near fp32 torch."""
    theirs, ours = make_pair(kind, 32, "auto")
    x = torch.randn(T, B, D)
    expected = [theirs(x)[0].detach(), *(p.detach() for p in parts(theirs(x)[1]))]
    for grad in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
            out, state = ours(x)
        for want, have in zip(expected, [out, *parts(state)], strict=True):
            torch.testing.assert_close(have.float().detach(), want, atol=0.05, rtol=0)


@pytest.mark.parametrize("name", list(MINIMAL))
def test_minimal_autocast_dtypes_do_not_depend_on_autograd(name: str) -> None:
    """float32, as torch.nn.GRU's: the state starts in float32 and keeps its dtype."""
    x = torch.randn(T, B, D)
    for impl in ("auto", "scan", "loop"):
        layer = MINIMAL[name](D, 7, impl=impl)
        assert autocast_dtypes(layer, x, True) == autocast_dtypes(layer, x, False)
        assert autocast_dtypes(layer, x, True) == [torch.float32, torch.float32]


# --- impl="auto" against torch.nn ----------------------------------------------------------

ONEDNN_HIDDEN = 384  # an RNN's W_hh (384, 384) is the smallest here over ONEDNN_MIN_WEIGHTS
assert ONEDNN_HIDDEN**2 >= ONEDNN_MIN_WEIGHTS


@pytest.mark.parametrize("onednn_fp32", [True, False], ids=["onednn", "addmm"])
@pytest.mark.parametrize("hidden", [32, ONEDNN_HIDDEN])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_auto_matches_torch(
    kind: str, hidden: int, onednn_fp32: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training forward + backward in float32; at the large size, with products through
    oneDNN and through addmm whatever this CPU would choose."""
    monkeypatch.setattr(onednn, "fp32_onednn_pays", lambda: onednn_fp32)
    theirs, ours = make_pair(kind, hidden, "auto", num_layers=2)
    if kind in ("rnn", "gru"):
        assert ours.resolved_impl == "loop"
        if hidden == ONEDNN_HIDDEN:  # the loop's products of W_hh and W_ih x
            assert onednn._use_onednn(ours.weight_hh_l0) is onednn_fp32
    x = torch.randn(T, B, D, requires_grad=True)
    h0 = tuple(torch.randn_like(part) for part in parts(theirs(x)[1]))
    state = h0 if kind.startswith("lstm") else h0[0]
    results = []
    for module in (theirs, ours):
        out, final = module(x, state)
        loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()
        loss = loss + sum(part.square().sum() for part in parts(final))
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append([out, *parts(final), *grads])
    for want, have in zip(*results, strict=True):
        torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-4)
