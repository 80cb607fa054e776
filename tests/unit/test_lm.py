"""The language model: shapes for every cell, step == forward, loss, metrics, generation."""

import math

import pytest
import torch

from rnnkit.config import ModelConfig
from rnnkit.data.text import IGNORE_INDEX
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.tasks.lm import LanguageModel, LMMetrics, evaluate, lm_loss

B, T, E, H = 3, 5, 4, 6
TEXT = "the cat sat on the mat\nthe dog sat on the log\n"


def _config(cell: str = "lstm", **kw) -> ModelConfig:
    options = {"num_layers": 2, "hidden_size": H, "embedding_size": E, "dropout": 0.0} | kw
    return ModelConfig(cell=cell, **options)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "mingru", "minlstm"])
def test_forward_shapes_and_step_matches_forward(cell: str) -> None:
    V = 11
    model = LanguageModel(_config(cell), V).eval()
    tokens = torch.randint(0, V, (B, T))
    with torch.no_grad():
        logits, state = model(tokens)  # (B, T, V)
        assert logits.shape == (B, T, V)
        assert len(state) == 2
        step_state, step_logits = None, []
        for t in range(T):
            out, step_state = model.step(tokens[:, t], step_state)  # (B, V)
            step_logits.append(out)
    torch.testing.assert_close(torch.stack(step_logits, dim=1), logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("cell", "impl"), [("lstm", "loop"), ("gru", "fused"), ("mingru", "scan")])
def test_impl_reaches_the_layer_and_gives_the_same_logits(cell: str, impl: str) -> None:
    torch.manual_seed(0)
    auto = LanguageModel(_config(cell), 11)
    chosen = LanguageModel(_config(cell, impl=impl), 11)
    chosen.load_state_dict(auto.state_dict())
    assert chosen.rnn.impl == impl
    tokens = torch.randint(0, 11, (B, T))
    torch.testing.assert_close(chosen(tokens)[0], auto(tokens)[0], atol=1e-5, rtol=1e-4)


def test_one_hot_input_when_embedding_size_is_zero() -> None:
    model = LanguageModel(_config(embedding_size=0), 7)
    assert model.embedding is None
    assert model.rnn.input_size == 7
    logits, _ = model(torch.randint(0, 7, (B, T)))
    assert logits.shape == (B, T, 7)


def test_tied_weights_share_one_matrix() -> None:
    model = LanguageModel(_config(embedding_size=H, tie_weights=True), 9)
    assert model.head.weight is model.embedding.weight
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in LanguageModel(_config(embedding_size=H), 9).parameters()
    )


def test_bidirectional_is_rejected() -> None:
    with pytest.raises(ConfigError, match="bidirectional"):
        LanguageModel(ModelConfig(bidirectional=True), 5)


def test_dropout_only_in_training() -> None:
    model = LanguageModel(_config(dropout=0.5), 9)
    tokens = torch.randint(0, 9, (B, T))
    model.train()
    assert not torch.equal(model(tokens)[0], model(tokens)[0])
    model.eval()
    assert torch.equal(model(tokens)[0], model(tokens)[0])


def test_loss_is_cross_entropy_and_skips_ignored_targets() -> None:
    logits = torch.zeros(2, 3, 4)  # uniform over 4 tokens
    targets = torch.tensor([[0, 1, IGNORE_INDEX], [2, IGNORE_INDEX, 3]])
    assert lm_loss(logits, targets).item() == pytest.approx(math.log(4))
    assert lm_loss(logits, targets, reduction="sum").item() == pytest.approx(4 * math.log(4))


def test_metrics() -> None:
    metrics = LMMetrics(loss=math.log(2) * 1.5, tokens=10, level="char")
    assert metrics.bpc == pytest.approx(1.5)
    assert metrics.perplexity == pytest.approx(2**1.5)
    assert set(metrics.to_dict()) == {"loss", "bpc", "perplexity", "tokens"}
    assert "bpc" not in LMMetrics(loss=1.0, tokens=3, level="word").to_dict()
    assert LMMetrics(loss=1000.0, tokens=1, level="word").perplexity == math.inf


def test_evaluate_counts_every_token_and_restores_the_mode() -> None:
    model = LanguageModel(_config(), 9).train()
    ids = torch.randint(0, 9, (23,))
    metrics = evaluate(model, ids, batch_size=4, seq_len=3)
    assert metrics.tokens == 22 and model.training
    with torch.no_grad():
        logits, _ = model.eval()(ids[None, :-1])  # (1, 22, 9): one stream
    single = lm_loss(logits, ids[None, 1:]).item()
    assert evaluate(model, ids, batch_size=1, seq_len=5).loss == pytest.approx(single, rel=1e-5)


def _char_model() -> LanguageModel:
    vocab = Vocab.build(TEXT)
    model = LanguageModel(_config(), len(vocab))
    model.attach_vocab(vocab, "char")
    return model


def test_generate_is_the_prime_plus_length_characters_and_repeatable() -> None:
    model = _char_model()
    text = model.generate(prime="the ", length=40, seed=3)
    assert text.startswith("the ") and len(text) == 44
    assert set(text) <= set(TEXT)
    assert model.generate(prime="the ", length=40, seed=3) == text
    assert model.generate(prime="the ", length=40, seed=4) != text
    assert len(model.generate(length=10, temperature=0)) == 10


def test_generate_pieces_several_samples() -> None:
    pieces = list(_char_model().generate_pieces("a", 7, num_samples=3, seed=1))
    assert len(pieces) == 7 and all(len(step) == 3 for step in pieces)


def test_unknown_prime_characters_are_named() -> None:
    with pytest.raises(ConfigError, match="never saw in training: 'é', 'Z'"):
        _char_model().generate(prime="thé Zé")


def test_word_level_generation_spaces_words() -> None:
    vocab = Vocab.build(TEXT.split())
    model = LanguageModel(_config(), len(vocab))
    model.attach_vocab(vocab, "word")
    text = model.generate(prime="the cat", length=12, seed=0)
    assert text.startswith("the cat")
    assert "  " not in text
    with pytest.raises(ConfigError, match=r"words that the model never saw.*'zebra'"):
        model.generate(prime="the zebra")


def _continuation_log_prob(model, prime: str, text: str) -> float:
    ids = model.prime_ids(prime) + model.vocab.encode(list(text))
    tokens = torch.tensor([ids])  # (1, N)
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1])  # (1, N-1, V)
    log_probs = logits.log_softmax(-1)[0, -len(text) :]  # (len, V)
    return float(log_probs.gather(1, tokens[0, -len(text) :, None]).sum())


def test_beam_search_of_one_is_greedy_and_wider_beams_find_likelier_text() -> None:
    from rnnkit.data.vocab import Vocab

    torch.manual_seed(0)
    vocab = Vocab.build("abcde\n")
    model = LanguageModel(ModelConfig(hidden_size=16, embedding_size=8, num_layers=1), len(vocab))
    model.attach_vocab(vocab, "char")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2)  # peaked distributions: greedy and beam search part ways
    greedy = model.generate(prime="ab", length=12, temperature=0)
    assert model.generate(prime="ab", length=12, beam_size=1) == greedy
    beams = {k: model.generate(prime="ab", length=12, beam_size=k) for k in (2, 5)}
    scores = {k: _continuation_log_prob(model, "ab", text[2:]) for k, text in beams.items()}
    greedy_score = _continuation_log_prob(model, "ab", greedy[2:])
    assert all(text.startswith("ab") and len(text) == 14 for text in beams.values())
    assert scores[5] >= scores[2] - 1e-5 and scores[5] >= greedy_score - 1e-5
    assert scores[5] > greedy_score + 1e-3  # this model's greedy path is not the best one
