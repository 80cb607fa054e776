"""The native sampler (rnnkit/csrc/lstm_sample.c): the model's numbers and tokens, and a build
that never breaks sampling."""

import math
import os
import subprocess

import pytest
import torch

from rnnkit import native
from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.layers.packed import quantize_int8
from rnnkit.sampling import generate_tokens
from rnnkit.tasks import lm_native
from rnnkit.tasks.lm import LanguageModel
from rnnkit.tasks.lm_step import LSTMSamplingStep

VOCAB = Vocab.build(list("abcdefghijklmnopqrstuvwxyz\n"))
V = len(VOCAB)
BANNED = [0, 2]

needs_native = pytest.mark.skipif(
    lm_native.load() is None,
    reason=f"no native sampler: {native.unavailable_reason('lstm_sample')}",
)


def _model(layers: int, hidden: int, scale: float = 0.5) -> LanguageModel:
    torch.manual_seed(layers * 1000 + hidden)
    config = ModelConfig(cell="lstm", num_layers=layers, hidden_size=hidden, embedding_size=7)
    model = LanguageModel(config, V).eval()
    model.attach_vocab(VOCAB, "char")
    with torch.no_grad():  # gates of every size and sign, so that no term can hide
        for parameter in model.parameters():
            parameter.normal_(0, scale)
    return model


class _TorchOnly:
    """The same step without ``draw``: generate_tokens steps it through torch."""

    def __init__(self, stepper: LSTMSamplingStep) -> None:
        self.stepper = stepper

    def __call__(self, tokens, state=None):
        return self.stepper(tokens, state)

    def step(self, tokens, state):
        return self.stepper.step(tokens, state)


def _tokens(stepper, temperature: float, length: int = 200, seed: int = 3) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    steps = generate_tokens(
        stepper, [4, 5, 6], length, temperature=temperature, generator=generator
    )
    return torch.cat(list(steps)).tolist()


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("layers", "hidden"), [(1, 16), (2, 37), (3, 64), (2, 5)])
def test_native_step_gives_the_models_logits_and_state(layers, hidden, threads):
    model = _model(layers, hidden)
    stepper = LSTMSamplingStep(model, "fp32", BANNED)
    assert stepper._native is not None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the units split between threads, a ragged tail at 37 and 5
    try:
        _, state = model(torch.tensor([[4, 5, 6]]))
        ours = state
        for token in [7, 8, 3, 9, 1, 12]:
            logits, expected = model.step(torch.tensor([token]), state)  # (1, V)
            logits = logits.index_fill(-1, torch.tensor(BANNED), -math.inf)
            native_logits, ours = stepper._native.step(token, ours)
            torch.testing.assert_close(native_logits, logits, atol=2e-5, rtol=2e-5)
            torch.testing.assert_close(ours[0], expected[0], atol=2e-5, rtol=2e-5)
            torch.testing.assert_close(ours[1], expected[1], atol=2e-5, rtol=2e-5)
            state = expected
    finally:
        torch.set_num_threads(before)


@needs_native
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_native_draws_the_tokens_of_the_torch_step(temperature):
    """Same generator, same tokens (the exponential race of torch.multinomial, or argmax), and
    the generator ends where the torch loop leaves it."""
    model = _model(2, 24, scale=0.3)
    stepper = LSTMSamplingStep(model, "fp32", BANNED)
    native_tokens = _tokens(stepper, temperature)
    assert native_tokens == _tokens(_TorchOnly(stepper), temperature)
    assert len(set(native_tokens)) > (1 if temperature == 0 else 10)
    assert not set(native_tokens) & set(BANNED)
    ends = []
    for candidate in (stepper, _TorchOnly(stepper)):
        generator = torch.Generator().manual_seed(1)
        list(generate_tokens(candidate, [4], 150, temperature=temperature, generator=generator))
        ends.append(generator.get_state())
    assert torch.equal(ends[0], ends[1])


def _rounded(model: LanguageModel, weights: str) -> LanguageModel:
    """A copy of ``model`` whose gate weights the native sampler multiplies are what it
    stores: bf16-rounded, or int8 times a scale per row of layer 0's ``W_hh`` and of the
    layers above's ``[W_ih | W_hh]``. Layer 0's ``W_ih`` (the token table) stays."""
    copy = LanguageModel(model.config, V).eval()
    copy.load_state_dict(model.state_dict())
    rnn = copy.rnn
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            names = ["weight_hh"] if layer == 0 else ["weight_ih", "weight_hh"]
            parts = [getattr(rnn, f"{name}_l{layer}") for name in names]
            both = torch.cat(parts, 1)  # (4H, K)
            if weights == "bf16":
                stored = both.bfloat16().float()
            else:
                quantized, scales = quantize_int8(both)  # (4H, K), (4H,)
                stored = quantized.float() * scales.float()[:, None]
            for part, value in zip(
                parts, stored.split([p.shape[1] for p in parts], 1), strict=True
            ):
                part.copy_(value)
    return copy


@needs_native
@pytest.mark.parametrize("weights", ["bf16", "int8"])
@pytest.mark.parametrize(("layers", "hidden"), [(1, 16), (2, 37)])
def test_reduced_native_weights_give_the_rounded_models_logits(weights, layers, hidden):
    model = _model(layers, hidden)
    stepper = LSTMSamplingStep(model, weights, BANNED)
    rounded = _rounded(model, weights)
    _, state = model(torch.tensor([[4, 5, 6]]))
    ours = state
    for token in [7, 8, 3, 9]:
        exact, _ = model.step(torch.tensor([token]), state)  # (1, V), unrounded weights
        logits, state = rounded.step(torch.tensor([token]), state)  # (1, V)
        logits = logits.index_fill(-1, torch.tensor(BANNED), -math.inf)
        native_logits, ours = stepper._native.step(token, ours)
        torch.testing.assert_close(native_logits, logits, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(ours[1], state[1], atol=2e-5, rtol=2e-5)
        assert not torch.allclose(native_logits[:, 3:], exact[:, 3:], atol=1e-4)  # rounded


@needs_native
def test_native_sampler_is_used_only_where_it_fits():
    model = _model(2, 16)
    for weights in ("fp32", "bf16", "int8"):
        assert LSTMSamplingStep(model, weights, BANNED)._native.weights == weights
    stepper = LSTMSamplingStep(model, "fp32", BANNED)
    _, state = stepper(torch.tensor([[4], [5]]))
    assert stepper.draw(torch.tensor([1, 2]), state, 5, 1.0, None) is None  # two samples
    generator = torch.Generator().manual_seed(0)
    three = generate_tokens(stepper, [4], 50, num_samples=3, generator=generator)
    assert torch.stack(list(three)).shape == (50, 3)


@needs_native
def test_generate_text_is_the_same_with_and_without_the_native_sampler(monkeypatch):
    model = _model(2, 32, scale=0.3)
    native_text = model.generate("abc", 300, temperature=0.9, seed=11)
    monkeypatch.setattr(LSTMSamplingStep, "_native_fits", lambda *args: False)
    assert model.generate("abc", 300, temperature=0.9, seed=11) == native_text


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty cache folder and a fresh ``native.library``; the process's cache is restored."""
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


def _sampled(model: LanguageModel) -> str:
    return model.generate("abc", 80, temperature=0.8, seed=2)


@pytest.mark.parametrize(
    ("environment", "reason"),
    [
        ({"RNNKIT_NATIVE": "0"}, "RNNKIT_NATIVE=0"),
        ({"CC": "no-such-compiler"}, "no C compiler (no-such-compiler)"),
        ({"CC": "false"}, "compiling lstm_sample.c failed"),
    ],
)
def test_without_a_library_sampling_steps_through_torch(
    fresh_build, monkeypatch, environment, reason
):
    model = _model(2, 16)
    expected = _sampled(model) if lm_native.load() is not None else None
    built = set(fresh_build.iterdir())
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    native.library.cache_clear()
    assert native.library("lstm_sample") is None
    assert native.unavailable_reason("lstm_sample").startswith(reason)
    assert LSTMSamplingStep(model, "fp32", BANNED)._native is None
    text = _sampled(model)
    assert expected is None or text == expected
    assert set(fresh_build.iterdir()) == built  # nothing written


@needs_native
def test_a_failed_rename_leaves_no_library_and_no_temporary_file(fresh_build, monkeypatch):
    """Fault injection: the compiled file is never renamed into place."""

    def refuse(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(native.os, "replace", refuse)
    assert native.library("lstm_sample") is None
    assert "disk full" in native.unavailable_reason("lstm_sample")
    assert list(fresh_build.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("RNNKIT_CACHE", str(fresh_build))
    native.library.cache_clear()
    assert native.library("lstm_sample") is not None
    assert [path.suffix for path in fresh_build.iterdir()] == [".so"]


@needs_native
def test_the_library_is_compiled_once_per_machine(fresh_build, monkeypatch):
    assert native.library("lstm_sample") is not None
    (built,) = fresh_build.glob("lstm_sample-*.so")
    native.library.cache_clear()

    def no_compiler(*args, **kwargs):
        raise subprocess.SubprocessError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert native.library("lstm_sample") is not None  # loaded from the cache folder
    monkeypatch.setattr(native, "_cpu_signature", lambda: "another processor")
    native.library.cache_clear()
    assert native.library("lstm_sample") is None  # another CPU: another file, compiled anew
    assert os.path.exists(built)
