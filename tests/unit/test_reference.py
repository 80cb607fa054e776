"""The NumPy reference engine: gradients, the classic small examples, training, no torch inside."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.errors import ConfigError
from rnnkit.reference import (
    SGD,
    Adagrad,
    CharRNN,
    Trainer,
    clip_gradients,
    gradient_check,
    relative_error,
    sample,
)
from rnnkit.reference.model import backward_sequence, forward_sequence

CELLS = ["rnn", "gru", "lstm"]
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Distinct small sizes (STYLE.md §9): batch, steps, vocabulary, hidden.
B, T, V, H = 3, 5, 4, 6


def random_state(model: CharRNN, rng: np.random.Generator, batch_size: int | None):
    """A non-zero initial state of the model's type, so that d h0 is exercised fully."""
    zeros = model.init_state(batch_size)
    if isinstance(zeros, tuple):
        return tuple(0.5 * rng.standard_normal(z.shape) for z in zeros)
    return 0.5 * rng.standard_normal(zeros.shape)


# --- shapes and conventions ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_params_have_torch_shapes_and_init_bound(cell: str) -> None:
    m = CharRNN(cell, vocab_size=V, hidden_size=H, seed=0)
    G = GATES[cell]
    shapes = {name: p.shape for name, p in m.params.items()}
    assert shapes == {
        "weight_ih": (G * H, V),
        "weight_hh": (G * H, H),
        "bias_ih": (G * H,),
        "bias_hh": (G * H,),
        "weight_out": (V, H),
        "bias_out": (V,),
    }
    for p in m.params.values():
        assert p.dtype == np.float64
        assert np.abs(p).max() <= 1 / np.sqrt(H)
    again = CharRNN(cell, vocab_size=V, hidden_size=H, seed=0)
    other = CharRNN(cell, vocab_size=V, hidden_size=H, seed=1)
    assert all(np.array_equal(m.params[k], again.params[k]) for k in m.params)
    assert not np.array_equal(m.params["weight_hh"], other.params["weight_hh"])


@pytest.mark.parametrize("cell", CELLS)
def test_batch_equals_sum_of_single_sequences(cell: str) -> None:
    rng = np.random.default_rng(0)
    m = CharRNN(cell, vocab_size=V, hidden_size=H, seed=0)
    inputs, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = random_state(m, rng, B)
    loss, grads, h = m.loss_and_grads(inputs, targets, h0)
    assert set(grads) == set(m.params)
    if cell == "lstm":
        assert isinstance(h, tuple) and [a.shape for a in h] == [(B, H), (B, H)]
    else:
        assert isinstance(h, np.ndarray) and h.shape == (B, H)
    total_loss, total_grads = 0.0, {k: np.zeros_like(v) for k, v in m.params.items()}
    for b in range(B):
        h0_b = tuple(a[b] for a in h0) if cell == "lstm" else h0[b]
        loss_b, grads_b, h_b = m.loss_and_grads(inputs[b], targets[b], h0_b)
        total_loss += loss_b
        for k in grads_b:
            total_grads[k] += grads_b[k]
        h_b_arrays = h_b if cell == "lstm" else (h_b,)
        h_arrays = h if cell == "lstm" else (h,)
        for single, batched in zip(h_b_arrays, h_arrays, strict=True):
            assert single.shape == (H,)
            np.testing.assert_allclose(single, batched[b], rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(total_loss, rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], total_grads[k], rtol=1e-10, atol=1e-13)
    assert m.loss(inputs, targets, h0) == pytest.approx(loss, rel=1e-12)


def test_zero_state_is_the_default_and_loss_is_summed_over_steps() -> None:
    m = CharRNN("gru", vocab_size=V, hidden_size=H, seed=3)
    inputs, targets = np.array([0, 1, 2, 3, 0]), np.array([1, 2, 3, 0, 1])
    loss, _, _ = m.loss_and_grads(inputs, targets)
    assert loss == m.loss_and_grads(inputs, targets, np.zeros(H))[0]
    logits, _ = m.forward(inputs)  # (T, V)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(T), targets].sum(), rel=1e-12)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="cell must be one of 'rnn', 'gru', 'lstm'; got 'gru2'"):
        CharRNN("gru2", vocab_size=V, hidden_size=H)
    m = CharRNN("lstm", vocab_size=V, hidden_size=H)
    with pytest.raises(ValueError, match=r"inputs must be token ids in \[0, 4\)"):
        m.loss_and_grads(np.array([0, 4]), np.array([0, 1]))
    with pytest.raises(ValueError, match="targets must have the shape of inputs"):
        m.loss_and_grads(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"lstm state must be a tuple \(h, c\)"):
        m.loss_and_grads(np.array([0, 1]), np.array([1, 2]), (np.zeros(H),))
    with pytest.raises(ValueError, match=r"must have shape \(6,\)"):
        m.loss_and_grads(np.array([0, 1]), np.array([1, 2]), (np.zeros(5), np.zeros(5)))


# --- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
def test_gradients_match_centered_finite_differences(cell: str, batched: bool) -> None:
    rng = np.random.default_rng(1)
    m = CharRNN(cell, vocab_size=V, hidden_size=H, seed=0)
    shape = (B, T) if batched else (T,)
    inputs, targets = rng.integers(0, V, shape), rng.integers(0, V, shape)
    h0 = random_state(m, rng, B if batched else None)
    errors = gradient_check(m, inputs, targets, h0, eps=1e-5)
    expected_keys = {*m.params, "h0"} | ({"c0"} if cell == "lstm" else set())
    assert set(errors) == expected_keys
    assert max(errors.values()) < 1e-6, errors


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    cell=st.sampled_from(CELLS),
    batch_size=st.sampled_from([None, 1, 2]),
    steps=st.integers(1, 4),
    vocab_size=st.integers(2, 5),
    hidden_size=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_gradients_match_finite_differences_for_any_small_shape(
    cell: str, batch_size: int | None, steps: int, vocab_size: int, hidden_size: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    m = CharRNN(cell, vocab_size=vocab_size, hidden_size=hidden_size, seed=seed)
    shape = (steps,) if batch_size is None else (batch_size, steps)
    inputs, targets = rng.integers(0, vocab_size, shape), rng.integers(0, vocab_size, shape)
    # eps 1e-4, not 1e-5: some random cases have gradients near 1e-6 in size, where the
    # round-off of a 1e-5 step (about 1e-11 absolute) alone is a 1e-6 relative error.
    errors = gradient_check(m, inputs, targets, random_state(m, rng, batch_size), eps=1e-4)
    assert max(errors.values()) < 1e-6, errors


def test_relative_error_is_zero_for_equal_arrays_and_symmetric() -> None:
    a, b = np.array([1.0, 2.0]), np.array([1.0, 2.5])
    assert relative_error(a, a) == 0.0
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0
    assert relative_error(a, b) == relative_error(b, a) == pytest.approx(0.5 / (5**0.5 + 7.25**0.5))


def test_vanilla_rnn_gradient_vanishes_over_100_steps_but_lstm_gradient_does_not() -> None:
    """‖∂(v·h_T)/∂state_0‖ / ‖v‖ after T = 100 steps, for a random direction v.

    Both models keep torch's default init, except that the LSTM's forget-gate bias (b_hf) is
    set to 5 (σ(5) ≈ 0.993), the usual remedy that keeps the cell state's path open.
    """
    T_long, V_long, H_long = 100, 10, 32
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, V_long, (1, T_long))
    direction = rng.standard_normal(H_long)
    ratios = {}
    for cell in ["rnn", "lstm"]:
        m = CharRNN(cell, vocab_size=V_long, hidden_size=H_long, seed=0)
        if cell == "lstm":
            m.params["bias_hh"][H_long : 2 * H_long] = 5.0  # forget gate: rows H..2H of (i,f,g,o)
        state0 = tuple(np.zeros((1, H_long)) for _ in range(m.cell.state_len))
        hs, _, caches = forward_sequence(m.cell, m.params, inputs, state0)  # (1, T, H)
        dhs = np.zeros_like(hs)
        dhs[0, -1] = direction  # gradient only at the last step
        _, _, d_state0 = backward_sequence(m.cell, m.params, caches, dhs)
        ratios[cell] = np.linalg.norm(np.concatenate(d_state0, axis=1)) / np.linalg.norm(direction)
    assert ratios["rnn"] < 1e-12, ratios
    assert ratios["lstm"] > 1e-2, ratios


# --- the classic small examples -----------------------------------------------------------------

HELO = {"h": 0, "e": 1, "l": 2, "o": 3}


def encode(text: str) -> np.ndarray:
    return np.array([HELO[ch] for ch in text])


def fit(m: CharRNN, inputs: np.ndarray, targets: np.ndarray, steps: int) -> None:
    """Adagrad (lr 0.1) with clipping at 5 on one sequence, from a zero state every time."""
    optimizer = Adagrad(m.params, lr=0.1)
    for _ in range(steps):
        _, grads, _ = m.loss_and_grads(inputs, targets)
        clip_gradients(grads, 5.0)
        optimizer.step(m.params, grads)


@pytest.mark.parametrize("cell", CELLS)
def test_hello_model_predicts_ello_from_hell(cell: str) -> None:
    m = CharRNN(cell, vocab_size=4, hidden_size=8, seed=0)
    inputs, targets = encode("hell"), encode("ello")
    fit(m, inputs, targets, steps=200)
    logits, _ = m.forward(inputs)  # (4, V)
    assert np.array_equal(logits.argmax(axis=1), targets)
    assert m.loss(inputs, targets) < 0.5


def test_rnn_learns_hello_to_ohlol() -> None:
    # Both "l"s come in as the same one-hot vector but must map to "l" then "o": needs state.
    m = CharRNN("rnn", vocab_size=4, hidden_size=8, seed=0)
    inputs, targets = encode("hello"), encode("ohlol")
    fit(m, inputs, targets, steps=300)
    logits, _ = m.forward(inputs)  # (5, V)
    assert np.array_equal(logits.argmax(axis=1), targets)


# --- optimisers, sampling, training -------------------------------------------------------------


def test_adagrad_sgd_and_clipping_follow_their_formulas() -> None:
    params = {"w": np.array([1.0, -2.0, 3.0])}
    grads = {"w": np.array([10.0, -0.5, 0.0])}
    clip_gradients(grads, 5.0)
    np.testing.assert_array_equal(grads["w"], [5.0, -0.5, 0.0])
    optimizer = Adagrad(params, lr=0.1)
    optimizer.step(params, grads)
    optimizer.step(params, grads)
    mem = 2 * grads["w"] ** 2
    np.testing.assert_array_equal(optimizer.memory["w"], mem)
    first = 0.1 * grads["w"] / np.sqrt(grads["w"] ** 2 + 1e-8)
    second = 0.1 * grads["w"] / np.sqrt(mem + 1e-8)
    np.testing.assert_allclose(params["w"], np.array([1.0, -2.0, 3.0]) - first - second)
    sgd_params = {"w": np.array([1.0, 1.0, 1.0])}
    SGD(lr=0.5).step(sgd_params, grads)
    np.testing.assert_allclose(sgd_params["w"], [-1.5, 1.25, 1.0])


@pytest.mark.parametrize("cell", CELLS)
def test_sampling_is_reproducible_with_a_seeded_generator(cell: str) -> None:
    m = CharRNN(cell, vocab_size=V, hidden_size=H, seed=0)
    first = sample(m, None, seed_id=1, length=50, rng=np.random.default_rng(7), temperature=1.0)
    again = sample(m, None, seed_id=1, length=50, rng=np.random.default_rng(7), temperature=1.0)
    other = sample(m, None, seed_id=1, length=50, rng=np.random.default_rng(8), temperature=1.0)
    assert first.shape == (50,) and first.dtype == np.int64
    assert first.min() >= 0 and first.max() < V
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    greedy = sample(m, m.init_state(), 1, 10, np.random.default_rng(0), temperature=0)
    token, h, expected = 1, None, []
    for _ in range(10):
        logits, h = m.forward(np.array([token]), h)  # (1, V)
        token = int(logits[0].argmax())
        expected.append(token)
    assert greedy.tolist() == expected


@pytest.mark.parametrize("batch_size", [1, 4])
def test_adagrad_training_lowers_the_loss_on_a_repeated_text(batch_size: int) -> None:
    text = np.tile(np.array([0, 1, 2, 3, 2, 1, 3, 0, 2]), 40)  # (360,) a period-9 pattern
    trainer = Trainer(text, vocab_size=4, cell="lstm", hidden_size=16, seq_len=9,
                      batch_size=batch_size, seed=0)  # fmt: skip
    losses = trainer.train(150)
    assert np.mean(losses[:10]) > 1.2  # near log 4 ≈ 1.39 at the start
    assert np.mean(losses[-10:]) < 0.3
    assert trainer.smooth_loss < np.log(4)
    assert trainer.step_count == 150


@pytest.mark.parametrize(("cell", "optimizer"), [("lstm", "adagrad"), ("gru", "sgd")])
def test_trainer_resumes_exactly_from_its_state_dict(cell: str, optimizer: str) -> None:
    rng = np.random.default_rng(0)
    text = rng.integers(0, V, 200)  # (200,)
    kwargs = dict(vocab_size=V, cell=cell, hidden_size=H, seq_len=7, batch_size=2,
                  optimizer=optimizer, seed=3)  # fmt: skip
    straight = Trainer(text, **kwargs)
    straight_losses = straight.train(25)  # crosses the end of the 100-token streams
    straight_sample = straight.sample(20)

    first = Trainer(text, **kwargs)
    first_losses = first.train(10)
    arrays, meta = first.state_dict()
    meta = json.loads(json.dumps(meta))  # what the CLI writes and reads back
    resumed = Trainer.from_state_dict(text, {k: v.copy() for k, v in arrays.items()}, meta)
    resumed_losses = resumed.train(15)

    assert first_losses + resumed_losses == straight_losses
    assert resumed.step_count == 25 and resumed.position == straight.position
    for name in straight.model.params:
        np.testing.assert_array_equal(resumed.model.params[name], straight.model.params[name])
    assert np.array_equal(resumed.sample(20), straight_sample)
    with pytest.raises(ValueError, match="resume with the same text"):
        Trainer.from_state_dict(text[:-1], arrays, meta)


def test_trainer_rejects_a_text_too_short_for_one_window() -> None:
    with pytest.raises(ConfigError, match="too short"):
        Trainer(np.arange(10) % V, vocab_size=V, seq_len=25)


# --- no torch inside ----------------------------------------------------------------------------


def test_reference_engine_never_imports_torch() -> None:
    script = textwrap.dedent(
        """
        import sys
        import numpy as np

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is forbidden in rnnkit.reference")
                return None

        sys.meta_path.insert(0, NoTorch())
        import rnnkit
        import rnnkit.reference as ref

        text = np.arange(60) % 5
        for cell in ("rnn", "gru", "lstm"):
            trainer = ref.Trainer(text, vocab_size=5, cell=cell, hidden_size=8, seq_len=6)
            trainer.train(3)
            trainer.sample(5)
            ref.Trainer.from_state_dict(text, *trainer.state_dict())
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
