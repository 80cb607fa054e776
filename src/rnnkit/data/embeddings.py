"""Pretrained word vectors (``--embeddings FILE``) in the word2vec / GloVe text format.

Each line is a word and its D values, separated by spaces: ``the 0.418 0.24968 -0.41242 ...``.
word2vec's files start with a line ``count dim``, which is skipped. Only the vectors of the
vocabulary's words are kept, so a file of millions of words costs one pass and V·D floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError

_EXACT, _CASELESS = 2, 1  # how a vocabulary row was matched (0: not found)


def _is_header(fields: list[str]) -> bool:
    """Whether the first line is word2vec's ``count dim`` header (two integers)."""
    return len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit()


def _parse_vector(values: list[str], word: str, where: str) -> np.ndarray:
    """The (D,) float32 vector of ``values``; DataError at the first one that is not finite."""
    try:
        vector = np.array(values, dtype=np.float32)  # (D,)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise DataError(f"{where}: value {bad!r} of {word!r} is not a number") from None
    if not np.isfinite(vector).all():
        bad = values[int(np.argmin(np.isfinite(vector)))]
        raise DataError(f"{where}: value {bad!r} of {word!r} is not a finite number")
    return vector


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_word_vectors(
    path: str | Path, vocab_tokens: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, int]:
    """The pretrained vectors of ``vocab_tokens`` from a word2vec/GloVe text file.

    A token takes the vector of the same word in the file; failing that, of the first word in
    the file that is equal to it ignoring case (``The`` finds GloVe's ``the``). Rows of tokens
    not found are zero: the caller keeps its own initialisation for them (``found`` is False).
    Every line must have D values (D from the header, or else from the first line); values
    are parsed, and checked to be finite numbers, on the lines of the vocabulary's words.

    Args:
        path: the vectors file, UTF-8, ``word v1 ... vD`` per line; blank lines are skipped.
        vocab_tokens: the V tokens, in vocabulary id order.

    Returns:
        matrix (V, D) float32, found (V,) bool, and D.

    Raises:
        DataError: a missing, empty, binary or undecodable file; a line with a number of
            values other than D, or a value that is not a finite number (``file:line: ...``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a word vectors file")
    exact = {token: i for i, token in enumerate(vocab_tokens)}
    caseless: dict[str, list[int]] = {}
    for i, token in enumerate(vocab_tokens):
        caseless.setdefault(token.lower(), []).append(i)
    matched = np.zeros(len(vocab_tokens), dtype=np.int8)  # (V,) 0, _CASELESS or _EXACT
    matrix: np.ndarray | None = None
    dim: int | None = None
    num_vectors = 0
    with path.open("rb") as file:
        for lineno, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 text; word vectors are read in the text "
                    f"format (word v1 v2 ... per line), so convert a binary word2vec file first"
                ) from None
            fields = line.removeprefix("\ufeff").rstrip().split(" ")
            if not fields[0]:
                if len(fields) == 1:
                    continue  # a blank line
                raise DataError(f"{path}:{lineno}: starts with a space; expected a word first")
            word, values = fields[0], [v for v in fields[1:] if v]
            if dim is None:
                if _is_header(fields):
                    dim = int(fields[1])
                    continue
                dim = len(values)
                if dim == 0:
                    raise DataError(f"{path}:{lineno}: {word!r} has no values after it")
            if len(values) != dim:
                raise DataError(
                    f"{path}:{lineno}: {word!r} has {len(values)} values, expected {dim}"
                )
            num_vectors += 1
            rows = [i for i in caseless.get(word.lower(), ()) if matched[i] == 0]
            i = exact.get(word)
            if i is not None and matched[i] != _EXACT:
                rows.append(i)
            if not rows:
                continue
            vector = _parse_vector(values, word, f"{path}:{lineno}")  # (D,)
            if matrix is None:
                matrix = np.zeros((len(vocab_tokens), dim), dtype=np.float32)  # (V, D)
            matrix[rows] = vector
            matched[rows] = _CASELESS
            if i is not None:
                matched[i] = _EXACT
    if dim is None:
        raise DataError(f"{path} is empty")
    if num_vectors == 0:
        raise DataError(f"{path} has a header line but no vectors")
    if matrix is None:
        matrix = np.zeros((len(vocab_tokens), dim), dtype=np.float32)  # (V, D)
    return matrix, matched > 0, dim
