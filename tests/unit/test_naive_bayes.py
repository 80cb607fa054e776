"""--naive-bayes W of classify on text: token n-gram counts whose probabilities, to the power
W, multiply the network's (rnnkit.tasks.naive_bayes)."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from rnnkit.config import ModelConfig, RunConfig
from rnnkit.data.examples import Examples
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.tasks.classify import Classifier
from rnnkit.tasks.naive_bayes import ALPHA, ORDER, NaiveBayes


def _items(seed: int, n: int, vocab: int, labels: int) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(seed)
    ids = [[rng.randrange(vocab) for _ in range(rng.randint(1, 6))] for _ in range(n)]
    return ids, [rng.randrange(labels) for _ in range(n)]


def _examples(ids: list[list[int]], y: list[int] | None = None) -> Examples:
    return Examples(lengths=np.array([len(i) for i in ids], dtype=np.int64), ids=ids, y=y)


def _grams(item: list[int]) -> list[tuple]:
    """Every 1- to ORDER-gram of the item between a start and an end mark, as tuples."""
    marked = ["^", *item, "$"]
    orders = range(1, ORDER + 1)
    return [tuple(marked[i : i + n]) for n in orders for i in range(len(marked) - n + 1)]


def _brute_force(train, y, labels, item) -> list[float]:
    """log p_NB(c | item) by the module docstring's formula, from counts of tuples."""
    counts = [Counter() for _ in range(labels)]
    for seq, c in zip(train, y, strict=True):
        counts[c].update(_grams(seq))
    distinct = len(set().union(*counts))
    scores = []
    for c in range(labels):
        total = sum(counts[c].values()) + ALPHA * distinct
        prior = (y.count(c) + ALPHA) / (len(y) + ALPHA * labels)
        likelihood = sum(math.log((counts[c][g] + ALPHA) / total) for g in _grams(item))
        scores.append(math.log(prior) + likelihood)
    top = max(scores)
    norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return [s - norm for s in scores]


def test_the_counts_match_a_brute_force_model() -> None:
    """Keys, smoothing, the unseen row, the prior and the marks, against plain counting."""
    train, y = _items(0, 40, 5, 3)
    model = NaiveBayes.counted(5, 3, _examples(train), y)
    distinct = {g for seq in train for g in _grams(seq)}
    assert len(model.keys) == len(distinct)
    test, _ = _items(1, 12, 5, 3)
    test[0] = train[0]
    assert any(g not in distinct for item in test for g in _grams(item))  # the unseen row
    batch = _examples(test).batch(np.arange(len(test)))
    got = model(batch["inputs"], batch["lengths"])  # (N, C)
    want = torch.tensor([_brute_force(train, y, 3, item) for item in test])
    torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


def test_padding_changes_nothing() -> None:
    """An item scores the same alone as beside a longer one (padded with id 0, a real
    token id, so padded steps would count if the mask were wrong)."""
    train, y = _items(2, 30, 4, 2)
    model = NaiveBayes.counted(4, 2, _examples(train), y)
    short, long = [1, 2], [0, 0, 0, 0, 3, 1]
    alone = _examples([short]).batch(np.arange(1))
    padded = _examples([short, long]).batch(np.arange(2))
    assert padded["inputs"][0].tolist() == [1, 2, 0, 0, 0, 0]
    torch.testing.assert_close(
        model(alone["inputs"], alone["lengths"])[0], model(padded["inputs"], padded["lengths"])[0]
    )


def test_orders_never_share_a_key() -> None:
    """The 1-gram (a) and the 2-gram (start, a) differ, as do (0, a) and (a)."""
    model = NaiveBayes(3, 1, 0)
    keys, real = model.gram_keys(torch.tensor([[0, 2]]), torch.tensor([2]))
    found = keys[real].tolist()
    assert len(found) == len(set(found)) == 4 + 3 + 2
    NaiveBayes(1_664_507, 2, 0)  # the largest vocabulary whose keys fit: 1,664,510^3 < 2^62
    with pytest.raises(ConfigError, match="1,664,508 token types is too large"):
        NaiveBayes(1_664_508, 2, 0)


def _classifier(weight: float, ensemble: int = 1) -> tuple[Classifier, Examples]:
    torch.manual_seed(0)
    chars = list("abcdefgh")
    vocab = Vocab(chars)
    train, y = _items(3, 50, len(vocab), 3)
    config = ModelConfig(hidden_size=8, embedding_size=4, naive_bayes=weight, ensemble=ensemble)
    counts = NaiveBayes.counted(len(vocab), 3, _examples(train), y)
    model = Classifier(
        config, ["x", "y", "z"], vocab=vocab, level="char", bayes_grams=len(counts.keys)
    )
    model.bayes.load_state_dict(counts.state_dict())
    return model.eval(), _examples(train[:7])


def test_the_prediction_is_the_product_of_the_two_models() -> None:
    """softmax(forward) ∝ p_net · p_NB^W; weight 0 gives the network's logits alone."""
    model, examples = _classifier(0.5)
    batch = examples.batch(np.arange(len(examples)))
    inputs, lengths = batch["inputs"], batch["lengths"]
    with torch.no_grad():
        combined = model(inputs, lengths).softmax(-1)
        net = model._logits(inputs, lengths).softmax(-1)
        counts = model.bayes(inputs, lengths).exp()
        product = net * counts**0.5
        torch.testing.assert_close(combined, product / product.sum(-1, keepdim=True))
        model.bayes_weight = 0.0
        torch.testing.assert_close(model(inputs, lengths), model._logits(inputs, lengths))


def test_members_of_an_ensemble_have_no_counts_of_their_own() -> None:
    model, _ = _classifier(1.0, ensemble=3)
    assert model.bayes is not None
    assert [m.bayes for m in model.others] == [None, None]
    assert [m.config.naive_bayes for m in model.others] == [0.0, 0.0]
    names = [name for name, _ in model.named_buffers() if "keys" in name]
    assert names == ["bayes.keys"]  # one table, saved once in model.safetensors


def test_bad_weights_and_other_tasks_are_refused() -> None:
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--naive-bayes must be 0 or more"):
            ModelConfig(naive_bayes=bad)
    with pytest.raises(ConfigError, match="--naive-bayes is an option of --task classify"):
        RunConfig(task="tag", model=ModelConfig(naive_bayes=1.0))
    features = Classifier(ModelConfig(naive_bayes=1.0), ["a", "b"], feature_size=3)
    assert features.bayes is None  # no tokens to count (training refuses the flag on .npz)
