"""Readers for labelled data: texts with a label, tagged sentences, pairs, feature arrays.

Text formats (UTF-8 unless told otherwise, a BOM is dropped, ``\\n``, ``\\r\\n`` and ``\\r`` all
end a line; line numbers in messages are 1-based):

- labelled texts (``classify``): a TSV file ``label<TAB>text``, or a folder of ``<label>.txt``
  files with one item per line;
- tagged sentences (``tag``): CoNLL, ``token<TAB>...<TAB>tag`` per line, BIO (IOB2) tags, a blank
  or whitespace-only line between sentences;
- pairs (``seq2seq``): a TSV file ``source<TAB>target``.

Array formats (``.npz``, read with ``allow_pickle=False``, so nothing in them runs code):

- feature sequences: ``x`` (N, T, D), optional ``lengths`` (N,), ``y`` (N,) or (N, T);
- vector captions (``condgen``): ``x`` (N, D) and ``text`` (N,) strings.

Every mistake in a file raises :class:`DataError` with one line that names the file, the line
where it applies, and the problem, e.g. ``data/train.tsv:17: no TAB between label and text``.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rnnkit.data.text import IGNORE_INDEX, _read_file
from rnnkit.errors import DataError, one_line


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with one label each, in file order (folders: files sorted by name).

    Attributes:
        texts: the N items, surrounding whitespace removed.
        labels: the N labels, as written in the file (or the file stems of a folder).
        source: the path read, for messages.
    """

    texts: list[str]
    labels: list[str]
    source: str


@dataclass(frozen=True)
class TaggedSentences:
    """Sentences as tokens with one BIO tag per token.

    Attributes:
        tokens: N sentences, each a list of T_i tokens.
        tags: N lists of T_i tags (``O``, ``B-TYPE``, ``I-TYPE``).
        source: the path read, for messages.
    """

    tokens: list[list[str]]
    tags: list[list[str]]
    source: str


@dataclass(frozen=True)
class LabelledPairs:
    """Source and target texts for sequence-to-sequence tasks.

    Attributes:
        sources: the N input texts.
        targets: the N output texts.
        source: the path read, for messages.
    """

    sources: list[str]
    targets: list[str]
    source: str


@dataclass(frozen=True)
class FeatureSequences:
    """Sequences of feature vectors, zero-padded to a common length T.

    Attributes:
        x: (N, T, D) float32 features; steps at or after ``lengths[i]`` are padding.
        lengths: (N,) int64 real steps per sequence, each in 1..T.
        y: (N,) int64 one label per sequence, or (N, T) int64 one label per step with
            :data:`~rnnkit.data.text.IGNORE_INDEX` at padded steps; None without labels.
        source: the path read, for messages.
    """

    x: np.ndarray
    lengths: np.ndarray
    y: np.ndarray | None
    source: str


@dataclass(frozen=True)
class VectorTexts:
    """One condition vector per text (the captioning pattern of ``condgen``).

    Attributes:
        x: (N, D) float32 condition vectors.
        texts: the N texts to generate from them.
        source: the path read, for messages.
    """

    x: np.ndarray
    texts: list[str]
    source: str


def _split_lines(text: str) -> list[str]:
    """Lines with universal newlines: ``\\r\\n`` and ``\\r`` end a line as ``\\n`` does."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _read_lines(path: Path, encoding: str) -> list[str]:
    """The lines of a text file without their line ends (BOM dropped).

    Raises:
        DataError: the file is missing, a folder, undecodable, binary, or has no non-blank line.
    """
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a file")
    text = _read_file(path, encoding)
    if not text.strip():
        raise DataError(f"{path} is empty" if not text else f"{path} has only blank lines")
    return _split_lines(text)


def read_labelled_texts(path: str | Path, *, encoding: str = "utf-8") -> LabelledTexts:
    """Labelled texts from a TSV file ``label<TAB>text`` or a folder of ``<label>.txt`` files.

    TSV: each non-blank line is split at its first TAB (later TABs stay in the text); blank
    lines are skipped. Folder: every ``*.txt`` file directly inside it, sorted by file name,
    gives its stem as the label of each of its non-blank lines. Labels and texts lose their
    surrounding whitespace.

    Raises:
        DataError: a missing or empty file; a TSV line with no TAB, an empty label or an empty
            text (``file:line: ...``); a folder with no ``.txt`` files, or one with no items.
    """
    path = Path(path)
    if path.is_dir():
        return _read_label_folder(path, encoding)
    texts, labels = [], []
    for lineno, line in enumerate(_read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}:{lineno}: no TAB between label and text")
        label, text = label.strip(), text.strip()
        if not label:
            raise DataError(f"{path}:{lineno}: empty label before the TAB")
        if not text:
            raise DataError(f"{path}:{lineno}: empty text after the label {label!r}")
        texts.append(text)
        labels.append(label)
    return LabelledTexts(texts=texts, labels=labels, source=str(path))


def _read_label_folder(path: Path, encoding: str) -> LabelledTexts:
    """Items of every ``<label>.txt`` in ``path``, files sorted by name, one item per line."""
    files = sorted(
        (f for f in path.iterdir() if f.suffix == ".txt" and not f.name.startswith(".")),
        key=lambda f: f.name,
    )
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(
            f"{path} is a folder with no .txt files; expected one <label>.txt file per label "
            f"with one item per line"
        )
    texts, labels = [], []
    for file in files:
        items = [line.strip() for line in _read_lines(file, encoding) if line.strip()]
        texts += items
        labels += [file.stem] * len(items)
    return LabelledTexts(texts=texts, labels=labels, source=str(path))


def check_bio(tags: Sequence[str], where: str, *, lines: Sequence[int] | None = None) -> None:
    """Check that ``tags`` (one sentence) are BIO (IOB2): ``O``, ``B-TYPE``, ``I-TYPE``, with
    every ``I-TYPE`` right after a ``B-TYPE`` or ``I-TYPE`` of the same type.

    Args:
        tags: the T tags of one sentence, in order.
        where: names the sentence in messages (a file, or e.g. ``"input sentence 3"``).
        lines: the T 1-based line numbers of the tags in the file ``where``; messages then say
            ``where:line: tag ...``, else ``where: tag i ...``.

    Raises:
        DataError: the first tag that is not BIO, or an ``I-`` tag that does not continue an
            entity of its type.
    """
    previous = "O"
    for i, tag in enumerate(tags):
        at = f"{where}:{lines[i]}: tag" if lines is not None else f"{where}: tag {i + 1}"
        if tag == "O":
            previous = tag
            continue
        prefix, dash, kind = tag.partition("-")
        if prefix not in ("B", "I") or not dash or not kind:
            raise DataError(f"{at} {tag!r} is not BIO; expected 'O', 'B-TYPE' or 'I-TYPE'")
        if prefix == "I" and previous not in (f"B-{kind}", f"I-{kind}"):
            after = f"{previous!r}" if i else "the start of the sentence"
            raise DataError(
                f"{at} {tag!r} follows {after}; an I- tag must continue B-{kind} or "
                f"I-{kind} (IOB1 data must be converted to BIO/IOB2)"
            )
        previous = tag


def _is_separator(line: str) -> bool:
    """A blank or whitespace-only line (WNUT-17 uses a lone TAB), or a ``-DOCSTART-`` line."""
    return not line.strip() or line.startswith("-DOCSTART-")


def read_conll(path: str | Path, *, encoding: str = "utf-8") -> TaggedSentences:
    """Tagged sentences from a CoNLL file: ``token<TAB>...<TAB>tag`` per line.

    Columns are split on TABs, or, in a file with no TAB at all, on runs of whitespace (as
    conlleval does). The first column is the token and the last the tag; columns between are
    ignored. A blank or whitespace-only line ends a sentence; ``-DOCSTART-`` lines are skipped.

    Raises:
        DataError: a missing or empty file; a line with one column, with a number of columns
            other than the file's first line, or with an empty token or tag; tags that are not
            BIO (``file:line: ...``).
    """
    path = Path(path)
    lines = _read_lines(path, encoding)
    tabbed = any("\t" in line for line in lines)
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    sentence: list[str] = []
    sentence_tags: list[str] = []
    sentence_lines: list[int] = []
    first: tuple[int, int] | None = None  # (line number, columns) of the first token line

    def end_sentence() -> None:
        if sentence:
            check_bio(sentence_tags, str(path), lines=sentence_lines)
            tokens.append(sentence.copy())
            tags.append(sentence_tags.copy())
            sentence.clear()
            sentence_tags.clear()
            sentence_lines.clear()

    for lineno, line in enumerate(lines, start=1):
        if _is_separator(line):
            end_sentence()
            continue
        columns = line.split("\t") if tabbed else line.split()
        if len(columns) == 1:
            sep = "TABs" if tabbed else "whitespace"
            raise DataError(
                f"{path}:{lineno}: one column ({line.strip()!r}); expected token and tag "
                f"separated by {sep}"
            )
        if first is None:
            first = (lineno, len(columns))
        elif len(columns) != first[1]:
            raise DataError(
                f"{path}:{lineno}: {len(columns)} columns, but line {first[0]} (the first) "
                f"has {first[1]}"
            )
        token, tag = columns[0], columns[-1].strip()
        if not token:
            raise DataError(f"{path}:{lineno}: empty token in the first column")
        if not tag:
            raise DataError(f"{path}:{lineno}: empty tag in the last column")
        sentence.append(token)
        sentence_tags.append(tag)
        sentence_lines.append(lineno)
    end_sentence()
    if not tokens:
        raise DataError(f"{path} has no tokens (only -DOCSTART- and blank lines)")
    return TaggedSentences(tokens=tokens, tags=tags, source=str(path))


def parse_tag_input(text: str, source: str) -> tuple[list[list[str]], bool]:
    """Sentences to tag from the whole input text of ``rnnkit predict``.

    If any line holds a TAB the input is CoNLL: the first column of each line is a token, and
    a blank or whitespace-only line ends a sentence (``-DOCSTART-`` lines are skipped).
    Otherwise each non-blank line is one sentence of whitespace-separated tokens.

    Returns:
        the sentences as token lists (empty for an empty input), and whether it was CoNLL.

    Raises:
        DataError: a CoNLL line whose first column is empty (``source:line: ...``).
    """
    lines = _split_lines(text.removeprefix("\ufeff"))
    if not any("\t" in line for line in lines):
        return [line.split() for line in lines if line.strip()], False
    sentences: list[list[str]] = [[]]
    for lineno, line in enumerate(lines, start=1):
        if _is_separator(line):
            sentences.append([])
            continue
        token = line.split("\t", 1)[0]
        if not token:
            raise DataError(f"{source}:{lineno}: empty token before the first TAB")
        sentences[-1].append(token)
    return [s for s in sentences if s], True


def read_pairs(
    path: str | Path, *, reverse: bool = False, encoding: str = "utf-8"
) -> LabelledPairs:
    """Text pairs from a TSV file ``source<TAB>target``; blank lines are skipped.

    Columns after the second (e.g. an attribution) are ignored, and both texts lose their
    surrounding whitespace. ``reverse`` swaps the columns, so that the second is the source.

    Raises:
        DataError: a missing or empty file; a line with no TAB or an empty column
            (``file:line: ...``).
    """
    path = Path(path)
    firsts, seconds = [], []
    for lineno, line in enumerate(_read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) == 1:
            raise DataError(f"{path}:{lineno}: no TAB between source and target")
        for column, text in enumerate(columns[:2], start=1):
            if not text.strip():
                raise DataError(f"{path}:{lineno}: column {column} is empty")
        firsts.append(columns[0].strip())
        seconds.append(columns[1].strip())
    if reverse:
        firsts, seconds = seconds, firsts
    return LabelledPairs(sources=firsts, targets=seconds, source=str(path))


def _load_npz(path: Path, names: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays ``names`` that an ``.npz`` archive holds, and the names of all its arrays.

    Raises:
        DataError: the file is missing, empty, not an ``.npz`` archive, corrupted, or one of
            the arrays asked for holds pickled Python objects.
    """
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected an .npz file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError:
        raise DataError(
            f"{path} is not an .npz archive (it is read with allow_pickle=False, so pickled "
            f"data is refused); save arrays with np.savez"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} cannot be read as an .npz archive: {one_line(err)}") from None
    if isinstance(archive, np.ndarray):
        raise DataError(
            f"{path} holds one .npy array, not an .npz archive of named arrays; save them with "
            f"np.savez(path, x=x, ...)"
        )
    with archive:
        present = list(archive.files)
        arrays = {}
        for name in names:
            if name not in present:
                continue
            try:
                array = archive[name]
            except ValueError:
                raise DataError(
                    f"{path}: array {name!r} holds Python objects, which are not loaded "
                    f"(allow_pickle=False); save numbers or strings"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise DataError(f"{path}: array {name!r} is corrupted: {one_line(err)}") from None
            if not isinstance(array, np.ndarray):
                raise DataError(f"{path}: member {name!r} is not a NumPy array")
            arrays[name] = array
    return arrays, present


def _require(
    arrays: dict[str, np.ndarray], name: str, what: str, path: Path, present: list[str]
) -> np.ndarray:
    """``arrays[name]``, or a DataError that lists the arrays the file has."""
    if name not in arrays:
        has = ", ".join(repr(p) for p in present) or "none"
        raise DataError(f"{path} has no array {name!r} ({what}); its arrays: {has}")
    return arrays[name]


def _is_number_array(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)


def _first_true(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True in ``mask`` (row-major order)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _finite_float32(x: np.ndarray, path: Path) -> np.ndarray:
    """``x`` as float32; DataError at the first value that is NaN or infinite (or overflows)."""
    if not _is_number_array(x):
        raise DataError(f"{path}: x has dtype {x.dtype}; expected floats (or integers)")
    with np.errstate(over="ignore"):  # values past float32's range become inf, reported below
        x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        at = _first_true(~finite)
        raise DataError(
            f"{path}: x[{', '.join(map(str, at))}] is {x[at]} as float32; features must be "
            f"finite ({int((~finite).sum())} values are not)"
        )
    return x


def read_features(
    path: str | Path, *, labels: Literal["none", "sequence", "step", "any"] = "any"
) -> FeatureSequences:
    """Feature sequences from an ``.npz`` file: ``x`` (N, T, D), ``lengths`` (N,), ``y``.

    ``x`` is float (or integer) features, zero-padded after each sequence's end; ``lengths``
    (optional, integers in 1..T) gives each sequence's real steps, T for all when absent.
    ``labels`` says which ``y`` is wanted: ``"sequence"`` (N,) integers, one per sequence;
    ``"step"`` (N, T), one per step (values at padded steps are ignored and become
    :data:`~rnnkit.data.text.IGNORE_INDEX`); ``"any"`` either; ``"none"`` none (``y`` is
    ignored, as for prediction input). Labels are 0 or more.

    Raises:
        DataError: the file is missing or not an ``.npz``; ``x`` is missing, not 3-D, not
            numeric or not finite; ``lengths`` or ``y`` have the wrong shape, type or values.
    """
    path = Path(path)
    arrays, present = _load_npz(path, ["x", "lengths", "y"])
    x = _require(arrays, "x", "features (N, T, D)", path, present)
    if x.ndim != 3 or min(x.shape) < 1:
        raise DataError(
            f"{path}: x has shape {x.shape}; expected (N, T, D) = (sequences, steps, features), "
            f"each at least 1"
        )
    x = _finite_float32(x, path)  # (N, T, D)
    n, t, _ = x.shape
    if "lengths" in arrays:
        lengths = arrays["lengths"]
        if not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(f"{path}: lengths has dtype {lengths.dtype}; expected integers")
        if lengths.shape != (n,):
            raise DataError(f"{path}: lengths has shape {lengths.shape}; expected (N,) = ({n},)")
        bad = (lengths < 1) | (lengths > t)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}: lengths[{i}] is {lengths[i]}; expected 1..T = 1..{t}")
        lengths = lengths.astype(np.int64)  # (N,)
    else:
        lengths = np.full(n, t, dtype=np.int64)  # (N,)
    if labels == "none":
        return FeatureSequences(x=x, lengths=lengths, y=None, source=str(path))
    y = _require(arrays, "y", "the labels", path, present)
    expected = {"sequence": f"(N,) = ({n},)", "step": f"(N, T) = ({n}, {t})"}
    wanted = expected.get(labels, f"(N,) = ({n},) or (N, T) = ({n}, {t})")
    if y.shape not in ((n,), (n, t)):
        raise DataError(f"{path}: y has shape {y.shape}; expected {wanted}")
    if labels == "sequence" and y.ndim == 2:
        raise DataError(
            f"{path}: y has shape {y.shape}, a label per step; expected one per sequence, {wanted}"
        )
    if labels == "step" and y.ndim == 1:
        raise DataError(
            f"{path}: y has shape {y.shape}, a label per sequence; expected one per step, {wanted}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y has dtype {y.dtype}; expected integer class ids")
    y = y.astype(np.int64)
    real = np.arange(t) < lengths[:, None] if y.ndim == 2 else np.ones(n, dtype=bool)
    negative = (y < 0) & real  # (N,) or (N, T)
    if negative.any():
        at = _first_true(negative)
        raise DataError(f"{path}: y[{', '.join(map(str, at))}] is {y[at]}; labels are 0 or more")
    if y.ndim == 2:
        y = np.where(real, y, IGNORE_INDEX)  # (N, T)
    return FeatureSequences(x=x, lengths=lengths, y=y, source=str(path))


def read_vector_captions(path: str | Path) -> VectorTexts:
    """Condition vectors and their texts from an ``.npz`` file: ``x`` (N, D), ``text`` (N,).

    ``text`` is a NumPy unicode array (``np.array(texts)`` of ``str``), so it loads without
    pickling; each text must have a non-blank character.

    Raises:
        DataError: the file is missing or not an ``.npz``; ``x`` or ``text`` is missing;
            ``x`` is not 2-D, numeric and finite; ``text`` is not N strings, or one is blank.
    """
    path = Path(path)
    arrays, present = _load_npz(path, ["x", "text"])
    x = _require(arrays, "x", "condition vectors (N, D)", path, present)
    text = _require(arrays, "text", "the N texts", path, present)
    if x.ndim != 2 or min(x.shape) < 1:
        raise DataError(f"{path}: x has shape {x.shape}; expected (N, D), each at least 1")
    x = _finite_float32(x, path)  # (N, D)
    if text.dtype.kind != "U":
        raise DataError(
            f"{path}: text has dtype {text.dtype}; expected strings (np.array(list_of_str))"
        )
    if text.shape != (x.shape[0],):
        raise DataError(
            f"{path}: text has shape {text.shape} but x has shape {x.shape}; expected "
            f"({x.shape[0]},) texts, one per row of x"
        )
    texts = [str(s) for s in text]
    for i, s in enumerate(texts):
        if not s.strip():
            raise DataError(f"{path}: text[{i}] is blank")
    return VectorTexts(x=x, texts=texts, source=str(path))


def read_condition_vectors(path: str | Path) -> np.ndarray:
    """The condition vectors ``x`` (N, D) of an ``.npz`` file, as float32 (``text``, if there,
    is not read): the input of ``rnnkit predict`` for a ``condgen`` model.

    Raises:
        DataError: the file is missing or not an ``.npz``; ``x`` is missing, not 2-D, not
            numeric or not finite.
    """
    path = Path(path)
    arrays, present = _load_npz(path, ["x"])
    x = _require(arrays, "x", "condition vectors (N, D)", path, present)
    if x.ndim != 2 or min(x.shape) < 1:
        raise DataError(f"{path}: x has shape {x.shape}; expected (N, D), each at least 1")
    return _finite_float32(x, path)  # (N, D)
