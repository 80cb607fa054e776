r"""Character-level word features: a vector per word built from its spelling.

A word the vocabulary has never seen (or saw rarely) still has characters, prefixes and
suffixes a model can use (Lample et al. 2016 use a BiLSTM, Ma & Hovy 2016 a CNN).
``char_ids`` turns sentences of words into padded character ids; ``CharEncoder`` encodes them
(the tagger's ``--char-features``, beside each word's embedding). ``SpelledEmbedding`` is the
back-off of ``seq2seq``'s ``--char-features``: rare and unseen source words are read from
their spelling instead of an embedding row (Luong & Manning 2016).
Character id 0 is padding; a word of length 0 is a padded word and encodes to zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.data.examples import MAX_WORD_CHARS, char_batch

CharEncoderKind = Literal["lstm", "cnn"]

PAD_ID = 0
"""The character id of padding (after the end of a word, and in padded words)."""

UNK_ID = 1
"""The character id of characters the encoder never saw (``SpelledEmbedding``)."""


def char_ids(
    words: list[list[str]], char_index: dict[str, int], unk_id: int, max_word_len: int = 20
) -> tuple[Tensor, Tensor]:
    """Character ids of sentences of words, padded with 0 to the longest sentence and word.

    Args:
        words: B sentences, each a list of words (non-empty strings).
        char_index: character -> id; ids must not be 0 (padding).
        unk_id: the id of characters missing from ``char_index``.
        max_word_len: words are cut to their first ``max_word_len`` characters.

    Returns:
        chars (B, T, W) int64 and word_lengths (B, T) int64 (0 for padded words), where T is
        the longest sentence and W the longest (cut) word.

    Raises:
        ValueError: ``unk_id`` is 0, ``max_word_len`` is below 1, or a word is empty.
    """
    if unk_id == PAD_ID:
        raise ValueError(f"unk_id must not be {PAD_ID}, the padding id")
    if max_word_len < 1:
        raise ValueError(f"max_word_len must be at least 1, got {max_word_len}")
    lengths = [[min(len(word), max_word_len) for word in sentence] for sentence in words]
    for b, sentence in enumerate(lengths):
        if 0 in sentence:
            raise ValueError(f"word {sentence.index(0)} of sentence {b} is empty")
    ids = [
        [[char_index.get(c, unk_id) for c in word[:max_word_len]] for word in sentence]
        for sentence in words
    ]
    return char_batch(ids, max((len(sentence) for sentence in words), default=0))


class CharEncoder(nn.Module):
    r"""One vector per word from its characters' embeddings ``c_1 .. c_n``.

        lstm:  [→h_n ; ←h_1], the final states of a bidirectional LSTM over c_1 .. c_n
               (``output_size`` = 2·hidden_size)
        cnn:   max_{i≤n} (conv1d(c, kernel 3, zero padding 1))_i, per channel
               (``output_size`` = hidden_size)

    The words of all sentences are encoded as one batch of the real words only (packed by
    word length for the LSTM), so a word's vector depends neither on padding nor on the other
    words. Padded words (length 0) give zeros.

    Args:
        num_chars: number of character ids, padding (0) included.
        char_embedding_size: E, features per character.
        hidden_size: H, the LSTM's hidden size per direction, or the CNN's channels.
        kind: ``"lstm"`` or ``"cnn"``.

    Shapes:
        chars (B, T, W) int64, word_lengths (B, T) int64 in [0, W] -> (B, T, output_size)
    """

    def __init__(
        self,
        num_chars: int,
        char_embedding_size: int = 32,
        hidden_size: int = 32,
        kind: CharEncoderKind = "lstm",
    ) -> None:
        super().__init__()
        if kind not in get_args(CharEncoderKind):
            raise ValueError(f"kind must be one of {get_args(CharEncoderKind)}; got {kind!r}")
        self.kind = kind
        self.embedding = nn.Embedding(num_chars, char_embedding_size, padding_idx=PAD_ID)
        if kind == "lstm":
            self.lstm = nn.LSTM(
                char_embedding_size, hidden_size, batch_first=True, bidirectional=True
            )
            self.output_size = 2 * hidden_size
        else:
            self.conv = nn.Conv1d(char_embedding_size, hidden_size, kernel_size=3, padding=1)
            self.output_size = hidden_size

    def extra_repr(self) -> str:
        return f"{self.kind!r}, output_size={self.output_size}"

    def forward(self, chars: Tensor, word_lengths: Tensor) -> Tensor:
        """Encode every word: chars (B, T, W), word_lengths (B, T) -> (B, T, output_size)."""
        if chars.dim() != 3 or word_lengths.shape != chars.shape[:2]:
            raise ValueError(
                f"CharEncoder expects chars (B, T, W) and word_lengths (B, T), got shapes "
                f"{tuple(chars.shape)} and {tuple(word_lengths.shape)}"
            )
        B, T, W = chars.shape
        if bool((word_lengths < 0).any()) or bool((word_lengths > W).any()):
            raise ValueError(f"word_lengths must be in [0, {W}] (W = chars.shape[2])")
        flat_lengths = word_lengths.reshape(B * T)  # (B·T,)
        real = (flat_lengths > 0).nonzero().squeeze(1)  # (N,) the real words
        out = self.embedding.weight.new_zeros(B * T, self.output_size)  # (B·T, output_size)
        if len(real) == 0:
            return out.reshape(B, T, self.output_size)
        lengths = flat_lengths[real]  # (N,)
        in_word = torch.arange(W, device=chars.device) < lengths[:, None]  # (N, W)
        words = chars.reshape(B * T, W)[real].masked_fill(~in_word, PAD_ID)  # (N, W)
        embedded = self.embedding(words) * in_word[:, :, None]  # (N, W, E), zero past the end
        if self.kind == "lstm":
            packed = pack_padded_sequence(
                embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            _, (h_n, _) = self.lstm(packed)  # (2, N, H), in the order of `real`
            encoded = torch.cat([h_n[0], h_n[1]], dim=1)  # (N, 2H)
        else:
            features = self.conv(embedded.transpose(1, 2))  # (N, H, W)
            features = features.masked_fill(~in_word[:, None, :], float("-inf"))  # (N, H, W)
            encoded = features.amax(dim=2)  # (N, H)
        return out.index_copy(0, real, encoded).reshape(B, T, self.output_size)


class SpelledEmbedding(nn.Module):
    r"""Token ids -> vectors: the frequent tokens have their own vector, every other token is
    read from its spelling (the back-off of Luong & Manning 2016 for rare and unseen words):

        e(w) = E[w]                          w < frequent (the specials and frequent words)
        e(w) = tanh(W_s c(w) + b_s)          otherwise; c(w) = CharEncoder(w's characters)

    In training, a frequent word is also read from its spelling with probability
    ``spell_rate`` (drawn from torch's generator), so that the character path learns from
    common words as well as rare ones (and no word is read as ``<unk>``).

    The embedding knows its tokens as strings (``words``): the vocabulary's first, then any
    word met later by :meth:`ids`, which gets the next free id (not saved: such words have no
    row, only a spelling).

    Args:
        num_tokens: V, the vocabulary's size (specials included).
        frequent: F, ids below F have a row of E; F <= V.
        embedding_size: E.
        chars: the characters the encoder knows (ids 2, 3, ...; 0 is padding, 1 unknown).
        spell_rate: the probability of reading a frequent word from its spelling in training.
        specials: S, the ids below S (``<pad>``, ``<unk>``, ...) are never spelled.

    Attributes:
        num_tokens, output_size (E): as :class:`rnnkit.tasks.decoder.TokenEmbedding`'s.
        embedding: ``nn.Embedding(F, E)``; chars: a :class:`CharEncoder` (a CNN of 64 filters);
        project: W_s, b_s (E, 64).

    Shapes:
        tokens (...) int64 -> (..., E)
    """

    def __init__(
        self,
        num_tokens: int,
        frequent: int,
        embedding_size: int,
        chars: Sequence[str],
        *,
        spell_rate: float = 0.0,
        specials: int = 4,
    ) -> None:
        super().__init__()
        if not specials <= frequent <= num_tokens:
            raise ValueError(f"need {specials} <= frequent <= num_tokens, got {frequent}")
        self.num_tokens, self.frequent, self.specials = num_tokens, frequent, specials
        self.spell_rate = spell_rate
        self.embedding = nn.Embedding(frequent, embedding_size)
        self.char_index = {c: i + 2 for i, c in enumerate(chars)}
        self.chars = CharEncoder(len(chars) + 2, 32, 64, "cnn")
        self.project = nn.Linear(self.chars.output_size, embedding_size)
        self.output_size = embedding_size
        self.words: list[str] = []
        self.index: dict[str, int] = {}

    def extra_repr(self) -> str:
        return f"{self.num_tokens}, frequent={self.frequent}, spell_rate={self.spell_rate}"

    def set_words(self, words: Sequence[str]) -> None:
        """Give the embedding its vocabulary's V tokens, in id order."""
        if len(words) != self.num_tokens:
            raise ValueError(f"{len(words)} words for an embedding of {self.num_tokens} tokens")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    def ids(self, tokens: Sequence[str]) -> list[int]:
        """The ids of ``tokens``: a word the vocabulary lacks gets the next free id, whose
        vector is read from its spelling."""
        found = []
        for token in tokens:
            i = self.index.get(token)
            if i is None:
                i = self.index[token] = len(self.words)
                self.words.append(token)
            found.append(i)
        return found

    def forward(self, tokens: Tensor) -> Tensor:
        spelled = tokens >= self.frequent  # (...)
        if self.training and self.spell_rate > 0:
            draw = torch.rand(tokens.shape, device=tokens.device) < self.spell_rate
            spelled = spelled | (draw & (tokens >= self.specials))
        out = self.embedding(tokens.masked_fill(spelled, 0))  # (..., E)
        if not bool(spelled.any()):
            if self.training:  # every parameter gets a gradient, as DistributedDataParallel needs
                spelling = (*self.chars.parameters(), *self.project.parameters())
                out = out + 0.0 * sum(p.sum() for p in spelling)
            return out
        unique, inverse = tokens[spelled].unique(return_inverse=True)  # (U,), (N,)
        if int(unique[-1]) >= len(self.words):
            raise ValueError(
                f"token id {int(unique[-1])} has no spelling: the embedding knows "
                f"{len(self.words)} words (set_words gives it the vocabulary's)"
            )
        spellings = [self.words[i] for i in unique.tolist()]
        chars, lengths = char_ids([spellings], self.char_index, UNK_ID, MAX_WORD_CHARS)
        encoded = self.chars(chars.to(tokens.device), lengths.to(tokens.device))[0]  # (U, 64)
        vectors = torch.tanh(self.project(encoded))[inverse]  # (N, E)
        return out.masked_scatter(spelled[..., None], vectors.to(out.dtype))
