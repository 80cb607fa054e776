r"""Text features that a hidden cell may track, one value per character or token.

Each value describes the text *after reading* that character, which is what the cell's value at
that step can know:

    in_quotes      1 inside a double-quoted span: from the opening ``"`` (or ``“``) up to the
                   character before the closing one (which is read as outside again)
    in_parens      1 inside round brackets, from ``(`` to the character before ``)``
    bracket_depth  how many ``( [ {`` are open (an unmatched closer leaves it at 0)
    column         characters since the last line break (the line break itself is 0)
    indent         the leading spaces and tabs of the current line, as far as read
    word_start     1 on the first character of a word (letters, digits, ``_``)
    after_newline  1 on the first character after a line break

A user feature ``NAME=REGEX`` is 1 on the characters inside the regular expression's matches
(``re.finditer`` over the whole text; use ``(?m)`` etc. for flags).

``in_quotes``, ``in_parens``, ``word_start``, ``after_newline`` and user features are binary; a
threshold probe predicts them directly. The counts (``bracket_depth``, ``column``, ``indent``)
are probed as "above their mean on this text".

Word-level text: a token's value is the value at the last character of its piece (see
:class:`rnnkit.inspect.text.EncodedText`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rnnkit.errors import ConfigError

BUILTIN = (
    "in_quotes",
    "in_parens",
    "bracket_depth",
    "column",
    "indent",
    "word_start",
    "after_newline",
)
COUNTS = ("bracket_depth", "column", "indent")
OPENERS, CLOSERS = "([{", ")]}"


@dataclass(frozen=True)
class Feature:
    """A named feature: built in (``pattern`` None) or the matches of a regular expression."""

    name: str
    pattern: re.Pattern[str] | None = None

    @property
    def binary(self) -> bool:
        """Whether the feature only takes the values 0 and 1."""
        return self.name not in COUNTS


def parse_feature(spec: str) -> Feature:
    """``NAME`` (a built-in feature) or ``NAME=REGEX`` (a feature of your own).

    Raises:
        ConfigError: unknown built-in name, a user name that is a built-in one or empty, or a
            regular expression that does not compile (its error is shown).
    """
    name, sep, regex = spec.partition("=")
    name = name.strip()
    if not sep:
        if name not in BUILTIN:
            raise ConfigError(
                f"unknown feature {name!r}; built in: {', '.join(BUILTIN)}; "
                "or give your own as NAME=REGEX"
            )
        return Feature(name)
    if not name or name in BUILTIN:
        what = "is built in" if name else "is empty"
        raise ConfigError(f"feature name in {spec!r} {what}; choose another for NAME=REGEX")
    try:
        return Feature(name, re.compile(regex))
    except re.error as err:
        raise ConfigError(f"feature {name!r}: bad regular expression {regex!r}: {err}") from None


def choose_features(specs: Sequence[str]) -> list[Feature]:
    """The features asked for: the named built-ins (all of them if none is named) and the
    user's ``NAME=REGEX`` ones, in order, without duplicates."""
    parsed = [parse_feature(spec) for spec in specs]
    builtin = [f for f in parsed if f.pattern is None] or [Feature(n) for n in BUILTIN]
    chosen: dict[str, Feature] = {}
    for feature in [*builtin, *(f for f in parsed if f.pattern is not None)]:
        if feature.name in chosen and chosen[feature.name] != feature:
            raise ConfigError(f"feature {feature.name!r} is given twice with different regexes")
        chosen[feature.name] = feature
    return list(chosen.values())


def char_features(text: str, features: Sequence[Feature]) -> np.ndarray:
    """Each feature's value after every character: text of n characters -> (n, M) float32."""
    values = np.zeros((len(text), len(features)), dtype=np.float32)  # (n, M)
    for m, feature in enumerate(features):
        if feature.pattern is not None:
            for match in feature.pattern.finditer(text):
                values[match.start() : match.end(), m] = 1.0
        else:
            values[:, m] = _BUILTINS[feature.name](text)
    return values


def token_features(pieces: Sequence[str], features: Sequence[Feature]) -> Tensor:
    """Each feature's value after every token: N pieces -> (N, M) float32 (see the module doc)."""
    text = "".join(pieces)
    values = char_features(text, features)  # (n, M)
    ends = np.cumsum([len(piece) for piece in pieces]) - 1  # (N,) last character of each
    if len(text) == 0:
        return torch.zeros(len(pieces), len(features))  # (N, M)
    return torch.from_numpy(values[np.clip(ends, 0, None)])  # (N, M)


def probe_targets(values: Tensor, features: Sequence[Feature]) -> Tensor:
    """What a threshold probe predicts: binary features as they are, counts above their mean.

    values (N, M) -> (N, M) bool.
    """
    targets = values > 0.5  # (N, M)
    for m, feature in enumerate(features):
        if not feature.binary:
            targets[:, m] = values[:, m] > values[:, m].mean()
    return targets


# --- the built-in features, each text -> (n,) -----------------------------------------------


def _toggle(text: str, opens: str, closes: str) -> np.ndarray:
    """1 from an opening mark to the character before the matching closing one."""
    out = np.zeros(len(text), dtype=np.float32)
    inside = False
    for i, ch in enumerate(text):
        if ch in closes and (inside or ch not in opens):
            inside = False
        elif ch in opens:
            inside = True
        out[i] = inside
    return out


def _in_quotes(text: str) -> np.ndarray:
    """``"`` toggles; ``“`` opens and ``”`` closes."""
    return _toggle(text, '"“', '"”')


def _depth(text: str, openers: str, closers: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    depth = 0
    for i, ch in enumerate(text):
        if ch in openers:
            depth += 1
        elif ch in closers:
            depth = max(depth - 1, 0)
        out[i] = depth
    return out


def _in_parens(text: str) -> np.ndarray:
    return (_depth(text, "(", ")") > 0).astype(np.float32)


def _bracket_depth(text: str) -> np.ndarray:
    return _depth(text, OPENERS, CLOSERS)


def _column(text: str) -> np.ndarray:
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (n,) code points
    index = np.arange(len(chars))
    last_newline = np.maximum.accumulate(np.where(chars == ord("\n"), index, -1))  # (n,)
    return (index - last_newline).astype(np.float32)


def _indent(text: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    start = 0
    for line in text.split("\n"):
        lead = len(line) - len(line.lstrip(" \t"))
        column = np.arange(1, len(line) + 1)  # 1 .. len(line)
        out[start : start + len(line)] = np.minimum(column, lead)
        start += len(line) + 1  # the line break itself stays 0
    return out


def _word_start(text: str) -> np.ndarray:
    word = np.array([ch.isalnum() or ch == "_" for ch in text], dtype=bool)  # (n,)
    before = np.concatenate([[False], word[:-1]])  # (n,)
    return (word & ~before).astype(np.float32)


def _after_newline(text: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    out[1:] = [ch == "\n" for ch in text[:-1]]
    return out


_BUILTINS = {
    "in_quotes": _in_quotes,
    "in_parens": _in_parens,
    "bracket_depth": _bracket_depth,
    "column": _column,
    "indent": _indent,
    "word_start": _word_start,
    "after_newline": _after_newline,
}
