"""rnnkit.inspect.saturation and .gradients: gate saturation counts and gradient flow."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from rnnkit.config import ModelConfig
from rnnkit.errors import ConfigError, DataError
from rnnkit.inspect.activations import activations
from rnnkit.inspect.gradients import (
    gradient_flow,
    plot_gradient_comparison,
    plot_gradient_flow,
)
from rnnkit.inspect.saturation import gate_saturation, plot_saturation
from rnnkit.tasks.lm import LanguageModel

pytestmark = pytest.mark.usefixtures("single_thread")


def model_of(cell: str, layers: int = 2, hidden: int = 8, vocab: int = 10) -> LanguageModel:
    config = ModelConfig(
        cell=cell, num_layers=layers, hidden_size=hidden, embedding_size=4, dropout=0.0
    )
    return LanguageModel(config, vocab).eval()


@pytest.mark.parametrize("cell", ["gru", "lstm", "minlstm"])
def test_saturation_fractions_count_the_gates_below_and_above(cell: str) -> None:
    model = model_of(cell)
    with torch.no_grad():  # large weights, so that some gates saturate
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight"):
                p.mul_(6.0)
    ids = torch.randint(0, 10, (400,))
    result = gate_saturation(model, ids, streams=3)
    full = activations(model, ids, streams=3, gates=True)
    assert result.steps == 400 and len(result.layers) == 2
    for layer, gates in enumerate(result.layers):
        assert list(gates) == list(full.layers[layer].gates)
        for name, (left, right) in gates.items():
            values = full.layers[layer].gates[name].numpy()  # (N, H)
            np.testing.assert_allclose(left, (values < 0.1).mean(0))
            np.testing.assert_allclose(right, (values > 0.9).mean(0))
    summary = result.to_dict()
    first = next(iter(summary["layers"][0]["gates"].values()))
    assert len(first["left"]) == 8 and 0.0 <= first["left_mean"] <= 1.0
    assert any(v > 0 for v in first["left"] + first["right"])
    assert isinstance(plot_saturation(result), Figure)


def test_saturation_refuses_a_cell_without_gates() -> None:
    with pytest.raises(ConfigError, match="the rnn cell has none"):
        gate_saturation(model_of("rnn"), torch.randint(0, 10, (20,)))


def test_vanilla_rnn_gradient_vanishes_orders_of_magnitude_faster_than_an_lstms() -> None:
    """At distance 50 the vanilla RNN's gradient is orders of magnitude below that of an LSTM
    whose forget gates have bias 1 (σ(1) ≈ 0.73), both otherwise at torch's default init."""
    hidden = 32
    ids = torch.randint(0, 10, (400,))
    relative = {}
    for cell in ("rnn", "lstm"):
        torch.manual_seed(0)
        model = model_of(cell, layers=1, hidden=hidden)
        if cell == "lstm":
            with torch.no_grad():
                model.rnn.bias_ih_l0[hidden : 2 * hidden] = 1.0  # forget gate rows (i, f, g, o)
                model.rnn.bias_hh_l0[hidden : 2 * hidden] = 0.0
        flow = gradient_flow(model, ids, distance=60, windows=16)
        assert flow.norms.shape == (1, 61) and flow.windows == 16
        relative[cell] = flow.norms[0, 50] / flow.norms[0, 0]
    assert relative["rnn"] < 1e-3 * relative["lstm"], relative
    assert relative["lstm"] > 1e-7


@pytest.mark.parametrize("cell", ["gru", "mingru"])  # a step loop; a scan stepped for gradients
def test_gradient_at_distance_zero_is_the_heads_gradient(cell: str) -> None:
    """For the top layer at T itself, ∂CE/∂h_T = W_headᵀ (softmax − one-hot) per window."""
    model = model_of(cell, layers=1)
    ids = torch.randint(0, 10, (50,))
    flow = gradient_flow(model, ids, distance=5, windows=1, warmup=3)
    end = 8  # one window: the first T with room for 5 steps and 3 of warm-up before it
    with torch.no_grad():
        logits, _ = model(ids[None, : end + 1])  # warm-up and window, from a zero state
        probs = F.softmax(logits[0, -1], dim=-1)  # (V,)
        probs[ids[end + 1]] -= 1.0
        expected = (model.head.weight.t() @ probs).norm().item()
    assert flow.norms[0, 0] == pytest.approx(expected, rel=1e-5)


def test_short_texts_shrink_the_distance_and_tiny_ones_are_refused() -> None:
    model = model_of("lstm", layers=2)
    flow = gradient_flow(model, torch.randint(0, 10, (12,)), distance=100, windows=8)
    assert flow.norms.shape == (2, 11)  # distance 10: the longest with a next token
    assert flow.to_dict()["layers"][1]["relative"][0] == 1.0
    with pytest.raises(DataError, match="at least 3 tokens"):
        gradient_flow(model, torch.tensor([1, 2]))
    assert isinstance(plot_gradient_flow(flow), Figure)
    figure = plot_gradient_comparison({"untrained": {"lstm": flow}, "trained": {"lstm": flow}})
    assert len(figure.axes) == 2
