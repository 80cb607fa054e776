"""Layers: shapes, stacking and bidirection against a hand-written loop over the cells, padding,
packing, dropout, step(), impl choice, gradients of the variants torch lacks, and error messages."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.layers.packing import reversal_index, reverse_within, run_padded
from tests.conftest import B, D, H, T

pytestmark = pytest.mark.usefixtures("single_thread")

P = 2  # projection size
LENGTHS = [5, 2, 4]
# name -> (layer class, keywords, matching cell class and keywords)
VARIANTS = {
    "rnn_relu": (RNN, {"nonlinearity": "relu"}, RNNCell, {"nonlinearity": "relu"}),
    "gru": (GRU, {}, GRUCell, {}),
    "gru_reset_before": (GRU, {"reset_after": False}, GRUCell, {"reset_after": False}),
    "gru_one_gate": (GRU, {"reset_gate": False}, GRUCell, {"reset_gate": False}),
    "lstm_proj": (LSTM, {"proj_size": P}, LSTMCell, {"proj_size": P}),
    "lstm_peephole": (LSTM, {"peephole": True}, LSTMCell, {"peephole": True}),
}
F64 = {"rtol": 1e-10, "atol": 1e-10}


def make(variant: str, **options) -> nn.Module:
    layer_cls, keywords, _, _ = VARIANTS[variant]
    return layer_cls(D, H, **keywords, **options, dtype=torch.float64)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def out_size(layer) -> int:
    return layer.proj_size or layer.hidden_size


def hand_written_stack(layer, variant: str, x: torch.Tensor):
    """The stack computed with cells and plain Python loops. x (T, B, D) -> (out, finals)."""
    _, _, cell_cls, cell_keywords = VARIANTS[variant]
    directions = 2 if layer.bidirectional else 1
    finals = []
    for index in range(layer.num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"_l{index}" + ("_reverse" if direction else "")
            cell = cell_cls(x.shape[-1], H, **cell_keywords, dtype=torch.float64)
            cell.load_state_dict(
                {
                    k.removesuffix(suffix): v
                    for k, v in layer.state_dict().items()
                    if k.endswith(suffix)
                }
            )
            state, steps = None, list(range(x.shape[0]))
            outs = [None] * len(steps)
            for t in reversed(steps) if direction else steps:
                state = cell(x[t], state)
                outs[t] = as_tuple(state)[0]
            outputs.append(torch.stack(outs))
            finals.append(state)
        x = torch.cat(outputs, dim=-1)
    return x, finals


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_loop_equals_hand_written_loop_over_cells(variant, bidirectional):
    layer = make(variant, num_layers=2, bidirectional=bidirectional, impl="loop")
    x = torch.randn(T, B, D, dtype=torch.float64)
    out, final = layer(x)
    expected_out, expected_finals = hand_written_stack(layer, variant, x)
    torch.testing.assert_close(out, expected_out, **F64)
    for got, expected in zip(
        as_tuple(final), zip(*map(as_tuple, expected_finals), strict=True), strict=True
    ):
        torch.testing.assert_close(got, torch.stack(expected), **F64)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_and_state_shapes(variant, batch_first, bidirectional):
    layer = make(variant, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    stack = 2 * (2 if bidirectional else 1)
    features = (2 if bidirectional else 1) * out_size(layer)
    x = torch.randn((B, T, D) if batch_first else (T, B, D), dtype=torch.float64)
    out, state = layer(x)
    assert out.shape == ((B, T, features) if batch_first else (T, B, features))
    assert as_tuple(state)[0].shape == (stack, B, out_size(layer))
    out, state = layer(x[0] if batch_first else x[:, 0])
    assert out.shape == (T, features)
    assert as_tuple(state)[-1].shape == (stack, H)


@pytest.mark.parametrize("impl", ["loop", "auto"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padded_sequences_end_as_if_run_alone(variant, impl):
    layer = make(variant, num_layers=2, bidirectional=True, batch_first=True, impl=impl)
    x = torch.randn(B, T, D, dtype=torch.float64)
    out, final = layer(x, lengths=torch.tensor(LENGTHS))
    for b, length in enumerate(LENGTHS):
        alone_out, alone_final = layer(x[b : b + 1, :length])
        torch.testing.assert_close(out[b : b + 1, :length], alone_out, **F64)
        assert not out[b, length:].any()  # zero at padded steps
        for got, expected in zip(as_tuple(final), as_tuple(alone_final), strict=True):
            torch.testing.assert_close(got[:, b : b + 1], expected, **F64)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_packed_input_equals_lengths(variant):
    layer = make(variant, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, D, dtype=torch.float64)
    state = tuple(torch.randn_like(s) for s in as_tuple(layer(x)[1]))
    state = state if len(state) == 2 else state[0]
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    packed_out, packed_final = layer(packed, state)
    out, final = layer(x, state, lengths=LENGTHS)
    torch.testing.assert_close(pad_packed_sequence(packed_out)[0], out, **F64)
    for got, expected in zip(as_tuple(packed_final), as_tuple(final), strict=True):
        torch.testing.assert_close(got, expected, **F64)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
def test_lstm_lengths_without_packing_equal_packed_and_ignore_padding(batch_first, bidirectional):
    """On CPU, an LSTM asked for no final state runs padded batches with lengths unpacked (the
    reverse direction reads each sequence reversed within its length): outputs and every
    gradient equal the packed run's, with NaN in the padding."""
    layer = LSTM(D, H, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    layer = layer.double()
    x = torch.randn((B, T, D) if batch_first else (T, B, D), dtype=torch.float64)
    for b, length in enumerate(LENGTHS):
        (x[b, length:] if batch_first else x[length:, b]).fill_(float("nan"))
    state = tuple(torch.randn_like(part) for part in layer(x.nan_to_num())[1])
    weights = torch.randn(*x.shape[:2], layer.num_directions * H, dtype=torch.float64)

    def gradients(out: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        (out * weights).sum().backward()
        grads = [x.grad.nan_to_num(), *(p.grad.clone() for p in layer.parameters())]
        layer.zero_grad()
        return grads

    x_packed = x.clone().requires_grad_()
    packed = pack_padded_sequence(x_packed, LENGTHS, batch_first, enforce_sorted=False)
    expected, _ = pad_packed_sequence(layer(packed, state)[0], batch_first, total_length=T)
    expected_grads = gradients(expected, x_packed)
    x_unpacked = x.clone().requires_grad_()
    out, final = layer(x_unpacked, state, lengths=LENGTHS, final_state=False)
    assert final is None
    torch.testing.assert_close(out, expected, **F64)
    for got, wanted in zip(gradients(out, x_unpacked), expected_grads, strict=True):
        assert not got.isnan().any()
        torch.testing.assert_close(got, wanted, **F64)


def test_only_an_lstm_asked_for_no_state_runs_unpacked(monkeypatch: pytest.MonkeyPatch):
    """Packing where the final state is wanted (c_n is no output), with a projection (not
    oneDNN's kernel), for the RNN and GRU (no oneDNN kernel) and under autocast."""
    import rnnkit.layers.stack as stack

    packs = []
    monkeypatch.setattr(stack, "run_padded", lambda *args: packs.append(1) or run_padded(*args))
    x = torch.randn(T, B, D)
    lstm = LSTM(D, H, bidirectional=True)
    lstm(x, lengths=LENGTHS, final_state=False)[0].sum().backward()
    assert not packs
    lstm(x, lengths=LENGTHS)
    assert len(packs) == 1
    for layer in (LSTM(D, H, proj_size=P), GRU(D, H), RNN(D, H)):
        layer(x, lengths=LENGTHS, final_state=False)
    assert len(packs) == 4
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device=None: True)
    assert not lstm._runs_unpacked(x, final_state=False)


@pytest.mark.parametrize("variant", ["gru", "lstm_peephole", "lstm_proj"])
def test_lengths_that_are_all_full_run_as_no_lengths(variant, monkeypatch: pytest.MonkeyPatch):
    """A batch without padding takes the full-length path (no packing, no time loop that
    freezes states): the same outputs and state as without lengths."""
    import rnnkit.layers.stack as stack

    layer = make(variant, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, D, dtype=torch.float64)
    expected_out, expected_state = layer(x)
    monkeypatch.setattr(stack, "run_padded", lambda *args: pytest.fail("packed"))
    monkeypatch.setattr(stack, "reversal_index", lambda *args: pytest.fail("unpacked"))
    out, state = layer(x, lengths=[T] * B)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
    for got, wanted in zip(as_tuple(state), as_tuple(expected_state), strict=True):
        torch.testing.assert_close(got, wanted, rtol=0, atol=0)
    lstm = LSTM(D, H)
    assert lstm(x.float().transpose(0, 1), lengths=[T] * B, final_state=False)[1] is None


def test_final_state_false_returns_none_on_every_path():
    x = torch.randn(T, B, D, dtype=torch.float64)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    for layer in (make("lstm_peephole"), make("gru"), LSTM(D, H, dtype=torch.float64)):
        assert layer(x, final_state=False)[1] is None
        assert layer(x, lengths=LENGTHS, final_state=False)[1] is None
        assert layer(packed, final_state=False)[1] is None
        out, state = layer(x[:, 0], final_state=False)  # unbatched
        assert out.shape == (T, out_size(layer)) and state is None


def test_reverse_within_is_its_own_inverse_and_its_gradient_is_exact():
    lengths = torch.tensor(LENGTHS)
    index = reversal_index(lengths, T, batch_first=True)  # (B, T)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    reversed_x = reverse_within(x, index, 1)
    for b, length in enumerate(LENGTHS):
        torch.testing.assert_close(reversed_x[b, :length], x[b, :length].flip(0), **F64)
    torch.testing.assert_close(reverse_within(reversed_x, index, 1), x, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda x: reverse_within(x, index, 1), (x,))
    time_major = x.detach().transpose(0, 1).requires_grad_()  # (T, B, D)
    index = reversal_index(lengths, T, batch_first=False)  # (T, B)
    torch.testing.assert_close(reverse_within(time_major, index, 0), reversed_x.transpose(0, 1))
    assert torch.autograd.gradcheck(lambda x: reverse_within(x, index, 0), (time_major,))


def test_empty_sequence_keeps_its_initial_state():
    layer = make("lstm_peephole", impl="loop")
    h0, c0 = torch.randn(1, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    out, (h, c) = layer(torch.randn(T, B, D, dtype=torch.float64), (h0, c0), lengths=[5, 0, 3])
    torch.testing.assert_close(h[:, 1], h0[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(c[:, 1], c0[:, 1], rtol=0, atol=0)
    assert not out[:, 1].any()


@pytest.mark.parametrize("variant", ["lstm_peephole", "gru_reset_before", "gru_one_gate"])
def test_variant_layers_pass_gradcheck(variant):
    layer = make(variant, num_layers=2, bidirectional=True, batch_first=True)
    names = [name for name, _ in layer.named_parameters()]
    x = torch.randn(B, T - 2, D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 1, 2])

    def run(x, *params):
        out, final = torch.func.functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"lengths": lengths}
        )
        return out, *as_tuple(final)

    assert torch.autograd.gradcheck(run, (x, *layer.parameters()), fast_mode=True)


def test_dropout_acts_between_layers_in_train_mode_only():
    layer = make("lstm_peephole", num_layers=2, dropout=0.5)
    x = torch.randn(T, B, D, dtype=torch.float64)
    layer.eval()
    evaluated = layer(x)[0]
    torch.testing.assert_close(layer(x)[0], evaluated, rtol=0, atol=0)
    layer.train()
    first, second = layer(x)[0], layer(x)[0]
    assert not torch.allclose(first, evaluated)
    assert not torch.allclose(first, second)
    layer.dropout = 0.0
    torch.testing.assert_close(layer(x)[0], evaluated, rtol=0, atol=0)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="dropout=0.5 acts between layers"):
        GRU(D, H, dropout=0.5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step_equals_forward(variant):
    layer = make(variant, num_layers=2).eval()
    x = torch.randn(T, B, D, dtype=torch.float64)
    state = tuple(torch.randn_like(s) for s in as_tuple(layer(x)[1]))
    state = state if len(state) == 2 else state[0]
    expected_out, expected_final = layer(x, state)
    for t in range(T):
        y, state = layer.step(x[t], state)
        torch.testing.assert_close(y, expected_out[t], **F64)
    for got, expected in zip(as_tuple(state), as_tuple(expected_final), strict=True):
        torch.testing.assert_close(got, expected, **F64)
    assert not y.requires_grad


def test_step_sees_changed_weights():
    layer = make("lstm_proj", num_layers=2)
    x = torch.randn(B, D, dtype=torch.float64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x.unsqueeze(0))[0].sum().backward()
    optimizer.step()
    torch.testing.assert_close(layer.step(x)[0], layer(x.unsqueeze(0))[0][0], **F64)
    layer.load_state_dict(make("lstm_proj", num_layers=2).state_dict())
    torch.testing.assert_close(layer.step(x)[0], layer(x.unsqueeze(0))[0][0], **F64)
    layer.weight_hh_l1.data.mul_(2)  # writes through .data bypass the version counter
    torch.testing.assert_close(layer.step(x)[0], layer(x.unsqueeze(0))[0][0], **F64)


def test_auto_chooses_fused_where_torch_computes_it():
    with torch.no_grad():
        chosen = {name: make(name).resolved_impl for name in VARIANTS}
    assert chosen == {
        "rnn_relu": "fused",
        "gru": "fused",
        "gru_reset_before": "loop",
        "gru_one_gate": "loop",
        "lstm_proj": "fused",
        "lstm_peephole": "loop",
    }
    assert make("gru", impl="loop").resolved_impl == "loop"


def test_auto_trains_rnn_and_gru_on_cpu_with_the_loop(monkeypatch: pytest.MonkeyPatch):
    """Faster there (bench/layers.py); batches with lengths keep torch's packed kernel, and
    so do hidden sizes below LOOP_MIN_HIDDEN."""
    wide = GRU.LOOP_MIN_HIDDEN
    assert RNN(D, wide).resolved_impl == GRU(D, wide).resolved_impl == "loop"
    assert LSTM(D, wide).resolved_impl == "fused"
    assert make("gru").resolved_impl == "fused"  # H below LOOP_MIN_HIDDEN
    assert GRU(D, wide).requires_grad_(False).resolved_impl == "fused"
    layer = GRU(D, wide, dtype=torch.float64)
    monkeypatch.setattr(layer, "_run_loop", lambda *args: pytest.fail("ran the loop"))
    x = torch.randn(T, B, D, dtype=torch.float64)
    layer(x, lengths=[T, T - 1, 1])[0].sum().backward()


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("lstm_peephole", "peephole=True"),
        ("gru_reset_before", "reset_after=False"),
        ("gru_one_gate", "reset_gate=False"),
    ],
)
def test_fused_refuses_what_torch_lacks(variant, reason):
    with pytest.raises(ValueError, match=f"impl='fused'.*does not support {reason}"):
        make(variant, impl="fused")


def test_clear_errors():
    layer = LSTM(D, H, num_layers=2)
    with pytest.raises(ValueError, match=r"input_size=4\) got input with 5 features per step"):
        layer(torch.randn(T, B, D + 1))
    with pytest.raises(ValueError, match=r"float32 weights but got input of dtype torch.float64"):
        layer(torch.randn(T, B, D, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected the initial state of shape \[\(2, 3, 6\)"):
        layer(torch.randn(T, B, D), (torch.zeros(1, B, H), torch.zeros(1, B, H)))
    with pytest.raises(ValueError, match=r"3 dimensions \(batched\) or 2"):
        layer(torch.randn(T, B, 1, D))
    with pytest.raises(ValueError, match=r"lengths must hold 3 values in \[0, 5\]"):
        layer(torch.randn(T, B, D), lengths=[1, 2, 6])
    packed = pack_padded_sequence(torch.randn(T, B, D), LENGTHS, enforce_sorted=False)
    with pytest.raises(ValueError, match="carries its own lengths"):
        layer(packed, lengths=LENGTHS)
    with pytest.raises(ValueError, match="every length to be at least 1"):
        GRU(D, H, impl="fused")(torch.randn(T, B, D), lengths=[1, 0, 2])
    with pytest.raises(ValueError, match="impl must be one of"):
        RNN(D, H, impl="cudnn")
    with pytest.raises(ValueError, match="bidirectional layer needs the whole sequence"):
        GRU(D, H, bidirectional=True).step(torch.randn(B, D))
    with pytest.raises(ValueError, match=r"step\(\) expects x of shape \(B, D\)"):
        layer.step(torch.randn(D))


def test_bench_quick_smoke(tmp_path: Path):
    out = tmp_path / "layers.json"
    script = Path(__file__).parents[2] / "bench" / "layers.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], check=True)
    rows = json.loads(out.read_text())["results"]
    assert {row["impl"] for row in rows} >= {"fused", "loop", "torch.nn", "naive"}
    assert {row["precision"] for row in rows} == {"fp32", "bf16"}
    assert all(row["tokens_per_s"] > 0 for row in rows)


def _bench_layers():
    path = Path(__file__).parents[2] / "bench" / "layers.py"
    spec = importlib.util.spec_from_file_location("bench_layers", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bench_timed_step_runs_the_optimizer(precision: str):
    """bench/layers.py times forward + backward + AdamW step: every parameter moves, and the
    input's gradient is computed (torch.nn.GRU: its LSTM cannot run bf16 autocast on a CPU
    without AVX-512)."""
    bench = _bench_layers()
    for module in (nn.GRU(D, H, 2), LSTM(D, H, 2, impl="loop")):
        x = torch.randn(T, B, D, requires_grad=True)  # (T, B, D)
        step = bench.training_step(module, x, precision)
        before = [p.detach().clone() for p in module.parameters()]
        assert step() > 0
        assert x.grad is not None
        for (name, p), old in zip(module.named_parameters(), before, strict=True):
            assert not torch.equal(p.detach(), old), f"{name} was not updated"


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "lstm_peephole", "gru_one_gate"])
def test_bench_modules_start_from_one_state_dict(cell: str):
    """Every module timed for a cell computes the same outputs from the same input: torch.nn,
    fused and loop layers and the naive loop (a variant's: its loop and naive modules)."""
    bench = _bench_layers()
    modules = bench.modules_to_time(cell, 2, H, "cpu")
    if bench.CELLS[cell][2]:
        del modules["torch.nn"]  # the base cell, another architecture
    x = torch.randn(T, B, H)  # (T, B, D = H)
    outputs = {label: module(x)[0] for label, module in modules.items()}
    first = outputs.pop(next(iter(outputs)))
    for label, out in outputs.items():
        torch.testing.assert_close(out, first, atol=1e-5, rtol=1e-5, msg=label)


def test_a_state_of_the_wrong_type_is_named() -> None:
    lstm = LSTM(4, 6, num_layers=2)
    with pytest.raises(TypeError, match=r"tuple \(h, c\) of Tensors; got list"):
        lstm(torch.randn(5, 3, 4), [torch.zeros(2, 3, 6), torch.zeros(2, 3, 6)])
