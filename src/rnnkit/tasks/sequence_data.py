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
from rnnkit.errors import ConfigError, DataError

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
    run: RunConfig,
    meta: dict[str, Any],
    labels: str,
    text_keys: tuple[str, ...],
    *,
    optional: tuple[str, ...] = (),
) -> str:
    """Check the vocab.json that ``classify`` and ``tag`` share: ``kind``, the names of the
    labels (under ``labels``), and ``vocab`` and ``text_keys`` (text; ``optional`` may be
    there too, checked by the caller) or ``feature_size`` (feature sequences). The kind must
    be that of ``run.data.path``. Returns the kind.

    Raises:
        ValueError: a missing, unknown or malformed field (one line that names it).
    """
    kinds = ("text", "features")
    obj(meta, "", ("kind",), (labels, "vocab", "feature_size", *text_keys, *optional))
    kind = choice(meta["kind"], "kind", kinds)
    if kind == "text":
        obj(meta, "", ("kind", labels, "vocab", *text_keys), optional)
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


def feature_inputs(x: Any, lengths: Any, encoder: Any) -> Examples:
    """Examples of feature sequences given in Python: ``x`` (N, T, D) or one sequence (T, D),
    a NumPy array or tensor, zero-padded; ``lengths`` (N,) real steps (default: T each).

    Raises:
        ValueError: shapes that are not (N, T, D) with the model's D, or lengths outside 1..T.
    """
    if isinstance(x, str) or (isinstance(x, list | tuple) and x and isinstance(x[0], str)):
        raise ValueError("this model reads feature sequences (N, T, D), not texts")
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if x.ndim == 2:  # one sequence (T, D)
        x = x[None]
    if x.ndim != 3 or x.shape[2] != encoder.feature_size or 0 in x.shape[:2]:
        raise ValueError(
            f"x must be (N, T, D) with D = {encoder.feature_size} features per step; got "
            f"shape {x.shape}"
        )
    n, t = x.shape[:2]
    if lengths is None:
        lengths = np.full(n, t, dtype=np.int64)
    lengths = np.asarray(lengths.cpu() if hasattr(lengths, "cpu") else lengths).astype(np.int64)
    if lengths.shape != (n,) or (lengths < 1).any() or (lengths > t).any():
        raise ValueError(f"lengths must be (N,) = ({n},) values in 1..{t}; got {lengths}")
    return Examples(lengths=lengths, x=x)


def check_feature_size(features: FeatureSequences, size: int) -> None:
    """Refuse feature sequences whose D differs from the model's."""
    if features.x.shape[2] != size:
        raise DataError(
            f"{features.source}: x has {features.x.shape[2]} features per step "
            f"(shape {features.x.shape}), but the model reads {size}"
        )


def check_data_kind(model: Any, source: str | Path, features: bool) -> None:
    """Refuse text for a model of feature sequences (``model.vocab`` None), and the reverse;
    ``features``: whether ``source`` holds ``.npz`` feature sequences."""
    if model.vocab is None and not features:
        raise DataError(f"this model reads .npz feature sequences; {source} is text")
    if model.vocab is not None and features:
        raise DataError(f"this model reads text; {source} is an .npz of feature sequences")


def unknown_advice(count_unknown: bool | None, units: str) -> str:
    """What to do about labels that training never saw: at ``rnnkit eval`` (``count_unknown``
    False) the flag that counts them wrong; in training (None) a validation set that has only
    the training data's labels."""
    if count_unknown is None:
        return "validation data may hold only labels that the training data has"
    return f"pass --count-unknown-labels to count those {units} as wrong"


def refuse_text_options(run: RunConfig, path: str) -> None:
    """Refuse ``--embeddings`` (word vectors) for ``.npz`` feature sequences at ``path``."""
    if run.data.embeddings is not None:
        raise ConfigError(
            f"--embeddings loads word vectors for text; {path} holds feature sequences"
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
