"""The packed one-step path for sampling: fp32 equals the plain step; bf16 and int8 are close."""

import pytest
import torch

from rnnkit.cli import main
from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.layers import GRU, LSTM, RNN, MinGRU
from rnnkit.layers.packed import PackedLinear
from rnnkit.sampling import generate_tokens
from rnnkit.tasks.lm import LanguageModel, State

pytestmark = pytest.mark.usefixtures("single_thread")

# Distinct small sizes: batch, input, hidden, layers, projection, vocabulary.
B, D, H, L, P = 3, 5, 7, 2, 4
VOCAB = Vocab.build(list("abcdefg\n"))  # V = 12 with the special tokens

LAYERS = {
    "lstm": lambda: LSTM(D, H, L),
    "lstm no bias": lambda: LSTM(D, H, L, bias=False),
    "lstm proj": lambda: LSTM(D, H, L, proj_size=P),
    "lstm peephole": lambda: LSTM(D, H, L, peephole=True),
    "rnn": lambda: RNN(D, H, L),
    "rnn relu": lambda: RNN(D, H, L, nonlinearity="relu"),
    "gru one gate": lambda: GRU(D, H, L, reset_gate=False),
}


def _steps(layer: torch.nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of layer.step over inputs (T, B, D), carrying the state."""
    outputs, state = [], None
    for x in inputs:
        y, state = layer.step(x, state)  # (B, H)
        outputs.append(y)
    return outputs


@pytest.mark.parametrize("name", LAYERS)
def test_packed_fp32_step_equals_plain_step(name: str) -> None:
    layer = LAYERS[name]().eval()
    inputs = torch.randn(4, B, D)  # (T, B, D)
    expected = _steps(layer, inputs)
    with layer.packed_step("fp32"):
        got = _steps(layer, inputs)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_reduced_weights_give_close_outputs(name: str, weights: str) -> None:
    layer = LAYERS[name]().eval()
    inputs = torch.randn(4, B, D)  # (T, B, D)
    expected = _steps(layer, inputs)
    with layer.packed_step(weights):
        got = _steps(layer, inputs)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, atol=3e-2, rtol=0)


def test_packed_step_is_a_snapshot_and_ends_with_the_block() -> None:
    layer = LSTM(D, H, L).eval()
    x = torch.randn(B, D)  # (B, D)
    before, _ = layer.step(x)  # (B, H)
    with layer.packed_step():
        layer.weight_hh_l0.data.zero_()  # not bumped by _version: the snapshot ignores it
        layer.weight_ih_l1.data.mul_(2)
        inside, _ = layer.step(x)  # (B, H)
    after, _ = layer.step(x)  # (B, H)
    torch.testing.assert_close(inside, before, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(after, before)
    assert layer._step_weights is None


def test_forward_ignores_the_packed_weights() -> None:
    layer = LSTM(D, H, L, batch_first=True).eval()
    x = torch.randn(B, 1, D)  # (B, 1, D)
    expected, _ = layer(x)
    with layer.packed_step("int8"):
        got, _ = layer(x)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_unknown_weights_and_split_gate_gru_raise() -> None:
    with pytest.raises(ValueError, match="weights must be one of fp32, bf16, int8; got 'int4'"):
        LSTM(D, H).packed_step("int4")
    with pytest.raises(ValueError, match="needs summed gates"):
        GRU(D, H).packed_step("int8")
    gru = GRU(D, H, L).eval()
    x = torch.randn(B, D)  # (B, D)
    with gru.packed_step("fp32"):  # keeps its usual step
        got, _ = gru.step(x)
    torch.testing.assert_close(got, gru.step(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("in_features", [1, 5, 16, 23, 40])
@pytest.mark.parametrize("weights", ["fp32", "bf16", "int8"])
def test_packed_linear_matches_linear(in_features: int, weights: str) -> None:
    """Any input size, batch 1 and more (int8 pads its rows for the CPU kernel)."""
    weight, bias = torch.randn(9, in_features), torch.randn(9)  # (N, K), (N,)
    for batch in (1, 4):
        x = torch.randn(batch, in_features)  # (B, K)
        expected = torch.nn.functional.linear(x, weight, bias)  # (B, N)
        got = PackedLinear(weight, bias, weights)(x)  # (B, N)
        tolerance = {"fp32": 1e-5, "bf16": 0.05, "int8": 0.08}[weights] * in_features**0.5
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("weights", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_linear_adds_the_addend(weights: str, with_bias: bool) -> None:
    weight, bias = torch.randn(9, 16), torch.randn(9) * 3 if with_bias else None  # (N, K), (N,)
    x, addend = torch.randn(2, 16), torch.randn(2, 9) * 5  # (B, K), (B, N)
    expected = torch.nn.functional.linear(x, weight, bias) + addend  # (B, N)
    got = PackedLinear(weight, bias, weights)(x, addend)  # (B, N)
    assert got.dtype == torch.float32
    tolerance = {"fp32": 1e-5, "bf16": 0.2, "int8": 0.3}[weights]
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)


def _language_model(cell: str = "lstm") -> LanguageModel:
    config = ModelConfig(cell=cell, num_layers=L, hidden_size=H, embedding_size=D, dropout=0.0)
    model = LanguageModel(config, len(VOCAB)).eval()
    model.attach_vocab(VOCAB, "char")
    return model


def test_lm_generate_fp32_weights_give_the_plain_text() -> None:
    model = _language_model()
    tokens = torch.tensor([1, 2, 3])  # (B,)
    plain = [model.step(tokens, None)[0]]
    with model.rnn.packed_step():
        packed = [model.step(tokens, None)[0]]
    torch.testing.assert_close(packed[0], plain[0], atol=1e-6, rtol=1e-6)
    text = model.generate("abc", 40, temperature=0.0)
    assert model.generate("abc", 40, temperature=0.0, weights="fp32") == text
    assert len(model.generate("abc", 40, weights="int8")) == 43
    assert len(model.generate("abc", 40, weights="bf16")) == 43


def test_lm_rejects_reduced_weights_it_cannot_pack() -> None:
    with pytest.raises(ConfigError, match="weights must be one of"):
        _language_model().generate("a", 5, weights="fp16")
    with pytest.raises(ConfigError, match="mingru"):
        _language_model("mingru").generate("a", 5, weights="int8")
    assert len(_language_model("mingru").generate("a", 5)) == 6


def test_batched_sampling_is_one_batched_step_per_token() -> None:
    """num_samples rows go through one model.step call per token, as one batch."""
    model = _language_model()
    calls = []
    step = model.step

    def counting_step(tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        calls.append(tokens.shape)
        return step(tokens, state)

    model.step = counting_step
    generator = torch.Generator().manual_seed(0)
    list(generate_tokens(model, [1, 2], 6, num_samples=5, generator=generator))
    assert calls == [torch.Size([5])] * 5


def test_cli_sample_bad_weights_is_a_one_line_usage_error(tmp_path, capsys) -> None:
    assert main(["sample", str(tmp_path), "--weights", "int4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit sample: error: argument --weights: invalid choice: 'int4'")
    assert "\n" not in err


def test_minimal_layers_still_step_without_packing() -> None:
    layer = MinGRU(D, H)
    assert not hasattr(layer, "packed_step")
