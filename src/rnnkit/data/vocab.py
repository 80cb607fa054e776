"""Vocab: token <-> id, with the special tokens first, saved as vocab.json."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rnnkit.data.fields import choice, key, obj, strings
from rnnkit.errors import CheckpointError, one_line, read_folder_json

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """A fixed list of tokens; a token's id is its position.

    The special tokens come first, so their ids are the same in every vocabulary:
    ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3. Tokens not in the vocabulary encode
    to ``<unk>``.

    Args:
        tokens: the ordinary tokens, without the specials; duplicates are an error.
    """

    pad_id, unk_id, bos_id, eos_id = range(len(SPECIALS))

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens: list[str] = [*SPECIALS, *(t for t in tokens if t not in SPECIALS)]
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("Vocab got duplicate tokens")

    @classmethod
    def build(cls, tokens: Iterable[str], *, min_freq: int = 1) -> Vocab:
        """Vocabulary of the tokens seen at least ``min_freq`` times.

        Ordered by decreasing count, ties by the token itself, so the same text always
        gives the same ids.
        """
        counts = Counter(tokens)
        kept = [t for t, n in counts.items() if n >= min_freq and t not in SPECIALS]
        return cls(sorted(kept, key=lambda t: (-counts[t], t)))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(tuple(self.tokens))

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of the tokens, ``<unk>``'s id for unknown ones: (N,) strings -> (N,) ids."""
        index, unk = self.index, self.unk_id
        return [index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of the ids: (N,) ids -> (N,) strings."""
        return [self.tokens[i] for i in ids]

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self.index))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"specials": {...}, "tokens": [...]}`` (tokens include specials)."""
        specials = dict(zip(("pad", "unk", "bos", "eos"), SPECIALS, strict=True))
        return {"specials": specials, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, values: Any, name: str = "") -> Vocab:
        """Inverse of :meth:`to_dict`; raises ValueError on a malformed dict, naming the
        field (``name`` is the dict's own path in its file, e.g. ``source``)."""
        obj(values, name, ("tokens",), ("specials",))
        if "specials" in values:
            specials = obj(values["specials"], key(name, "specials"), ("pad", "unk", "bos", "eos"))
            for role, token in zip(("pad", "unk", "bos", "eos"), SPECIALS, strict=True):
                choice(specials[role], key(key(name, "specials"), role), (token,))
        tokens = strings(values["tokens"], key(name, "tokens"), least=len(SPECIALS))
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"{key(name, 'tokens')} must begin with the specials {', '.join(SPECIALS)}"
            )
        return cls(tokens[len(SPECIALS) :])

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read vocab.json; a missing or malformed file raises :class:`CheckpointError`."""
        path = Path(path)
        values = read_folder_json(path)
        try:
            return cls.from_dict(values)
        except ValueError as err:
            raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
