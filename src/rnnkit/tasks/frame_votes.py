r"""``--frame-votes`` of ``tag`` and ``classify`` on feature sequences: each frame votes alone.

A small classifier reads each frame alone, with no recurrence, and gives its log-probabilities
of the C labels, :math:`v_t = \log \operatorname{softmax}(\mathrm{MLP}(x_t))`. The score at step
t is the mean of the votes so far,

.. math:: s_t = \frac{1}{t} \sum_{u \le t} v_u ,

so it is causal, whatever the recurrent network beside it reads. A tagger scores step t by
:math:`s_t`; a classifier scores a sequence of n real frames by :math:`s_n`, the mean vote of
them all. This is how GMM speaker recognition scores an utterance, by its mean log-likelihood
per frame (Reynolds, Quatieri and Dunn 2000), here trained end to end on the task's loss.

The model trains this classifier on its own loss, beside its recurrent network(s), and
predicts with the mean of their probabilities, as ``--ensemble`` does (``tasks/ensemble.py``).
The two make different errors: the network follows each recording's dynamics, the votes weigh
every frame's spectrum alike. On japanese_vowels, utterances recorded apart from the
training ones, their average is right more often than either (``config.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.errors import ConfigError
from rnnkit.layers.dropout import Dropout

NO_FRAMES = "--frame-votes classifies frames of .npz feature sequences: text has none"
"""The refusal of ``--frame-votes`` for a model of text (classify, tag)."""


class FrameVotes(nn.Module):
    """Per-frame MLP, D -> H -> H -> C (ReLU, dropout), its log-softmax averaged causally.

    Args:
        feature_size: D, features per frame (standardised by the caller).
        hidden_size: H, width of the two hidden layers.
        num_labels: C.
        dropout: dropout after each hidden layer, in [0, 1).

    Shapes:
        forward: x (B, T, D) float -> scores (B, T, C) fp32, the mean log-probability of the
        frames 1..t at step t. Padding after a sequence's end changes none of its real steps.
    """

    def __init__(self, feature_size: int, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_size, hidden_size),
            nn.ReLU(),
            Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """The running mean of the frames' log-probabilities: (B, T, D) -> (B, T, C)."""
        votes = self.net(x).float().log_softmax(-1)  # (B, T, C)
        frames = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=votes.dtype)  # (T,)
        return votes.cumsum(1) / frames[:, None]  # (B, T, C)


def frame_votes(
    config: ModelConfig, feature_size: int | None, num_labels: int
) -> FrameVotes | None:
    """The model's votes if ``config.frame_votes`` (H = ``hidden_size``, the model's dropout),
    else None.

    Raises:
        ConfigError: ``--frame-votes`` on text (``feature_size`` None).
    """
    if not config.frame_votes:
        return None
    if feature_size is None:
        raise ConfigError(NO_FRAMES)
    return FrameVotes(feature_size, config.hidden_size, num_labels, config.dropout)
