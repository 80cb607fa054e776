"""Text for language modelling: reading, char/word tokens, the validation split, TBPTT streams.

Reading: a file, or a folder of files (every non-hidden file below it, sorted by path and
concatenated). Tokens: ``char`` makes every character a token; ``word`` splits each line on
whitespace and ends it with ``<eos>``. Validation: the last ``val_frac`` of the tokens, or a
separate file. Batching: the token sequence becomes ``B`` contiguous streams cut into
``T``-step chunks, so that a state carried from chunk ``i`` to chunk ``i + 1`` of a stream
has seen exactly the text before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from rnnkit.config import DataConfig
from rnnkit.data.stdlib_corpus import stdlib_text
from rnnkit.data.vocab import BOS, EOS, PAD, UNK, Vocab
from rnnkit.errors import DataError

Level = Literal["char", "word"]

IGNORE_INDEX = -100
"""Target id that the loss skips (``F.cross_entropy``'s default ``ignore_index``)."""


def _read_file(path: Path, encoding: str) -> str:
    """Decode one file; undecodable bytes and NUL characters raise :class:`DataError`."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror}") from None
    return decode_text(raw, str(path), encoding)


def decode_text(raw: bytes, source: str, encoding: str = "utf-8") -> str:
    """The text of the bytes ``raw`` read from ``source`` (a path, or ``<stdin>``), without a
    leading byte-order mark; undecodable bytes and NUL characters raise :class:`DataError`
    naming the line they are on."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{source}:{line}: not valid {encoding} text: byte 0x{raw[err.start]:02x} at offset "
            f"{err.start} cannot be decoded (a binary file? --encoding reads another encoding)"
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        offset = len(text[:nul].encode(encoding))
        raise DataError(f"{source}:{line}: looks binary: it has a NUL byte at offset {offset}")
    return text.removeprefix("\ufeff")


def universal_newlines(text: str) -> str:
    """``\\r\\n`` and lone ``\\r`` become ``\\n``, as Python's text mode reads files."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: str | Path, encoding: str = "utf-8", *, newlines: str = "universal") -> str:
    """The text of a file, or of every non-hidden file in a folder, sorted and concatenated.

    With ``newlines="universal"`` (the default) every line end reads as ``\\n`` (a Windows
    file's ``\\r\\n`` is one token, as in nanoGPT and char-rnn); ``"keep"`` keeps them.

    Raises:
        DataError: the path does not exist, has no text, or a file cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    convert = universal_newlines if newlines == "universal" else str
    if not path.is_dir():
        text = _read_file(path, encoding)
        if not text:
            raise DataError(f"{path} is empty")
        return convert(text)
    files = sorted(
        f
        for f in path.rglob("*")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
    )
    text = "".join(_read_file(f, encoding) for f in files)
    if not text:
        raise DataError(f"{path} is a folder with no text in it ({len(files)} files)")
    return convert(text)


def tokenize(text: str, level: Level) -> list[str]:
    """Cut text into tokens: characters, or each line's words followed by ``<eos>``."""
    if level == "char":
        return list(text)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    tokens: list[str] = []
    for line in lines:
        tokens += line.split()
        tokens.append(EOS)
    return tokens


def token_text(token: str, previous: str | None, level: Level) -> str:
    """The text a token adds after ``previous`` (None at the start), for streamed output.

    Characters are themselves. Words get a space before them unless they start a line;
    ``<eos>`` is a newline at word level. ``<pad>``, ``<bos>`` (and ``<eos>`` at char level,
    where newlines are characters) print nothing; ``<unk>`` prints U+FFFD at char level and
    ``<unk>`` at word level.
    """
    if token in (PAD, BOS) or (token == EOS and level == "char"):
        return ""
    if token == UNK:
        return "\ufffd" if level == "char" else UNK
    if level == "char":
        return token
    if token == EOS:
        return "\n"
    return token if previous in (None, EOS, BOS) else " " + token


def detokenize(tokens: Sequence[str], level: Level) -> str:
    """Inverse of :func:`tokenize` up to whitespace: ``detokenize(tokenize(s))`` == ``s``
    for char level, and for word level when words are separated by single spaces."""
    pieces, previous = [], None
    for token in tokens:
        pieces.append(token_text(token, previous, level))
        previous = token
    return "".join(pieces)


@dataclass(frozen=True)
class LMData:
    """A language-modelling corpus as ids.

    Attributes:
        vocab: built from the training tokens (or given, when resuming).
        train: (N,) int64 ids of the training text.
        val: (M,) int64 ids of the validation text.
        source: where the text came from, for messages.
    """

    vocab: Vocab
    train: Tensor
    val: Tensor
    source: str


def load_lm_data(cfg: DataConfig, vocab: Vocab | None = None) -> LMData:
    """Read, tokenise and split the corpus of ``cfg``; build the vocabulary unless given.

    With ``cfg.path`` None the corpus is the Python standard library (see
    :mod:`rnnkit.data.stdlib_corpus`). The validation text is ``cfg.val`` when set, else the
    last ``cfg.val_frac`` of the tokens; ``cfg.val_tokens`` keeps only the first N of them (the
    training text stays the same).

    Raises:
        DataError: unreadable files, or a validation split of fewer than 2 tokens.
    """
    if cfg.path is None:
        text, source = stdlib_text(), "the Python standard library"
    else:
        text, source = read_text(cfg.path, cfg.encoding, newlines=cfg.newlines), cfg.path
    tokens = tokenize(text, cfg.level)
    if cfg.val is not None:
        val_text = read_text(cfg.val, cfg.encoding, newlines=cfg.newlines)
        train_tokens, val_tokens = tokens, tokenize(val_text, cfg.level)
        val_source = cfg.val
    else:
        num_val = int(len(tokens) * cfg.val_frac)
        train_tokens, val_tokens = tokens[: len(tokens) - num_val], tokens[len(tokens) - num_val :]
        val_source = f"the last {cfg.val_frac:g} of {source}"
    if len(val_tokens) < 2:
        raise DataError(
            f"{val_source} has {len(val_tokens)} {cfg.level} token(s); validation needs at "
            f"least 2 (raise --val-frac or give more text)"
        )
    if cfg.val_tokens is not None:
        val_tokens = val_tokens[: cfg.val_tokens]  # the first N: the same tokens every time
    if vocab is None:
        vocab = Vocab.build(train_tokens, min_freq=cfg.min_freq)
    return LMData(
        vocab=vocab,
        train=torch.tensor(vocab.encode(train_tokens), dtype=torch.long),  # (N,)
        val=torch.tensor(vocab.encode(val_tokens), dtype=torch.long),  # (M,)
        source=source,
    )


def tokens_needed(batch_size: int, seq_len: int) -> int:
    """Training tokens needed for one (B, T) batch: B·T inputs plus the last target."""
    return batch_size * seq_len + 1


class TokenStreams:
    """``B`` contiguous streams of a token sequence, cut into ``T``-step chunks (TBPTT).

    Stream ``b`` is ``ids[b·L : (b+1)·L]`` with ``L = (N - 1) // B``; its targets are the same
    slice shifted by one. Chunk ``i`` holds steps ``[i·T, (i+1)·T)`` of every stream, so the
    state after chunk ``i`` is the right initial state for chunk ``i + 1``. The tail that does
    not fill a whole chunk is dropped.

    Args:
        ids: (N,) int64 token ids, ``N >= B·T + 1``.
        batch_size: B, number of streams.
        seq_len: T, time steps per chunk.
    """

    def __init__(self, ids: Tensor, batch_size: int, seq_len: int) -> None:
        if ids.numel() < tokens_needed(batch_size, seq_len):
            raise ValueError(
                f"TokenStreams needs at least {tokens_needed(batch_size, seq_len)} tokens for "
                f"batch_size={batch_size}, seq_len={seq_len}; got {ids.numel()}"
            )
        length = (ids.numel() - 1) // batch_size
        self.seq_len = seq_len
        self.inputs = ids[: batch_size * length].view(batch_size, length)  # (B, L)
        self.targets = ids[1 : batch_size * length + 1].view(batch_size, length)  # (B, L)

    def __len__(self) -> int:
        return self.inputs.shape[1] // self.seq_len

    def chunk(self, i: int) -> tuple[Tensor, Tensor]:
        """Inputs and targets of chunk ``i``: ((B, T), (B, T)) int64."""
        if not 0 <= i < len(self):
            raise IndexError(f"chunk {i} out of range for {len(self)} chunks")
        span = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return self.inputs[:, span], self.targets[:, span]  # (B, T), (B, T)


def eval_chunks(ids: Tensor, batch_size: int, seq_len: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Every prediction of ``ids`` exactly once, as chunks of up to ``B`` streams.

    The ``N - 1`` (input, target) pairs are split into ``min(B, N - 1)`` contiguous streams of
    ``ceil((N - 1) / B)`` steps; the end of the last stream is padded with ``<pad>`` inputs and
    :data:`IGNORE_INDEX` targets. Chunks are ``T`` steps (the last may be shorter), in order,
    so a state can be carried through each stream.

    Yields:
        inputs (B, t) and targets (B, t) int64, ``t <= T``.
    """
    count = ids.numel() - 1
    if count < 1:
        raise ValueError(f"eval_chunks needs at least 2 tokens, got {ids.numel()}")
    streams = min(batch_size, count)
    length = math.ceil(count / streams)
    inputs = torch.full((streams * length,), Vocab.pad_id, dtype=torch.long)  # (B·L,)
    targets = torch.full((streams * length,), IGNORE_INDEX, dtype=torch.long)  # (B·L,)
    inputs[:count] = ids[:-1]
    targets[:count] = ids[1:]
    inputs, targets = inputs.view(streams, length), targets.view(streams, length)  # (B, L)
    for start in range(0, length, seq_len):
        yield inputs[:, start : start + seq_len], targets[:, start : start + seq_len]
