"""The sequence encoder of ``classify`` and ``tag``: inputs -> recurrent layers, per step.

Text: token embedding (in training, ``--word-dropout`` turns words into ``<unk>`` and
``--embedding-dropout`` drops whole word types, as in AWD-LSTM), plus, for taggers, a
character encoding of each word and its casing class (``--word-shape``), then dropout.
Feature sequences: standardised with the training split's statistics, kept as buffers
(``feature_mean``, ``feature_std``) in the model, so raw features go in at prediction; in
training, ``--feature-noise`` adds Gaussian noise to them.
Then ``num_layers`` recurrent layers of ``cell`` (optionally bidirectional) that get the real
``lengths``: padded steps change nothing, and the reverse direction reads each sequence from
its own end.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor, nn

import rnnkit.layers as recurrent_layers
from rnnkit.config import ModelConfig
from rnnkit.data.embeddings import read_word_vectors
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.layers.dropout import Dropout, current_generator
from rnnkit.layers.regularisation import embedding_dropout
from rnnkit.tasks.char_encoder import CharEncoder

logger = logging.getLogger(__name__)

LAYER_CLASSES = {
    "rnn": "RNN",
    "gru": "GRU",
    "lstm": "LSTM",
    "mingru": "MinGRU",
    "minlstm": "MinLSTM",
}
MINIMAL_CELLS = ("mingru", "minlstm")


def unknown_words(tokens: Tensor, p: float) -> Tensor:
    """Word dropout to ``<unk>``: each real token (not padding) becomes ``<unk>`` with
    probability ``p``, one draw per token (Lample et al. 2016 do this to words seen once).

    Shapes: tokens (B, T) int64 -> (B, T) int64.
    """
    draws = torch.rand(tokens.shape, device=tokens.device, generator=current_generator())
    drop = (draws < p) & (tokens != Vocab.pad_id)  # (B, T)
    return tokens.masked_fill(drop, Vocab.unk_id)  # (B, T)


def uniform_embedding(embedding: nn.Embedding) -> None:
    """``--embedding-init uniform``: rows drawn from U(-sqrt(3/E), sqrt(3/E)), a variance of
    1/E (Ma & Hovy 2016) instead of nn.Embedding's N(0, 1); the padding row stays zero.

    A rare word's vector then starts near zero rather than as a random vector of norm ~sqrt(E)
    that a few updates barely move, beside the character encoder's outputs in (-1, 1).
    """
    bound = math.sqrt(3.0 / embedding.embedding_dim)
    with torch.no_grad():
        nn.init.uniform_(embedding.weight, -bound, bound)  # (V, E)
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()


class SequenceEncoder(nn.Module):
    """Per-step states of token or feature sequences.

    Args:
        config: the architecture (cell, layers, sizes, dropout, bidirectional).
        vocab_size: V for token inputs, or None for feature inputs.
        feature_size: D for feature inputs, or None for token inputs.
        num_chars: characters (padding included) for a character encoder per word, or None.
        shapes: the embedding of each word's casing class (``--word-shape``), or None.

    Shapes:
        forward: inputs (B, T) int64 or (B, T, D) float, lengths (B,), chars (B, T, W),
        word_lengths (B, T) -> (B, T, num_directions · H)
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        vocab_size: int | None = None,
        feature_size: int | None = None,
        num_chars: int | None = None,
        shapes: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (vocab_size is None) == (feature_size is None):
            raise ValueError("SequenceEncoder needs exactly one of vocab_size and feature_size")
        if config.cell in MINIMAL_CELLS and config.bidirectional:
            raise ConfigError(f"--cell {config.cell} has no --bidirectional form")
        self.config = config
        if vocab_size is not None:
            if config.embedding_size < 1:
                raise ConfigError("text tasks other than lm need --embedding-size of at least 1")
            self.embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=0)
            if config.embedding_init == "uniform":
                uniform_embedding(self.embedding)
            input_size = config.embedding_size
            if config.feature_noise:
                raise ConfigError("--feature-noise perturbs .npz features: text inputs have none")
        else:
            for name in ("embedding_dropout", "word_dropout"):
                if getattr(config, name):
                    flag = "--" + name.replace("_", "-")
                    raise ConfigError(f"{flag} drops words: feature inputs have none")
            if config.embedding_init != "normal":
                raise ConfigError(
                    "--embedding-init starts the word embeddings: feature inputs have none"
                )
            self.embedding = None
            self.register_buffer("feature_mean", torch.zeros(feature_size))
            self.register_buffer("feature_std", torch.ones(feature_size))
            input_size = feature_size
        self.feature_size = feature_size
        self.chars = CharEncoder(num_chars) if num_chars is not None else None
        if self.chars is not None and config.embedding_init == "uniform":
            uniform_embedding(self.chars.embedding)
        if self.chars is not None:
            input_size += self.chars.output_size
        self.shapes = shapes
        if shapes is not None:
            input_size += shapes.output_size
        self.input_dropout = Dropout(config.dropout)
        layer = getattr(recurrent_layers, LAYER_CLASSES[config.cell])
        options = {"impl": config.impl, "batch_first": True, "num_layers": config.num_layers}
        if config.cell not in MINIMAL_CELLS:
            options |= {
                "bidirectional": config.bidirectional,
                "dropout": config.dropout if config.num_layers > 1 else 0.0,
            }
        self.rnn = layer(input_size, config.hidden_size, **options)
        self.num_directions = 2 if config.bidirectional else 1
        self.output_size = self.num_directions * config.hidden_size

    def forward(
        self,
        inputs: Tensor,
        lengths: Tensor,
        chars: Tensor | None = None,
        word_lengths: Tensor | None = None,
    ) -> Tensor:
        """Per-step outputs (B, T, num_directions · H); padded steps are zero."""
        if self.embedding is not None:
            if self.training and self.config.word_dropout:
                inputs = unknown_words(inputs, self.config.word_dropout)  # (B, T)
            x = self.embedding(inputs)  # (B, T, E)
            if self.training:
                V, p = self.embedding.num_embeddings, self.config.embedding_dropout
                x = embedding_dropout(x, inputs, V, p)  # (B, T, E)
        else:
            x = self.features(inputs)  # (B, T, D)
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars, word_lengths)], dim=-1)  # (B, T, E + C)
        if self.shapes is not None:
            x = torch.cat([x, self.shapes(chars)], dim=-1)  # (B, T, E [+ C] + S)
        x = self.input_dropout(x)
        if self.config.cell not in MINIMAL_CELLS:  # zero at padded steps
            return self.rnn(x, lengths=lengths.cpu(), final_state=False)[0]  # (B, T, dirs·H)
        out, _ = self.rnn(x)  # (B, T, H), causal: padding at the end changes no real step
        mask = torch.arange(out.shape[1], device=out.device) < lengths.to(out.device)[:, None]
        return out * mask.unsqueeze(-1).to(out.dtype)  # (B, T, H)

    def features(self, inputs: Tensor) -> Tensor:
        """Raw features (B, T, D) standardised with the training statistics; in training,
        plus ``--feature-noise``'s Gaussian noise. -> (B, T, D) fp32."""
        if inputs.shape[-1] != self.feature_size:
            raise ValueError(
                f"the model reads {self.feature_size} features per step; got "
                f"{inputs.shape[-1]} (inputs.shape={tuple(inputs.shape)})"
            )
        x = (inputs.float() - self.feature_mean) / self.feature_std  # (B, T, D)
        if self.training and self.config.feature_noise:
            noise = torch.randn(x.shape, device=x.device, generator=current_generator())
            x = x + self.config.feature_noise * noise  # (B, T, D)
        return x

    def set_feature_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise inputs with these (D,) statistics of the training split."""
        self.feature_mean.copy_(torch.from_numpy(mean))
        self.feature_std.copy_(torch.from_numpy(std))

    def load_word_vectors(self, path: str, tokens: list[str], *, freeze: bool) -> int:
        """Copy pretrained vectors of ``tokens`` (the vocabulary, in id order) into the
        embedding; words missing from the file keep their random initialisation.

        Returns:
            How many of the vocabulary's words the file had.

        Raises:
            DataError: the file is missing or malformed.
            ConfigError: its vectors are not ``--embedding-size`` long.
        """
        matrix, found, dim = read_word_vectors(path, tokens)
        if dim != self.embedding.embedding_dim:
            raise ConfigError(
                f"{path} has {dim}-dimensional vectors but --embedding-size is "
                f"{self.embedding.embedding_dim}; pass --embedding-size {dim}"
            )
        with torch.no_grad():
            rows = torch.from_numpy(np.flatnonzero(found))
            self.embedding.weight[rows] = torch.from_numpy(matrix[found])
        self.embedding.weight.requires_grad_(not freeze)
        return int(found.sum())
