"""Text reading, tokenising, splits and TBPTT streams."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rnnkit.config import DataConfig, ModelConfig
from rnnkit.data.stdlib_corpus import MAX_CHARS, stdlib_files, stdlib_text
from rnnkit.data.text import (
    IGNORE_INDEX,
    TokenStreams,
    detokenize,
    eval_chunks,
    load_lm_data,
    read_text,
    token_text,
    tokenize,
    tokens_needed,
)
from rnnkit.data.vocab import EOS, Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.tasks.lm import LanguageModel


def test_char_tokens_are_characters() -> None:
    assert tokenize("ab\nc", "char") == ["a", "b", "\n", "c"]


def test_word_tokens_end_each_line_with_eos() -> None:
    assert tokenize("the cat\n  sat  on\n\nx", "word") == [
        *["the", "cat", EOS],
        *["sat", "on", EOS],
        EOS,
        *["x", EOS],
    ]


@given(st.text(max_size=100))
def test_char_detokenize_inverts_tokenize(text: str) -> None:
    assert detokenize(tokenize(text, "char"), "char") == text


def test_word_detokenize_joins_with_spaces_and_newlines() -> None:
    text = "the cat sat\non the mat\n"
    assert detokenize(tokenize(text, "word"), "word") == text


def test_token_text_spaces_words_but_not_line_starts() -> None:
    assert token_text("cat", "the", "word") == " cat"
    assert token_text("cat", EOS, "word") == "cat"
    assert token_text("cat", None, "word") == "cat"
    assert token_text(EOS, "cat", "word") == "\n"
    assert token_text(EOS, "x", "char") == ""
    assert token_text("<unk>", "x", "char") == "\ufffd"


def test_read_folder_concatenates_sorted_files_and_skips_hidden(tmp_path) -> None:
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("no\n", encoding="utf-8")
    assert read_text(tmp_path) == "first\nsecond\nthird\n"


def test_read_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"nope.txt does not exist"):
        read_text(tmp_path / "nope.txt")


def test_read_empty_file(tmp_path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.txt is empty"):
        read_text(tmp_path / "empty.txt")


def test_read_undecodable_file_names_the_line_and_byte_offset(tmp_path) -> None:
    (tmp_path / "bin.dat").write_bytes("héllo".encode() + b"\xff\xfe rest")
    with pytest.raises(DataError, match=r"bin.dat:1: not valid utf-8 text: byte 0xff at offset 6"):
        read_text(tmp_path / "bin.dat")
    assert read_text(tmp_path / "bin.dat", encoding="latin-1").startswith("hÃ©llo")
    (tmp_path / "late.txt").write_bytes(b"one\ntwo\r\nthree \xe9t\xe9\n")
    with pytest.raises(DataError, match=r"late.txt:3: not valid utf-8 text: byte 0xe9 at offset"):
        read_text(tmp_path / "late.txt")


def test_read_nul_bytes_look_binary(tmp_path) -> None:
    (tmp_path / "nul.bin").write_bytes(b"abc\x00def")
    with pytest.raises(DataError, match=r"nul.bin:1: looks binary: it has a NUL byte at offset 3"):
        read_text(tmp_path / "nul.bin")
    (tmp_path / "nul2.bin").write_bytes(b"a\nb\nc\x00")
    with pytest.raises(DataError, match=r"nul2.bin:3: looks binary"):
        read_text(tmp_path / "nul2.bin")


def test_val_frac_takes_the_last_fraction(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")
    data = load_lm_data(DataConfig(path=str(path), val_frac=0.2))
    assert (data.train.numel(), data.val.numel()) == (80, 20)
    assert "".join(data.vocab.decode(data.val.tolist())) == "abcdefghij" * 2


def test_val_file_and_word_level_min_freq(tmp_path) -> None:
    (tmp_path / "train.txt").write_text("a b a\nb a c\n", encoding="utf-8")
    (tmp_path / "val.txt").write_text("a z\n", encoding="utf-8")
    cfg = DataConfig(
        path=str(tmp_path / "train.txt"), val=str(tmp_path / "val.txt"), level="word", min_freq=2
    )
    data = load_lm_data(cfg)
    assert data.vocab.tokens[4:] == ["a", "b"]  # c is seen once; <eos> is a special
    assert data.train.tolist() == [4, 5, 4, 3, 5, 4, 1, 3]
    assert data.val.tolist() == [4, 1, 3]


def test_tiny_validation_split_is_an_error(tmp_path) -> None:
    (tmp_path / "c.txt").write_text("abcdefghij", encoding="utf-8")
    with pytest.raises(DataError, match="validation needs at least 2"):
        load_lm_data(DataConfig(path=str(tmp_path / "c.txt"), val_frac=0.1))


def test_streams_shapes_and_contiguity() -> None:
    B, T = 3, 5
    ids = torch.arange(50)  # L = 49 // 3 = 16 steps per stream, 3 chunks of 5
    streams = TokenStreams(ids, B, T)
    assert len(streams) == 3
    x0, y0 = streams.chunk(0)
    x1, _ = streams.chunk(1)
    assert x0.shape == y0.shape == (B, T)
    assert torch.equal(y0, x0 + 1)  # targets are the next tokens
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # chunk 1 continues chunk 0, stream by stream
    assert x0[:, 0].tolist() == [0, 16, 32]  # streams are contiguous thirds
    with pytest.raises(IndexError):
        streams.chunk(3)


def test_streams_need_one_batch() -> None:
    assert tokens_needed(3, 5) == 16
    with pytest.raises(ValueError, match="at least 16 tokens"):
        TokenStreams(torch.arange(15), 3, 5)
    assert len(TokenStreams(torch.arange(16), 3, 5)) == 1


def test_carried_state_equals_one_long_pass() -> None:
    model = LanguageModel(
        ModelConfig(cell="gru", num_layers=2, hidden_size=6, embedding_size=4, dropout=0.0), 7
    ).eval()
    ids = torch.randint(0, 7, (40,))
    streams = TokenStreams(ids, 3, 4)
    with torch.no_grad():
        whole, _ = model(streams.inputs[:, : 4 * len(streams)])  # (B, L, V)
        state, chunks = None, []
        for i in range(len(streams)):
            logits, state = model(streams.chunk(i)[0], state)  # (B, T, V)
            chunks.append(logits)
    torch.testing.assert_close(torch.cat(chunks, dim=1), whole)


def test_eval_chunks_cover_every_prediction_once() -> None:
    ids = torch.arange(24)
    xs, ys = zip(*eval_chunks(ids, batch_size=5, seq_len=3), strict=True)
    x, y = torch.cat(xs, dim=1), torch.cat(ys, dim=1)  # (5, 5)
    assert x.shape == (5, 5)
    targets = y[y != IGNORE_INDEX]
    assert sorted(targets.tolist()) == list(range(1, 24))
    assert torch.equal(y[y != IGNORE_INDEX], x[y != IGNORE_INDEX] + 1)
    assert [c.shape[1] for c in xs] == [3, 2]


def test_eval_chunks_use_fewer_streams_than_tokens() -> None:
    ((x, y),) = list(eval_chunks(torch.tensor([4, 5, 6]), batch_size=8, seq_len=10))
    assert x.tolist() == [[4], [5]] and y.tolist() == [[5], [6]]
    assert Vocab.pad_id == 0


def test_stdlib_corpus_is_bounded_and_deterministic() -> None:
    text = stdlib_text()
    assert 100_000 < len(text) <= MAX_CHARS
    assert text == stdlib_text()
    assert "def " in text and "import " in text
    names = [p.name for p in stdlib_files()]
    assert names == sorted(names) and all(n.endswith(".py") for n in names)
    assert 0 < len(stdlib_text(50_000)) <= 50_000


def test_universal_newlines_make_every_line_end_one_token(tmp_path) -> None:
    from rnnkit.config import DataConfig
    from rnnkit.data.text import load_lm_data, read_text

    path = tmp_path / "windows.txt"
    path.write_bytes(b"ab\r\ncd\ref\n" * 20)
    assert read_text(path)[:9] == "ab\ncd\nef\n"
    assert read_text(path, newlines="keep")[:9] == "ab\r\ncd\ref"
    universal = load_lm_data(DataConfig(path=str(path)))
    kept = load_lm_data(DataConfig(path=str(path), newlines="keep"))
    assert "\r" not in universal.vocab and "\r" in kept.vocab
    assert universal.train.numel() + universal.val.numel() == 9 * 20


def test_val_tokens_keeps_the_first_tokens_of_the_validation_text(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")
    data = load_lm_data(DataConfig(path=str(path), val_frac=0.2, val_tokens=7))
    assert (data.train.numel(), data.val.numel()) == (80, 7)
    assert "".join(data.vocab.decode(data.val.tolist())) == "abcdefg"
    assert load_lm_data(DataConfig(path=str(path), val_frac=0.2, val_tokens=50)).val.numel() == 20
    with pytest.raises(ConfigError, match="--val-tokens must be at least 2"):
        DataConfig(val_tokens=1)
