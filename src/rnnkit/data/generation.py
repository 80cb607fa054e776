"""The data of the generating tasks: pairs for ``seq2seq``, items with a condition for
``condgen``; items as tokens and back; decoder inputs and targets; training batches.

A decoder reads ``<bos>`` and then each token of its item, and is trained to write the item
and then ``<eos>``: :func:`decoder_batch` makes both from token ids. Batches are grouped by
length with :class:`~rnnkit.data.sequences.BucketBatches`, so they depend only on (seed,
epoch) and a resumed run sees the same ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rnnkit.config import DataConfig
from rnnkit.data.labelled import read_labelled_texts, read_pairs, read_vector_captions
from rnnkit.data.sequences import BucketBatches, pad_batch
from rnnkit.data.text import IGNORE_INDEX, Level
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError

logger = logging.getLogger(__name__)

ConditionKind = Literal["label", "vector"]


def text_tokens(text: str, level: Level) -> list[str]:
    """The tokens of one item: its characters, or its whitespace-separated words."""
    return list(text) if level == "char" else text.split()


def tokens_text(tokens: Sequence[str], level: Level) -> str:
    """Inverse of :func:`text_tokens`: characters joined, or words joined by single spaces."""
    return ("" if level == "char" else " ").join(tokens)


def decoder_batch(items: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Decoder inputs and targets of token id sequences (without ``<bos>`` / ``<eos>``).

    Returns:
        inputs (B, T) ``<bos>`` then the tokens, ``<pad>`` after; targets (B, T) the tokens
        then ``<eos>``, :data:`~rnnkit.data.text.IGNORE_INDEX` after. T is the longest item + 1.
    """
    steps = max(len(item) for item in items) + 1
    inputs = torch.full((len(items), steps), Vocab.pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((len(items), steps), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for i, item in enumerate(items):
        ids = torch.as_tensor(list(item), dtype=torch.long)  # (n,)
        inputs[i, 0] = Vocab.bos_id
        inputs[i, 1 : len(item) + 1] = ids
        targets[i, : len(item)] = ids
        targets[i, len(item)] = Vocab.eos_id
    return inputs, targets


def unknown_label_error(label: str, labels: Sequence[str], where: str) -> DataError:
    """The error for a label the model never saw: it lists the known ones."""
    return DataError(
        f"{where}: unknown label {label!r}; the model knows {len(labels)}: {', '.join(labels)}"
    )


# --- seq2seq: pairs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairData:
    """Encoded pairs.

    Attributes:
        sources: N source token id lists.
        targets: N target token id lists (no ``<bos>`` / ``<eos>``).
        references: the N target texts (their tokens joined), what BLEU compares with.
    """

    sources: list[list[int]]
    targets: list[list[int]]
    references: list[str]

    def subset(self, indices: Sequence[int]) -> PairData:
        """The pairs ``indices``, in that order."""
        return PairData(
            [self.sources[i] for i in indices],
            [self.targets[i] for i in indices],
            [self.references[i] for i in indices],
        )


@dataclass(frozen=True)
class TokenPairs:
    """Pairs as tokens, before the vocabularies.

    Attributes:
        sources, targets: N token lists each.
        source: the path read, for messages.
    """

    sources: list[list[str]]
    targets: list[list[str]]
    source: str


def read_token_pairs(path: str | Path, cfg: DataConfig) -> TokenPairs:
    """The pairs of ``path`` as tokens of ``cfg.level`` (the columns swapped with
    ``cfg.reverse``), without those with a side longer than ``cfg.max_length`` (logged).

    Raises:
        DataError: as :func:`read_pairs`, or every pair is longer than ``cfg.max_length``.
    """
    pairs = read_pairs(path, reverse=cfg.reverse, encoding=cfg.encoding)
    sources = [text_tokens(text, cfg.level) for text in pairs.sources]
    targets = [text_tokens(text, cfg.level) for text in pairs.targets]
    if cfg.max_length is not None:
        keep = [
            i
            for i, (s, t) in enumerate(zip(sources, targets, strict=True))
            if len(s) <= cfg.max_length and len(t) <= cfg.max_length
        ]
        dropped = len(sources) - len(keep)
        if not keep:
            raise DataError(
                f"{path}: every one of its {len(sources)} pairs has a side longer than "
                f"--max-length {cfg.max_length} {cfg.level} tokens; raise --max-length"
            )
        if dropped:
            logger.info(
                "%s: dropped %d of %d pairs with a side longer than --max-length %d",
                path,
                dropped,
                len(sources),
                cfg.max_length,
            )
        sources, targets = [sources[i] for i in keep], [targets[i] for i in keep]
    return TokenPairs(sources, targets, str(path))


def encode_pairs(
    pairs: TokenPairs,
    encode_source: Callable[[list[str]], list[int]],
    target_vocab: Vocab,
    level: Level,
) -> PairData:
    """Token ids of both sides, and the target texts: the sources by ``encode_source`` (a
    vocabulary's ``encode``, or a model's ``source_ids``), the targets with unknown tokens as
    ``<unk>``."""
    return PairData(
        [encode_source(s) for s in pairs.sources],
        [target_vocab.encode(t) for t in pairs.targets],
        [tokens_text(t, level) for t in pairs.targets],
    )


class PairBatches:
    """Training batches of pairs, grouped by length (:class:`BucketBatches` on the longer
    side), fixed by (seed, epoch).

    Each batch is ``(source (B, S), lengths (B,), target_in (B, T), target_out (B, T),
    teacher_forcing)``: the target after ``<bos>``, and the target then ``<eos>`` with
    :data:`~rnnkit.data.text.IGNORE_INDEX` after.
    """

    def __init__(self, pairs: PairData, batch_size: int, seed: int, teacher_forcing: float):
        lengths = [max(len(s), len(t)) for s, t in zip(pairs.sources, pairs.targets, strict=True)]
        self.pairs = pairs
        self.buckets = BucketBatches(lengths, batch_size, seed)
        self.teacher_forcing = teacher_forcing

    def __len__(self) -> int:
        return len(self.buckets)

    def get(self, epoch: int, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
        rows = self.buckets.batch(epoch, index)
        source, lengths = pad_batch([self.pairs.sources[i] for i in rows], Vocab.pad_id)
        target_in, target_out = decoder_batch([self.pairs.targets[i] for i in rows])
        return source, lengths, target_in, target_out, self.teacher_forcing


# --- condgen: items with a condition --------------------------------------------------------------


@dataclass(frozen=True)
class ConditionedItems:
    """Items with their conditions, encoded.

    Attributes:
        conditions: (N,) int64 label ids, or (N, D) float32 vectors (not standardised).
        items: N token id lists (no ``<bos>`` / ``<eos>``).
        references: the N texts (their tokens joined), what exact match and BLEU compare with.
    """

    conditions: Tensor
    items: list[list[int]]
    references: list[str]

    def subset(self, rows: Sequence[int]) -> ConditionedItems:
        """The items ``rows``, in that order."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))  # (n,)
        return ConditionedItems(
            self.conditions[index],
            [self.items[i] for i in rows],
            [self.references[i] for i in rows],
        )


@dataclass(frozen=True)
class RawItems:
    """Items as tokens with their raw conditions, before the vocabulary.

    Attributes:
        kind: ``"label"`` or ``"vector"``.
        conditions: N label strings, or (N, D) float32 vectors.
        tokens: N token lists.
        source: the path read, for messages.
    """

    kind: ConditionKind
    conditions: list[str] | np.ndarray
    tokens: list[list[str]]
    source: str


def read_items(path: str | Path, level: Level, encoding: str) -> RawItems:
    """A condgen data file: ``.npz`` with ``x`` (N, D) and ``text`` (N,), or labelled texts
    (TSV ``label<TAB>text`` or a folder of ``<label>.txt``).

    Raises:
        DataError: as :func:`read_vector_captions` or :func:`read_labelled_texts`.
    """
    if Path(path).suffix == ".npz":
        captions = read_vector_captions(path)
        tokens = [text_tokens(t, level) for t in captions.texts]
        return RawItems("vector", captions.x, tokens, str(path))
    labelled = read_labelled_texts(path, encoding=encoding)
    tokens = [text_tokens(t, level) for t in labelled.texts]
    return RawItems("label", labelled.labels, tokens, str(path))


def encode_items(raw: RawItems, meta: dict[str, Any], level: Level) -> ConditionedItems:
    """Token ids and condition tensors of ``raw`` for the vocabulary and conditions of ``meta``.

    Raises:
        DataError: a label or a vector size that the model does not know.
    """
    conditions = meta["conditions"]
    if raw.kind != conditions["kind"]:
        wanted = "an .npz of x and text" if conditions["kind"] == "vector" else "labelled texts"
        raise DataError(f"{raw.source}: the model writes from {conditions['kind']}s; give {wanted}")
    if raw.kind == "label":
        index = {label: i for i, label in enumerate(conditions["labels"])}
        for label in raw.conditions:
            if label not in index:
                raise unknown_label_error(label, conditions["labels"], raw.source)
        ids = torch.tensor([index[label] for label in raw.conditions], dtype=torch.long)  # (N,)
    else:
        size = conditions["size"]
        if raw.conditions.shape[1] != size:
            raise DataError(
                f"{raw.source}: x has {raw.conditions.shape[1]} features per row; the model "
                f"was trained on {size}"
            )
        ids = torch.from_numpy(raw.conditions)  # (N, D)
    vocab = Vocab.from_dict(meta["vocab"])
    return ConditionedItems(
        ids, [vocab.encode(t) for t in raw.tokens], [tokens_text(t, level) for t in raw.tokens]
    )


class ItemBatches:
    """Training batches of items, grouped by length (:class:`BucketBatches`), fixed by
    (seed, epoch): ``(conditions (B,) or (B, D), inputs (B, T), targets (B, T))``, inputs
    ``<bos>`` then the item, targets the item then ``<eos>``."""

    def __init__(self, data: ConditionedItems, batch_size: int, seed: int) -> None:
        self.data = data
        self.buckets = BucketBatches([len(item) + 1 for item in data.items], batch_size, seed)

    def __len__(self) -> int:
        return len(self.buckets)

    def get(self, epoch: int, index: int) -> tuple[Tensor, Tensor, Tensor]:
        rows = self.buckets.batch(epoch, index)
        inputs, targets = decoder_batch([self.data.items[i] for i in rows])  # (B, T), (B, T)
        return self.data.conditions[torch.from_numpy(rows)], inputs, targets


def items_meta(raw: RawItems, train_rows: np.ndarray, min_freq: int) -> dict[str, Any]:
    """vocab.json of a new condgen run, from its training rows: ``vocab``, ``conditions``
    (``kind`` and ``labels``, or ``size``, ``mean`` and ``std`` of the vectors, a zero
    deviation read as 1) and ``longest`` (tokens of the longest item)."""
    tokens = [raw.tokens[i] for i in train_rows]
    vocab = Vocab.build((t for item in tokens for t in item), min_freq=min_freq)
    if raw.kind == "label":
        conditions: dict[str, Any] = {
            "kind": "label",
            "labels": sorted({raw.conditions[i] for i in train_rows}),
        }
    else:
        x = raw.conditions[train_rows].astype(np.float64)  # (N_train, D)
        std = x.std(axis=0)
        conditions = {
            "kind": "vector",
            "size": int(x.shape[1]),
            "mean": x.mean(axis=0).tolist(),
            "std": np.where(std > 0, std, 1.0).tolist(),
        }
    longest = max(len(item) for item in tokens)
    return {"vocab": vocab.to_dict(), "conditions": conditions, "longest": max(longest, 1)}
