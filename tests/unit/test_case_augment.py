"""--case-augment of tag on text: training sentences lower-cased at random, as a whole (their
characters, and their words when looked up as written)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.examples import CHAR_UNK
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.case_augment import LowerCase, case_augment, lower_table
from rnnkit.tasks.tag import Tagger

TAGS = ["O", "B-loc", "I-loc"]
CHARS = [*"ENWYadeikmnorstwy", "É", "é", "Ø"]  # no ø
SENTENCES = [["New", "York", "is", "NEW"], ["Ørsted", "was", "Énorme"]]


def _config(**fields) -> ModelConfig:
    base = {"cell": "lstm", "num_layers": 1, "hidden_size": 6, "dropout": 0.0}
    return ModelConfig(embedding_size=5, **(base | {"char_features": True} | fields))


def _tagger(p: float, *, lowercase: bool = False, **fields) -> Tagger:
    vocab = Vocab.build(["New", "new", "York", "is", "was", "énorme"], min_freq=1)
    config = _config(case_augment=p, **fields)
    return Tagger(config, TAGS, vocab=vocab, chars=CHARS, lowercase=lowercase)


def _batch(model: Tagger, sentences: list[list[str]]) -> dict[str, torch.Tensor]:
    examples = model.encode_sentences(sentences)
    examples.y = [[0] * len(s) for s in sentences]
    return examples.batch(np.arange(len(sentences)))


def test_lower_table_maps_each_token_to_its_lower_case() -> None:
    tokens = ["<pad>", "<unk>", "Paris", "paris", "NYC", "ok"]
    index = {t: i for i, t in enumerate(tokens)}
    assert lower_table(tokens, index, 1).tolist() == [0, 1, 3, 3, 1, 5]  # NYC -> <unk>


def test_a_lowered_sentence_reads_as_its_lower_case_text() -> None:
    model = _tagger(1.0)
    batch = _batch(model, SENTENCES)
    inputs, chars = model.lower(batch["inputs"], batch["chars"])
    lowered = _batch(model, [[w.lower() for w in s] for s in SENTENCES])
    assert chars.tolist() == lowered["chars"].tolist()
    assert int(chars[1, 0, 0]) == CHAR_UNK  # Ø -> ø, which training never saw
    # New -> new; York -> <unk> (york is unknown); NEW and Énorme are <unk> as written, and
    # an id does not tell which word it was: they stay <unk>
    unk = Vocab.unk_id
    assert inputs[0].tolist() == [*model.word_ids(["new", "york", "is"]), unk]
    assert inputs[1].tolist() == [unk, model.word_ids(["was"])[0], unk, Vocab.pad_id]


def test_whole_sentences_are_lowered_with_probability_p() -> None:
    model = _tagger(0.3)
    sentences = [["New", "York"]] * 2000
    batch = _batch(model, sentences)
    torch.manual_seed(0)
    inputs, chars = model.lower(batch["inputs"], batch["chars"])
    plain, lowered = batch["inputs"][0].tolist(), model.word_ids(["new", "york"])
    rows = [row.tolist() for row in inputs]
    assert all(row in (plain, lowered) for row in rows)
    share = sum(row == lowered for row in rows) / len(rows)
    assert abs(share - 0.3) < 0.04
    char_lowered = [bool((chars[i] != batch["chars"][i]).any()) for i in range(len(rows))]
    assert char_lowered == [row == lowered for row in rows]  # the same sentences


def test_only_training_batches_are_lowered() -> None:
    """With P 1 the training loss of a batch is the loss of its lower-cased text; in eval
    mode the text is read as written."""
    torch.manual_seed(0)
    model = _tagger(1.0)
    plain = _tagger(0.0)
    plain.load_state_dict(model.state_dict())
    sentences = [["New", "York", "is", "new"], ["Ønsket", "was", "énorme"]]
    batch = _batch(model, sentences)
    lowered = _batch(model, [[w.lower() for w in s] for s in sentences])
    torch.testing.assert_close(model.loss(batch), plain.loss(lowered))
    assert not torch.allclose(plain.loss(batch), plain.loss(lowered))
    model.eval()
    plain.eval()
    torch.testing.assert_close(model.loss(batch), plain.loss(batch))


def test_words_looked_up_in_lower_case_keep_their_ids() -> None:
    model = _tagger(1.0, lowercase=True)
    batch = _batch(model, SENTENCES)
    inputs, chars = model.lower(batch["inputs"], batch["chars"])
    assert model.lower.words is None
    assert inputs.tolist() == batch["inputs"].tolist()
    assert chars.tolist() != batch["chars"].tolist()
    # nothing of the case reaches the network: no module
    vocab = Vocab.build(["a"], min_freq=1)
    assert case_augment(0.5, vocab, None, lowercase=True) is None
    assert isinstance(case_augment(0.5, vocab, None, lowercase=False), LowerCase)
    assert case_augment(0.0, vocab, CHARS, lowercase=False) is None
    # derived from the vocabulary when the model is built: not among the saved weights
    assert not any(k.startswith("lower.") for k in model.state_dict())


def test_options() -> None:
    with pytest.raises(ConfigError, match="--case-augment lower-cases words"):
        Tagger(_config(case_augment=0.5, char_features=False), ["0", "1"], feature_size=3)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="--case-augment must be in"):
            ModelConfig(case_augment=bad)
    with pytest.raises(ConfigError, match="--case-augment is an option of --task tag"):
        RunConfig(task="classify", model=ModelConfig(case_augment=0.5))
