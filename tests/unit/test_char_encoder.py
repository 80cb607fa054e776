"""CharEncoder and char_ids: shapes, padded words, independence from padding and other words."""

import pytest
import torch

from rnnkit.data.examples import char_batch
from rnnkit.tasks.char_encoder import CharEncoder, char_ids

E, H = 5, 7
CHARS = {c: i for i, c in enumerate("abcdefgh", start=2)}  # 0 padding, 1 unknown
SENTENCES = [["bad", "cafe"], ["a"], ["head", "fed", "bead"]]
KINDS = ["lstm", "cnn"]


def test_char_ids_pads_cuts_and_maps_unknown_characters() -> None:
    chars, lengths = char_ids([["ab", "hxa"], ["abcdefgh"]], CHARS, unk_id=1, max_word_len=4)
    assert chars.shape == (2, 2, 4) and chars.dtype == torch.int64
    assert lengths.tolist() == [[2, 3], [4, 0]]
    assert chars.tolist() == [
        [[2, 3, 0, 0], [9, 1, 2, 0]],
        [[2, 3, 4, 5], [0, 0, 0, 0]],
    ]
    with pytest.raises(ValueError, match="word 1 of sentence 0 is empty"):
        char_ids([["a", ""]], CHARS, unk_id=1)
    with pytest.raises(ValueError, match="unk_id"):
        char_ids([["a"]], CHARS, unk_id=0)


def test_char_batch_places_each_word_and_pads_the_rest() -> None:
    words = [[[5, 6], [7]], [], [[2, 3, 4], [8], [9, 9]]]
    chars, lengths = char_batch(words, 4)  # one step more than the longest sentence
    assert chars.dtype == lengths.dtype == torch.int64
    assert lengths.tolist() == [[2, 1, 0, 0], [0, 0, 0, 0], [3, 1, 2, 0]]
    assert chars.tolist() == [
        [[5, 6, 0], [7, 0, 0], [0, 0, 0], [0, 0, 0]],
        [[0, 0, 0]] * 4,
        [[2, 3, 4], [8, 0, 0], [9, 9, 0], [0, 0, 0]],
    ]
    chars, lengths = char_batch([[], []], 0)
    assert chars.shape == (2, 0, 1) and lengths.shape == (2, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_padded_words_are_zero(kind: str) -> None:
    encoder = CharEncoder(len(CHARS) + 2, E, H, kind=kind)
    chars, lengths = char_ids(SENTENCES, CHARS, unk_id=1)  # (3, 3, 4), (3, 3)
    out = encoder(chars, lengths)
    size = 2 * H if kind == "lstm" else H
    assert encoder.output_size == size
    assert out.shape == (3, 3, size)
    assert not out[1, 1:].any() and not out[0, 2].any()
    assert out[lengths > 0].abs().sum(dim=1).gt(0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_a_word_does_not_depend_on_padding_or_other_words(kind: str) -> None:
    encoder = CharEncoder(len(CHARS) + 2, E, H, kind=kind)
    chars, lengths = char_ids(SENTENCES, CHARS, unk_id=1)
    out = encoder(chars, lengths)  # (B, T, output_size)
    # Wider words and garbage ids after each word's end and in padded words.
    wide = torch.randint(1, len(CHARS) + 2, (3, 4, 9))  # (B, T + 1, W + 5)
    wide[:, :3, :4] = torch.where(chars > 0, chars, wide[:, :3, :4])
    wide_lengths = torch.zeros(3, 4, dtype=torch.int64)
    wide_lengths[:, :3] = lengths
    wide_out = encoder(wide, wide_lengths)
    torch.testing.assert_close(wide_out[:, :3], out)
    assert not wide_out[:, 3].any()
    for b, sentence in enumerate(SENTENCES):  # each word alone, unpadded
        for t, word in enumerate(sentence):
            alone = encoder(*char_ids([[word]], CHARS, unk_id=1))  # (1, 1, output_size)
            torch.testing.assert_close(alone[0, 0], out[b, t])


def test_lstm_output_is_the_final_states_of_each_direction() -> None:
    encoder = CharEncoder(len(CHARS) + 2, E, H, kind="lstm")
    chars, lengths = char_ids([["cafe"]], CHARS, unk_id=1)
    x = encoder.embedding(chars[0])  # (1, 4, E)
    outputs, _ = encoder.lstm(x)  # (1, 4, 2H)
    expected = torch.cat([outputs[0, -1, :H], outputs[0, 0, H:]])  # forward end, backward start
    torch.testing.assert_close(encoder(chars, lengths)[0, 0], expected)


def test_cnn_output_is_the_max_over_real_characters() -> None:
    encoder = CharEncoder(len(CHARS) + 2, E, H, kind="cnn")
    chars, lengths = char_ids([["cafe", "ab"]], CHARS, unk_id=1)
    x = encoder.embedding(chars[0, 1, :2])  # (2, E), "ab" alone
    conv = encoder.conv(x.T[None])  # (1, H, 2), zero padding on both sides
    torch.testing.assert_close(encoder(chars, lengths)[0, 1], conv[0].amax(dim=1))


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_the_embeddings_and_all_padding_is_fine(kind: str) -> None:
    encoder = CharEncoder(len(CHARS) + 2, E, H, kind=kind)
    chars, lengths = char_ids(SENTENCES, CHARS, unk_id=1)
    encoder(chars, lengths).sum().backward()
    grad = encoder.embedding.weight.grad
    assert grad[2:].abs().sum() > 0 and not grad[0].any()
    empty = encoder(torch.zeros(2, 3, 4, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64))
    assert empty.shape == (2, 3, encoder.output_size) and not empty.any()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        CharEncoder(10, kind="gru")
    encoder = CharEncoder(10, E, H)
    with pytest.raises(ValueError, match="word_lengths must be in"):
        encoder(torch.ones(1, 2, 3, dtype=torch.int64), torch.tensor([[3, 4]]))
    with pytest.raises(ValueError, match=r"chars \(B, T, W\)"):
        encoder(torch.ones(2, 3, dtype=torch.int64), torch.tensor([3, 3]))
