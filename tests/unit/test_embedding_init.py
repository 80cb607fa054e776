"""--embedding-init of classify and tag on text: the word (and tag's character) embeddings
start as U(-sqrt(3/E), sqrt(3/E)) instead of nn.Embedding's N(0, 1)."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.classify import Classifier
from rnnkit.tasks.tag import Tagger, Tagging

WORDS = Vocab.build([f"w{i}" for i in range(400)], min_freq=1)
CHARS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def _tagger(init: str, seed: int = 0) -> Tagger:
    torch.manual_seed(seed)
    config = ModelConfig(
        cell="lstm", hidden_size=6, embedding_size=50, char_features=True, embedding_init=init
    )
    return Tagger(config, ["O", "B-x", "I-x"], vocab=WORDS, chars=CHARS)


def test_uniform_rows_have_variance_one_over_e_and_a_zero_padding_row() -> None:
    model = _tagger("uniform")
    for embedding in (model.encoder.embedding, model.encoder.chars.embedding):
        weight, width = embedding.weight.detach(), embedding.embedding_dim
        bound = math.sqrt(3.0 / width)
        rows = weight[1:]  # (V - 1, E) every row but padding
        assert rows.abs().max() <= bound
        assert rows.abs().max() > 0.95 * bound  # spread over the whole interval
        assert rows.var().item() == pytest.approx(1.0 / width, rel=0.1)
        assert not weight[embedding.padding_idx].any()
    normal = _tagger("normal").encoder.embedding.weight.detach()[1:]
    assert normal.var().item() == pytest.approx(1.0, rel=0.1)  # torch's default, unchanged


def test_uniform_trains_and_saves_like_normal() -> None:
    model = _tagger("uniform")
    batch = {
        "inputs": torch.tensor([[5, 6, 7], [8, 9, 0]]),
        "lengths": torch.tensor([3, 2]),
        "targets": torch.tensor([[0, 1, 2], [1, 0, -100]]),
        "chars": torch.randint(1, len(CHARS) + 2, (2, 3, 4)),
        "word_lengths": torch.tensor([[4, 4, 4], [4, 4, 0]]),
    }
    model.train().loss(batch).backward()
    assert model.encoder.embedding.weight.grad[5].abs().sum() > 0
    assert set(model.state_dict()) == set(_tagger("normal").state_dict())


def test_classify_takes_it_and_features_and_lm_refuse_it() -> None:
    torch.manual_seed(0)
    config = ModelConfig(cell="lstm", hidden_size=6, embedding_size=50, embedding_init="uniform")
    classifier = Classifier(config, ["a", "b"], vocab=WORDS)
    assert classifier.encoder.embedding.weight.abs().max() <= math.sqrt(3.0 / 50)
    with pytest.raises(ConfigError, match="feature inputs have none"):
        Tagger(ModelConfig(hidden_size=4, embedding_init="uniform"), ["0", "1"], feature_size=3)
    with pytest.raises(ConfigError, match="--embedding-init is an option of --task"):
        RunConfig(task="lm", model=ModelConfig(embedding_init="uniform"))
    with pytest.raises(ConfigError, match="--embedding-init must be normal or uniform"):
        ModelConfig(embedding_init="xavier")


def test_the_tag_preset_starts_text_uniform_and_features_normal() -> None:
    task = Tagging()
    assert task.preset("train.txt")["model"]["embedding_init"] == "uniform"
    assert task.preset("frames.npz")["model"]["embedding_init"] == "normal"
