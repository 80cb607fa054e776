"""Classification and entity metrics on hand-made cases with known answers; the confusion plot."""

import json

import pytest

from rnnkit.tasks.metrics import (
    classification_metrics,
    confusion_figure,
    entity_metrics,
    plot_confusion,
)

LABELS = ["a", "b", "c", "d"]
TRUE = [0, 0, 1, 1, 2]
PRED = [0, 1, 1, 1, 0]


def test_classification_metrics_by_hand() -> None:
    m = classification_metrics(TRUE, PRED, LABELS)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["examples"] == 5 and m["labels"] == LABELS
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2}
    )
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # "d" occurs in neither true nor pred, so the macro average is over a, b, c only.
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert json.loads(json.dumps(m)) == m


def test_classification_all_and_none_correct() -> None:
    right = classification_metrics([0, 1, 2, 1], [0, 1, 2, 1], ["x", "y", "z"])
    assert right["accuracy"] == 1.0 and right["macro_f1"] == 1.0
    assert right["confusion"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    wrong = classification_metrics([0, 1, 2, 1], [1, 2, 0, 0], ["x", "y", "z"])
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0
    assert all(row["f1"] == 0.0 for row in wrong["per_class"].values())


def test_classification_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 4], [0, 1], LABELS)
    with pytest.raises(ValueError, match="examples"):
        classification_metrics([0, 1], [0], LABELS)
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [], LABELS)


GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
GUESS = [["I-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "O"]]


def test_entity_metrics_by_hand_with_conlleval_semantics() -> None:
    m = entity_metrics(GOLD, GUESS)
    # Predicted entities: PER 0-1 (conlleval reads "I-PER I-PER" as one entity; strict mode
    # would drop it and give 0), ORG 3 and ORG 1-1: one of three right, one of three found.
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["sentences"] == 2 and m["tokens"] == 7
    assert m["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }
    assert json.loads(json.dumps(m)) == m


def test_entity_metrics_all_and_none_correct() -> None:
    right = entity_metrics(GOLD, GOLD)
    assert (right["precision"], right["recall"], right["f1"], right["accuracy"]) == (1, 1, 1, 1)
    nothing = entity_metrics(GOLD, [["O"] * len(s) for s in GOLD])
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)
    assert nothing["accuracy"] == pytest.approx(2 / 7)
    assert {row["support"] for row in nothing["per_type"].values()} == {1}


def test_entity_metrics_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="sentence 1 has 3 true tags but 2 predicted"):
        entity_metrics(GOLD, [GUESS[0], ["O", "O"]])
    with pytest.raises(ValueError, match="sentences"):
        entity_metrics(GOLD, GUESS[:1])


def test_confusion_plot_is_a_labelled_png(tmp_path) -> None:
    labels = [f"label-{i}" for i in range(18)]
    confusion = [[(i * 7 + j * 3) % 11 if i != j else 40 for j in range(18)] for i in range(18)]
    figure = confusion_figure(confusion, labels)
    ax = figure.axes[0]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert ax.get_title().startswith("Confusion matrix")
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 18 * 18 and cells[0] == "40" and cells[1] == str(3 % 11)
    path = tmp_path / "confusion.png"
    plot_confusion(confusion, labels, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="18 × 18"):
        confusion_figure(confusion[:3], labels)
