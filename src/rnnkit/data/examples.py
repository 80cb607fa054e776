"""Encoded examples of the sequence tasks (``classify``, ``tag``) and their padded batches.

An example is a sequence of token ids (text) or of feature vectors (``.npz``), with a label
per sequence (``classify``) or per step (``tag``), and, for taggers with character features,
the character ids of every word. A batch is a dict of tensors, batch-first:

    inputs        (B, T) int64 token ids (0 = <pad>), or (B, T, D) float32 raw features
    lengths       (B,) int64 real steps
    targets       (B,) int64 labels, or (B, T) int64 with IGNORE_INDEX at padded steps
    chars         (B, T, W) int64 character ids (0 = padding)      [char features only]
    word_lengths  (B, T) int64 characters per word (0 = padded)    [char features only]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.sequences import BucketBatches, pad_batch
from rnnkit.data.text import IGNORE_INDEX

MAX_WORD_CHARS = 20
"""Characters of a word that the character encoder reads (longer words are cut)."""

CHAR_PAD, CHAR_UNK = 0, 1
"""Character ids: padding and unknown characters; the known ones start at 2."""


@dataclass
class Examples:
    """N encoded examples; see the module docstring for what a batch holds.

    Attributes:
        lengths: (N,) int64 real steps of each example.
        ids: N lists of token ids (text), or None.
        x: (N, T, D) float32 raw features (zero-padded), or None.
        y: N labels (ints), N lists of per-step labels, or an (N, T) int64 array; None
            without labels (prediction input).
        chars: per example, per word, its character ids (taggers with character features).
    """

    lengths: np.ndarray
    ids: list[list[int]] | None = None
    x: np.ndarray | None = None
    y: Sequence | np.ndarray | None = None
    chars: list[list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, index: np.ndarray) -> Examples:
        """The examples at ``index`` (K,), in that order."""
        pick = index.tolist()
        return Examples(
            lengths=self.lengths[index],
            ids=None if self.ids is None else [self.ids[i] for i in pick],
            x=None if self.x is None else self.x[index],
            y=None if self.y is None else _take(self.y, pick),
            chars=None if self.chars is None else [self.chars[i] for i in pick],
        )

    def batch(self, index: np.ndarray) -> dict[str, Tensor]:
        """The padded batch of the examples at ``index`` (B,)."""
        pick = index.tolist()
        lengths = torch.as_tensor(self.lengths[index], dtype=torch.long)  # (B,)
        steps = int(lengths.max())
        if self.ids is not None:
            inputs, _ = pad_batch([self.ids[i] for i in pick])  # (B, T)
        else:
            inputs = torch.from_numpy(np.ascontiguousarray(self.x[index, :steps]))  # (B, T, D)
        batch = {"inputs": inputs, "lengths": lengths}
        if self.y is not None:
            batch["targets"] = _targets(_take(self.y, pick), steps)
        if self.chars is not None:
            batch["chars"], batch["word_lengths"] = char_batch([self.chars[i] for i in pick], steps)
        return batch


def _take(y: Sequence | np.ndarray, pick: list[int]) -> Sequence | np.ndarray:
    if isinstance(y, np.ndarray):
        return y[pick]
    return [y[i] for i in pick]


def _targets(y: Sequence | np.ndarray, steps: int) -> Tensor:
    """(B,) labels, or (B, T) per-step labels padded with IGNORE_INDEX."""
    if isinstance(y, np.ndarray):
        if y.ndim == 1:
            return torch.as_tensor(y, dtype=torch.long)  # (B,)
        return torch.as_tensor(y[:, :steps], dtype=torch.long)  # (B, T)
    if y and not isinstance(y[0], (list, tuple)):
        return torch.tensor(list(y), dtype=torch.long)  # (B,)
    out = torch.full((len(y), steps), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, labels in enumerate(y):
        out[row, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    return out


def char_batch(words: list[list[list[int]]], steps: int) -> tuple[Tensor, Tensor]:
    """The character ids of B sentences' words, padded with 0.

    Built in NumPy from the flat list of every word's ids: a handful of array operations per
    batch instead of a tensor copy per word (3-4 ms of a 50 ms WNUT-17 training step before).

    Args:
        words: B sentences, each a list of words, each a list of character ids (not 0).
        steps: T, at least the longest sentence's word count.

    Returns:
        chars (B, T, W) int64, W the longest word (at least 1), and word_lengths (B, T)
        int64, 0 for the padded words past each sentence's end.
    """
    flat = [word for sentence in words for word in sentence]
    counts = np.array([len(sentence) for sentence in words], dtype=np.int64)  # (B,)
    sizes = np.array([len(word) for word in flat], dtype=np.int64)  # (N,) all the words
    width = max(int(sizes.max(initial=0)), 1)
    ids = np.fromiter(itertools.chain.from_iterable(flat), np.int64, int(sizes.sum()))
    starts = np.cumsum(sizes) - sizes  # (N,) where each word's ids begin in `ids`
    rows = np.repeat(np.arange(len(flat)), sizes)  # (sum of sizes,) the word of each id
    columns = np.arange(len(ids)) - np.repeat(starts, sizes)  # its place in the word
    per_word = np.zeros((len(flat), width), dtype=np.int64)  # (N, W)
    per_word[rows, columns] = ids
    real = np.arange(steps)[None, :] < counts[:, None]  # (B, T), the real words
    chars = np.zeros((len(words), steps, width), dtype=np.int64)  # (B, T, W)
    chars[real] = per_word
    word_lengths = np.zeros((len(words), steps), dtype=np.int64)  # (B, T)
    word_lengths[real] = sizes
    return torch.from_numpy(chars), torch.from_numpy(word_lengths)


class EpochBatches:
    """Training batches of ``examples``: bucketed by length, shuffled per (seed, epoch).

    Args:
        examples: the training examples.
        batch_size: B.
        seed: with the epoch, fixes which examples form each batch.
    """

    def __init__(self, examples: Examples, batch_size: int, seed: int) -> None:
        self.examples = examples
        self.buckets = BucketBatches(examples.lengths, batch_size, seed)

    def __len__(self) -> int:
        return len(self.buckets)

    def get(self, epoch: int, index: int) -> dict[str, Tensor]:
        """Batch ``index`` of epoch ``epoch`` (see the module docstring)."""
        return self.examples.batch(self.buckets.batch(epoch, index))


def sorted_batches(examples: Examples, batch_size: int) -> list[tuple[np.ndarray, dict]]:
    """Every example once, in batches of similar length (for evaluation and prediction):
    (indices (B,), batch) pairs."""
    buckets = BucketBatches(examples.lengths, batch_size, seed=0, shuffle=False)
    return [(index, examples.batch(index)) for index in buckets.epoch(0)]


def feature_statistics(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (D,) of the features over the real steps of (N, T, D) ``x``;
    a constant feature gets standard deviation 1."""
    mask = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, T)
    real = x[mask].astype(np.float64)  # (steps, D)
    mean, std = real.mean(axis=0), real.std(axis=0)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
