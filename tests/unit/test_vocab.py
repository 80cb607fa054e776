"""Vocab: special tokens, min-freq, encode/decode round trip, vocab.json."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnkit.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab
from rnnkit.errors import CheckpointError


def test_specials_come_first_with_fixed_ids() -> None:
    vocab = Vocab.build("banana")
    assert vocab.tokens[:4] == [PAD, UNK, BOS, EOS]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert len(vocab) == 4 + 3  # a, n, b


def test_build_orders_by_count_then_token() -> None:
    vocab = Vocab.build("banana")
    assert vocab.tokens[4:] == ["a", "n", "b"]  # 3, 2, 1 occurrences


def test_min_freq_drops_rare_tokens_to_unk() -> None:
    words = ["the", "cat", "the", "dog", "the", "cat", "a"]
    vocab = Vocab.build(words, min_freq=2)
    assert vocab.tokens[4:] == ["the", "cat"]
    assert vocab.encode(["the", "dog", "cat"]) == [4, vocab.unk_id, 5]


def test_specials_in_the_text_are_not_duplicated() -> None:
    vocab = Vocab.build(["<eos>", "x", "<eos>"])
    assert vocab.tokens == [*SPECIALS, "x"]
    assert vocab.encode(["<eos>"]) == [vocab.eos_id]


@given(st.text(min_size=1, max_size=200))
def test_encode_decode_round_trip(text: str) -> None:
    vocab = Vocab.build(text)
    assert "".join(vocab.decode(vocab.encode(text))) == text


def test_unknown_lists_distinct_unseen_tokens_in_order() -> None:
    vocab = Vocab.build("abc")
    assert vocab.unknown("xaybx") == ["x", "y"]
    assert vocab.encode("xa") == [vocab.unk_id, vocab.encode("a")[0]]


def test_save_load_round_trip(tmp_path) -> None:
    vocab = Vocab.build("héllo wörld\n")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab.to_dict()), encoding="utf-8")
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert loaded == vocab
    assert loaded.tokens == vocab.tokens
    saved = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert saved["specials"] == {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS}


def test_load_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"has no vocab\.json"):
        Vocab.load(tmp_path / "vocab.json")


@pytest.mark.parametrize(
    "content",
    ['{"tokens": ["a", "b"]}', "not json", '{"tokens": "abc"}', "[1, 2]"],
)
def test_load_corrupted_file_says_so(tmp_path, content: str) -> None:
    (tmp_path / "vocab.json").write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"vocab.json is corrupted"):
        Vocab.load(tmp_path / "vocab.json")
