"""Splits and padded batches for the tasks whose examples are separate sequences.

``classify``, ``tag`` and ``seq2seq`` batch whole examples, not TBPTT streams: the validation
examples are a random (stratified) split, and each batch is padded to its longest sequence.
:class:`BucketBatches` groups examples of similar length, so that little padding is computed
while the batches stay random from epoch to epoch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch import Tensor

from rnnkit.errors import ConfigError, DataError

BUCKET_BATCHES = 50
"""Batches' worth of shuffled examples sorted by length together (one bucket chunk)."""


def _rng(seed: int, *more: int) -> np.random.Generator:
    """A NumPy generator fixed by ``seed`` (any int, negative too) and ``more``."""
    return np.random.default_rng([seed % 2**64, *more])


def _round_half_up(value: float) -> int:
    """``value`` rounded to the nearest integer, halves up (0.5 -> 1, unlike ``round``)."""
    return math.floor(value + 0.5)


def split_indices(
    n: int, val_frac: float, seed: int, labels: Sequence[Hashable] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A random train/validation split of ``n`` examples, drawn with ``seed``.

    Without labels, ``round(val_frac * n)`` examples go to validation. With labels, the split is
    stratified: each label keeps ``round(val_frac * count)`` of its examples in validation but
    at least one in training, so a label seen once stays in training. Halves round up. The
    training part always keeps at least one example. ``val_frac`` 0 holds out nothing (a run
    without validation).

    Returns:
        train (N_train,) and val (N_val,) int64 example indices, each sorted.

    Raises:
        ConfigError: ``val_frac`` is not in [0, 1).
        DataError: the split would leave the training part empty, or (``val_frac`` above 0)
            the validation part.
    """
    if not 0.0 <= val_frac < 1.0:
        raise ConfigError(f"val_frac must be in [0, 1), got {val_frac}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"split_indices got {len(labels)} labels for n={n} examples")
    if val_frac == 0.0 and n >= 1:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n < 2:
        raise DataError(
            f"{n} example(s) cannot be split into training and validation; give at least 2, "
            f"or a validation file with --val"
        )
    rng = _rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        by_label: dict[Hashable, list[int]] = {}
        for i, label in enumerate(labels):
            by_label.setdefault(label, []).append(i)
        groups = [np.array(indices) for indices in by_label.values()]
    val_parts = []
    for group in groups:
        num_val = min(_round_half_up(val_frac * len(group)), len(group) - 1)
        val_parts.append(rng.permutation(group)[:num_val])
    val = np.sort(np.concatenate(val_parts)).astype(np.int64)  # (N_val,)
    if len(val) == 0:
        per = " per label" if labels is not None else ""
        raise DataError(
            f"--val-frac {val_frac:g} of {n} examples holds out none{per}; raise --val-frac, "
            f"or give a validation file with --val"
        )
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    train = np.flatnonzero(~is_val).astype(np.int64)  # (N_train,)
    return train, val


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Token id sequences padded with ``pad_id`` after their ends to the longest of them.

    Returns:
        ids (B, T_max) int64 and lengths (B,) int64.
    """
    if len(sequences) == 0:
        raise ValueError("pad_batch got no sequences")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)  # (B,)
    if int(lengths.min()) < 1:
        i = int(lengths.argmin())
        raise ValueError(f"pad_batch got an empty sequence at {i}; every one needs a step")
    ids = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)  # (B, T)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return ids, lengths


class BucketBatches:
    """Batches of example indices, grouped by length, random and different in every epoch.

    An epoch shuffles the examples, cuts them into chunks of :data:`BUCKET_BATCHES` batches'
    worth, sorts each chunk by length, cuts the chunks into batches and shuffles the order of
    the batches. Sequences in a batch are then of similar length (little padding), yet which
    examples meet and in which order changes every epoch. Each example is in exactly one batch
    per epoch; only the last batch of the last chunk may be smaller than ``batch_size``.
    Everything is fixed by ``(seed, epoch)``, so a resumed run sees the same batches.

    With ``shuffle=False`` (evaluation) the examples are sorted by length (ties in index
    order) and cut into batches in that order, the same in every epoch.

    Args:
        lengths: (N,) the length of each example, N >= 1.
        batch_size: B, examples per batch.
        seed: fixes the shuffles, with the epoch number.
        shuffle: False for the fixed, sorted order.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (N,)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError(f"BucketBatches needs (N,) lengths, N >= 1; got {self.lengths.shape}")
        if batch_size < 1:
            raise ValueError(f"BucketBatches needs batch_size >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def epoch(self, e: int) -> list[np.ndarray]:
        """The batches of epoch ``e``: ``len(self)`` int64 arrays of example indices."""
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")  # (N,)
            return self._cut(order)
        rng = _rng(self.seed, e)
        order = rng.permutation(len(self.lengths))  # (N,)
        chunk = BUCKET_BATCHES * self.batch_size
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            order[start : start + chunk] = part[np.argsort(self.lengths[part], kind="stable")]
        batches = self._cut(order)
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch(self, e: int, i: int) -> np.ndarray:
        """Batch ``i`` of epoch ``e``: (B,) int64 example indices (the epoch is cached)."""
        if self._cached is None or self._cached[0] != e:
            self._cached = (e, self.epoch(e))
        return self._cached[1][i]

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        """``order`` cut into consecutive batches of ``batch_size``."""
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
