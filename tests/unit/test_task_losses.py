"""The training losses of classify and tag: --label-smoothing, and the plain validation loss."""

from __future__ import annotations

import pytest
import torch

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.data.examples import Examples
from rnnkit.data.text import IGNORE_INDEX
from rnnkit.tasks.classify import Classification, Classifier
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
