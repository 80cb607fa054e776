"""Cells: shapes, states, the variants torch lacks (checked against their equations), errors."""

import math

import pytest
import torch
from torch import nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from tests.conftest import B, D, H

pytestmark = pytest.mark.usefixtures("single_thread")

P = 2  # projection size


def test_shapes_batched_and_unbatched():
    x = torch.randn(B, D)
    assert RNNCell(D, H)(x).shape == (B, H)
    assert GRUCell(D, H)(x[0]).shape == (H,)
    h, c = LSTMCell(D, H, proj_size=P)(x)
    assert (h.shape, c.shape) == ((B, P), (B, H))
    h, c = LSTMCell(D, H, peephole=True)(x[0], (torch.zeros(H), torch.zeros(H)))
    assert (h.shape, c.shape) == ((H,), (H,))


def test_init_state_follows_weights_unless_told():
    cell = LSTMCell(D, H, proj_size=P, dtype=torch.float64)
    h, c = cell.init_state(B)
    assert (h.shape, c.shape, h.dtype) == ((B, P), (B, H), torch.float64)
    assert GRUCell(D, H).init_state(B, dtype=torch.float16).dtype == torch.float16
    assert torch.equal(RNNCell(D, H).init_state(B), torch.zeros(B, H))


def test_zero_state_equals_no_state():
    cell = GRUCell(D, H, reset_after=False)
    x = torch.randn(B, D)
    torch.testing.assert_close(cell(x), cell(x, torch.zeros(B, H)), rtol=0, atol=0)


def test_parameters_are_uniform_in_one_over_sqrt_h():
    cell = LSTMCell(D, H, proj_size=P, peephole=True)
    bound = 1 / math.sqrt(H)
    for name, parameter in cell.named_parameters():
        assert parameter.abs().max() <= bound, name
    names = dict(cell.named_parameters())
    assert names["weight_hh"].shape == (4 * H, P)
    assert names["weight_hr"].shape == (P, H)
    assert {names[n].shape for n in ("weight_ci", "weight_cf", "weight_co")} == {(H,)}


def test_peephole_cell_follows_its_equations():
    cell = LSTMCell(D, H, peephole=True, dtype=torch.float64)
    x, h, c = (torch.randn(B, n, dtype=torch.float64) for n in (D, H, H))
    w = dict(cell.named_parameters())
    gates = x @ w["weight_ih"].T + w["bias_ih"] + h @ w["weight_hh"].T + w["bias_hh"]
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f + w["weight_cf"] * c) * c + torch.sigmoid(
        i + w["weight_ci"] * c
    ) * torch.tanh(g)
    h_new = torch.sigmoid(o + w["weight_co"] * c_new) * torch.tanh(c_new)
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_c, c_new, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_h, h_new, rtol=1e-12, atol=1e-12)


def test_peephole_with_zero_weights_is_a_plain_lstm():
    plain = nn.LSTMCell(D, H)
    cell = LSTMCell(D, H, peephole=True)
    with torch.no_grad():
        for name in ("weight_ci", "weight_cf", "weight_co"):
            getattr(cell, name).zero_()
    cell.load_state_dict(plain.state_dict(), strict=False)
    x, state = torch.randn(B, D), (torch.randn(B, H), torch.randn(B, H))
    for got, expected in zip(cell(x, state), plain(x, state), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_projected_lstm_cell_matches_one_step_of_torch_lstm():
    lstm = nn.LSTM(D, H, proj_size=P)
    cell = LSTMCell(D, H, proj_size=P)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in lstm.state_dict().items()})
    x, h, c = torch.randn(B, D), torch.randn(B, P), torch.randn(B, H)
    _, (h_n, c_n) = lstm(x.unsqueeze(0), (h.unsqueeze(0), c.unsqueeze(0)))
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_h, h_n[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_c, c_n[0], rtol=1e-5, atol=1e-5)


def test_gru_reset_before_follows_cho_et_al():
    cell = GRUCell(D, H, reset_after=False, dtype=torch.float64)
    x, h = torch.randn(B, D, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
    b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn)
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h, rtol=1e-12, atol=1e-12)


def test_gru_reset_before_differs_from_reset_after():
    after, before = GRUCell(D, H), GRUCell(D, H, reset_after=False)
    before.load_state_dict(after.state_dict())
    x, h = torch.randn(B, D), torch.randn(B, H)
    assert not torch.allclose(after(x, h), before(x, h))


def test_one_gate_gru_follows_its_equations():
    cell = GRUCell(D, H, reset_gate=False, dtype=torch.float64)
    assert cell.weight_ih.shape == (2 * H, D)
    assert cell.weight_hh.shape == (2 * H, H)
    x, h = torch.randn(B, D, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    w_iz, w_in = cell.weight_ih.chunk(2)
    w_hz, w_hn = cell.weight_hh.chunk(2)
    b_iz, b_in = cell.bias_ih.chunk(2)
    b_hz, b_hn = cell.bias_hh.chunk(2)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + h @ w_hn.T + b_hn)
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTMCell(D, H, peephole=True, proj_size=P, dtype=torch.float64),
        lambda: GRUCell(D, H, reset_after=False, dtype=torch.float64),
        lambda: GRUCell(D, H, reset_gate=False, dtype=torch.float64),
        lambda: GRUCell(D, H, reset_gate=False, bias=False, dtype=torch.float64),
    ],
    ids=["lstm_peephole_proj", "gru_reset_before", "gru_one_gate", "gru_one_gate_nobias"],
)
def test_variant_cells_pass_gradcheck(make):
    cell = make()
    names = [name for name, _ in cell.named_parameters()]
    x = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn_like(s).requires_grad_() for s in _as_tuple(cell.init_state(B)))

    def run(x, *tensors):
        params = dict(zip(names, tensors[len(state) :], strict=True))
        given = tensors[: len(state)]
        return torch.func.functional_call(cell, params, (x, given if len(given) > 1 else given[0]))

    assert torch.autograd.gradcheck(run, (x, *state, *cell.parameters()))


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"LSTMCell\(input_size=4\).*x.shape=\(3, 5\)"):
        LSTMCell(D, H)(torch.randn(B, D + 1))


def test_wrong_state_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"GRUCell expects a state of shape \(3, 6\)"):
        GRUCell(D, H)(torch.randn(B, D), torch.randn(B + 1, H))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'; got 'sigmoid'"):
        RNNCell(D, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size must be in"):
        LSTMCell(D, H, proj_size=H)
