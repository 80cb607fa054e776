"""rnnkit.inspect.ngram and .error_analysis: the Witten–Bell n-gram, kinds, error counts."""

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

import rnnkit.inspect.ngram as ngram
from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.inspect.error_analysis import (
    error_analysis,
    next_token_log_probs,
    prediction_kinds,
    word_counts,
)
from rnnkit.inspect.ngram import ngram_probabilities
from rnnkit.inspect.text import encode_text
from rnnkit.tasks.lm import LanguageModel

pytestmark = pytest.mark.usefixtures("single_thread")


def witten_bell(train: list[int], ids: list[int], order: int, vocab_size: int) -> list[float]:
    """The n-gram of the module doc, counted with dictionaries."""
    counts = [defaultdict(Counter) for _ in range(order)]
    for j, token in enumerate(train):
        for k in range(min(order, j + 1)):
            counts[k][tuple(train[j - k : j])][token] += 1
    out = []
    for i in range(1, len(ids)):
        p = 1.0 / vocab_size
        for k in range(min(order, i + 1)):
            seen = counts[k].get(tuple(ids[i - k : i]))
            if seen:
                total, distinct = sum(seen.values()), len(seen)
                p = (seen[ids[i]] + distinct * p) / (total + distinct)
        out.append(p)
    return out


@pytest.mark.parametrize("dense_limit", [ngram.DENSE_LIMIT, 0])  # a count table, hashed pairs
def test_ngram_equals_the_dictionary_counts(dense_limit: int, monkeypatch) -> None:
    monkeypatch.setattr(ngram, "DENSE_LIMIT", dense_limit)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 4, 600)
    ids = np.concatenate([train[100:140], rng.integers(0, 6, 60)])  # seen and unseen contexts
    for order in (1, 3, 6):
        got = ngram_probabilities(train, ids, order, vocab_size=6)
        np.testing.assert_allclose(got, witten_bell(train.tolist(), ids.tolist(), order, 6))


def test_ngram_is_a_distribution_over_the_next_token() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 5, 400)
    context = train[50:57].tolist()
    total = sum(
        ngram_probabilities(train, np.array([*context, token]), 5, vocab_size=5)[-1]
        for token in range(5)
    )
    assert total == pytest.approx(1.0)
    memorised = ngram_probabilities(np.array([0, 1, 2, 3] * 50), np.array([0, 1, 2, 3, 0]), 4, 4)
    assert memorised[-1] > 0.95  # a context always followed by the same token


def test_prediction_kinds_at_char_and_word_level() -> None:
    text = "ab ab\nzq(c7 ab.\n"
    counts = Counter(["ab"] * 10 + ["c"] * 10)
    kinds = prediction_kinds(list(text), "char", counts)
    assert len(kinds) == len(text) - 1
    assert dict(zip(range(1, len(text)), kinds, strict=True)) == {
        1: "inside_word",
        2: "whitespace",
        3: "after_space",
        4: "inside_word",
        5: "whitespace",
        6: "rare_word",  # zq was never seen in training
        7: "rare_word",
        8: "punctuation",
        9: "rare_word",  # "c7" is one \\w+ word, unseen
        10: "digit",
        11: "whitespace",
        12: "after_space",
        13: "inside_word",
        14: "punctuation",
        15: "whitespace",
    }
    assert prediction_kinds(["a", "(", " c", "\n"], "word", Counter({"c": 9})) == [
        "punctuation",
        "word",
        "eos",
    ]
    assert word_counts(list("the cat, the"), "char") == Counter({"the": 2, "cat": 1})


def test_error_analysis_counts_add_up_and_use_the_models_probabilities() -> None:
    train_text = "the cat sat on the mat.\n" * 30
    vocab = Vocab.build(train_text)
    config = ModelConfig(cell="gru", num_layers=1, hidden_size=8, embedding_size=4, dropout=0)
    model = LanguageModel(config, len(vocab)).eval()
    train = encode_text(train_text, vocab, "char")
    text = encode_text("the cat sat on the hat!\n", vocab, "char")  # ! is unknown
    result = error_analysis(model, text, train.ids, word_counts(train.pieces, "char"), order=6)
    log_probs = next_token_log_probs(model, text.ids).numpy()
    known = text.ids[1:].numpy() != Vocab.unk_id
    assert result.unknown_targets == 1 and result.total.count == known.sum()
    assert result.total.rnn_errors == int((np.exp(log_probs[known]) < 0.5).sum())
    assert result.rnn_loss == pytest.approx(-log_probs[known].mean())
    for k in [*result.kinds, result.total]:
        assert k.both + k.rnn_only == k.rnn_errors and k.both + k.ngram_only == k.ngram_errors
    assert sum(k.count for k in result.kinds) == result.total.count
    # The 6-gram has seen this text in training, so it errs far less than an untrained RNN.
    assert result.total.ngram_errors < result.total.rnn_errors
    assert result.ngram_loss < result.rnn_loss
    assert result.to_dict()["threshold"] == 0.5


def test_next_token_log_probs_match_the_forward_pass() -> None:
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=6, embedding_size=3, dropout=0)
    model = LanguageModel(config, 7).eval()
    ids = torch.randint(0, 7, (90,))
    with torch.no_grad():
        logits, _ = model(ids[None])
    expected = torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids[1:, None]).squeeze(1)
    got = next_token_log_probs(model, ids, streams=1)
    torch.testing.assert_close(got, expected.double())
