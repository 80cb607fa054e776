"""--lm-weight G of tag on text: in training, the forward states predict the next word and the
backward states the previous one (Rei 2017), G times that loss added to the tagger's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rnnkit.config import ConfigError, ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.neighbour_words import NeighbourWords, neighbour_words
from rnnkit.tasks.tag import Tagger

TAGS = ["O", "B-loc", "I-loc", "B-per"]
WORDS = ["paris", "rome", "sam", "a", "is", "in"]


def _tagger(seed: int = 0, **fields) -> Tagger:
    torch.manual_seed(seed)
    fields = {
        "num_layers": 1,
        "hidden_size": 6,
        "dropout": 0.0,
        "bidirectional": True,
        "lm_weight": 0.3,
    } | fields
    config = ModelConfig(embedding_size=5, crf=True, **fields)
    return Tagger(config, TAGS, vocab=Vocab.build(WORDS, min_freq=1), lowercase=True)


def _batch(model: Tagger, sentences: list[list[str]]) -> dict[str, torch.Tensor]:
    examples = model.encode_sentences(sentences)
    examples.y = [[i % len(TAGS) for i in range(len(s))] for s in sentences]
    return examples.batch(np.arange(len(sentences)))


def _by_hand(heads: NeighbourWords, states: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Each pair of real neighbours (t, t + 1) one at a time: the forward half of step t
    scores word t + 1, the backward half of step t + 1 scores word t; their sum over the
    real steps."""
    H = heads.hidden_size
    forward, backward = [], []
    for b in range(words.shape[0]):
        n = int((words[b] != 0).sum())
        for t in range(n - 1):
            logits = heads.next_word(states[b, t, :H])
            forward.append(-logits.log_softmax(-1)[words[b, t + 1]])
            if heads.previous_word is not None:
                logits = heads.previous_word(states[b, t + 1, H:])
                backward.append(-logits.log_softmax(-1)[words[b, t]])
    return torch.stack(forward + backward).sum() / (words != 0).sum()  # per real step


@pytest.mark.parametrize("bidirectional", [True, False])
def test_each_direction_scores_the_word_on_its_far_side(bidirectional: bool) -> None:
    torch.manual_seed(0)
    heads = NeighbourWords(3, 9, bidirectional=bidirectional)
    dirs = 2 if bidirectional else 1
    words = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 0, 0, 0], [1, 2, 3, 0, 0]])  # 0 pads
    states = torch.randn(3, 5, dirs * 3)
    assert (heads.previous_word is None) == (not bidirectional)
    expected = _by_hand(heads, states, words)
    torch.testing.assert_close(heads.loss(states, words), expected)
    # padded steps' states and the pad's neighbours count for nothing
    noisy = states.clone()
    noisy[1, 2:], noisy[2, 3:] = 99.0, -99.0
    torch.testing.assert_close(heads.loss(noisy, words), expected)


def test_the_encoders_forward_half_reads_only_the_words_before() -> None:
    # NeighbourWords takes states[..., :H] as the forward direction: a later word must not
    # reach it (else the next word could be read off the state that predicts it), and must
    # reach the backward half.
    model = _tagger().eval()
    one, two = (
        _batch(model, [["sam", "is", "in", "paris"]]),
        _batch(model, [["sam", "is", "in", "rome"]]),
    )
    a, b = model._call(model.encoder, one), model._call(model.encoder, two)  # (1, 4, 2H)
    H = model.config.hidden_size
    torch.testing.assert_close(a[:, :3, :H], b[:, :3, :H])
    assert not torch.allclose(a[:, :3, H:], b[:, :3, H:])


def test_training_adds_g_times_the_words_loss_and_evaluation_does_not() -> None:
    model = _tagger()
    batch = _batch(model, [["Sam", "is", "in", "Paris"], ["rome", "a"], ["sam", "xyz", "is"]])
    plain = _tagger(lm_weight=0.0)
    plain.load_state_dict(model.state_dict(), strict=False)  # the same tagger, no heads
    states = model._call(model.encoder, batch)
    words = model.neighbours.loss(states, batch["inputs"])
    model.train(), plain.train()
    assert float(words.detach()) > 0.5
    torch.testing.assert_close(model.loss(batch), plain.loss(batch) + 0.3 * words)
    model.eval(), plain.eval()
    torch.testing.assert_close(model.loss(batch), plain.loss(batch))
    # and its gradient reaches the encoder, which it is there to train
    model.train()
    model.zero_grad()
    (model.loss(batch) - plain.loss(batch).detach()).backward()
    assert model.encoder.embedding.weight.grad.abs().sum() > 0
    assert model.neighbours.previous_word[0].weight.grad.abs().sum() > 0


def test_a_few_steps_learn_the_neighbours() -> None:
    model = _tagger(lm_weight=1.0)
    batch = _batch(model, [["sam", "is", "in", "paris"]] * 4)
    states = model._call(model.encoder, batch)
    before = float(model.neighbours.loss(states, batch["inputs"]).detach())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    states = model._call(model.encoder, batch)
    after = float(model.neighbours.loss(states, batch["inputs"]).detach())
    assert after < 0.2 * before


def test_members_options_and_refusals() -> None:
    model = _tagger(ensemble=2)
    assert all(m.neighbours is not None for m in model.members())  # each member its own
    assert model.neighbours is not model.others[0].neighbours
    assert _tagger(lm_weight=0.0).neighbours is None
    assert _tagger(bidirectional=False).neighbours.previous_word is None
    config = ModelConfig(lm_weight=0.1)
    with pytest.raises(ConfigError, match="feature sequences have none"):
        neighbour_words(config, None)
    with pytest.raises(ConfigError, match="feature sequences have none"):
        Tagger(config, ["0", "1"], feature_size=3)
    with pytest.raises(ConfigError, match="--num-layers 2 the forward states"):
        _tagger(num_layers=2)
    assert _tagger(num_layers=2, bidirectional=False).neighbours.previous_word is None
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--lm-weight must be 0 or more"):
            dataclasses.replace(ModelConfig(), lm_weight=bad)
