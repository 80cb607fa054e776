"""AWD-LSTM's regularisers of the language model: embedding dropout, locked (variational)
dropout, weight drop; each checked against a forward written by hand with torch.nn's layers
and the same random draws, and off by default with today's numbers."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.config import ModelConfig, RunConfig, TrainConfig, run_from_dict, run_to_dict
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.layers.dropout import dropout
from rnnkit.layers.regularisation import embedding_dropout, locked_dropout
from rnnkit.tasks.encoder import SequenceEncoder, unknown_words
from rnnkit.tasks.lm import LanguageModel

pytestmark = pytest.mark.usefixtures("single_thread")

B, T, E, H, V = 3, 5, 4, 6, 7
TORCH_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def _config(cell: str = "lstm", **kw) -> ModelConfig:
    options = {"num_layers": 2, "hidden_size": H, "embedding_size": E, "dropout": 0.0} | kw
    return ModelConfig(cell=cell, **options)


def _tokens() -> torch.Tensor:
    """(B, T) with every token type, most of them more than once, in several rows."""
    return torch.tensor([[0, 1, 2, 3, 4], [5, 6, 0, 1, 2], [3, 0, 5, 1, 6]])


def _ones(*shape: int) -> torch.Tensor:
    """A dropout mask as the regularisers draw it: dropout of ones, 0 or 1/k."""
    return dropout(torch.ones(shape), 0.5)


def _torch_layer(model: LanguageModel, layer: int, weight_hh: torch.Tensor | None = None):
    """Layer ``layer`` of the model as a one-layer torch.nn layer (its W_hh replaced if given)."""
    cls = TORCH_LAYERS[model.config.cell]
    ref = cls(E if layer == 0 else H, H, batch_first=True)
    weights = {
        name: getattr(model.rnn, f"{name[:-3]}_l{layer}") for name, _ in ref.named_parameters()
    }
    if weight_hh is not None:
        weights["weight_hh_l0"] = weight_hh
    ref.load_state_dict({k: v.detach() for k, v in weights.items()})
    return ref


def _state_parts(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


# --- the functions --------------------------------------------------------------------------


def test_embedding_dropout_drops_whole_token_types_and_scales_the_rest() -> None:
    tokens = _tokens()
    x = torch.randn(B, T, E) + 3.0  # (B, T, E), no zeros
    torch.manual_seed(1)
    y = embedding_dropout(x, tokens, V, 0.5)  # (B, T, E)
    dropped = set()
    for v in range(V):
        ratio = y[tokens == v] / x[tokens == v]  # (occurrences, E)
        assert torch.equal(ratio, torch.zeros_like(ratio)) or torch.equal(
            ratio, torch.full_like(ratio, 2.0)
        ), f"token {v}: {ratio}"
        if ratio[0, 0] == 0:
            dropped.add(v)
    assert 0 < len(dropped) < V  # this seed drops some types and keeps others
    assert embedding_dropout(x, tokens, V, 0.0) is x


def test_locked_dropout_shares_each_row_s_mask_across_time() -> None:
    x = torch.ones(B, T, 64)
    y = locked_dropout(x, 0.5)  # (B, T, 64)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    for t in range(T):
        assert torch.equal(y[:, t], y[:, 0])
    assert not torch.equal(y[0], y[1]) and not torch.equal(y[1], y[2])
    assert locked_dropout(x, 0.0) is x


# --- off by default, train only -------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "mingru", "minlstm"])
def test_off_by_default_forward_is_today_s(cell: str) -> None:
    """With the regularisers off, training forward is embedding -> stack -> dropout -> head,
    bit for bit, with the same random draws."""
    assert _config().embedding_dropout == _config().weight_drop == 0.0
    assert not _config().locked_dropout and _config().input_dropout == 0.0
    model = LanguageModel(_config(cell, dropout=0.3), V)
    torch.manual_seed(5)
    logits, state = model(_tokens())
    torch.manual_seed(5)
    x, expected_state = model.rnn(model.embed(_tokens()))
    assert torch.equal(logits, model.head(model.dropout(x)))
    for got, expected in zip(_state_parts(state), _state_parts(expected_state), strict=True):
        assert torch.equal(got, expected)


def test_eval_mode_ignores_every_regulariser() -> None:
    options = {"embedding_dropout": 0.5, "input_dropout": 0.5, "locked_dropout": True}
    model = LanguageModel(_config(dropout=0.5, weight_drop=0.5, **options), V).eval()
    plain = LanguageModel(_config(dropout=0.5), V).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model(_tokens())[0], plain(_tokens())[0])


# --- weight drop ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weight_drop_is_dropconnect_on_each_w_hh(cell: str, impl: str) -> None:
    """Train mode: torch.nn's layers with W_hh ⊙ mask equal the model, one mask per layer per
    call; the gradient reaches W_hh as mask ⊙ the dropped matrix's; eval uses W_hh as is."""
    model = LanguageModel(_config(cell, impl=impl, weight_drop=0.5), V)
    torch.manual_seed(2)
    logits, state = model(_tokens())
    torch.manual_seed(2)
    masks = [_ones(*model.rnn.weight_hh_l0.shape) for _ in range(2)]  # (G·H, H) each
    refs = [
        _torch_layer(model, layer, getattr(model.rnn, f"weight_hh_l{layer}") * masks[layer])
        for layer in range(2)
    ]
    x = model.embed(_tokens())
    finals = []
    for ref in refs:
        x, final = ref(x)  # (B, T, H)
        finals.append(_state_parts(final))
    expected = model.head(x)  # (B, T, V)
    torch.testing.assert_close(logits, expected)
    for got, *parts in zip(_state_parts(state), *finals, strict=True):
        torch.testing.assert_close(got, torch.cat(parts))

    logits.sum().backward()
    expected.sum().backward()
    for layer, ref in enumerate(refs):
        grad = getattr(model.rnn, f"weight_hh_l{layer}").grad
        torch.testing.assert_close(grad, masks[layer] * ref.weight_hh_l0.grad)

    model.eval()
    plain = LanguageModel(_config(cell, impl=impl), V).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model(_tokens())[0], plain(_tokens())[0])


def test_weight_drop_keeps_the_parameters_and_state_dict_keys() -> None:
    model = LanguageModel(_config(weight_drop=0.5, locked_dropout=True), V)
    before = {name: p for name, p in model.named_parameters()}
    model(_tokens())[0].sum().backward()
    plain = LanguageModel(_config(), V)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert {name: p for name, p in model.named_parameters()} == before
    assert all(type(p) is nn.Parameter for p in model.rnn._parameters.values())
    plain.load_state_dict(model.state_dict())  # strict: the folder loads either way
    model.load_state_dict(plain.state_dict())


def test_weight_drop_needs_a_hidden_to_hidden_matrix() -> None:
    with pytest.raises(ConfigError, match=r"--weight-drop .* --cell mingru does not have"):
        _config("mingru", weight_drop=0.2)


# --- locked dropout, and everything at once -------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "mingru", "minlstm"])
def test_layer_by_layer_equals_the_stack(cell: str) -> None:
    """--locked-dropout runs the layers one at a time: without any dropout, the same logits
    and final state (L, B, H) as the stack in one call."""
    model = LanguageModel(_config(cell, num_layers=3, locked_dropout=True), V)
    plain = LanguageModel(_config(cell, num_layers=3), V)
    plain.load_state_dict(model.state_dict())
    state = plain(_tokens()[:, :2])[1]
    logits, final = model(_tokens(), state)
    expected_logits, expected_final = plain(_tokens(), state)
    torch.testing.assert_close(logits, expected_logits)
    for got, expected in zip(_state_parts(final), _state_parts(expected_final), strict=True):
        assert got.shape == (3, B, H)
        torch.testing.assert_close(got, expected)


def test_all_regularisers_match_a_hand_written_forward() -> None:
    """Embedding dropout (V,), locked input dropout (B, 1, E), weight drop per layer, locked
    dropout between the layers and before the head (B, 1, H), in that order of draws."""
    options = {"embedding_dropout": 0.5, "input_dropout": 0.5, "locked_dropout": True}
    model = LanguageModel(_config(dropout=0.5, weight_drop=0.5, **options), V)
    torch.manual_seed(7)
    logits, (h, c) = model(_tokens())
    torch.manual_seed(7)
    rows, input_mask = _ones(V), _ones(B, 1, E)
    weight_masks = [_ones(4 * H, H) for _ in range(2)]
    between, before_head = _ones(B, 1, H), _ones(B, 1, H)
    x = model.embedding(_tokens()) * rows[_tokens()].unsqueeze(-1) * input_mask  # (B, T, E)
    first = _torch_layer(model, 0, model.rnn.weight_hh_l0 * weight_masks[0])
    second = _torch_layer(model, 1, model.rnn.weight_hh_l1 * weight_masks[1])
    x, (h0, c0) = first(x)  # (B, T, H)
    x, (h1, c1) = second(x * between)  # (B, T, H)
    torch.testing.assert_close(logits, model.head(x * before_head))
    torch.testing.assert_close(h, torch.cat([h0, h1]))
    torch.testing.assert_close(c, torch.cat([c0, c1]))


def test_the_task_encoder_drops_word_types_in_training_only() -> None:
    """classify and tag: --embedding-dropout zeroes every occurrence of a dropped word type
    (the same draw as embedding_dropout's) before the recurrent layers; eval keeps them all."""
    config = _config(num_layers=1, embedding_dropout=0.5)
    encoder = SequenceEncoder(config, vocab_size=V)
    tokens, lengths = _tokens(), torch.full((B,), T)
    seen = {}

    def keep(module, args, out) -> None:
        seen["x"] = args[0]

    encoder.rnn.register_forward_hook(keep)
    torch.manual_seed(3)
    encoder(tokens, lengths)
    torch.manual_seed(3)
    scale = _ones(V)  # (V,) the types' mask
    expected = encoder.embedding(tokens) * scale[tokens].unsqueeze(-1)  # (B, T, E)
    torch.testing.assert_close(seen["x"], expected)
    assert 0 < int((scale == 0).sum()) < V  # some types dropped, not all
    encoder.eval()
    encoder(tokens, lengths)
    torch.testing.assert_close(seen["x"], encoder.embedding(tokens))


def test_word_dropout_turns_real_words_into_unk_in_training_only() -> None:
    """--word-dropout: about P of the real tokens become <unk> (padding never), each token
    drawn on its own; the encoder embeds the replaced ids in training and the given ones in
    eval."""
    tokens = torch.randint(4, 50, (64, 40))  # (B, T) real words (ids past the specials)
    tokens[:, 30:] = Vocab.pad_id
    torch.manual_seed(0)
    out = unknown_words(tokens, 0.3)
    dropped = out != tokens
    assert bool((out[dropped] == Vocab.unk_id).all())
    assert not bool(dropped[:, 30:].any())  # padding stays padding
    assert abs(float(dropped[:, :30].float().mean()) - 0.3) < 0.02
    assert int(dropped[:, :30].sum(1).min()) > 0 and int(dropped.sum(0)[:30].min()) > 0
    assert torch.equal(unknown_words(tokens, 0.0), tokens)

    encoder = SequenceEncoder(_config(num_layers=1, word_dropout=0.5), vocab_size=50)
    seen = {}
    encoder.rnn.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    small, lengths = tokens[:B, :T], torch.full((B,), T)
    torch.manual_seed(5)
    encoder(small, lengths)
    torch.manual_seed(5)
    torch.testing.assert_close(seen["x"], encoder.embedding(unknown_words(small, 0.5)))
    assert not torch.equal(unknown_words(small, 0.5), small)
    encoder.eval()
    encoder(small, lengths)
    torch.testing.assert_close(seen["x"], encoder.embedding(small))


@pytest.mark.parametrize("name", ["embedding_dropout", "word_dropout"])
def test_word_regularisers_on_feature_inputs_are_refused(name: str) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError, match=f"{flag} drops words: feature inputs have none"):
        SequenceEncoder(_config(**{name: 0.5}), feature_size=3)


# --- --feature-noise ------------------------------------------------------------------------


def test_feature_noise_perturbs_the_standardised_features_in_training_only() -> None:
    """classify and tag on .npz: the recurrent layers read (x - mean) / std + sigma * N(0, 1)
    in training, the plain standardised features in eval."""
    sigma, D = 0.5, 40
    encoder = SequenceEncoder(_config(num_layers=1, feature_noise=sigma), feature_size=D)
    encoder.set_feature_statistics(np.full(D, 2.0, np.float32), np.full(D, 4.0, np.float32))
    seen = {}
    encoder.rnn.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    inputs, lengths = torch.randn(64, T, D) * 4 + 2, torch.full((64,), T)  # (B, T, D)
    standardised = (inputs - 2) / 4
    torch.manual_seed(0)
    encoder(inputs, lengths)
    noise = seen["x"] - standardised  # (B, T, D)
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - sigma) < 0.01
    torch.manual_seed(0)
    torch.testing.assert_close(noise, sigma * torch.randn_like(noise))  # the run's RNG: resumable
    encoder.eval()
    encoder(inputs, lengths)
    torch.testing.assert_close(seen["x"], standardised)


def test_feature_noise_on_text_inputs_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--feature-noise perturbs \.npz features: text inputs"):
        SequenceEncoder(_config(feature_noise=0.5), vocab_size=V)


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["embedding_dropout", "input_dropout", "weight_drop", "word_dropout"]
)
@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_probabilities_outside_0_1_are_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"^--{name.replace('_', '-')} must be in \[0, 1\)"):
        _config(**{name: value})


@pytest.mark.parametrize(
    ("name", "value", "users"),
    [
        ("embedding_dropout", 0.1, "lm / classify / tag"),
        ("word_dropout", 0.1, "classify / tag"),
        ("input_dropout", 0.1, "lm"),
        ("locked_dropout", True, "lm"),
        ("weight_drop", 0.1, "lm"),
    ],
)
def test_the_regularisers_are_options_of_their_tasks_only(name: str, value, users: str) -> None:
    model = dataclasses.replace(ModelConfig(), **{name: value})
    for task in users.split(" / "):
        RunConfig(task=task, model=model)
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError, match=f"{flag} is an option of --task {users}, not of --task"):
        RunConfig(task="seq2seq", model=model)


def test_a_config_json_without_the_new_fields_loads_with_them_off() -> None:
    """An older model folder's config.json lacks the fields: they take their defaults."""
    values = run_to_dict(RunConfig())
    for name in ("embedding_dropout", "input_dropout", "locked_dropout", "weight_drop"):
        del values["model"][name]
    for name in ("average", "average_start", "ema_decay", "patience"):
        del values["train"][name]
    run = run_from_dict(values, "old/config.json")
    assert run.model == ModelConfig() and run.train == TrainConfig()


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_feature_noise_must_be_a_finite_deviation(value: float) -> None:
    with pytest.raises(ConfigError, match=r"^--feature-noise must be 0 or more"):
        _config(feature_noise=value)


@pytest.mark.parametrize("task", ["lm", "seq2seq"])
def test_feature_noise_is_refused_outside_the_feature_tasks(task: str) -> None:
    with pytest.raises(ConfigError, match="--feature-noise is an option of --task classify"):
        RunConfig(task=task, model=_config(feature_noise=0.1))
    for task in ("classify", "tag", "condgen"):
        assert RunConfig(task=task, model=_config(feature_noise=0.1)).model.feature_noise == 0.1
