"""LSTMSamplingStep: the language model's step in few operations gives the model's own logits."""

import math

import pytest
import torch

import rnnkit.tasks.lm_step as lm_step
from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.sampling import generate_tokens
from rnnkit.tasks.lm import LanguageModel, _Unbanned
from rnnkit.tasks.lm_step import LSTMSamplingStep

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = Vocab.build(list("abcdefghij\n"))  # V = 15 with the special tokens
V = len(VOCAB)
BANNED = [0, 2]


def _model(layers: int = 2, hidden: int = 9, embedding: int = 6, cell: str = "lstm"):
    torch.manual_seed(layers * 100 + hidden)
    config = ModelConfig(cell=cell, num_layers=layers, hidden_size=hidden, embedding_size=embedding)
    model = LanguageModel(config, V).eval()
    model.attach_vocab(VOCAB, "char")
    with torch.no_grad():  # biases and gates of every size, so that no term can hide
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    return model


def _expected(model, tokens, state):
    logits, state = model.step(tokens, state)  # (N, V)
    return logits.index_fill(-1, torch.tensor(BANNED), -math.inf), state


@pytest.mark.parametrize("table", [True, False], ids=["token table", "embedding"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("count", [1, 4])
def test_fp32_step_gives_the_models_logits_and_state(table, layers, count, monkeypatch):
    if not table:
        monkeypatch.setattr(lm_step, "MAX_TABLE_NUMBERS", 0)
    model = _model(layers)
    stepper = LSTMSamplingStep(model, "fp32", BANNED)
    tokens = torch.randint(V, (count, 9))  # (N, T)
    logits, state = stepper(tokens[:, :3])  # the prime: the model's forward
    expected_logits, expected = model(tokens[:, :3])
    assert torch.equal(logits[..., BANNED], torch.full_like(logits[..., BANNED], -math.inf))
    torch.testing.assert_close(logits[..., 3:], expected_logits[..., 3:])
    ours = state
    for t in range(3, 9):
        expected_logits, expected = _expected(model, tokens[:, t], expected)
        logits, ours = stepper.step(tokens[:, t], ours)
        torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    h, c = stepper.state_of(ours)
    torch.testing.assert_close(h, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, expected[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_reduced_weights_step_close_to_the_model(weights):
    model = _model(2, hidden=32, embedding=8)
    stepper = LSTMSamplingStep(model, weights, BANNED)
    tokens = torch.randint(V, (3, 8))  # (N, T)
    _, expected = model(tokens[:, :1])
    ours = expected
    for t in range(1, 8):
        expected_logits, expected = _expected(model, tokens[:, t], expected)
        logits, ours = stepper.step(tokens[:, t], ours)
        torch.testing.assert_close(logits, expected_logits, atol=0.05, rtol=0.02)


def test_sampled_tokens_equal_the_plain_steps_tokens():
    """From the same generator state, the fast step draws the tokens the model's step draws."""
    model = _model(2, hidden=16)
    streams = {}
    for name, stepper in {
        "plain": _Unbanned(model, BANNED),
        "fast": LSTMSamplingStep(model, "fp32", BANNED),
    }.items():
        generator = torch.Generator().manual_seed(5)
        steps = generate_tokens(stepper, [3, 4, 5], 120, num_samples=3, generator=generator)
        streams[name] = torch.stack(list(steps))  # (120, 3)
    assert torch.equal(streams["fast"], streams["plain"])
    assert not torch.isin(streams["fast"], torch.tensor(BANNED)).any()


def test_weights_are_a_snapshot():
    model = _model(2)
    stepper = LSTMSamplingStep(model, "fp32", BANNED)
    tokens = torch.tensor([3, 4])  # (N,)
    _, state = model(tokens[:, None])
    before, _ = stepper.step(tokens, stepper.state_of(stepper.step(tokens, state)[1]))
    with torch.no_grad():
        model.rnn.weight_hh_l1.add_(1.0)
    after, _ = stepper.step(tokens, stepper.state_of(stepper.step(tokens, state)[1]))
    torch.testing.assert_close(after, before)


def test_generate_samples_through_the_fast_step_and_other_cells_through_step():
    lstm = _model(2)
    stepper, _ = lstm.sampling_step("int8")
    assert isinstance(stepper, LSTMSamplingStep)
    for cell in ("gru", "rnn", "mingru"):
        stepper, _ = _model(2, cell=cell).sampling_step()
        assert isinstance(stepper, _Unbanned)
    with pytest.raises(ConfigError, match="weights must be one of"):
        lstm.sampling_step("fp16")
    with pytest.raises(ConfigError, match="mingru"):
        _model(2, cell="mingru").sampling_step("int8")
    text = lstm.generate("abc", 30, seed=3)
    assert len(text) == 33 and set(text) <= set("abcdefghij\n")
