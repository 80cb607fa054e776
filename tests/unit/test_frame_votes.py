"""--frame-votes of tag and classify on feature sequences: a classifier of each frame alone
whose log-probabilities are averaged over the frames so far (tag) or over all the real frames
(classify), trained on its own loss beside the recurrent network and averaged with it at
prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.classify import Classification, Classifier
from rnnkit.tasks.frame_votes import FrameVotes
from rnnkit.tasks.tag import Tagger, Tagging

D, C = 3, 4  # features per frame, labels


def _config(**fields) -> ModelConfig:
    fields = {"cell": "lstm", "num_layers": 1, "hidden_size": 8, "dropout": 0.0} | fields
    return ModelConfig(bidirectional=False, **fields)


def _tagger(seed: int = 0, **fields) -> Tagger:
    torch.manual_seed(seed)
    model = Tagger(_config(frame_votes=True, **fields), list("abcd"), feature_size=D)
    model.encoder.set_feature_statistics(np.full(D, 1.0, np.float32), np.full(D, 2.0, np.float32))
    return model


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 4])
    targets = torch.randint(0, C, (3, 5), generator=g)
    targets[torch.arange(5)[None, :] >= lengths[:, None]] = -100  # padding is ignored
    return {"inputs": torch.randn(3, 5, D, generator=g), "lengths": lengths, "targets": targets}


def test_the_score_at_step_t_is_the_mean_vote_of_frames_1_to_t() -> None:
    torch.manual_seed(0)
    votes = FrameVotes(D, 8, C, dropout=0.0)
    x = torch.randn(2, 6, D)
    scores = votes(x)  # (B, T, C)
    for t in range(6):
        own = torch.stack([votes.net(x[:, u]).log_softmax(-1) for u in range(t + 1)]).mean(0)
        torch.testing.assert_close(scores[:, t], own)


def test_votes_are_causal_and_ignore_padding() -> None:
    torch.manual_seed(1)
    votes = FrameVotes(D, 8, C, dropout=0.0)
    x = torch.randn(1, 6, D)
    later = x.clone()
    later[:, 3:] = torch.randn(1, 3, D) * 5  # other frames after step 3, or other padding
    torch.testing.assert_close(votes(x)[:, :3], votes(later)[:, :3])
    assert not torch.allclose(votes(x)[:, 3:], votes(later)[:, 3:])


def test_the_tagger_predicts_the_mean_of_the_network_and_the_votes() -> None:
    model = _tagger(2).eval()
    batch = _batch(2)
    x, lengths = batch["inputs"], batch["lengths"]
    network = model._scores(x, lengths, None, None).softmax(-1)  # (B, T, C)
    votes = model.votes((x - 1.0) / 2.0).softmax(-1)  # standardised by the model's statistics
    torch.testing.assert_close(model(x, lengths).softmax(-1), (network + votes) / 2)
    assert not torch.allclose(model(x, lengths).softmax(-1), network, atol=1e-4)


def test_the_votes_learn_on_their_own_loss() -> None:
    """The training loss is the mean of the network's and the votes' cross-entropies, so the
    votes' gradient is their own loss's (over 2), not that of the averaged prediction."""
    model = _tagger(3).train()
    batch = _batch(3)
    x, lengths, targets = batch["inputs"], batch["lengths"], batch["targets"]
    loss = Tagging().loss(model, batch, None, torch.device("cpu")).loss
    network = F.cross_entropy(model._scores(x, lengths, None, None).transpose(1, 2), targets)
    own = F.cross_entropy(model.votes((x - 1.0) / 2.0).transpose(1, 2), targets)
    torch.testing.assert_close(loss, (network + own) / 2)
    weight = model.votes.net[0].weight
    (got,) = torch.autograd.grad(loss, weight)
    (alone,) = torch.autograd.grad(own / 2, weight)
    torch.testing.assert_close(got, alone)
    joint = F.nll_loss(model(x, lengths).transpose(1, 2), targets)
    (other,) = torch.autograd.grad(joint, weight)
    assert not torch.allclose(got, other, atol=1e-6)


def test_an_ensemble_has_one_set_of_votes_averaged_with_every_member() -> None:
    model = _tagger(4, ensemble=2).eval()
    assert model.votes is not None and model.others[0].votes is None
    assert any(n.startswith("votes.") for n in model.state_dict())
    x, lengths = _batch(4)["inputs"], _batch(4)["lengths"]
    parts = [m._scores(x, lengths, None, None).softmax(-1) for m in model.members()]
    parts.append(model.votes((x - 1.0) / 2.0).softmax(-1))
    torch.testing.assert_close(model(x, lengths).softmax(-1), torch.stack(parts).mean(0))


def test_without_the_flag_the_tagger_has_no_votes() -> None:
    torch.manual_seed(0)
    model = Tagger(_config(), list("abcd"), feature_size=D)
    assert model.votes is None
    assert not any(n.startswith("votes.") for n in model.state_dict())


def test_frame_votes_are_refused_on_text_with_a_crf_and_by_other_tasks() -> None:
    with pytest.raises(ConfigError, match=r"--frame-votes classifies frames of \.npz"):
        Tagger(_config(frame_votes=True), ["O", "B-x"], vocab=Vocab.build("ab"))
    with pytest.raises(ConfigError, match="pass --no-frame-votes with --crf"):
        Tagger(_config(frame_votes=True, crf=True), list("ab"), feature_size=D)
    with pytest.raises(ConfigError, match="--frame-votes is an option of --task classify / tag"):
        RunConfig(task="seq2seq", model=_config(frame_votes=True))
    for task in ("classify", "tag"):
        assert RunConfig(task=task, model=_config(frame_votes=True)).model.frame_votes


def _classifier(seed: int = 0, **fields) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(_config(frame_votes=True, **fields), list("abcd"), feature_size=D)
    model.encoder.set_feature_statistics(np.full(D, 1.0, np.float32), np.full(D, 2.0, np.float32))
    return model


def test_a_classifier_averages_in_the_mean_vote_of_each_sequence_s_real_frames() -> None:
    model = _classifier(5).eval()
    batch = _batch(5)
    x, lengths = batch["inputs"], batch["lengths"]
    padded = x.clone()
    padded[torch.arange(5)[None, :] >= lengths[:, None]] = 7.0  # other padding
    network = model._logits(x, lengths).softmax(-1)  # (B, C)
    votes = torch.stack(
        [
            model.votes.net((x[i, :n] - 1.0) / 2.0).log_softmax(-1).mean(0)
            for i, n in enumerate(lengths.tolist())
        ]
    ).softmax(-1)  # (B, C): each sequence's mean vote over its real frames
    torch.testing.assert_close(model(x, lengths).softmax(-1), (network + votes) / 2)
    torch.testing.assert_close(model(padded, lengths), model(x, lengths))


def test_a_classifier_s_votes_learn_on_their_own_loss() -> None:
    model = _classifier(6).train()
    batch = _batch(6)
    x, lengths = batch["inputs"], batch["lengths"]
    batch["targets"] = torch.tensor([0, 3, 1])
    loss = Classification().loss(model, batch, None, torch.device("cpu")).loss
    network, votes = model.member_logits(x, lengths)  # (B, C) each
    own = F.cross_entropy(votes, batch["targets"])
    torch.testing.assert_close(loss, (F.cross_entropy(network, batch["targets"]) + own) / 2)
    weight = model.votes.net[0].weight
    (got,) = torch.autograd.grad(loss, weight)
    (alone,) = torch.autograd.grad(own / 2, weight)
    torch.testing.assert_close(got, alone)


def test_a_classifier_of_text_refuses_frame_votes() -> None:
    with pytest.raises(ConfigError, match=r"--frame-votes classifies frames of \.npz"):
        Classifier(_config(frame_votes=True), list("ab"), vocab=Vocab.build("ab"))
    assert _classifier(ensemble=2).others[0].votes is None
