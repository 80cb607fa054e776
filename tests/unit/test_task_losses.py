"""The training losses of classify and tag: --label-smoothing, --focal-gamma, and the plain
validation loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.examples import Examples
from rnnkit.data.text import IGNORE_INDEX
from rnnkit.tasks.classify import Classification, Classifier, focal_loss
from rnnkit.tasks.classify import _metrics as classify_metrics
from rnnkit.tasks.tag import Tagger

D, C = 3, 4  # features per step, classes


def _config(**fields) -> ModelConfig:
    return ModelConfig(cell="lstm", num_layers=1, hidden_size=8, dropout=0.0, **fields)


def _smoothed(log_p: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-entropy (N, C), (N,) against (1 - eps) one-hot + eps / C."""
    true = log_p.gather(1, targets[:, None]).squeeze(1)  # (N,)
    return -((1 - eps) * true + eps * log_p.mean(dim=1)).mean()


def test_classify_trains_against_smoothed_targets_and_validates_plain() -> None:
    torch.manual_seed(0)
    model = Classifier(_config(pooling="max", label_smoothing=0.2), list("abcd"), feature_size=D)
    x, lengths = torch.randn(5, 6, D), torch.tensor([6, 2, 4, 1, 3])
    targets = torch.tensor([0, 3, 1, 1, 2])
    batch = {"inputs": x, "lengths": lengths, "targets": targets}
    loss = Classification().loss(model.train(), batch, None, torch.device("cpu")).loss
    log_p = model(x, lengths).log_softmax(-1)  # (B, C)
    torch.testing.assert_close(loss, _smoothed(log_p, targets, 0.2))
    assert not torch.allclose(loss, _smoothed(log_p, targets, 0.0))
    examples = Examples(lengths=lengths.numpy(), x=x.numpy(), y=targets.tolist())
    val = classify_metrics(model, examples, list("abcd"), batch_size=2)["loss"]
    assert val == pytest.approx(float(_smoothed(log_p.detach(), targets, 0.0)), rel=1e-5)


def test_tag_smooths_the_softmax_at_real_steps_in_training_only() -> None:
    torch.manual_seed(0)
    model = Tagger(_config(label_smoothing=0.3), list("abcd"), feature_size=D)
    x, lengths = torch.randn(3, 5, D), torch.tensor([5, 2, 4])
    targets = torch.randint(C, (3, 5))
    real = torch.arange(5)[None, :] < lengths[:, None]  # (B, T)
    targets[~real] = IGNORE_INDEX
    batch = {"inputs": x, "lengths": lengths, "targets": targets}
    log_p = model(x, lengths).log_softmax(-1)[real]  # (N, C): the real steps only
    torch.testing.assert_close(model.train().loss(batch), _smoothed(log_p, targets[real], 0.3))
    torch.testing.assert_close(model.eval().loss(batch), _smoothed(log_p, targets[real], 0.0))


def test_label_smoothing_is_refused_with_a_crf_and_outside_its_tasks() -> None:
    with pytest.raises(ConfigError, match="--crf"):
        _config(crf=True, label_smoothing=0.1)
    with pytest.raises(ConfigError, match="classify / tag / seq2seq / condgen"):
        RunConfig(task="lm", model=_config(label_smoothing=0.1))
    for task in ("classify", "tag"):
        assert RunConfig(task=task, model=_config(label_smoothing=0.1)).model.label_smoothing
    assert _config(crf=True).label_smoothing == 0.0  # a CRF alone is fine


def _focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float, w: torch.Tensor):
    """The focal loss written out item by item from the softmax's probabilities."""
    terms, total = [], 0.0
    for row, y in zip(logits.softmax(-1), targets.tolist(), strict=True):
        p = float(row[y])
        terms.append(-float(w[y]) * (1 - p) ** gamma * math.log(p))
        total += float(w[y])
    return sum(terms) / total


def test_focal_loss_weighs_each_item_by_how_far_it_is_from_certain() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(7, C) * 2, torch.tensor([0, 3, 1, 1, 2, 0, 3])
    weight = torch.tensor([1.0, 0.5, 2.0, 3.0])
    for gamma in (0.5, 1.0, 2.0):
        got = float(focal_loss(logits, targets, gamma, weight))
        assert got == pytest.approx(_focal(logits, targets, gamma, weight), rel=1e-5)
    plain = F.cross_entropy(logits, targets, weight=weight)
    torch.testing.assert_close(focal_loss(logits, targets, 0.0, weight), plain)
    # One item by hand: logits (2, 0, 0), class 0, p = e^2 / (e^2 + 2) = 0.786986.
    one = focal_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]), 2.0, torch.ones(3))
    assert float(one) == pytest.approx(0.213014**2 * -math.log(0.786986), rel=1e-4)
    # An item learnt to certainty (p = 1 in float32) gives no loss and a finite gradient.
    sure = torch.tensor([[100.0, 0.0], [0.0, 1.0]], requires_grad=True)
    focal_loss(sure, torch.tensor([0, 0]), 0.5, torch.ones(2)).backward()
    assert torch.isfinite(sure.grad).all() and sure.grad[0].abs().max() < 1e-6


def test_classify_trains_on_the_focal_loss_and_validates_plain() -> None:
    torch.manual_seed(0)
    model = Classifier(_config(pooling="max", focal_gamma=2.0), list("abcd"), feature_size=D)
    model.class_weight.copy_(torch.tensor([1.0, 0.5, 2.0, 3.0]))  # as --class-weights sets it
    x, lengths = torch.randn(5, 6, D), torch.tensor([6, 2, 4, 1, 3])
    targets = torch.tensor([0, 3, 1, 1, 2])
    batch = {"inputs": x, "lengths": lengths, "targets": targets}
    step = Classification().loss(model.train(), batch, None, torch.device("cpu"))
    logits = model(x, lengths).detach()  # (B, C); no dropout at 0.0
    assert float(step.loss.detach()) == pytest.approx(
        _focal(logits, targets, 2.0, model.class_weight)
    )
    assert step.units == pytest.approx(1.0 + 3.0 + 0.5 + 0.5 + 2.0)
    examples = Examples(lengths=lengths.numpy(), x=x.numpy(), y=targets.tolist())
    val = classify_metrics(model, examples, list("abcd"), batch_size=2)["loss"]
    plain = F.cross_entropy(logits, targets)  # unweighted, as evaluation reads it
    assert val == pytest.approx(float(plain), rel=1e-5)


@pytest.mark.parametrize("gamma", [-0.5, float("nan"), float("inf")])
def test_focal_gamma_must_be_a_number_of_0_or_more(gamma: float) -> None:
    with pytest.raises(ConfigError, match="--focal-gamma must be 0 or more"):
        _config(focal_gamma=gamma)


def test_focal_gamma_is_refused_with_label_smoothing_and_outside_classify() -> None:
    with pytest.raises(ConfigError, match="--focal-gamma and --label-smoothing"):
        _config(focal_gamma=1.0, label_smoothing=0.1)
    for task in ("lm", "tag", "seq2seq", "condgen"):
        with pytest.raises(ConfigError, match="classify"):
            RunConfig(task=task, model=_config(focal_gamma=1.0))
    assert RunConfig(task="classify", model=_config(focal_gamma=1.0)).model.focal_gamma == 1.0
