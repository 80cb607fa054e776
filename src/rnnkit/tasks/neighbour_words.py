r"""``--lm-weight G`` of ``tag`` on text: the tagger's states also predict the neighbouring words.

Rei (2017), "Semi-supervised Multitask Learning for Sequence Labeling": beside the tags, the
forward states :math:`\overrightarrow{h}_t` predict the next word and the backward states
:math:`\overleftarrow{h}_t` the previous one, each through its own small layer,

.. math::

    p(w_{t+1} \mid w_{\le t}) = \mathrm{softmax}(V_f \tanh(U_f \overrightarrow{h}_t)), \qquad
    p(w_{t-1} \mid w_{\ge t}) = \mathrm{softmax}(V_b \tanh(U_b \overleftarrow{h}_t)),

and training minimises the tagger's loss plus G times the cross-entropy of both directions'
predictions, summed and divided by the real steps (the tagger's loss is a mean per step). Each
direction has read only the words on its own side of the one it predicts, so it cannot copy
it. That holds for one bidirectional layer only: above it, a forward state has read the
following words through the first layer's backward states, so ``--lm-weight`` with
``--bidirectional`` needs ``--num-layers 1``. Every word of the training text, not only the
few inside entities, then teaches the states something, which on a small tagged corpus acts
as a regulariser. A unidirectional tagger predicts the next word only.

The loss exists in training only: evaluation, the validation loss, decoding and prediction
are the tagger's alone. The targets are the words' vocabulary ids (``<unk>`` included, so the
states learn which contexts hold rare words), never the padding.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.errors import ConfigError

NO_WORDS = "--lm-weight predicts the words of text: .npz feature sequences have none"
"""The refusal of ``--lm-weight`` for a tagger of feature sequences."""

SEEN_AHEAD = (
    "--lm-weight predicts each word from the states on one side of it, but with "
    "--bidirectional and --num-layers {layers} the forward states of the layers above the "
    "first have read the following words too: pass --lm-weight 0, --num-layers 1 or "
    "--no-bidirectional"
)
"""The refusal of ``--lm-weight`` for a stack of bidirectional layers."""

SIZE = 50
"""Width of each direction's tanh layer (Rei 2017 use 50)."""


class NeighbourWords(nn.Module):
    """The next word from the forward states, the previous word from the backward states.

    Args:
        hidden_size: H, the width of one direction's states.
        vocab_size: V, the words predicted (the tagger's vocabulary).
        bidirectional: whether the states are ``[forward; backward]`` (B, T, 2H), or
            forward only (B, T, H).

    Shapes:
        loss: states (B, T, dirs·H), words (B, T) int64 with 0 as padding -> scalar.
    """

    def __init__(self, hidden_size: int, vocab_size: int, *, bidirectional: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size

        def head() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(hidden_size, SIZE), nn.Tanh(), nn.Linear(SIZE, vocab_size)
            )

        self.next_word = head()
        self.previous_word = head() if bidirectional else None

    def loss(self, states: Tensor, words: Tensor) -> Tensor:
        """The cross-entropy of the next word (forward states) plus that of the previous word
        (backward states), summed over the pairs of real neighbouring steps and divided by the
        real steps, as the tagger's loss is a mean per real step (so that data-parallel ranks
        weigh it by their steps as they weigh that)."""
        H = self.hidden_size
        real = words[:, 1:] != 0  # (B, T-1): steps t and t+1 are both real
        forward = states[:, :-1, :H][real]  # (N, H): step t predicts word t+1
        loss = F.cross_entropy(self.next_word(forward).float(), words[:, 1:][real], reduction="sum")
        if self.previous_word is not None:
            backward = states[:, 1:, H:][real]  # (N, H): step t+1 predicts word t
            loss = loss + F.cross_entropy(
                self.previous_word(backward).float(), words[:, :-1][real], reduction="sum"
            )
        return loss / (words != 0).sum().clamp(min=1)


def neighbour_words(config: ModelConfig, vocab_size: int | None) -> NeighbourWords | None:
    """The tagger's word predictor if ``config.lm_weight`` is above 0, else None.

    Raises:
        ConfigError: ``--lm-weight`` on feature sequences (``vocab_size`` None), or over
            more than one bidirectional layer.
    """
    if not config.lm_weight:
        return None
    if vocab_size is None:
        raise ConfigError(NO_WORDS)
    if config.bidirectional and config.num_layers > 1:
        raise ConfigError(SEEN_AHEAD.format(layers=config.num_layers))
    return NeighbourWords(config.hidden_size, vocab_size, bidirectional=config.bidirectional)
