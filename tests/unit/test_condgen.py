"""condgen: where the condition enters (every step's input, the initial state, both), label
embeddings and standardised vectors, decoding and sampling that stop at <eos>, data."""

import numpy as np
import pytest
import torch

from rnnkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.sampling import beam_search_batch
from rnnkit.tasks import get_task
from rnnkit.tasks.condgen import ConditionalGenerator
from rnnkit.tasks.decoder import DecoderState, token_loss

pytestmark = pytest.mark.usefixtures("single_thread")

V, E, H, C, D = 9, 4, 6, 3, 5  # tokens, embedding, hidden, labels, vector size: all distinct
LABELS = ["ga", "ja", "ru"]


def _model(mode: str, cell: str = "rnn", num_layers: int = 1, **kind) -> ConditionalGenerator:
    config = ModelConfig(
        cell=cell,
        num_layers=num_layers,
        hidden_size=H,
        embedding_size=E,
        dropout=0.0,
        condition_mode=mode,
    )
    model = ConditionalGenerator(config, V, **(kind or {"num_labels": C}))
    vocab = Vocab(list("abcde"))
    if model.kind == "label":
        model.attach(vocab, "char", 4, labels=LABELS)
    else:
        model.attach(vocab, "char", 4, standardise=([1.0] * D, [2.0] * D))
    return model.eval()


# --- where the condition enters --------------------------------------------------------------


def test_input_mode_is_the_captioning_equation() -> None:
    # h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v): the layer's weight_ih is [W_xh | W_ih].
    model = _model("input")
    rnn = model.rnn
    assert rnn.input_size == E + E and model.init is None
    labels = torch.tensor([2, 0])
    v = model.condition_embedding(labels)  # (2, E)
    state = model.start(labels)
    assert state.rnn is None  # h_0 = 0
    tokens = torch.tensor([4, 7])
    h = torch.zeros(2, H)
    for _ in range(3):  # a few steps: v enters every one
        x = model.embedding(tokens)
        w_x, w_v = rnn.weight_ih_l0[:, :E], rnn.weight_ih_l0[:, E:]
        expected = torch.tanh(
            x @ w_x.T + v @ w_v.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        )
        logits, state = model.step(tokens, state)
        torch.testing.assert_close(state.rnn[0], expected)
        torch.testing.assert_close(logits, model.head(expected))
        h, tokens = expected, logits.argmax(-1)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_init_mode_sets_the_initial_state_of_every_layer_only(cell: str) -> None:
    model = _model("init", cell, num_layers=2)
    assert model.rnn.input_size == E
    labels = torch.tensor([1, 2, 0])
    v = model.condition_embedding(labels)  # (3, E)
    state = model.start(labels)
    h0 = torch.tanh(model.init(v)).view(3, 2, H).transpose(0, 1)  # (L, B, H)
    if cell == "lstm":
        torch.testing.assert_close(state.rnn[0], h0)
        assert torch.equal(state.rnn[1], torch.zeros(2, 3, H))  # c_0 = 0
    else:
        torch.testing.assert_close(state.rnn, h0)
    # From the same state, the condition changes nothing: it entered only at the start.
    other = DecoderState(state.rnn, model.condition_embedding(torch.tensor([0, 0, 0])))
    tokens = torch.tensor([5, 6, 7])
    torch.testing.assert_close(model.step(tokens, state)[0], model.step(tokens, other)[0])


@pytest.mark.parametrize("mode", ["input", "both"])
def test_the_condition_enters_every_step_in_input_and_both_modes(mode: str) -> None:
    model = _model(mode, "gru", num_layers=2)
    state = model.start(torch.tensor([1, 2]))
    if mode == "both":
        assert state.rnn is not None and state.rnn.shape == (2, 2, H)
        assert model.rnn.input_size == 2 * E
    other = DecoderState(state.rnn, model.condition_embedding(torch.tensor([0, 0])))
    tokens = torch.tensor([5, 6])
    a, b = model.step(tokens, state)[0], model.step(tokens, other)[0]
    assert not torch.allclose(a, b)  # same h_{t-1}, another v: another step


def test_forward_equals_step_by_step_in_every_mode() -> None:
    for mode in ("input", "init", "both"):
        model = _model(mode, "lstm", num_layers=2)
        labels = torch.tensor([2, 1])
        tokens = torch.tensor([[Vocab.bos_id, 4, 5, 6], [Vocab.bos_id, 7, 7, 8]])
        with torch.no_grad():
            whole = model(labels, tokens)  # (B, T, V)
        state, steps = model.start(labels), []
        for t in range(4):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, dim=1), whole)


def test_the_loss_at_real_steps_equals_the_loss_of_every_steps_logits() -> None:
    torch.manual_seed(0)
    model = _model("both", "gru").train()
    labels = torch.tensor([2, 0, 1])
    tokens = torch.randint(4, V, (3, 5))
    targets = torch.randint(4, V, (3, 5))
    targets[0, 2:] = -100  # real steps at uneven places
    targets[1, 4:] = -100
    losses, grads = [], []
    for full in (True, False):
        model.zero_grad()
        loss = (
            token_loss(model(labels, tokens), targets) if full else model(labels, tokens, targets)
        )
        loss.backward()
        losses.append(loss)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_vectors_are_standardised_with_the_training_statistics() -> None:
    model = _model("both", vector_size=D)
    assert model.condition_embedding is None and model.kind == "vector"
    x = torch.randn(2, D)
    torch.testing.assert_close(model.condition(x), (x - 1.0) / 2.0)
    assert "feature_mean" not in model.state_dict()  # vocab.json keeps them, not the weights


# --- decoding and sampling -------------------------------------------------------------------


def test_beam_of_one_is_greedy_and_items_stop_at_eos() -> None:
    torch.manual_seed(4)
    model = _model("both", "gru")
    with torch.no_grad():
        model.head.bias[Vocab.eos_id] += 1.0
    labels = torch.tensor([0, 1, 2])
    greedy = model.decode(labels, max_length=6)
    bos = torch.full((3,), Vocab.bos_id)
    logits, state = model.step(bos, model.start(labels))
    beam = beam_search_batch(model, logits, state, 6, 1, eos_id=Vocab.eos_id)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert all(Vocab.eos_id not in h.tokens for h in greedy)
    assert any(h.finished for h in greedy)
    wide = model.decode(labels, beam_size=4, max_length=6)
    assert all(w.score >= g.score - 1e-6 for w, g in zip(wide, greedy, strict=True))


def test_sample_draws_items_of_a_label_reproducibly_and_lists_the_known_ones() -> None:
    torch.manual_seed(2)
    model = _model("both", "gru")
    with torch.no_grad():
        model.head.bias[Vocab.eos_id] += 1.5  # items end soon
    items = model.sample("ja", num_samples=6, length=12, temperature=1.0, seed=3)
    assert len(items) == 6 and all(len(item) <= 12 for item in items)
    assert all(set(item) <= set("abcde") for item in items)  # no <pad>, <bos>, <unk>, <eos>
    assert any(len(item) < 12 for item in items)
    assert model.sample("ja", num_samples=6, length=12, temperature=1.0, seed=3) == items
    primed = model.sample("ja", num_samples=2, length=5, prime="ab", seed=1)
    assert all(item.startswith("ab") and len(item) <= 7 for item in primed)
    with pytest.raises(ConfigError, match=r"unknown --condition 'xx'.* 3 labels: ga, ja, ru"):
        model.sample("xx")
    with pytest.raises(ConfigError, match=r"needs --condition LABEL"):
        model.sample(None)
    with pytest.raises(ConfigError, match=r"never saw.*'z'"):
        model.sample("ga", prime="az")
    with pytest.raises(ConfigError, match=r"predict MODEL vectors.npz"):
        _model("init", vector_size=D).sample("ga")


# --- data ------------------------------------------------------------------------------------


def _run(path, **data) -> RunConfig:
    return RunConfig(
        task="condgen",
        model=ModelConfig(cell="gru", num_layers=1, hidden_size=H, embedding_size=E),
        data=DataConfig(path=str(path), **data),
        train=TrainConfig(batch_size=4),
    )


def test_vector_data_keep_their_standardisation_and_check_sizes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(20, D)).astype(np.float32)
    x[:, 1] = 7.0  # a constant feature: its std becomes 1
    path = tmp_path / "captions.npz"
    np.savez(path, x=x, text=np.array(["one two"[: 3 + i % 4] for i in range(20)]))
    task = get_task("condgen")
    run = _run(path, val_frac=0.2)
    assert task.selection(run) == ("exact_match", True)
    data = task.load_data(run, None)
    conditions = data.meta["conditions"]
    assert conditions["kind"] == "vector" and conditions["size"] == D
    train_x = data.train.conditions.numpy()  # (16, D)
    np.testing.assert_allclose(conditions["mean"], train_x.mean(axis=0), rtol=1e-5)
    std = train_x.std(axis=0)
    np.testing.assert_allclose(conditions["std"], np.where(std > 0, std, 1.0), rtol=1e-5)
    assert conditions["std"][1] == 1.0
    assert len(data.train.items) == 16 and len(data.val.items) == 4
    model = task.build_model(run, data.meta)
    torch.testing.assert_close(model.feature_mean, torch.tensor(conditions["mean"]).float())
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=x[:, :3], text=np.array(["one"] * 20))
    with pytest.raises(DataError, match=r"wrong.npz: x has 3 features per row; .* trained on 5"):
        task.load_data(_run(path, val=str(wrong)), None)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, text=np.array(["one"] * 19))
    with pytest.raises(DataError, match=r"bad.npz: text has shape \(19,\)"):
        task.load_data(_run(bad), None)
    no_text = tmp_path / "no_text.npz"
    np.savez(no_text, x=x, y=np.arange(20))
    with pytest.raises(DataError, match=r"no array 'text'"):
        task.load_data(_run(no_text), None)


def test_label_data_split_by_label_and_unknown_labels(tmp_path) -> None:
    path = tmp_path / "names.tsv"
    lines = [f"{LABELS[i % 3]}\t{'abcde'[i % 5] * (1 + i % 4)}" for i in range(30)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = get_task("condgen")
    run = _run(path, val_frac=0.2)
    assert task.selection(run) == ("loss", False)
    data = task.load_data(run, None)
    assert data.meta["conditions"] == {"kind": "label", "labels": LABELS}
    assert sorted(data.val.conditions.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified
    val = tmp_path / "val.tsv"
    val.write_text("ga\tab\nxx\tcd\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val.tsv: unknown label 'xx'; the model knows 3: ga"):
        task.load_data(_run(path, val=str(val)), None)
    batch = task.batches(run, data).get(0, 0)
    conditions, inputs, targets = batch
    assert conditions.dtype == torch.long and inputs.shape == targets.shape
    assert (inputs[:, 0] == Vocab.bos_id).all()


def test_decoding_under_a_bf16_autocast_runs_in_fp32() -> None:
    model = _model("init", "lstm", num_layers=2)
    labels = torch.tensor([0, 1, 2])
    plain = model.decode(labels, beam_size=2, max_length=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model.decode(labels, beam_size=2, max_length=5)
    assert [h.tokens for h in autocast] == [h.tokens for h in plain]
    assert [h.score for h in autocast] == [h.score for h in plain]


def test_feature_noise_perturbs_the_condition_vector_in_training_only() -> None:
    """Vector conditions: v = (x - mean) / std + sigma * N(0, 1) in training, plain in eval
    (decoding, evaluation); the same v enters the initial state and every step."""
    config = ModelConfig(
        cell="gru", num_layers=1, hidden_size=H, embedding_size=E, dropout=0.0, feature_noise=0.3
    )
    model = ConditionalGenerator(config, V, vector_size=D)
    model.attach(Vocab(list("abcde")), "char", 4, standardise=([1.0] * D, [2.0] * D))
    x = torch.randn(4000, D) * 2 + 1  # (N, D)
    model.train()
    torch.manual_seed(1)
    state = model.start(x)
    noise = state.context - (x - 1) / 2  # (N, D)
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.3) < 0.01
    torch.manual_seed(1)
    expected_h0 = torch.tanh(model.init((x - 1) / 2 + 0.3 * torch.randn(4000, D)))  # (N, H)
    torch.testing.assert_close(state.rnn, expected_h0[None])  # (1, N, H)
    model.eval()
    torch.testing.assert_close(model.start(x).context, (x - 1) / 2)


def test_feature_noise_with_label_conditions_is_refused() -> None:
    config = ModelConfig(hidden_size=H, embedding_size=E, feature_noise=0.3)
    with pytest.raises(ConfigError, match="label conditions have none"):
        ConditionalGenerator(config, V, num_labels=C)
