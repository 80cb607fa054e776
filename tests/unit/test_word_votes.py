"""--word-votes W of tag on text: a classifier of each word alone (a bag of its hashed character
n-grams, whole word and shape), trained apart before the tagger, whose log-ratio
log p(tag | word) - log p(tag) is added W times to the tagger's scores when decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.tag import Tagger
from rnnkit.tasks.word_votes import BUCKETS, PASSES, train_word_votes, word_votes

TAGS = ["O", "B-loc", "I-loc", "B-per"]
CHARS = list("ABIMPRSaeimnrs")


def _config(**fields) -> ModelConfig:
    fields = {"cell": "lstm", "num_layers": 1, "hidden_size": 6, "dropout": 0.0} | fields
    return ModelConfig(embedding_size=5, crf=True, **({"char_features": True} | fields))


def _tagger(seed: int = 0, **fields) -> Tagger:
    torch.manual_seed(seed)
    vocab = Vocab.build(["paris", "rome", "sam", "a", "is"], min_freq=1)
    config = _config(**({"word_votes": 1.5} | fields))
    return Tagger(config, TAGS, vocab=vocab, chars=CHARS, lowercase=True)


def _batch(model: Tagger, sentences: list[list[str]]) -> dict[str, torch.Tensor]:
    examples = model.encode_sentences(sentences)
    examples.y = [[i % len(TAGS) for i in range(len(s))] for s in sentences]
    return examples.batch(np.arange(len(sentences)))


def _votes(model: Tagger, sentences: list[list[str]]) -> torch.Tensor:
    batch = _batch(model, sentences)
    return model.word_vote(batch["chars"], batch["word_lengths"])


def _features(model: Tagger, word: str) -> list[int]:
    """The bucket ids of a word's real features, in order."""
    batch = _batch(model, [[word]])
    ids = model.word_vote.feature_ids(batch["chars"], batch["word_lengths"])[0, 0]
    return [int(i) for i in ids if i != BUCKETS]


def test_a_word_has_the_features_of_its_spelling() -> None:
    model = _tagger()
    paris = _features(model, "Paris")
    # <Paris>: 6 bigrams, 5 trigrams, 4 four-grams; <paris>: 5 + 4 + 3; the word; its shape
    assert len(paris) == 15 + 12 + 2 and len(set(paris)) == len(paris)
    assert all(0 <= i < BUCKETS for i in paris)
    upper = _features(model, "PARIS")
    assert upper[15:28] == paris[15:28]  # lower case folds the case: the same n-grams, word
    assert upper[:15] != paris[:15] and upper[28] != paris[28]  # the cased ones and the shape
    assert _features(model, "Rome")[-1] != _features(model, "Romes")[-1]  # shapes count length
    assert _features(model, "Aeimnrs")[-1] == _features(model, "Aeimnrsss")[-1]  # up to 6
    assert _features(model, "Pari")[:3] == paris[:3]  # the same start: the same first bigrams


def test_padding_and_other_words_change_no_words_vote() -> None:
    model = _tagger()
    alone = _votes(model, [["Sam", "is"]])
    beside = _votes(model, [["Sam", "is", "a", "ARMSPRAISE"], ["Paris"]])  # wider, longer
    torch.testing.assert_close(beside[0, :2], alone[0])
    torch.testing.assert_close(_votes(model, [["Paris"]])[0, 0], beside[1, 0])
    assert not torch.allclose(beside[0, 0], beside[0, 1])
    torch.testing.assert_close(beside.exp().sum(-1), torch.ones(2, 4))


def _train(model: Tagger, sentences: list[list[str]], tags: list[list[int]]) -> float:
    chars = [model.char_ids(s) for s in sentences]
    return train_word_votes(model.word_vote, chars, tags, len(TAGS))


def test_training_learns_the_tags_of_spellings_and_their_prior() -> None:
    model = _tagger()
    sentences = [["Sam", "is", "in", "Rome"], ["Paris", "is", "Rome"], ["Sam", "is"]] * 300
    tags = [[3, 0, 0, 1], [1, 0, 1], [3, 0]] * 300
    before = [p.clone() for p in model.parameters()]
    loss = _train(model, sentences, tags)
    assert loss < 0.6  # from log 4 = 1.39: 55 steps learn much of the three words
    votes = _votes(model, [["Sam", "is", "Rome"]])[0].argmax(-1)
    assert votes.tolist() == [3, 0, 1]
    counts = (
        torch.tensor([1200.0, 900.0, 0.0, 600.0]) + 1.0
    )  # O 4, B-loc 3, B-per 2 (x 300); add one
    torch.testing.assert_close(model.word_vote.log_prior, (counts / counts.sum()).log())
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    names = [n for (n, _), c in zip(model.named_parameters(), changed, strict=True) if c]
    assert names and all(n.startswith("word_vote.") for n in names)  # the tagger is untouched
    assert not any(p.requires_grad for p in model.word_vote.parameters())  # frozen after
    assert all(p.grad is None for p in model.word_vote.parameters())  # no gradient left over
    assert PASSES == 5


def test_decoding_adds_w_times_the_log_ratio() -> None:
    model = _tagger()
    model.eval()
    with torch.no_grad():
        model.word_vote.log_prior.copy_(torch.log(torch.tensor([0.85, 0.05, 0.05, 0.05])))
        model.word_vote.head.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))  # vote B-loc
    model.outside_bias = 0.0
    batch = _batch(model, [["Sam", "is", "in", "Rome"], ["Paris"]])
    crf = model.combined_crf()
    votes = model.word_vote(batch["chars"], batch["word_lengths"])
    emissions = model.scores(batch) + 1.5 * (votes - model.word_vote.log_prior)
    expected = crf.decode(emissions, batch["lengths"])
    paths, _ = model.decode(batch)
    assert paths == expected
    plain = crf.decode(model.scores(batch), batch["lengths"])
    assert paths != plain  # the votes changed the decoding here
    # the training loss reads the network alone
    loss = model.loss(batch)
    model.word_vote = None
    torch.testing.assert_close(model.loss(batch), loss)
    assert model.decode(batch)[0] == plain


def test_members_and_options() -> None:
    model = _tagger(ensemble=3)
    assert model.word_vote is not None and all(m.word_vote is None for m in model.others)
    plain = Tagger(_config(), TAGS, vocab=Vocab.build(["a"], min_freq=1), chars=CHARS)
    assert plain.word_vote is None
    no_char_encoder = _tagger(char_features=False)  # the votes read characters all the same
    assert no_char_encoder.encoder.chars is None and no_char_encoder.word_vote is not None
    with pytest.raises(ConfigError, match="--word-votes reads the words of text"):
        Tagger(_config(word_votes=1.0), ["0", "1"], feature_size=3)
    with pytest.raises(ConfigError, match="--word-votes is an option of --task tag"):
        RunConfig(task="classify", model=ModelConfig(word_votes=1.0))
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="--word-votes must be 0 or more"):
            ModelConfig(word_votes=bad)
    votes = word_votes(_config(word_votes=2.0), CHARS, 4)
    p, a = CHARS.index("P") + 2, CHARS.index("A") + 2
    assert int(votes.lower[p]) == p  # no "p" among the known characters: itself
    assert int(votes.lower[a]) == CHARS.index("a") + 2
    assert int(votes.shape[a]) == 1 and int(votes.shape[CHARS.index("a") + 2]) == 2
    assert not any(p.requires_grad for p in votes.parameters())
