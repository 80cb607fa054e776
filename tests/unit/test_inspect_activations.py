"""rnnkit.inspect.steps and .activations: every cell's states and gates over a text, in chunks.

The traced values must be the model's own (its forward's logits, outputs and final states), the
gates must follow each cell's equations, and the stream plan must read every position once.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit import cells
from rnnkit.config import ModelConfig
from rnnkit.inspect.activations import activations, plan_streams, trace
from rnnkit.inspect.steps import Clamp, gate_names, initial_states, run_model
from rnnkit.tasks.lm import LanguageModel

pytestmark = pytest.mark.usefixtures("single_thread")

V, E, H, P, L = 11, 5, 7, 3, 2

# name -> (base cell of the LanguageModel, the layer that replaces model.rnn, or None)
VARIANTS = {
    "rnn": ("rnn", None),
    "rnn_relu": ("rnn", lambda: rnnkit.RNN(E, H, L, nonlinearity="relu", batch_first=True)),
    "gru": ("gru", None),
    "gru_reset_before": ("gru", lambda: rnnkit.GRU(E, H, L, batch_first=True, reset_after=False)),
    "gru_one_gate": ("gru", lambda: rnnkit.GRU(E, H, L, batch_first=True, reset_gate=False)),
    "lstm": ("lstm", None),
    "lstm_peephole": ("lstm", lambda: rnnkit.LSTM(E, H, L, batch_first=True, peephole=True)),
    "lstm_proj": ("lstm", lambda: rnnkit.LSTM(E, H, L, batch_first=True, proj_size=P)),
    "mingru": ("mingru", None),
    "minlstm": ("minlstm", None),
}


def make_model(variant: str) -> LanguageModel:
    base, layer = VARIANTS[variant]
    config = ModelConfig(cell=base, num_layers=L, hidden_size=H, embedding_size=E, dropout=0.0)
    model = LanguageModel(config, V)
    if layer is not None:
        model.rnn = layer()
        if getattr(model.rnn, "proj_size", 0):
            model.head = nn.Linear(P, V)
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_trace_gives_the_models_own_logits_outputs_and_states(variant: str) -> None:
    model = make_model(variant)
    ids = torch.randint(0, V, (203,))
    traced = activations(model, ids, streams=1, chunk_size=50, gates=True, logits=True)
    with torch.no_grad():
        logits, state = model(ids.unsqueeze(0))  # (1, N, V)
        out, _ = model.rnn(model.embed(ids.unsqueeze(0)))  # (1, N, P or H)
    assert torch.equal(traced.positions, torch.arange(203))
    torch.testing.assert_close(traced.logits, logits[0])
    torch.testing.assert_close(traced.layers[-1].h, out[0])
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    for layer in range(L):
        torch.testing.assert_close(traced.layers[layer].h[-1], h_n[layer, 0])
        if c_n is not None:
            torch.testing.assert_close(traced.layers[layer].c[-1], c_n[layer, 0])
    names = gate_names(model.rnn)
    assert list(traced.layers[0].gates) == list(names)
    for gate in traced.layers[0].gates.values():
        assert gate.shape == (203, H)
        assert gate.min() >= 0.0 and gate.max() <= 1.0


def test_gate_names_of_every_cell() -> None:
    assert {v: gate_names(make_model(v).rnn) for v in VARIANTS} == {
        "rnn": (),
        "rnn_relu": (),
        "gru": ("r", "z"),
        "gru_reset_before": ("r", "z"),
        "gru_one_gate": ("z",),
        "lstm": ("i", "f", "o"),
        "lstm_peephole": ("i", "f", "o"),
        "lstm_proj": ("i", "f", "o"),
        "mingru": ("z",),
        "minlstm": ("f", "i"),
    }


B_, H_ = 3, 6


def _sigmoid_parts(pre: torch.Tensor, count: int) -> list[torch.Tensor]:
    return [torch.sigmoid(part) for part in pre.chunk(count, dim=1)]


def test_lstm_step_gates_are_the_textbook_gates_and_the_step_is_lstm_steps() -> None:
    x_gates, h, c = torch.randn(B_, 4 * H_), torch.randn(B_, H_), torch.randn(B_, H_)
    w_hh = torch.randn(4 * H_, H_)
    (h1, c1), (i, f, o) = cells.lstm_step_gates(x_gates, (h, c), w_hh)
    h_ref, c_ref = cells.lstm_step(x_gates, (h, c), w_hh)
    assert torch.equal(h1, h_ref) and torch.equal(c1, c_ref)
    i_ref, f_ref, _, o_ref = _sigmoid_parts(x_gates + h @ w_hh.t(), 4)
    for got, want in ((i, i_ref), (f, f_ref), (o, o_ref)):
        torch.testing.assert_close(got, want)


def test_lstm_step_gates_with_peepholes_and_projection() -> None:
    x_gates, h, c = torch.randn(B_, 4 * H_), torch.randn(B_, 2), torch.randn(B_, H_)
    w_hh, w_hr = torch.randn(4 * H_, 2), torch.randn(2, H_)
    peep = (torch.randn(H_), torch.randn(H_), torch.randn(H_))
    (h1, c1), (i, f, o) = cells.lstm_step_gates(x_gates, (h, c), w_hh, w_hr, peep)
    h_ref, c_ref = cells.lstm_step(x_gates, (h, c), w_hh, w_hr, peep)
    assert torch.equal(h1, h_ref) and torch.equal(c1, c_ref)
    pre_i, pre_f, _, pre_o = (x_gates + h @ w_hh.t()).chunk(4, dim=1)
    torch.testing.assert_close(i, torch.sigmoid(pre_i + peep[0] * c))
    torch.testing.assert_close(f, torch.sigmoid(pre_f + peep[1] * c))
    torch.testing.assert_close(o, torch.sigmoid(pre_o + peep[2] * c1))  # o sees the new cell


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_step_gates_match_the_step_and_the_equations(reset_after: bool) -> None:
    x_gates, h = torch.randn(B_, 3 * H_), torch.randn(B_, H_)
    w_hh, b_hh = torch.randn(3 * H_, H_), torch.randn(3 * H_)
    with_gates = cells.gru_step_gates if reset_after else cells.gru_reset_before_step_gates
    plain = cells.gru_step if reset_after else cells.gru_reset_before_step
    h1, (r, z) = with_gates(x_gates, h, w_hh, b_hh)
    assert torch.equal(h1, plain(x_gates, h, w_hh, b_hh))
    pre_rz = x_gates[:, : 2 * H_] + h @ w_hh[: 2 * H_].t() + b_hh[: 2 * H_]
    r_ref, z_ref = _sigmoid_parts(pre_rz, 2)
    torch.testing.assert_close(r, r_ref)
    torch.testing.assert_close(z, z_ref)


def test_one_gate_gru_and_minimal_rnn_gates() -> None:
    x_gates, h, w_hh = torch.randn(B_, 2 * H_), torch.randn(B_, H_), torch.randn(2 * H_, H_)
    h1, (z,) = cells.gru_minimal_step_gates(x_gates, h, w_hh)
    assert torch.equal(h1, cells.gru_minimal_step(x_gates, h, w_hh))
    torch.testing.assert_close(z, torch.sigmoid((x_gates + h @ w_hh.t())[:, :H_]))
    k = torch.randn(B_, 3 * H_)
    f_norm, i_norm, candidate = cells.minlstm_gates(k)
    f, i = torch.sigmoid(k[:, :H_]), torch.sigmoid(k[:, H_ : 2 * H_])
    torch.testing.assert_close(f_norm, f / (f + i))
    torch.testing.assert_close(i_norm, i / (f + i))
    assert torch.equal(candidate, k[:, 2 * H_ :])
    z, candidate = cells.mingru_gates(k[:, : 2 * H_])
    torch.testing.assert_close(z, torch.sigmoid(k[:, :H_]))


@pytest.mark.parametrize("count, streams, warmup", [(1, None, 500), (10, 3, 2), (997, 7, 40)])
def test_stream_plan_reads_every_position_once_after_its_warmup(count, streams, warmup) -> None:
    plan = plan_streams(count, streams, warmup)
    kept = plan.read[plan.keep]
    assert sorted(kept.tolist()) == list(range(count))
    for row, keep in zip(plan.read, plan.keep, strict=True):
        real = row[row >= 0]
        assert torch.equal(real, torch.arange(int(real[0]), int(real[0]) + real.numel()))
        first = int(row[keep][0])
        assert first - int(real[0]) == min(warmup, first)  # warm-up, where there is text


def test_streams_equal_fresh_runs_from_their_warmup_and_nearly_the_exact_pass() -> None:
    model = make_model("lstm")
    ids = torch.randint(0, V, (900,))
    split = activations(model, ids, streams=3, warmup=40)
    plan = plan_streams(900, 3, 40)
    for row, keep in zip(plan.read, plan.keep, strict=True):  # each stream is its own run
        start = int(row[0])
        fresh = activations(model, ids[start : int(row[row >= 0][-1]) + 1], streams=1)
        kept = row[keep]
        torch.testing.assert_close(split.layers[1].c[kept], fresh.layers[1].c[kept - start])
    exact = activations(model, ids, streams=1)
    # An untrained LSTM forgets within tens of steps: 40 steps of warm-up recover the state.
    assert (split.layers[1].h - exact.layers[1].h).abs().max() < 1e-4


def test_trace_chunks_are_bounded_and_only_what_was_asked() -> None:
    model = make_model("gru")
    ids = torch.randint(0, V, (300,))
    chunks = list(trace(model, ids, streams=2, warmup=10, chunk_size=32))
    assert max(chunk.positions.numel() for chunk in chunks) <= 2 * 32
    assert all(chunk.logits is None and not chunk.layers[0].gates for chunk in chunks)
    assert sum(chunk.positions.numel() for chunk in chunks) == 300


def test_clamped_units_stay_at_their_value_and_other_rows_are_untouched() -> None:
    model = make_model("lstm")
    tokens = torch.randint(0, V, (2, 30))
    tokens[1] = tokens[0]
    like = model.head.weight
    mask = torch.zeros(2, H, dtype=torch.bool)
    mask[1, 4] = True
    value = torch.full((2, H), 0.3)
    clamps = [Clamp(torch.zeros(2, H, dtype=torch.bool), value, mask, value), None]
    with torch.no_grad():
        start = initial_states(model.rnn, 2, like)
        steps, logits, _ = run_model(model, tokens, start, clamps=clamps, gates=True)
        plain, plain_logits, _ = run_model(model, tokens[:1], initial_states(model.rnn, 1, like))
    assert torch.all(steps[0].c[1, :, 4] == 0.3)
    o = steps[0].gates["o"][1, :, 4]  # h = o ⊙ tanh(c) with the held c
    torch.testing.assert_close(steps[0].h[1, :, 4], o * torch.tanh(torch.tensor(0.3)))
    torch.testing.assert_close(steps[0].c[0], plain[0].c[0])
    torch.testing.assert_close(logits[0], plain_logits[0])
    assert not torch.allclose(logits[1], logits[0])


def test_numpy_engine_folder_loads_and_traces(tmp_path) -> None:
    from rnnkit.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("abcabd abca\n" * 40)
    out = tmp_path / "np"
    args = ["train", str(corpus), "--engine", "numpy", "--cell", "lstm", "--out", str(out)]
    assert main([*args, "--hidden-size", "8", "--seq-len", "10", "--max-steps", "3"]) == 0
    model = rnnkit.load(out)
    ids = torch.tensor(model.vocab.encode(list("abcab dabc")))
    traced = activations(model, ids, streams=1, logits=True)
    with torch.no_grad():
        logits, _ = model(ids.unsqueeze(0))
    torch.testing.assert_close(traced.logits, logits[0])
    assert F.one_hot(ids, model.vocab_size).shape[1] == model.rnn.input_size  # one-hot input
