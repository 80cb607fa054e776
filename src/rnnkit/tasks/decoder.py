"""What the generating tasks share (``seq2seq``, ``condgen``): token inputs, recurrent layers
by cell name, the decoder's state that beam search can reorder, texts as tokens and back, and
BLEU.

A decoder writes a sequence one token at a time: it reads ``<bos>`` first, then each token it
has written, and stops at ``<eos>``. Its state is a :class:`DecoderState`: the recurrent
layers' state and what every step reads besides (the encoder's outputs, or a condition), so
that :func:`rnnkit.sampling.beam_search_batch` can follow the surviving beams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

import rnnkit.layers as recurrent_layers
from rnnkit.config import ModelConfig
from rnnkit.data.text import IGNORE_INDEX, Level
from rnnkit.tasks.base import StepLoss
from rnnkit.tasks.lm import lm_loss

LAYER_CLASSES = {
    "rnn": "RNN",
    "gru": "GRU",
    "lstm": "LSTM",
    "mingru": "MinGRU",
    "minlstm": "MinLSTM",
}

State = Tensor | tuple[Tensor, Tensor]
"""The recurrent layers' state: h (L, B, H), or (h, c) for an LSTM."""


def recurrent_layer(config: ModelConfig, input_size: int, *, bidirectional: bool = False) -> Any:
    """The stack of ``config.num_layers`` layers of ``config.cell`` (batch first), with
    ``config.dropout`` between layers."""
    layer = getattr(recurrent_layers, LAYER_CLASSES[config.cell])
    options: dict[str, Any] = {"bidirectional": True} if bidirectional else {}
    return layer(
        input_size,
        config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout if config.num_layers > 1 else 0.0,
        batch_first=True,
        impl=config.impl,
        **options,
    )


class TokenEmbedding(nn.Module):
    """Token ids -> vectors: an ``nn.Embedding`` (``embedding.weight`` (V, E)), or one-hot
    vectors when ``embedding_size`` is 0.

    Shapes:
        tokens (...) int64 -> (..., E), or (..., V) one-hot
    """

    def __init__(self, num_tokens: int, embedding_size: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.embedding = nn.Embedding(num_tokens, embedding_size) if embedding_size else None
        self.output_size = embedding_size or num_tokens

    def forward(self, tokens: Tensor) -> Tensor:
        if self.embedding is not None:
            return self.embedding(tokens)  # (..., E)
        return F.one_hot(tokens, self.num_tokens).float()  # (..., V)


class DecoderState(NamedTuple):
    """A decoder's state between steps.

    Attributes:
        rnn: the recurrent layers' state, batch dimension 1 (torch's layout).
        context: what every step reads besides, batch dimension 0: the encoder's outputs
            (:class:`rnnkit.tasks.attention.Memory`), a condition vector (N, K), or None.
    """

    rnn: State
    context: Any = None

    def reorder(self, index: Tensor) -> DecoderState:
        """The state of the rows ``index`` (N',), in that order."""
        if isinstance(self.rnn, Tensor):
            rnn: State = self.rnn.index_select(1, index)  # (L, N', H)
        else:
            rnn = tuple(part.index_select(1, index) for part in self.rnn)  # 2 × (L, N', H)
        context = self.context
        if isinstance(context, Tensor):
            context = context.index_select(0, index)  # (N', ...)
        elif context is not None:
            context = context.reorder(index)
        return DecoderState(rnn, context)


token_loss = lm_loss
"""Cross-entropy in nats of every target token, skipping ``IGNORE_INDEX``: the language
model's loss (:func:`rnnkit.tasks.lm.lm_loss`), the same for any decoder's next-token logits."""


def real_steps(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of ``features`` at the real target steps, and those targets: features
    (B, T, F), targets (B, T) with ``IGNORE_INDEX`` padding -> (N, F), (N,), N real steps.

    A decoder's head (H -> V, the largest product of a step) and its softmax then skip the
    padded steps, which a padded batch of sentences of different lengths has many of.
    """
    flat = targets.reshape(-1)  # (B·T,)
    real = (flat != IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
    rows = features.reshape(-1, features.shape[-1]).index_select(0, real)  # (N, F)
    return rows, flat.index_select(0, real)


def real_token_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy in nats of ``logits`` (N, V) (computed in float32 whatever the
    autocast dtype) against ``targets`` (N,) from :func:`real_steps`, each target smoothed to
    (1 - ``label_smoothing``) one-hot + ``label_smoothing`` / V."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def token_step_loss(loss: Tensor, targets: Tensor) -> StepLoss:
    """A training step's loss over target tokens: ``loss`` the mean per real target token,
    targets (B, T) with ``IGNORE_INDEX`` padding. The step counts its tokens as the units a
    data-parallel run weighs each rank's share by."""
    count = int((targets != IGNORE_INDEX).sum())
    return StepLoss(loss, count, units=count)


def corpus_bleu(outputs: Sequence[str], references: Sequence[str], level: Level) -> float:
    """sacrebleu's corpus BLEU (0-100) of outputs against one reference each: over words
    (sacrebleu's default 13a tokenisation) at word level, over characters (its ``char``
    tokenisation) at char level, where items are often single words and have no word 4-grams.
    """
    import sacrebleu  # imported here: only the generating tasks need it

    tokenize = "char" if level == "char" else "13a"
    # force: word-level texts are tokenised on purpose (e.g. "i m ok ."), no warning needed
    bleu = sacrebleu.corpus_bleu(list(outputs), [list(references)], tokenize=tokenize, force=True)
    return float(bleu.score)


def decode_limit(max_length: int | None, longest: int) -> int:
    """The most tokens a decoded output may have: ``max_length``, or by default twice the
    longest training target (``longest`` tokens, ``<eos>`` not counted) with its ``<eos>``."""
    return max_length if max_length is not None else 2 * longest + 1
