"""Readers of labelled data: TSV and folders of labelled texts, CoNLL, pairs, .npz arrays."""

import pickle
import re

import numpy as np
import pytest

from rnnkit.data.labelled import (
    check_bio,
    parse_tag_input,
    read_conll,
    read_features,
    read_labelled_texts,
    read_pairs,
    read_vector_captions,
)
from rnnkit.data.text import IGNORE_INDEX
from rnnkit.errors import DataError


def write(path, text: str, newline: str = "\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def raises_at(path, line: int | None, problem: str):
    """pytest.raises for a DataError naming ``path`` (and ``line``) and then ``problem``."""
    where = re.escape(f"{path}:{line}:" if line is not None else str(path))
    return pytest.raises(DataError, match=where + ".*" + problem)


# Labelled texts -------------------------------------------------------------------------------


def test_tsv_splits_at_the_first_tab_and_skips_blank_lines(tmp_path) -> None:
    path = write(tmp_path / "t.tsv", "pos\ta fine film\n\n  neg \tbad\tworse \n\t\n")
    # The last line holds only a TAB: whitespace only, so it is blank.
    data = read_labelled_texts(path)
    assert data.labels == ["pos", "neg"]
    assert data.texts == ["a fine film", "bad\tworse"]
    assert data.source == str(path)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_tsv_reads_any_line_end_and_drops_the_bom(tmp_path, newline) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "1\tyes\n0\tno\n".replace("\n", newline).encode())
    data = read_labelled_texts(path)
    assert (data.labels, data.texts) == (["1", "0"], ["yes", "no"])


def test_tsv_line_without_tab_names_file_and_line(tmp_path) -> None:
    path = write(tmp_path / "train.tsv", "1\tgood\n\n0 bad\n")
    with pytest.raises(
        DataError, match=r"^" + re.escape(f"{path}:3: no TAB between label and text")
    ):
        read_labelled_texts(path)


def test_tsv_empty_label_or_text(tmp_path) -> None:
    path = write(tmp_path / "a.tsv", "1\tgood\n \tbad\n")
    with raises_at(path, 2, "empty label"):
        read_labelled_texts(path)
    path = write(tmp_path / "b.tsv", "1\tgood\n0\t  \n")
    with raises_at(path, 2, "empty text after the label '0'"):
        read_labelled_texts(path)


def test_tsv_missing_empty_blank_and_binary_files(tmp_path) -> None:
    with raises_at(tmp_path / "none.tsv", None, "does not exist"):
        read_labelled_texts(tmp_path / "none.tsv")
    with raises_at(write(tmp_path / "e.tsv", ""), None, "is empty"):
        read_labelled_texts(tmp_path / "e.tsv")
    with raises_at(write(tmp_path / "b.tsv", "\n \n"), None, "has only blank lines"):
        read_labelled_texts(tmp_path / "b.tsv")
    (tmp_path / "x.tsv").write_bytes(b"1\ta\n2\t\xff\xfe\n")
    with raises_at(tmp_path / "x.tsv", 2, "not valid utf-8 text"):
        read_labelled_texts(tmp_path / "x.tsv")
    (tmp_path / "n.tsv").write_bytes(b"1\ta\x00b\n")
    with raises_at(tmp_path / "n.tsv", 1, "looks binary"):
        read_labelled_texts(tmp_path / "n.tsv")


def test_folder_labels_are_file_stems_sorted_by_name(tmp_path) -> None:
    write(tmp_path / "Scottish.txt", "Smith\n\nMacLeod \n")
    write(tmp_path / "Arabic.txt", "Khoury\r\nNahas\r\n")
    write(tmp_path / "notes.md", "not data\n")
    write(tmp_path / ".hidden.txt", "no\n")
    (tmp_path / "sub.txt").mkdir()  # a folder named like a label file is not one
    data = read_labelled_texts(tmp_path)
    assert data.labels == ["Arabic", "Arabic", "Scottish", "Scottish"]
    assert data.texts == ["Khoury", "Nahas", "Smith", "MacLeod"]


def test_folder_without_txt_files_or_with_an_empty_one(tmp_path) -> None:
    write(tmp_path / "a.csv", "x\n")
    with raises_at(tmp_path, None, "no .txt files"):
        read_labelled_texts(tmp_path)
    write(tmp_path / "a.txt", "x\n")
    write(tmp_path / "b.txt", "\n\n")
    with raises_at(tmp_path / "b.txt", None, "has only blank lines"):
        read_labelled_texts(tmp_path)


# BIO and CoNLL --------------------------------------------------------------------------------


def test_check_bio_accepts_iob2() -> None:
    check_bio(["B-person", "I-person", "O", "B-loc", "B-loc", "I-loc", "I-loc"], "s")
    check_bio([], "s")


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        (["O", "I-per"], r"s: tag 2 'I-per' follows 'O'"),
        (["I-per"], r"s: tag 1 'I-per' follows the start of the sentence"),
        (["B-org", "I-per"], r"s: tag 2 'I-per' follows 'B-org'"),
        (["B-per", "I-per", "PER"], r"s: tag 3 'PER' is not BIO"),
        (["B-"], r"s: tag 1 'B-' is not BIO"),
        (["E-per"], r"s: tag 1 'E-per' is not BIO"),
    ],
)
def test_check_bio_errors(tags, problem) -> None:
    with pytest.raises(DataError, match=problem):
        check_bio(tags, "s")


def test_check_bio_names_the_line_when_given() -> None:
    with pytest.raises(DataError, match=r"^f.txt:12: tag 'I-x' follows 'O'"):
        check_bio(["O", "I-x"], "f.txt", lines=[11, 12])


WNUT_STYLE = (
    "-DOCSTART-\tO\n"
    "\n"
    "Empire\tB-location\n"
    "State\tI-location\n"
    "is\tO\n"
    "\t\n"  # WNUT-17's train file separates most sentences with a lone TAB
    "From\tO\n"
    "Green\tB-person\n"
    " \n"
    "\n"
    "@paul walk\tO\n"  # a token may hold a space: columns are split on TABs
)


def test_conll_wnut_style_separators_and_docstart(tmp_path) -> None:
    data = read_conll(write(tmp_path / "w.txt", WNUT_STYLE))
    assert data.tokens == [["Empire", "State", "is"], ["From", "Green"], ["@paul walk"]]
    assert data.tags == [["B-location", "I-location", "O"], ["O", "B-person"], ["O"]]


def test_conll_takes_the_first_and_last_columns(tmp_path) -> None:
    data = read_conll(write(tmp_path / "c.txt", "EU\tNNP\tB-org\nrejects\tVBZ\tO\n", "\r\n"))
    assert (data.tokens, data.tags) == ([["EU", "rejects"]], [["B-org", "O"]])


def test_conll_without_tabs_splits_on_whitespace(tmp_path) -> None:
    data = read_conll(
        write(tmp_path / "c.txt", "EU NNP  B-org\nrejects VBZ O\n\nGerman JJ B-misc\n")
    )
    assert data.tokens == [["EU", "rejects"], ["German"]]
    assert data.tags == [["B-org", "O"], ["B-misc"]]


def test_conll_column_count_must_match_the_first_line(tmp_path) -> None:
    path = write(tmp_path / "c.txt", "a\tX\tO\n\nb\tO\n")
    with raises_at(path, 3, r"2 columns, but line 1 \(the first\) has 3"):
        read_conll(path)


def test_conll_one_column(tmp_path) -> None:
    path = write(tmp_path / "c.txt", "a\tO\nb O\n")  # a space where a TAB belongs
    with raises_at(path, 2, r"one column \('b O'\)"):
        read_conll(path)


def test_conll_empty_token_or_tag(tmp_path) -> None:
    path = write(tmp_path / "c.txt", "a\tO\n\tO\n")
    with raises_at(path, 2, "empty token"):
        read_conll(path)
    path = write(tmp_path / "d.txt", "a\tO\nb\t\n")
    with raises_at(path, 2, "empty tag"):
        read_conll(path)


def test_conll_bad_bio_names_file_line_and_tag(tmp_path) -> None:
    path = write(tmp_path / "c.txt", "a\tB-x\nb\tI-x\n\nc\tO\nd\tI-x\n")
    with raises_at(path, 5, r"tag 'I-x' follows 'O'"):
        read_conll(path)
    # A sentence boundary ends an entity: I-x cannot continue the previous sentence's B-x.
    path = write(tmp_path / "d.txt", "a\tB-x\n\t\nb\tI-x\n")
    with raises_at(path, 3, r"tag 'I-x' follows the start of the sentence"):
        read_conll(path)


def test_conll_empty_files(tmp_path) -> None:
    with raises_at(write(tmp_path / "e.txt", ""), None, "is empty"):
        read_conll(tmp_path / "e.txt")
    with raises_at(write(tmp_path / "d.txt", "-DOCSTART- -X- O\n\n"), None, "has no tokens"):
        read_conll(tmp_path / "d.txt")


def test_tag_input_plain_sentences() -> None:
    sentences, conll = parse_tag_input("\ufeffI love  Paris\n\n  \nok\n", "stdin")
    assert (sentences, conll) == ([["I", "love", "Paris"], ["ok"]], False)
    assert parse_tag_input("", "stdin") == ([], False)


def test_tag_input_conll_keeps_the_first_column() -> None:
    text = "I\tO\nlove\nParis\tB-loc\n\t\n\nok\tO\n"
    assert parse_tag_input(text, "in.txt") == ([["I", "love", "Paris"], ["ok"]], True)
    # One token per line, sentences separated by lone TABs, counts as CoNLL too.
    assert parse_tag_input("a\nb\n\t\nc\n", "in.txt") == ([["a", "b"], ["c"]], True)


def test_tag_input_conll_empty_token() -> None:
    with pytest.raises(DataError, match=r"^in.txt:2: empty token"):
        parse_tag_input("a\tO\n\tO\n", "in.txt")


# Pairs ----------------------------------------------------------------------------------------


def test_pairs_ignore_extra_columns_and_reverse(tmp_path) -> None:
    path = write(
        tmp_path / "p.txt", "Go.\tVa !\tCC-BY 2.0 (France) Attribution\n\n Hi. \tSalut !\n"
    )
    data = read_pairs(path)
    assert (data.sources, data.targets) == (["Go.", "Hi."], ["Va !", "Salut !"])
    back = read_pairs(path, reverse=True)
    assert (back.sources, back.targets) == (["Va !", "Salut !"], ["Go.", "Hi."])


def test_pairs_errors_name_file_and_line(tmp_path) -> None:
    path = write(tmp_path / "p.txt", "a\tb\nno tab here\n")
    with raises_at(path, 2, "no TAB between source and target"):
        read_pairs(path)
    path = write(tmp_path / "q.txt", "a\tb\n\n\tb\n")
    with raises_at(path, 3, "column 1 is empty"):
        read_pairs(path)
    path = write(tmp_path / "r.txt", "a\t \tc\n")
    with raises_at(path, 1, "column 2 is empty"):
        read_pairs(path, reverse=True)


# Feature sequences ----------------------------------------------------------------------------

N, T, D = 3, 5, 4


def features(**arrays) -> dict:
    x = np.arange(N * T * D, dtype=np.float64).reshape(N, T, D)
    return {"x": x, "lengths": np.array([5, 2, 3]), "y": np.array([0, 2, 1])} | arrays


def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_features_read_with_sequence_labels(tmp_path) -> None:
    arrays = features()
    data = read_features(save(tmp_path / "f.npz", **arrays), labels="sequence")
    assert data.x.dtype == np.float32 and data.x.shape == (N, T, D)
    np.testing.assert_array_equal(data.x, arrays["x"])
    assert data.lengths.dtype == np.int64 and data.lengths.tolist() == [5, 2, 3]
    assert data.y.dtype == np.int64 and data.y.tolist() == [0, 2, 1]


def test_features_step_labels_ignore_padded_steps(tmp_path) -> None:
    y = np.full((N, T), -1)  # padded steps may hold anything, -1 here
    y[0, :5], y[1, :2], y[2, :3] = [1, 2, 0, 0, 1], [3, 3], [0, 1, 2]
    data = read_features(save(tmp_path / "f.npz", **features(y=y.astype(np.int32))), labels="step")
    assert data.y.dtype == np.int64
    assert data.y.tolist() == [
        [1, 2, 0, 0, 1],
        [3, 3, *[IGNORE_INDEX] * 3],
        [0, 1, 2, *[IGNORE_INDEX] * 2],
    ]
    assert read_features(tmp_path / "f.npz", labels="any").y.shape == (N, T)


def test_features_default_lengths_and_no_labels(tmp_path) -> None:
    path = save(tmp_path / "f.npz", x=np.ones((N, T, D), dtype=np.int16), y=np.array([[1]]))
    data = read_features(path, labels="none")  # y is ignored, whatever its shape
    assert data.lengths.tolist() == [T] * N and data.y is None
    assert data.x.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "labels", "problem"),
    [
        (
            {"x": None},
            "any",
            r" has no array 'x' \(features \(N, T, D\)\); its arrays: 'lengths', 'y'",
        ),
        ({"x": np.zeros((N, T))}, "any", r": x has shape \(3, 5\); expected \(N, T, D\)"),
        ({"x": np.zeros((N, 0, D))}, "any", r": x has shape \(3, 0, 4\)"),
        ({"x": np.full((N, T, D), "a")}, "any", r": x has dtype <U1; expected floats"),
        ({"x": np.zeros((N, T, D), dtype=bool)}, "any", r": x has dtype bool"),
        (
            {"lengths": np.array([1, 2])},
            "any",
            r": lengths has shape \(2,\); expected \(N,\) = \(3,\)",
        ),
        ({"lengths": np.array([1.0, 2, 3])}, "any", r": lengths has dtype float64"),
        ({"lengths": np.array([1, 0, 3])}, "any", r": lengths\[1\] is 0; expected 1..T = 1..5"),
        ({"lengths": np.array([1, 2, 6])}, "any", r": lengths\[2\] is 6; expected 1..T = 1..5"),
        ({"y": None}, "any", r" has no array 'y' \(the labels\); its arrays: 'x', 'lengths'"),
        ({"y": np.array([0, 1])}, "any", r": y has shape \(2,\); expected \(N,\) = \(3,\) or"),
        (
            {"y": np.zeros((N, 4), dtype=int)},
            "step",
            r": y has shape \(3, 4\); expected \(N, T\) = \(3, 5\)",
        ),
        (
            {"y": np.zeros((N, T), dtype=int)},
            "sequence",
            r": y has shape \(3, 5\), a label per step; expected one per sequence, \(N,\) = \(3,\)",
        ),
        (
            {"y": np.array([0, 1, 2])},
            "step",
            r": y has shape \(3,\), a label per sequence; expected one per step, \(N, T\) = "
            r"\(3, 5\)",
        ),
        ({"y": np.array([0.0, 1, 2])}, "any", r": y has dtype float64; expected integer"),
        ({"y": np.array([0, -1, 2])}, "sequence", r": y\[1\] is -1; labels are 0 or more"),
    ],
)
def test_features_errors(tmp_path, arrays, labels, problem) -> None:
    given = {k: v for k, v in features(**arrays).items() if v is not None}
    path = save(tmp_path / "f.npz", **given)
    with pytest.raises(DataError, match="^" + re.escape(str(path)) + problem):
        read_features(path, labels=labels)


def test_features_negative_step_label_at_a_real_step(tmp_path) -> None:
    y = np.zeros((N, T), dtype=int)
    y[2, 2] = -3  # sequence 2 has 3 real steps
    path = save(tmp_path / "f.npz", **features(y=y))
    with pytest.raises(DataError, match=r": y\[2, 2\] is -3; labels are 0 or more"):
        read_features(path, labels="step")


def test_features_must_be_finite(tmp_path) -> None:
    x = features()["x"]
    x[1, 3, 2] = np.nan
    x[2, 0, 0] = 1e300  # overflows float32
    with pytest.raises(
        DataError, match=r": x\[1, 3, 2\] is nan as float32; .*\(2 values are not\)"
    ):
        read_features(save(tmp_path / "f.npz", **features(x=x)))


def test_npz_that_are_not_npz(tmp_path) -> None:
    with raises_at(tmp_path / "no.npz", None, "does not exist"):
        read_features(tmp_path / "no.npz")
    with raises_at(write(tmp_path / "e.npz", ""), None, "is empty"):
        read_features(tmp_path / "e.npz")
    with raises_at(write(tmp_path / "t.npz", "hello\n"), None, "is not an .npz archive"):
        read_features(tmp_path / "t.npz")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"x": [1.0]}))
    with raises_at(tmp_path / "p.npz", None, "is not an .npz archive.*pickled data is refused"):
        read_features(tmp_path / "p.npz")
    np.save(tmp_path / "a.npy", np.zeros((N, T, D)))
    with raises_at(tmp_path / "a.npy", None, "holds one .npy array, not an .npz archive"):
        read_features(tmp_path / "a.npy")
    save(tmp_path / "o.npz", x=np.array([{"evil": 1}], dtype=object))
    with raises_at(tmp_path / "o.npz", None, "array 'x' holds Python objects"):
        read_features(tmp_path / "o.npz")
    (tmp_path / "c.npz").write_bytes((tmp_path / "o.npz").read_bytes()[:30])
    with raises_at(tmp_path / "c.npz", None, "cannot be read as an .npz archive"):
        read_features(tmp_path / "c.npz")


# Vector captions ------------------------------------------------------------------------------


def test_vector_captions(tmp_path) -> None:
    path = save(
        tmp_path / "v.npz", x=np.eye(3, 4, dtype=np.float64), text=np.array(["zero", "one", "two"])
    )
    data = read_vector_captions(path)
    assert data.x.dtype == np.float32 and data.x.shape == (3, 4)
    assert data.texts == ["zero", "one", "two"]
    assert all(type(t) is str for t in data.texts)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"text": np.array(["a", "b"])}, r" has no array 'x' \(condition vectors \(N, D\)\)"),
        ({"x": np.zeros((2, 3))}, r" has no array 'text' \(the N texts\); its arrays: 'x'"),
        (
            {"x": np.zeros((2, 3, 1)), "text": np.array(["a", "b"])},
            r": x has shape \(2, 3, 1\); expected \(N, D\)",
        ),
        (
            {"x": np.zeros((2, 3)), "text": np.array(["a", "b", "c"])},
            r": text has shape \(3,\) but x has shape \(2, 3\)",
        ),
        (
            {"x": np.zeros((2, 3)), "text": np.array([b"a", b"b"])},
            r": text has dtype \|S1; expected strings",
        ),
        ({"x": np.zeros((2, 3)), "text": np.array(["a", " "])}, r": text\[1\] is blank"),
        ({"x": np.array([[0.0], [np.inf]]), "text": np.array(["a", "b"])}, r": x\[1, 0\] is inf"),
    ],
)
def test_vector_caption_errors(tmp_path, arrays, problem) -> None:
    path = save(tmp_path / "v.npz", **arrays)
    with pytest.raises(DataError, match="^" + re.escape(str(path)) + problem):
        read_vector_captions(path)
