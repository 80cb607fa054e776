"""--word-shape of tag on text: each word's casing class (Reimers & Gurevych 2017), read from
its characters and embedded beside the word before the recurrent layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.tag import Tagger
from rnnkit.tasks.word_shape import SHAPE_SIZE, SHAPES, WordShape, word_shapes

TAGS = ["O", "B-per", "I-per"]
CHARS = [*".:)@0123ABCDHILNOPSUabdehilnoprt", "Ü", "é"]


def _config(**fields) -> ModelConfig:
    base = {"cell": "lstm", "num_layers": 1, "hidden_size": 6, "dropout": 0.0}
    return ModelConfig(embedding_size=5, **(base | {"word_shape": True} | fields))


def _tagger(**fields) -> Tagger:
    vocab = Vocab.build(["hello", "london"], min_freq=1)
    return Tagger(_config(**fields), TAGS, vocab=vocab, chars=CHARS, lowercase=True)


def _shapes(model: Tagger, words: list[str]) -> list[str]:
    """The class names of ``words`` read as one sentence, as the model reads them."""
    batch = model.encode_sentences([words]).batch(np.arange(1))
    ids = model.encoder.shapes.char_classes[batch["chars"]]  # (1, T, W)
    return [SHAPES[int(i)] for i in word_shapes(ids)[0]]


def test_each_word_gets_its_casing_class() -> None:
    model = _tagger()
    table = {
        ".": "no letter or digit",
        ":)": "no letter or digit",
        "2013": "numeric",
        "London": "Title",
        "I": "Title",
        "Über": "Title",  # letters beyond ASCII have a case too
        "NASA": "UPPER",
        "ÜNO": "UPPER",
        "hello": "lower",
        "hé": "lower",
        "2nd": "contains digit",
        "a1b2": "contains digit",  # half its characters
        "10:30": "mainly numeric",
        "A1": "contains digit",
        "iPhone": "other",
        "@bob": "other",
        "LoNDON": "other",
        "A.": "other",
        "hö": "other",  # ö was never seen in training: an unknown character counts as other
    }
    assert _shapes(model, list(table)) == list(table.values())


def test_padding_words_are_class_zero_with_a_zero_vector() -> None:
    model = _tagger()
    examples = model.encode_sentences([["Hello", "NASA", "2nd"], ["London"]])
    batch = examples.batch(np.arange(2))
    out = model.encoder.shapes(batch["chars"])  # (2, 3, S)
    assert out.shape == (2, 3, SHAPE_SIZE)
    torch.testing.assert_close(out[1, 1:], torch.zeros(2, SHAPE_SIZE))
    torch.testing.assert_close(out[1, 0], out[0, 0])  # both Title
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_the_recurrent_layers_read_the_class_beside_the_word() -> None:
    plain = Tagger(
        _config(word_shape=False, char_features=True),
        TAGS,
        vocab=Vocab.build(["a"], min_freq=1),
        chars=CHARS,
    )
    shaped = _tagger(char_features=True)
    assert plain.encoder.shapes is None
    assert shaped.encoder.rnn.input_size == plain.encoder.rnn.input_size + SHAPE_SIZE
    assert isinstance(shaped.encoder.shapes, WordShape)
    # derived from the characters when the model is built: not among the saved weights
    keys = shaped.state_dict().keys()
    assert "encoder.shapes.embedding.weight" in keys
    assert not any(k.endswith("char_classes") for k in keys)
    assert all(isinstance(m.encoder.shapes, WordShape) for m in _tagger(ensemble=2).members())


def test_options() -> None:
    with pytest.raises(ConfigError, match="--word-shape reads the characters of words"):
        Tagger(_config(), ["0", "1"], feature_size=3)
    with pytest.raises(ConfigError, match="--word-shape is an option of --task tag"):
        RunConfig(task="classify", model=ModelConfig(word_shape=True))


def test_a_tagger_of_unknown_words_learns_from_the_class_alone() -> None:
    """Every word is <unk> and no character encoder reads them: only the class tells a
    capitalised word (B-per) from the others. Without the class the tagger cannot."""
    rng = np.random.default_rng(0)
    letters = list("abdehilnoprt")

    def word(title: bool) -> str:
        w = "".join(rng.choice(letters, size=int(rng.integers(2, 6))))
        return w.capitalize() if title else w

    sentences, tags = [], []
    for _ in range(64):
        titles = rng.random(5) < 0.4
        sentences.append([word(bool(t)) for t in titles])
        tags.append([1 if t else 0 for t in titles])

    def accuracy(word_shape: bool) -> float:
        torch.manual_seed(0)
        config = _config(word_shape=word_shape, hidden_size=8)
        vocab = Vocab.build([], min_freq=1)  # every word is <unk>
        model = Tagger(config, TAGS, vocab=vocab, chars=CHARS, lowercase=True)
        examples = model.encode_sentences(sentences)
        examples.y = tags
        batch = examples.batch(np.arange(len(sentences)))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(60):
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
        model.eval()
        paths, _ = model.decode(batch)
        pairs = zip(paths, tags, strict=True)
        right = sum(p == t for path, gold in pairs for p, t in zip(path, gold, strict=True))
        return right / sum(len(t) for t in tags)

    assert accuracy(True) == 1.0
    assert accuracy(False) < 0.75  # about the share of O
