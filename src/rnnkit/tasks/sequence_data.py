"""Reading and encoding the data of the sequence tasks (``classify``, ``tag``): text items
or ``.npz`` feature sequences, their vocabularies, splits and feature statistics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.config import RunConfig
from rnnkit.data.examples import Examples
from rnnkit.data.fields import MAX_SIZE, choice, integer, obj, strings
from rnnkit.data.labelled import FeatureSequences, read_features
from rnnkit.data.sequences import split_indices
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError

logger = logging.getLogger(__name__)


def is_features(path: str | Path | None) -> bool:
    """Whether a data path names feature sequences (``.npz``) rather than text."""
    return path is not None and Path(path).suffix == ".npz"


def need_path(run: RunConfig) -> str:
    """``run.data.path``; the sequence tasks have no default corpus."""
    if run.data.path is None:
        raise DataError(f"--task {run.task} needs DATA: rnnkit train DATA --task {run.task}")
    return run.data.path


def check_sequence_meta(
    run: RunConfig, meta: dict[str, Any], labels: str, text_keys: tuple[str, ...]
) -> str:
    """Check the vocab.json that ``classify`` and ``tag`` share: ``kind``, the names of the
    labels (under ``labels``), and ``vocab`` and ``text_keys`` (text) or ``feature_size``
    (feature sequences). The kind must be that of ``run.data.path``. Returns the kind.

    Raises:
        ValueError: a missing, unknown or malformed field (one line that names it).
    """
    kinds = ("text", "features")
    obj(meta, "", ("kind",), (labels, "vocab", "feature_size", *text_keys))
    kind = choice(meta["kind"], "kind", kinds)
    if kind == "text":
        obj(meta, "", ("kind", labels, "vocab", *text_keys))
        Vocab.from_dict(meta["vocab"], "vocab")
    else:
        obj(meta, "", ("kind", labels, "feature_size"))
        integer(meta["feature_size"], "feature_size", 1, MAX_SIZE)
    strings(meta[labels], labels, least=1)
    if run.data.path is not None and kinds[is_features(run.data.path)] != kind:
        raise ValueError(
            f"kind is {kind!r}, but the data of config.json ({run.data.path}) are "
            f"{'feature sequences' if kind == 'text' else 'text'}"
        )
    return kind


def split(
    run: RunConfig, examples: Examples, labels: list | None, read_val: Any
) -> tuple[Examples, Examples]:
    """(train, val): ``--val`` read by ``read_val(path)``, or a ``--val-frac`` split drawn with
    ``--seed`` (stratified by ``labels`` when given)."""
    if run.data.val is not None:
        return examples, read_val(run.data.val)
    train, val = split_indices(len(examples), run.data.val_frac, run.train.seed, labels)
    return examples.subset(train), examples.subset(val)


def feature_examples(features: FeatureSequences) -> Examples:
    """Examples of ``.npz`` feature sequences (labels as read, or None)."""
    return Examples(lengths=features.lengths.astype(np.int64), x=features.x, y=features.y)


def check_feature_size(features: FeatureSequences, size: int) -> None:
    """Refuse feature sequences whose D differs from the model's."""
    if features.x.shape[2] != size:
        raise DataError(
            f"{features.source}: x has {features.x.shape[2]} features per step "
            f"(shape {features.x.shape}), but the model reads {size}"
        )


def read_feature_file(path: str | Path, labels: str) -> FeatureSequences:
    """:func:`rnnkit.data.labelled.read_features` (``labels``: none, sequence, step)."""
    return read_features(path, labels=labels)


def build_vocab(token_lists: list[list[str]], min_freq: int) -> Vocab:
    """The vocabulary of the training tokens seen at least ``min_freq`` times."""
    return Vocab.build((t for tokens in token_lists for t in tokens), min_freq=min_freq)


def init_encoder(encoder: Any, data: Any, vocab: Vocab | None, *, log: bool = True) -> None:
    """Set up a new model's :class:`~rnnkit.tasks.encoder.SequenceEncoder` from
    ``data.setup``: the training features' statistics; pretrained word vectors (``log``: say
    how many words had one; once per model, not per member of an ensemble)."""
    if "statistics" in data.setup:
        encoder.set_feature_statistics(*data.setup["statistics"])
    if "embeddings" in data.setup:
        path, freeze = data.setup["embeddings"]
        found = encoder.load_word_vectors(path, vocab.tokens, freeze=freeze)
        if log:
            logger.info("%s: vectors for %d of %d vocabulary words", path, found, len(vocab))
