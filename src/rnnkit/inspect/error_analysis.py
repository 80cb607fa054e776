r"""Error analysis against an n-gram baseline (Karpathy, Johnson & Fei-Fei 2015, section 4.4).

A prediction is an *error* when the model gave the token that came next a probability below
0.5. Each predicted token gets one kind, the first that applies:

    char level                                       word level
    digit          a digit                           eos          the end of a line
    punctuation    not a letter, digit, ``_`` or     punctuation  a token without letters or
                   whitespace                                     digits
    whitespace     a space, tab or line break        digit        a token with a digit
    rare_word      part of a word seen at most       rare_word    seen at most ``rare`` times
                   ``rare`` times in training                     in training
    after_newline  first letter of a line            word         any other word
    after_space    first letter after a space
    inside_word    a letter after a letter
    after_punct    first letter after punctuation

Beside the model's errors are those of a Witten–Bell n-gram model of the model's own training
text (:mod:`rnnkit.inspect.ngram`), so each kind shows which mistakes the recurrent network
avoids that the counts make (``ngram_only``) and the reverse (``rnn_only``). Predictions of a
token outside the vocabulary (``<unk>``) are left out and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.text import Level
from rnnkit.data.vocab import EOS, Vocab
from rnnkit.inspect.activations import trace
from rnnkit.inspect.ngram import ngram_probabilities
from rnnkit.inspect.text import EncodedText

THRESHOLD = 0.5
RARE = 5
CHAR_KINDS = (
    "digit",
    "punctuation",
    "whitespace",
    "rare_word",
    "after_newline",
    "after_space",
    "inside_word",
    "after_punct",
)
WORD_KINDS = ("eos", "punctuation", "digit", "rare_word", "word")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class KindErrors:
    """Counts for one kind of prediction: how many there were, the model's and the n-gram's
    errors, those both made, and those only one of them made."""

    kind: str
    count: int
    rnn_errors: int
    ngram_errors: int
    both: int
    rnn_only: int
    ngram_only: int


@dataclass(frozen=True)
class ErrorAnalysis:
    """The result of :func:`error_analysis`: per kind and in total, and the two losses."""

    kinds: list[KindErrors]
    total: KindErrors
    rnn_loss: float
    ngram_loss: float
    order: int
    unknown_targets: int

    def to_dict(self) -> dict[str, Any]:
        """``kinds`` (list), ``total``, ``rnn_loss`` and ``ngram_loss`` (nats per token),
        ``order``, ``threshold``, ``unknown_targets``."""
        return {
            "kinds": [asdict(k) for k in self.kinds],
            "total": asdict(self.total),
            "rnn_loss": round(self.rnn_loss, 6),
            "ngram_loss": round(self.ngram_loss, 6),
            "order": self.order,
            "threshold": THRESHOLD,
            "unknown_targets": self.unknown_targets,
        }


def word_counts(tokens: Sequence[str], level: Level) -> Counter[str]:
    """How often each word occurs in a training text's tokens (words: runs of ``\\w``)."""
    if level == "word":
        return Counter(tokens)
    return Counter(_WORD.findall("".join(tokens)))


def prediction_kinds(pieces: Sequence[str], level: Level, counts: Counter[str]) -> list[str]:
    """The kind (see the module doc) of the prediction of each token after the first: N − 1."""
    if level == "word":
        return [_word_kind(piece.strip(), counts) for piece in pieces[1:]]
    text = "".join(pieces)
    word_of = [""] * len(text)
    for match in _WORD.finditer(text):
        for i in range(match.start(), match.end()):
            word_of[i] = match.group()
    return [_char_kind(text[i], text[i - 1], word_of[i], counts) for i in range(1, len(text))]


def _char_kind(ch: str, previous: str, word: str, counts: Counter[str]) -> str:
    if ch.isdigit():
        return "digit"
    if ch.isspace():
        return "whitespace"
    if not (ch.isalnum() or ch == "_"):
        return "punctuation"
    if counts[word] <= RARE:
        return "rare_word"
    if previous == "\n":
        return "after_newline"
    if previous.isspace():
        return "after_space"
    if previous.isalnum() or previous == "_":
        return "inside_word"
    return "after_punct"


def _word_kind(word: str, counts: Counter[str]) -> str:
    if word == "" or word == EOS:
        return "eos"
    if not any(ch.isalnum() for ch in word):
        return "punctuation"
    if any(ch.isdigit() for ch in word):
        return "digit"
    return "rare_word" if counts[word] <= RARE else "word"


def next_token_log_probs(model: nn.Module, ids: Tensor, *, streams: int | None = None) -> Tensor:
    """The model's log-probability of each actual next token: ids (N,) -> (N − 1,) float64."""
    out = torch.zeros(ids.numel() - 1, dtype=torch.float64)  # (N − 1,)
    for chunk in trace(model, ids, streams=streams, logits=True):
        scored = chunk.positions < ids.numel() - 1  # (n,) the last token predicts nothing
        positions = chunk.positions[scored]  # (s,)
        log_probs = F.log_softmax(chunk.logits[scored].float(), dim=-1)  # (s, V)
        chosen = log_probs.gather(1, ids.to(positions.device)[positions + 1].unsqueeze(1))
        out[positions.cpu()] = chosen.squeeze(1).double().cpu()
    return out


def error_analysis(
    model: nn.Module,
    text: EncodedText,
    train_ids: Tensor,
    train_counts: Counter[str],
    *,
    order: int = 20,
    streams: int | None = None,
) -> ErrorAnalysis:
    """The model's errors on ``text`` by kind, beside an n-gram model's of order ``order``.

    Args:
        model: a :class:`rnnkit.tasks.lm.LanguageModel`.
        text: the text to analyse (at least 2 tokens).
        train_ids: (M,) the model's training text, encoded with the model's vocabulary.
        train_counts: word counts of the training text (:func:`word_counts`), for rare words.
    """
    rnn_log = next_token_log_probs(model, text.ids, streams=streams).numpy()  # (N − 1,)
    rnn = np.exp(rnn_log)  # (N − 1,)
    vocab_size = model.head.out_features
    ngram = ngram_probabilities(train_ids.numpy(), text.ids.numpy(), order, vocab_size)
    kinds = np.array(prediction_kinds(text.pieces, text.level, train_counts))  # (N − 1,)
    known = text.ids[1:].numpy() != Vocab.unk_id  # (N − 1,)
    rnn_wrong, ngram_wrong = rnn < THRESHOLD, ngram < THRESHOLD

    def count(name: str, where: np.ndarray) -> KindErrors:
        r, g = rnn_wrong[where], ngram_wrong[where]
        return KindErrors(
            name,
            int(where.sum()),
            int(r.sum()),
            int(g.sum()),
            int((r & g).sum()),
            int((r & ~g).sum()),
            int((g & ~r).sum()),
        )

    names = WORD_KINDS if text.level == "word" else CHAR_KINDS
    per_kind = [count(name, (kinds == name) & known) for name in names]
    return ErrorAnalysis(
        kinds=[k for k in per_kind if k.count],
        total=count("total", known),
        rnn_loss=float(-rnn_log[known].mean()) if known.any() else 0.0,
        ngram_loss=float(-np.log(ngram[known]).mean()) if known.any() else 0.0,
        order=order,
        unknown_targets=int((~known).sum()),
    )
