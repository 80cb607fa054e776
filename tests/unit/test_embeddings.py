"""Pretrained word vectors in the word2vec / GloVe text format."""

import re

import numpy as np
import pytest

from rnnkit.data.embeddings import read_word_vectors
from rnnkit.errors import DataError

GLOVE = "the 0.1 0.2 0.3\nParis 1 2 3\ncat -1e-1 5 .5\nparis 7 8 9\nCAT 4 4 4\n"


def write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_vectors_of_vocabulary_words_in_vocabulary_order(tmp_path) -> None:
    vocab = ["<pad>", "cat", "the", "dog"]
    matrix, found, dim = read_word_vectors(write(tmp_path / "v.txt", GLOVE), vocab)
    assert dim == 3
    assert matrix.dtype == np.float32 and matrix.shape == (4, 3)
    assert found.dtype == bool and found.tolist() == [False, True, True, False]
    expected = np.array([[0, 0, 0], [-0.1, 5, 0.5], [0.1, 0.2, 0.3], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(matrix, expected)


def test_exact_case_first_then_ignoring_case(tmp_path) -> None:
    vocab = ["Paris", "paris", "PARIS", "The", "Cat"]
    matrix, found, _ = read_word_vectors(write(tmp_path / "v.txt", GLOVE), vocab)
    assert found.all()
    assert matrix[0].tolist() == [1, 2, 3]  # exact
    assert matrix[1].tolist() == [7, 8, 9]  # exact, though "Paris" came first
    assert matrix[2].tolist() == [1, 2, 3]  # no exact match: the first caseless one
    assert matrix[3].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert matrix[4].tolist() == pytest.approx([-0.1, 5, 0.5])  # "cat" comes before "CAT"


def test_exact_match_later_in_the_file_wins(tmp_path) -> None:
    path = write(tmp_path / "v.txt", "apple 1 1\nApple 2 2\n")
    matrix, _, _ = read_word_vectors(path, ["Apple"])
    assert matrix[0].tolist() == [2, 2]


def test_word2vec_header_crlf_bom_and_trailing_spaces(tmp_path) -> None:
    path = tmp_path / "w2v.txt"
    path.write_bytes(b"\xef\xbb\xbf2 2\r\nthe 0.5 -0.5 \r\n\r\n\xc3\xa9t\xc3\xa9 1 2 \r\n")
    matrix, found, dim = read_word_vectors(path, ["été", "the"])
    assert dim == 2 and found.tolist() == [True, True]
    assert matrix.tolist() == [[1, 2], [0.5, -0.5]]


def test_no_vocabulary_word_found(tmp_path) -> None:
    matrix, found, dim = read_word_vectors(write(tmp_path / "v.txt", GLOVE), ["zebra"])
    assert (matrix.shape, found.tolist(), dim) == ((1, 3), [False], 3)
    assert not matrix.any()


def raises_at(path, line: int | None, problem: str):
    where = re.escape(f"{path}:{line}:" if line is not None else str(path))
    return pytest.raises(DataError, match="^" + where + " " + problem)


def test_ragged_vectors_name_file_line_and_counts(tmp_path) -> None:
    path = write(tmp_path / "v.txt", "the 1 2 3\ncat 1 2\n")
    with raises_at(path, 2, "'cat' has 2 values, expected 3"):
        read_word_vectors(path, ["the"])  # checked on every line, not only the vocabulary's
    path = write(tmp_path / "h.txt", "5 4\nthe 1 2 3\n")
    with raises_at(path, 2, "'the' has 3 values, expected 4"):
        read_word_vectors(path, ["the"])
    path = write(tmp_path / "m.txt", "the 1 2\ncat 1 2 3\n")
    with raises_at(path, 2, "'cat' has 3 values, expected 2"):
        read_word_vectors(path, ["the"])


def test_values_that_are_not_numbers(tmp_path) -> None:
    path = write(tmp_path / "v.txt", "the 1 2\ncat 1 x2\n")
    with raises_at(path, 2, "value 'x2' of 'cat' is not a number"):
        read_word_vectors(path, ["cat"])
    path = write(tmp_path / "n.txt", "the 1 2\ncat inf 2\n")
    with raises_at(path, 2, "value 'inf' of 'cat' is not a finite number"):
        read_word_vectors(path, ["Cat"])
    # Values are parsed only on the vocabulary's lines (one pass over a large file stays fast).
    matrix, _, _ = read_word_vectors(tmp_path / "v.txt", ["the"])
    assert matrix.tolist() == [[1, 2]]


def test_missing_empty_and_binary_files(tmp_path) -> None:
    with raises_at(tmp_path / "no.txt", None, "does not exist"):
        read_word_vectors(tmp_path / "no.txt", ["a"])
    with raises_at(write(tmp_path / "e.txt", ""), None, "is empty"):
        read_word_vectors(tmp_path / "e.txt", ["a"])
    with raises_at(write(tmp_path / "b.txt", "\n\n"), None, "is empty"):
        read_word_vectors(tmp_path / "b.txt", ["a"])
    with raises_at(write(tmp_path / "h.txt", "3 2\n"), None, "has a header line but no vectors"):
        read_word_vectors(tmp_path / "h.txt", ["a"])
    (tmp_path / "w.bin").write_bytes(b"3 2\nthe \x00\x00\x80\xbf\xff\xfe\n")
    with raises_at(tmp_path / "w.bin", 2, "not UTF-8 text"):
        read_word_vectors(tmp_path / "w.bin", ["the"])
    with raises_at(write(tmp_path / "s.txt", "the 1\n 1 2\n"), 2, "starts with a space"):
        read_word_vectors(tmp_path / "s.txt", ["the"])
    with raises_at(write(tmp_path / "w.txt", "the\n"), 1, "'the' has no values after it"):
        read_word_vectors(tmp_path / "w.txt", ["the"])
