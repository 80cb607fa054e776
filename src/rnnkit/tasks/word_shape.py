"""``--word-shape`` of ``tag`` on text: each word's casing, embedded beside the word.

Each word falls in one of the casing classes of Reimers and Gurevych (2017) (one more for
words of neither letters nor digits), read from its characters:

==================  ==========================================  ===============
class               rule (first that holds)                     e.g.
==================  ==========================================  ===============
no letter or digit  no letter, no digit                         ``.``, ``:)``
numeric             every character a digit                     ``2017``
Title               a capital, then only lower-case letters     ``London``, ``I``
UPPER               two or more characters, all capitals        ``NASA``
lower               all lower-case letters                      ``hello``
contains digit      a digit in at most half the characters      ``2nd``, ``a1b2c``
mainly numeric      digits in more than half                    ``10:30``
other               the rest                                    ``iPhone``, ``@bob``
==================  ==========================================  ===============

A small embedding of the class (:data:`SHAPE_SIZE`) is concatenated to the word's embedding
(and ``--char-features``' encoding) before the recurrent layers. The word embedding of a
tagger that looks words up in lower case (``--lowercase``) cannot see the case, and an unseen
word's is ``<unk>``'s; the character encoder can, but has to learn it. On WNUT-17's dev
halves, beside the character encoder, it was level with the preset (``config.py``), which
keeps it off. Only the first
:data:`~rnnkit.data.examples.MAX_WORD_CHARS` characters are read, as for ``--char-features``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.errors import ConfigError

NO_SHAPES = "--word-shape reads the characters of words: .npz feature sequences have none"
"""The refusal of ``--word-shape`` for a tagger of feature sequences."""

SHAPES = (
    "<pad>",
    "lower",
    "UPPER",
    "Title",
    "numeric",
    "mainly numeric",
    "contains digit",
    "other",
    "no letter or digit",
)
"""The casing classes, in id order (0 pads)."""

SHAPE_SIZE = 16
"""The size of a class's embedding."""

PAD, OTHER, LOWER, UPPER, DIGIT = range(5)
"""The classes of one character: padding, other (unknown characters too), a lower-case
letter, a capital, a digit."""


def char_class(c: str) -> int:
    """The class of one character: LOWER, UPPER, DIGIT or OTHER."""
    if c.islower():
        return LOWER
    if c.isupper():
        return UPPER
    if c.isdigit():
        return DIGIT
    return OTHER


def word_shapes(classes: Tensor) -> Tensor:
    """Each word's casing class (an index into :data:`SHAPES`) from its characters' classes.

    Args:
        classes: (..., W) int64, the character classes (PAD, OTHER, LOWER, UPPER, DIGIT) of
            each word, padded with PAD after its end; a word of no characters (padding) has
            class 0.

    Shapes: classes (..., W) -> (..., ) int64.
    """
    n = (classes != PAD).sum(-1)
    lower = (classes == LOWER).sum(-1)
    upper = (classes == UPPER).sum(-1)
    digit = (classes == DIGIT).sum(-1)
    first_upper = classes[..., 0] == UPPER
    rules = [  # (holds, class), the first that holds wins
        (n == 0, "<pad>"),
        ((lower + upper == 0) & (digit == 0), "no letter or digit"),
        (digit == n, "numeric"),
        (first_upper & (lower == n - 1), "Title"),
        ((upper == n) & (n > 1), "UPPER"),
        (lower == n, "lower"),
        ((digit > 0) & (2 * digit <= n), "contains digit"),
        (2 * digit > n, "mainly numeric"),
    ]
    shape = torch.full_like(n, SHAPES.index("other"))
    for holds, name in reversed(rules):
        shape = torch.where(holds, SHAPES.index(name), shape)
    return shape


class WordShape(nn.Module):
    """The casing class of each word, embedded.

    Args:
        chars: the known characters (ids from 2 on; 0 pads, 1 is unknown and counts as OTHER).
        size: the embedding's size.

    Shapes:
        forward: chars (B, T, W) int64 character ids -> (B, T, size)
    """

    def __init__(self, chars: list[str], size: int = SHAPE_SIZE) -> None:
        super().__init__()
        classes = [PAD, OTHER] + [char_class(c) for c in chars]
        # Read from the model's characters when it is built, so not kept in its weights.
        self.register_buffer("char_classes", torch.tensor(classes), persistent=False)
        self.embedding = nn.Embedding(len(SHAPES), size, padding_idx=0)
        self.output_size = size

    def forward(self, chars: Tensor) -> Tensor:
        """The embedded class of each word (zero for padding words) -> (B, T, size)."""
        return self.embedding(word_shapes(self.char_classes[chars]))  # (B, T, size)


def word_shape(config: ModelConfig, chars: list[str] | None) -> WordShape | None:
    """The casing classes' embedding if ``config.word_shape``, else None.

    Args:
        chars: the known characters (ids from 2 on), or None for feature sequences.

    Raises:
        ConfigError: ``--word-shape`` on feature sequences.
    """
    if not config.word_shape:
        return None
    if chars is None:
        raise ConfigError(NO_SHAPES)
    return WordShape(chars)
