"""Training sentences lower-cased at random (``--case-augment P``, tag on text).

A fifth to a quarter of WNUT-17's dev and test entities are written in lower case ("iphone",
"new york"), and a tagger that learnt entities from mostly capitalised words misses them: the
tag preset found 8-10% of devB's lower-case entities against 47% of its capitalised ones.
Training on sentences both as written and lower-cased teaches it not to lean on case alone
(Mayhew et al. 2019, "ner and pos when nothing is capitalized"; Bodapati et al. 2019). Here
each sentence of a training batch is lower-cased, as a whole, with probability P: its
characters (what ``--char-features`` and ``--word-shape`` read; one whose lower case training
never saw becomes the unknown character) and, when the vocabulary is looked up as written
(``--no-lowercase``), its words: a known word becomes its lower case, or ``<unk>`` where the
vocabulary lacks that (as it would when reading such text); a word that is ``<unk>`` as
written stays ``<unk>`` (its id does not say which word it was). Evaluation reads text as
written. The tag preset keeps it off: on WNUT-17 it doubled the lower-case entities' recall
on dev, but the test F1 fell at the reference's length (config.py, README).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.data.examples import CHAR_UNK
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.layers.dropout import current_generator

NO_CASE = "--case-augment lower-cases words: feature inputs have none"


def lower_table(tokens: list[str], index: dict[str, int], unknown: int) -> Tensor:
    """For each id, the id of its token in lower case: the token's own where lower-casing
    leaves it as it is, else ``index[token.lower()]``, or ``unknown`` where that has no id.

    Shapes: -> (len(tokens),) int64.
    """
    ids = [
        i if token.lower() == token else index.get(token.lower(), unknown)
        for i, token in enumerate(tokens)
    ]
    return torch.tensor(ids, dtype=torch.int64)


class LowerCase(nn.Module):
    """Lower-cases whole sentences of a batch at random.

    Args:
        p: the probability that a sentence is lower-cased.
        vocab: the word vocabulary, or None to leave the word ids alone (words looked up in
            lower case already).
        chars: the known characters (ids from 2 on; 0 pads, 1 is unknown), or None.

    Shapes:
        forward: inputs (B, T) int64, chars (B, T, W) int64 or None -> the same shapes
    """

    def __init__(self, p: float, vocab: Vocab | None, chars: list[str] | None) -> None:
        super().__init__()
        self.p = p
        words = chars_table = None
        if vocab is not None:
            words = lower_table(vocab.decode(range(len(vocab))), vocab.index, Vocab.unk_id)
        if chars is not None:
            known = ["<pad>", "<unk>", *chars]  # ids 0 and 1 keep theirs
            index = {c: i + 2 for i, c in enumerate(chars)}
            chars_table = lower_table(known, index, CHAR_UNK)
        # Built from the model's vocabulary and characters, so not kept in its weights.
        self.register_buffer("words", words, persistent=False)  # (V,) or None
        self.register_buffer("chars", chars_table, persistent=False)  # (2 + len(chars),) or None

    def forward(self, inputs: Tensor, chars: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Each sentence as it is, or with probability ``p`` lower-cased (on the device of
        the module's tables)."""
        table = self.words if self.words is not None else self.chars
        draws = torch.rand(inputs.shape[0], device=table.device, generator=current_generator())
        rows = draws < self.p  # (B,)
        if self.words is not None:
            inputs = inputs.to(table.device)
            inputs = torch.where(rows[:, None], self.words[inputs], inputs)  # (B, T)
        if chars is not None and self.chars is not None:
            chars = chars.to(table.device)
            chars = torch.where(rows[:, None, None], self.chars[chars], chars)  # (B, T, W)
        return inputs, chars


def case_augment(
    p: float, vocab: Vocab | None, chars: list[str] | None, lowercase: bool
) -> LowerCase | None:
    """The random lower-casing of ``--case-augment p``, or None when ``p`` is 0 or the model
    reads no case (words looked up in lower case, and no characters).

    Args:
        vocab: the word vocabulary, or None for feature sequences.
        chars: the known characters, or None when the model reads none.
        lowercase: whether words are looked up in lower case (their ids then stay).

    Raises:
        ConfigError: ``--case-augment`` on feature sequences.
    """
    if not p:
        return None
    if vocab is None:
        raise ConfigError(NO_CASE)
    if lowercase and chars is None:
        return None  # the network sees no case: nothing to lower
    return LowerCase(p, None if lowercase else vocab, chars)
