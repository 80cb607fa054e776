"""Evaluation metrics of the classify and tag tasks, as the dicts ``rnnkit eval --json`` prints.

The numbers come from scikit-learn (classification) and seqeval (entities), not from code of
our own, so they match what users compute elsewhere. Every value is a plain Python ``int``,
``float``, ``str``, list or dict, ready for ``json.dumps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from seqeval import metrics as entity
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support
from sklearn import metrics as sk

from rnnkit.errors import ConfigError
from rnnkit.files import atomic_write


def classification_metrics(
    true: Sequence[int], pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro F1, per-class scores and the confusion matrix of class predictions.

    ``macro_f1`` is scikit-learn's default macro average: the mean F1 over the labels that
    occur in ``true`` or ``pred`` (a label that never occurs in either does not pull it down).
    ``per_class`` and ``confusion`` cover every label; a class without examples or
    predictions scores 0 where its score is undefined.

    Args:
        true: N true class ids, each in [0, C).
        pred: N predicted class ids, each in [0, C).
        labels: the C label names, in id order.

    Returns:
        ``accuracy``, ``macro_f1``, ``examples`` (N), ``labels`` (list), ``per_class``
        (label -> ``precision``, ``recall``, ``f1``, ``support``), ``confusion`` (C lists of C
        counts; row = true label, column = predicted label, both in the order of ``labels``).

    Raises:
        ValueError: no examples, ``true`` and ``pred`` differ in length, or an id is not in
            [0, C).
    """
    if len(true) != len(pred):
        raise ValueError(f"true has {len(true)} examples but pred has {len(pred)}")
    if len(true) == 0:
        raise ValueError("no examples to score")
    C = len(labels)
    outside = sorted({i for i in (*true, *pred) if not 0 <= i < C})
    if outside:
        raise ValueError(f"class ids {outside} are outside [0, {C}) for {C} labels")
    ids = list(range(C))
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        true, pred, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(sk.accuracy_score(true, pred)),
        "macro_f1": float(sk.f1_score(true, pred, average="macro", zero_division=0)),
        "examples": len(true),
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": sk.confusion_matrix(true, pred, labels=ids).tolist(),
    }


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 of BIO tag sequences, plus per-token accuracy.

    An entity is an exact span with its type, read with conlleval's rules (seqeval's default
    mode, not its strict mode): an ``I-X`` that does not continue an ``X`` entity starts a
    new one, so ``I-PER I-PER`` is one PER entity.

    Args:
        true_tags: the gold tags, one list per sentence.
        pred_tags: the predicted tags, the same number per sentence.

    Returns:
        ``precision``, ``recall``, ``f1`` (micro-averaged over entities), ``accuracy`` (per
        token), ``per_type`` (entity type -> ``precision``, ``recall``, ``f1``, ``support``),
        ``sentences``, ``tokens``. A score with nothing to count (no gold or no predicted
        entity) is 0.

    Raises:
        ValueError: no sentences, or a sentence whose two tag lists differ in length.
    """
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"true_tags has {len(true_tags)} sentences but pred_tags {len(pred_tags)}")
    if len(true_tags) == 0:
        raise ValueError("no sentences to score")
    for i, (gold, guess) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(gold) != len(guess):
            raise ValueError(f"sentence {i} has {len(gold)} true tags but {len(guess)} predicted")
    # seqeval's per-type and micro-averaged scores (its classification_report computes both,
    # and the macro and weighted averages besides, each reading every span again).
    types = sorted({span[0] for tags in (true_tags, pred_tags) for span in get_entities(tags)})
    per_type = precision_recall_fscore_support(true_tags, pred_tags, average=None, zero_division=0)
    precision, recall, f1, _ = precision_recall_fscore_support(
        true_tags, pred_tags, average="micro", zero_division=0
    )
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(entity.accuracy_score(true_tags, pred_tags)),
        "per_type": {
            kind: {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(n),
            }
            for kind, p, r, f, n in zip(types, *per_type, strict=True)
        },
        "sentences": len(true_tags),
        "tokens": sum(len(sentence) for sentence in true_tags),
    }


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> Figure:
    """A labelled confusion matrix: counts in the cells, colour = fraction of the row.

    Rows are true labels, columns predicted labels, both in the order of ``labels``. The
    colour of a cell is its count divided by its row's total, so rare classes stay visible.
    """
    counts = np.asarray(confusion, dtype=np.int64)  # (C, C)
    C = len(labels)
    if counts.shape != (C, C):
        raise ValueError(f"confusion must be {C} × {C} for {C} labels, got {counts.shape}")
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # (C, C)
    side = max(4.0, 0.45 * C + 2.5)
    figure = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true label")
    ax.set(
        xticks=range(C),
        yticks=range(C),
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix ({int(counts.sum())} examples)",
    )
    ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(labels)
    fontsize = 10 if C <= 10 else 8
    for i in range(C):
        for j in range(C):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(
                j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=fontsize
            )
    figure.tight_layout()
    return figure


def plot_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path
) -> None:
    """Write :func:`confusion_figure` of ``confusion`` as a PNG image to ``path``."""
    save_png(confusion_figure(confusion, labels), path, dpi=100)


def check_png_path(path: str | Path, flag: str = "--plot") -> None:
    """Refuse, before any work, a ``flag`` path that cannot become a PNG file.

    Raises:
        ConfigError: not a ``.png`` name, a folder, or in a folder that does not exist.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{flag} writes a PNG file; got {str(path)!r}")
    if path.is_dir():
        raise ConfigError(f"cannot write the plot {path}: it is a folder")
    if not path.resolve().parent.is_dir():
        raise ConfigError(f"cannot write the plot {path}: the folder {path.parent} does not exist")


def save_png(figure: Figure, path: str | Path, *, dpi: int = 100, **options: Any) -> None:
    """Write ``figure`` as a PNG to ``path`` under a temporary name, then rename it, so that an
    existing file is never left half-written.

    Raises:
        ConfigError: the file cannot be written (one line: the path and the reason).
    """
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi, **options))
    except OSError as err:
        raise ConfigError(f"cannot write the plot {path}: {err.strerror or err}") from None
