"""The text under inspection: its tokens as the model's ids, what each token shows on a page,
and the tokens the vocabulary lacks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnkit.data.text import Level, token_text, tokenize
from rnnkit.data.vocab import Vocab


@dataclass(frozen=True)
class EncodedText:
    """A text cut into the model's tokens.

    Attributes:
        ids: (N,) int64 token ids; tokens outside the vocabulary are ``<unk>``.
        pieces: N strings, the text each token stands for: the character itself at char
            level (even one the vocabulary lacks), a word with its leading space or a line
            break at word level. ``"".join(pieces)`` is the text the features are read from.
        unknown: how often each token outside the vocabulary occurs.
        level: ``"char"`` or ``"word"``.
    """

    ids: Tensor
    pieces: list[str]
    unknown: Counter[str]
    level: Level

    def __len__(self) -> int:
        return len(self.pieces)

    @property
    def text(self) -> str:
        """The pieces joined: the text as the model read it."""
        return "".join(self.pieces)


def encode_text(text: str, vocab: Vocab, level: Level) -> EncodedText:
    """Tokenise ``text`` as training did and encode it with ``vocab`` (unknown -> ``<unk>``)."""
    tokens = tokenize(text, level)
    unknown = Counter(t for t in tokens if t not in vocab)
    if level == "char":
        pieces = tokens
    else:
        pieces, previous = [], None
        for token in tokens:
            pieces.append(token_text(token, previous, level))
            previous = token
    ids = torch.tensor(vocab.encode(tokens), dtype=torch.long)  # (N,)
    return EncodedText(ids=ids, pieces=pieces, unknown=unknown, level=level)
