"""--outside-bias of the tagger: decoding with a constant taken off the O tag's score (Minkov et
al. 2006), which trades precision for recall; training and the loss are unchanged."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.config import ConfigError, EvalConfig, ModelConfig, PredictConfig, RunConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.crf import LinearChainCRF
from rnnkit.tasks.tag import Tagger, Tagging

TAGS = ["B-x", "I-x", "O"]  # O last, so that code which assumes O is tag 0 fails
WORDS = Vocab.build(["a", "b", "c", "d", "e"])


def _tagger(crf: bool, bias: float, tags: list[str] = TAGS) -> Tagger:
    torch.manual_seed(0)
    config = ModelConfig(
        cell="lstm", hidden_size=8, embedding_size=4, dropout=0.0, crf=crf, outside_bias=bias
    )
    model = Tagger(config, tags, vocab=WORDS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # scores of a few units, so that a bias of 1-3 changes some tags
        if "O" in tags:
            model.head.bias[tags.index("O")] += 3.0  # O the most common tag, as in real data
    return model


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    lengths = torch.tensor([5, 3, 4, 1, 5, 2])
    return {"inputs": torch.randint(2, len(WORDS), (6, 5)), "lengths": lengths}


def _path_score(emissions: torch.Tensor, crf: LinearChainCRF, path: tuple[int, ...]) -> float:
    """The CRF score of one path over emissions (n, C), constraints included."""
    tags = torch.tensor(path)[None]  # (1, n)
    with torch.no_grad():
        return float(crf.score(emissions[None], tags, torch.tensor([len(path)])))


def _lowered(emissions: torch.Tensor, bias: float) -> torch.Tensor:
    out = emissions.clone()
    out[..., TAGS.index("O")] -= bias
    return out


@pytest.mark.parametrize("bias", [0.0, 1.5, -1.0])
def test_crf_decodes_the_best_path_under_the_lowered_o_scores(bias: float) -> None:
    model, batch = _tagger(True, bias), _batch()
    paths, probs = model.decode(batch)
    with torch.no_grad():
        emissions = _lowered(model.scores(batch), bias)  # (B, T, C)
    for row, n in enumerate(batch["lengths"].tolist()):
        scores = {
            path: _path_score(emissions[row, :n], model.crf, path)
            for path in itertools.product(range(len(TAGS)), repeat=n)
        }
        best = max(scores, key=scores.get)
        assert paths[row] == list(best)
        # each chosen tag's probability is its marginal: the mass of every path through it
        z = sum(math.exp(score) for score in scores.values())
        marginals = [
            sum(math.exp(score) for path, score in scores.items() if path[t] == best[t]) / z
            for t in range(n)
        ]
        assert probs[row] == pytest.approx(marginals, rel=1e-4)
    assert model.decode(batch, probabilities=False) == (paths, [])  # evaluation's decoding


def test_softmax_takes_the_argmax_of_the_lowered_o_scores() -> None:
    model, batch = _tagger(False, 2.0), _batch()
    paths, probs = model.decode(batch)
    with torch.no_grad():
        lowered = _lowered(model.scores(batch), 2.0).softmax(-1)  # (B, T, C)
    for row, n in enumerate(batch["lengths"].tolist()):
        assert paths[row] == lowered[row, :n].argmax(-1).tolist()
        torch.testing.assert_close(torch.tensor(probs[row]), lowered[row, :n].max(-1).values)
    assert model.decode(batch, probabilities=False) == (paths, [])


@pytest.mark.parametrize("crf", [True, False])
def test_a_larger_bias_tags_fewer_o_and_leaves_the_loss_alone(crf: bool) -> None:
    batch = _batch()
    batch["targets"] = torch.randint(len(TAGS), batch["inputs"].shape)
    outside = [sum(p.count(2) for p in _tagger(crf, b).decode(batch)[0]) for b in (0, 1, 3)]
    assert outside[0] > outside[1] > outside[2]
    plain, lowered = _tagger(crf, 0.0).train(), _tagger(crf, 3.0).train()
    torch.testing.assert_close(plain.loss(batch), lowered.loss(batch))


def test_tags_without_o_decode_plainly() -> None:
    tags = ["NN", "VB", "DT"]
    batch = _batch()
    plain = _tagger(True, 0.0, tags).decode(batch)
    assert _tagger(True, 2.0, tags).decode(batch) == plain


def test_eval_and_predict_set_their_own_bias() -> None:
    model, task = _tagger(True, 0.0), Tagging()
    text = "a b c d e\nd c\ne e a b\n"
    cpu = torch.device("cpu")

    def tags(cfg: PredictConfig) -> list[list[str]]:
        return [m["tags"] for _, m in task.predict(model, text, "<stdin>", cfg, cpu)]

    plain = tags(PredictConfig())
    lowered = tags(PredictConfig(outside_bias=3.0))
    assert model.outside_bias == 3.0
    assert sum(t.count("O") for t in lowered) < sum(t.count("O") for t in plain)
    assert lowered == [[TAGS[i] for i in p] for p in model.decode(_encoded(model, text))[0]]
    assert tags(PredictConfig(outside_bias=0.0)) == plain


def _encoded(model: Tagger, text: str) -> dict[str, torch.Tensor]:
    sentences = [line.split() for line in text.splitlines()]
    n = max(len(s) for s in sentences)
    ids = [model.word_ids(s) + [0] * (n - len(s)) for s in sentences]
    return {"inputs": torch.tensor(ids), "lengths": torch.tensor([len(s) for s in sentences])}


def test_refused_on_features_other_tasks_and_non_numbers(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"\.npz labels have none"):
        Tagger(ModelConfig(hidden_size=4, outside_bias=1.0), ["0", "1"], feature_size=3)
    features = Tagger(ModelConfig(hidden_size=4), ["0", "1"], feature_size=3)
    with pytest.raises(ConfigError, match=r"\.npz labels have none"):
        list(
            Tagging().predict_file(
                features, tmp_path / "x.npz", PredictConfig(outside_bias=1.0), torch.device("cpu")
            )
        )
    with pytest.raises(ConfigError, match="--outside-bias is an option of --task tag"):
        RunConfig(task="classify", model=ModelConfig(outside_bias=1.0))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--outside-bias must be a number"):
            ModelConfig(outside_bias=bad)
        with pytest.raises(ConfigError, match="--outside-bias must be a number"):
            EvalConfig(outside_bias=bad)
        with pytest.raises(ConfigError, match="--outside-bias must be a number"):
            PredictConfig(outside_bias=bad)
    assert RunConfig(task="tag", model=ModelConfig(outside_bias=-0.5)).model.outside_bias == -0.5
