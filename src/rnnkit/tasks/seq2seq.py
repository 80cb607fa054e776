r"""Sequence to sequence (many-to-many, different lengths): an encoder reads the source, a
decoder writes the target while attending to the encoder's states (translation).

    o_1..o_S, s = encoder(embed(x_1..x_S))            o_s (H), s the final state
    h_0 = s                                           the decoder starts where the encoder ended
    h_t = decoder(embed(y_{t-1}), h_{t-1})            y_0 = <bos>
    c_t, a_t = attention(h_t, o_1..o_S)               padded source steps get zero weight
    \tilde h_t = tanh(W_c [c_t; h_t] + b_c)           (Luong et al. 2015, without input feeding)
    p(y_t | y_<t, x) = softmax(W_o dropout(\tilde h_t) + b_o)

With ``--char-features`` (at word level) the source embedding backs off to characters: the
words seen fewer than :data:`SPELL_BELOW` times in training, and words it never saw, are read
from their spelling by a character CNN (:class:`rnnkit.tasks.char_encoder.SpelledEmbedding`,
Luong & Manning 2016), so that an unseen inflection ("reposee") lands near a known one.

With ``--attention none`` the head reads ``h_t`` itself. A bidirectional encoder's two
directions are summed, in its outputs ``o_s`` and, layer by layer, in its final state, so the
decoder (unidirectional, as deep and wide as the encoder) starts from it unchanged. The
attention reads the decoder's state after its step, so with teacher forcing the decoder runs
over the whole target in one call; ``--teacher-forcing`` below 1 feeds, at each step and for
each example, the model's own previous greedy token instead of the true one with probability
1 - ratio (drawn from torch's generator, which the trainer state saves for an exact resume).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.config import EvalConfig, ModelConfig, PredictConfig, RunConfig
from rnnkit.data.fields import MAX_SIZE, integer, obj, strings
from rnnkit.data.generation import (
    PairBatches,
    PairData,
    TokenPairs,
    decoder_batch,
    encode_pairs,
    read_token_pairs,
    text_tokens,
    tokens_text,
)
from rnnkit.data.labelled import read_pairs
from rnnkit.data.sequences import pad_batch, split_indices
from rnnkit.data.text import Level
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.layers.dropout import Dropout
from rnnkit.sampling import Hypothesis, beam_search_batch
from rnnkit.tasks.attention import Attention, Memory
from rnnkit.tasks.base import StepLoss, Task, TaskData
from rnnkit.tasks.char_encoder import SpelledEmbedding
from rnnkit.tasks.decoder import (
    DecoderState,
    State,
    TokenEmbedding,
    corpus_bleu,
    decode_limit,
    real_steps,
    real_token_loss,
    recurrent_layer,
    token_step_loss,
)
from rnnkit.tasks.metrics import check_png_path, save_png

logger = logging.getLogger(__name__)

LENGTH_ALPHA = 1.0
"""Beam scores are log-probabilities divided by length ** LENGTH_ALPHA (the mean per token)."""

SPELL_BELOW = 2
"""With ``--char-features``, source words seen fewer times than this in training (and words
never seen) are read from their spelling; chosen on eng-fra's dev split (config.py)."""

SPELL_RATE = 0.1
"""With ``--char-features``, the probability that training reads a frequent source word from
its spelling too (:class:`SpelledEmbedding`)."""

DECODE_BATCH = 64
"""Evaluation reads and decodes at least this many pairs at a time: a decoding step costs about
as much for 64 sentences as for 16 on a CPU, so small batches only add steps."""


class Seq2Seq(nn.Module):
    """Encoder–decoder with attention; see the module docstring for the equations.

    Parameters: ``source_embedding`` and ``target_embedding`` (:class:`TokenEmbedding`),
    ``encoder`` and ``decoder`` (recurrent layers of ``config.cell``, torch's parameter
    names), ``attention`` and ``combine`` (W_c, (H, 2H)) unless ``attention`` is ``"none"``,
    ``head`` (W_o, (V_target, H)).

    Args:
        config: the architecture (``cell``, sizes, ``bidirectional`` encoder, ``attention``).
        source_size: V_source, tokens of the source vocabulary.
        target_size: V_target, tokens of the target vocabulary.
        spelling: for ``--char-features``, ``(frequent, chars)``: the source ids below
            ``frequent`` have an embedding row, the others are read from their spelling in
            the characters ``chars`` (:class:`SpelledEmbedding`); None: every source token
            has a row.

    Attributes:
        source_vocab, target_vocab: attached by :meth:`attach`; decoding text needs them.
        level: ``"char"`` or ``"word"``, how texts are cut into tokens.
        reverse: whether the data's second column is the source.
        longest_target: tokens of the longest training target (the default decoding limit).

    Shapes:
        forward: source (B, S), lengths (B,), target_in (B, T) -> logits (B, T, V_target)
        step: tokens (N,), DecoderState -> logits (N, V_target), DecoderState
    """

    def __init__(
        self,
        config: ModelConfig,
        source_size: int,
        target_size: int,
        spelling: tuple[int, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        if config.cell in ("mingru", "minlstm"):
            raise ConfigError(
                f"--task seq2seq needs a cell whose encoder takes padded lengths (rnn, gru, "
                f"lstm); --cell {config.cell} has none"
            )
        self.config = config
        hidden_size = config.hidden_size
        self.source_embedding: TokenEmbedding | SpelledEmbedding
        if spelling is None:
            self.source_embedding = TokenEmbedding(source_size, config.embedding_size)
        else:
            frequent, chars = spelling
            self.source_embedding = SpelledEmbedding(
                source_size, frequent, config.embedding_size, chars, spell_rate=SPELL_RATE
            )
        self.target_embedding = TokenEmbedding(target_size, config.embedding_size)
        self.encoder = recurrent_layer(
            config, self.source_embedding.output_size, bidirectional=config.bidirectional
        )
        self.decoder = recurrent_layer(config, self.target_embedding.output_size)
        self.attention: Attention | None = None
        self.combine: nn.Linear | None = None
        if config.attention != "none":
            self.attention = Attention(config.attention, hidden_size, hidden_size)
            self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(hidden_size, target_size)
        if config.tie_weights:
            self.head.weight = self.target_embedding.embedding.weight
        self.source_vocab: Vocab | None = None
        self.target_vocab: Vocab | None = None
        self.level: Level = "word"
        self.reverse = False
        self.longest_target = 0

    def attach(
        self, source_vocab: Vocab, target_vocab: Vocab, level: Level, reverse: bool, longest: int
    ) -> None:
        """Give the model its vocabularies and how its data were read."""
        sizes = (self.source_embedding.num_tokens, self.head.out_features)
        if (len(source_vocab), len(target_vocab)) != sizes:
            raise ValueError(
                f"vocabularies of {len(source_vocab)} and {len(target_vocab)} tokens do not fit "
                f"a model built for {sizes[0]} and {sizes[1]}"
            )
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.level, self.reverse, self.longest_target = level, reverse, longest
        if isinstance(self.source_embedding, SpelledEmbedding):
            self.source_embedding.set_words(source_vocab.tokens)

    def encode(self, source: Tensor, lengths: Tensor) -> DecoderState:
        """The decoder's first state: the encoder's final state (directions summed), with the
        encoder's outputs ready for attention (:class:`Memory`) as its context.

        Args:
            source: (B, S) int64, padded after each sequence's end.
            lengths: (B,) int64, real steps of each source, at least 1.
        """
        x = self.dropout(self.source_embedding(source))  # (B, S, E)
        outputs, final = self.encoder(x, lengths=lengths.cpu())  # (B, S, dirs·H), (L·dirs, B, H)
        if self.config.bidirectional:
            B, S, _ = outputs.shape
            outputs = outputs.view(B, S, 2, -1).sum(dim=2)  # (B, S, H)
            final = _sum_directions(final)  # (L, B, H)
        memory = None
        if self.attention is not None:
            steps = torch.arange(source.shape[1], device=source.device)  # (S,)
            mask = steps[None, :] < lengths.to(source.device)[:, None]  # (B, S)
            memory = self.attention.memory(outputs, mask)
        return DecoderState(final, memory)

    def forward(
        self,
        source: Tensor,
        lengths: Tensor,
        target_in: Tensor,
        teacher_forcing: float = 1.0,
        targets: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits of the target: (B, S), (B,), (B, T) -> (B, T, V_target); or, given
        ``targets`` (B, T) (the next tokens, ``IGNORE_INDEX`` at padding), the mean
        cross-entropy in nats per real target token, a scalar, with the head computed at the
        real steps only (in train mode against targets smoothed by ``label_smoothing``).

        ``target_in`` is ``<bos>`` followed by the target. With ``teacher_forcing`` < 1, each
        step after the first reads, per example, the true token with that probability and the
        model's own previous greedy token otherwise (see the module docstring).
        """
        state = self.encode(source, lengths)
        if teacher_forcing >= 1.0:
            if targets is None:
                return self.read_target(state, target_in)[0]
            return self._loss(self._read(state, target_in), state.context, targets)
        use_truth = (torch.rand(target_in.shape) < teacher_forcing).to(target_in.device)  # (B, T)
        rnn, token, steps = state.rnn, target_in[:, 0], []
        for t in range(target_in.shape[1]):
            x = self.dropout(self.target_embedding(token))  # (B, E)
            hidden, rnn = self.decoder(x[:, None, :], rnn)  # (B, 1, H)
            logits = self._output(hidden[:, 0], state.context)[0]  # (B, V)
            steps.append(logits)
            if t + 1 < target_in.shape[1]:
                token = torch.where(use_truth[:, t + 1], target_in[:, t + 1], logits.argmax(-1))
        logits = torch.stack(steps, dim=1)  # (B, T, V)
        if targets is None:
            return logits
        return real_token_loss(*real_steps(logits, targets), self._smoothing())

    def read_target(self, state: DecoderState, target_in: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: the decoder reads the whole target in one call.

        Returns:
            logits (B, T, V_target) and the attention weights (B, T, S) (None without
            attention).
        """
        return self._output(self._read(state, target_in), state.context)

    def _read(self, state: DecoderState, target_in: Tensor) -> Tensor:
        """The decoder's states over the whole target, teacher-forced: (B, T) -> (B, T, H)."""
        x = self.dropout(self.target_embedding(target_in))  # (B, T, E)
        return self.decoder(x, state.rnn)[0]  # (B, T, H)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoder step (no autograd): tokens (N,) -> logits (N, V_target), new state."""
        with torch.no_grad():
            hidden, rnn = self.decoder.step(self.target_embedding(tokens), state.rnn)  # (N, H)
            logits = self._output(hidden, state.context)[0]  # (N, V)
        return logits, DecoderState(rnn, state.context)

    def _output(self, hidden: Tensor, memory: Memory | None) -> tuple[Tensor, Tensor | None]:
        """hidden (B, [T,] H) -> logits (B, [T,] V_target), weights (B, [T,] S) or None."""
        if self.attention is None:
            return self.head(self.dropout(hidden)), None  # (B, [T,] V)
        context, weights = self.attention.attend(hidden, memory)  # (B, [T,] H), (B, [T,] S)
        attended = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))  # (B, [T,] H)
        return self.head(self.dropout(attended)), weights  # (B, [T,] V)

    def _loss(self, hidden: Tensor, memory: Memory | None, targets: Tensor) -> Tensor:
        """Mean loss per real target token: hidden (B, T, H), targets (B, T) -> scalar. The
        attention reads every step; the combination, the head and the softmax only the real
        ones."""
        if self.attention is None:
            rows, real = real_steps(hidden, targets)  # (N, H), (N,)
        else:
            context, _ = self.attention.attend(hidden, memory)  # (B, T, H)
            features, real = real_steps(torch.cat([context, hidden], dim=-1), targets)  # (N, 2H)
            rows = torch.tanh(self.combine(features))  # (N, H)
        return real_token_loss(self.head(self.dropout(rows)), real, self._smoothing())

    def _smoothing(self) -> float:
        """The label smoothing of the training loss; none in eval mode (validation)."""
        return self.config.label_smoothing if self.training else 0.0

    @torch.no_grad()
    def decode(
        self, source: Tensor, lengths: Tensor, *, beam_size: int = 1, max_length: int | None = None
    ) -> list[Hypothesis]:
        """Greedy (``beam_size`` 1) or beam-search outputs of a batch of sources, each ending
        at ``<eos>`` or after ``max_length`` tokens (default: twice the longest training
        target). Runs in eval mode and restores the model's mode afterwards.

        Args:
            source: (B, S) int64; lengths: (B,) int64.
        """
        was_training = self.training
        self.eval()
        # In fp32 even under a bf16 autocast (validation): the layers' one-step path adds
        # products in place, which autocast does not cast.
        with torch.autocast(source.device.type, enabled=False):
            state = self.encode(source, lengths)
            bos = torch.full((source.shape[0],), Vocab.bos_id, device=source.device)  # (B,)
            logits, state = self.step(bos, state)  # (B, V)
            limit = decode_limit(max_length, self.longest_target)
            eos, alpha = Vocab.eos_id, LENGTH_ALPHA
            found = beam_search_batch(  # beam 1 is greedy_batch
                self, logits, state, limit, beam_size, eos_id=eos, length_alpha=alpha
            )
        self.train(was_training)
        return found

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam_size: int = 1,
        max_length: int | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """The output text of each source text (tokens the model never saw read as
        ``<unk>``), decoded greedily or with a beam of ``beam_size``.

        Raises:
            ValueError: a text has no token.
        """
        sources = [self.encode_source(text) for text in texts]
        found = decode_all(self, sources, batch_size, beam_size, max_length)
        return [self.output_text(h) for h in found]

    def encode_source(self, text: str) -> list[int]:
        """Token ids of one source text."""
        tokens = text_tokens(text, self.level)
        if not tokens:
            raise ValueError(f"source text {text!r} has no {self.level} tokens")
        return self.source_ids(tokens)

    def source_ids(self, tokens: Sequence[str]) -> list[int]:
        """Ids of source tokens: ``<unk>``'s for unknown ones, or with ``--char-features`` a
        new id whose vector is read from the token's spelling."""
        if isinstance(self.source_embedding, SpelledEmbedding):
            self._vocabs()  # the error of a model without vocabularies
            return self.source_embedding.ids(tokens)
        return self._vocabs()[0].encode(tokens)

    def source_tokens(self, ids: Sequence[int]) -> list[str]:
        """The source tokens of ids from :meth:`source_ids`."""
        if isinstance(self.source_embedding, SpelledEmbedding):
            return [self.source_embedding.words[i] for i in ids]
        return self._vocabs()[0].decode(ids)

    def output_text(self, hypothesis: Hypothesis) -> str:
        """The text of a decoded hypothesis."""
        return tokens_text(self._vocabs()[1].decode(hypothesis.tokens), self.level)

    def _vocabs(self) -> tuple[Vocab, Vocab]:
        if self.source_vocab is None or self.target_vocab is None:
            raise ValueError("this model has no vocabularies; load it with rnnkit.load(folder)")
        return self.source_vocab, self.target_vocab


def spells(run: RunConfig) -> bool:
    """Whether the source embedding backs off to spellings: ``--char-features`` on words (at
    ``--level char`` the tokens are characters already, and the option does nothing)."""
    return run.model.char_features and run.data.level == "word"


def spelled_vocab(
    train: Sequence[Sequence[str]], val: Sequence[Sequence[str]], min_freq: int
) -> tuple[Vocab, tuple[int, list[str]]]:
    """The source vocabulary of ``--char-features``, and ``(frequent, chars)`` for
    :class:`Seq2Seq`: the training words seen at least ``max(min_freq, SPELL_BELOW)`` times
    first (most frequent first; these get a vector), then the other training words, then the
    validation words training lacks, in order of first appearance (spelled, so a validation
    word is read as a test word would be); the characters of the training words, sorted."""
    counts = Counter(t for s in train for t in s)
    keep = max(min_freq, SPELL_BELOW)
    order = sorted(counts, key=lambda t: (-counts[t], t))
    frequent = [t for t in order if counts[t] >= keep]
    rest = [t for t in order if counts[t] < keep]
    unseen = list(dict.fromkeys(t for s in val for t in s if t not in counts))
    vocab = Vocab([*frequent, *rest, *unseen])
    chars = sorted({c for t in counts for c in t})
    return vocab, (len(Vocab(frequent)), chars)


def _sum_directions(state: State) -> State:
    """A bidirectional stack's final state (L·2, B, H) -> (L, B, H), the directions summed."""
    if isinstance(state, tuple):
        return tuple(_sum_directions(part) for part in state)
    two_l, B, H = state.shape
    return state.view(two_l // 2, 2, B, H).sum(dim=1)  # (L, B, H)


# --- evaluation and decoding -----------------------------------------------------------------


def decode_all(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    batch_size: int,
    beam_size: int,
    max_length: int | None,
) -> list[Hypothesis]:
    """Decoded outputs of every source, in batches of similar length, in the sources' order."""
    device = model.head.weight.device
    order = np.argsort([len(s) for s in sources], kind="stable")
    found: list[Hypothesis | None] = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        source, lengths = pad_batch([sources[i] for i in rows], Vocab.pad_id)  # (B, S), (B,)
        batch = model.decode(source.to(device), lengths, beam_size=beam_size, max_length=max_length)
        for i, hypothesis in zip(rows, batch, strict=True):
            found[i] = hypothesis
    return found  # type: ignore[return-value]


@torch.no_grad()
def pair_loss(model: Seq2Seq, pairs: PairData, batch_size: int) -> tuple[float, int]:
    """Mean teacher-forced loss in nats per target token (``<eos>`` included), and the count."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    order = np.argsort([len(s) for s in pairs.sources], kind="stable")
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        source, lengths = pad_batch([pairs.sources[i] for i in rows], Vocab.pad_id)
        target_in, target_out = decoder_batch([pairs.targets[i] for i in rows])
        tokens = sum(len(pairs.targets[i]) + 1 for i in rows)
        target_out = target_out.to(device)  # (B, T)
        loss = model(source.to(device), lengths, target_in.to(device), targets=target_out)
        total += loss.item() * tokens
        count += tokens
    model.train(was_training)
    return total / count, count


def evaluate_pairs(
    model: Seq2Seq, pairs: PairData, batch_size: int, beam_size: int = 1
) -> dict[str, Any]:
    """``bleu`` (sacrebleu corpus BLEU of the decoded outputs), ``loss`` (nats per target
    token, teacher-forced), ``examples``."""
    loss, _ = pair_loss(model, pairs, batch_size)
    found = decode_all(model, pairs.sources, batch_size, beam_size, None)
    outputs = [model.output_text(h) for h in found]
    return {
        "bleu": corpus_bleu(outputs, pairs.references, model.level),
        "loss": loss,
        "examples": len(pairs.sources),
    }


def attention_figure(weights: np.ndarray, source: Sequence[str], output: Sequence[str]) -> Any:
    """A matplotlib Figure of one sentence's attention: weights (T, S), a row per output token
    (``<eos>`` last), a column per source token."""
    from matplotlib.figure import Figure  # imported here: only --plot-attention needs it

    figure = Figure(figsize=(1.2 + 0.45 * len(source), 1.0 + 0.4 * len(output)))
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source)), labels=list(source), rotation=90)
    axes.set_yticks(range(len(output)), labels=list(output))
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    figure.colorbar(image, ax=axes, label="attention weight")
    figure.tight_layout()
    return figure


def _predict_sources(text: str, source: str, model: Seq2Seq) -> list[str]:
    """The source text of each input line (a TSV line: its source column)."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    column = 1 if model.reverse else 0
    texts = []
    for lineno, line in enumerate(lines, start=1):
        columns = line.split("\t")
        if "\t" in line and len(columns) <= column:
            raise DataError(f"{source}:{lineno}: no second column (the model reads --reverse)")
        texts.append(columns[column].strip() if "\t" in line else line.strip())
    return texts


# --- the task --------------------------------------------------------------------------------


class SequenceToSequence(Task):
    """``--task seq2seq``: TSV ``source<TAB>target`` pairs, a vocabulary per side.

    With validation data (``--val``, or ``--val-frac`` above the preset's 0) the kept model is
    the one of highest validation BLEU (greedy decoding); ties go to the lower loss. Without,
    every pair trains and the final weights are kept.
    """

    name = "seq2seq"
    best_metric = "bleu"
    higher_is_better = True

    def preset(self, data_path: str | None = None) -> dict[str, dict[str, Any]]:
        # Chosen by timed runs on the tutorial's eng-fra subset (dev BLEU); see config.py. No
        # validation split by default: every pair trains and the final weights are kept (ahead
        # of a 10% split choosing the model on every draw); --val-frac 0.1 or --val FILE
        # bring back validation BLEU and the model it picks.
        return {
            "model": {
                "cell": "gru",
                "num_layers": 1,
                "hidden_size": 384,
                "embedding_size": 256,
                "dropout": 0.1,
                "bidirectional": True,
                "label_smoothing": 0.3,
                "char_features": True,
            },
            "data": {"level": "word", "val_frac": 0.0},
            "train": {"batch_size": 32, "lr": 2e-3, "weight_decay": 0.01, "eval_every": 300},
        }

    def load_data(self, run: RunConfig, meta: dict[str, Any] | None) -> TaskData:
        cfg = run.data
        if cfg.path is None:
            raise DataError("--task seq2seq needs DATA: a TSV file of source<TAB>target pairs")
        pairs = read_token_pairs(cfg.path, cfg)
        if cfg.val is not None:
            train, val = pairs, read_token_pairs(cfg.val, cfg)
        else:
            train_rows, val_rows = split_indices(len(pairs.sources), cfg.val_frac, run.train.seed)
            train = TokenPairs(
                [pairs.sources[i] for i in train_rows], [pairs.targets[i] for i in train_rows], ""
            )
            val = TokenPairs(
                [pairs.sources[i] for i in val_rows], [pairs.targets[i] for i in val_rows], ""
            )
        if meta is None:
            target_vocab = Vocab.build((t for s in train.targets for t in s), min_freq=cfg.min_freq)
            meta = {"target": target_vocab.to_dict()}
            if spells(run):
                source_vocab, spelling = spelled_vocab(train.sources, val.sources, cfg.min_freq)
                meta["source_frequent"], meta["source_chars"] = spelling
            else:
                source_vocab = Vocab.build(
                    (t for s in train.sources for t in s), min_freq=cfg.min_freq
                )
            longest = max(len(t) for t in train.targets)
            meta = {"source": source_vocab.to_dict(), **meta, "longest_target": longest}
        else:
            source_vocab, target_vocab = (
                Vocab.from_dict(meta["source"]),
                Vocab.from_dict(meta["target"]),
            )
        summary = (
            f"{len(train.sources)} train / {len(val.sources)} val pairs, {cfg.level} "
            f"vocabularies {len(source_vocab)} -> {len(target_vocab)}"
        )
        if "source_frequent" in meta:
            rows = meta["source_frequent"] - len(Vocab([]))
            summary += f" ({rows} source words with a vector, the others spelled)"
        return TaskData(
            meta,
            encode_pairs(train, source_vocab.encode, target_vocab, cfg.level),
            encode_pairs(val, source_vocab.encode, target_vocab, cfg.level),
            pairs.source,
            summary,
        )

    def check_meta(self, run: RunConfig, meta: dict[str, Any]) -> None:
        obj(meta, "", ("source", "target", "longest_target"), ("source_frequent", "source_chars"))
        source = Vocab.from_dict(meta["source"], "source")
        Vocab.from_dict(meta["target"], "target")
        integer(meta["longest_target"], "longest_target", 1, MAX_SIZE)
        if ("source_frequent" in meta) != ("source_chars" in meta):
            raise ValueError("source_frequent and source_chars come together (--char-features)")
        if "source_frequent" in meta:
            integer(meta["source_frequent"], "source_frequent", len(Vocab([])), len(source))
            strings(meta["source_chars"], "source_chars", single=True)
        if ("source_frequent" in meta) != spells(run):
            raise ValueError(
                f"source_frequent is {'present' if 'source_frequent' in meta else 'absent'}, "
                f"but config.json has char_features {str(run.model.char_features).lower()} "
                f"at level {run.data.level}"
            )

    def build_model(self, run: RunConfig, meta: dict[str, Any]) -> Seq2Seq:
        source_vocab, target_vocab = (
            Vocab.from_dict(meta["source"]),
            Vocab.from_dict(meta["target"]),
        )
        spelling = None
        if "source_frequent" in meta:
            spelling = (meta["source_frequent"], meta["source_chars"])
        model = Seq2Seq(run.model, len(source_vocab), len(target_vocab), spelling)
        longest = meta["longest_target"]
        model.attach(source_vocab, target_vocab, run.data.level, run.data.reverse, longest)
        return model

    def batches(self, run: RunConfig, data: TaskData) -> PairBatches:
        return PairBatches(
            data.train, run.train.batch_size, run.train.seed, run.train.teacher_forcing
        )

    def loss(self, model: nn.Module, batch: Any, state: Any, device: torch.device) -> StepLoss:
        source, lengths, target_in, target_out, teacher_forcing = batch
        target_out = target_out.to(device)  # (B, T)
        loss = model(source.to(device), lengths, target_in.to(device), teacher_forcing, target_out)
        return token_step_loss(loss, target_out)

    def evaluate(
        self, model: nn.Module, val: Any, run: RunConfig, device: torch.device
    ) -> dict[str, Any]:
        return evaluate_pairs(model, val, max(run.train.batch_size, DECODE_BATCH))

    def evaluate_file(
        self, model: nn.Module, path: str | Path, cfg: EvalConfig, device: torch.device
    ) -> dict[str, Any]:
        """BLEU, loss and examples on every pair of ``path`` (read as in training, with the
        model's ``--reverse``; unknown tokens count as ``<unk>``), in batches of at least
        :data:`DECODE_BATCH`."""
        pairs = read_pairs(path, reverse=model.reverse, encoding=cfg.encoding)
        tokens = TokenPairs(
            [text_tokens(s, model.level) for s in pairs.sources],
            [text_tokens(t, model.level) for t in pairs.targets],
            str(path),
        )
        # sources by the model: with --char-features an unseen word is spelled, not <unk>
        data = encode_pairs(tokens, model.source_ids, model.target_vocab, model.level)
        return evaluate_pairs(model, data, max(cfg.batch_size, DECODE_BATCH), cfg.beam_size)

    def predict(
        self, model: nn.Module, text: str, source: str, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One output sentence per input line (a blank line gives a blank line); ``--json``
        records hold ``source``, ``output``, ``score`` (log-probability per token, ``<eos>``
        included) and ``log_prob``. ``--plot-attention`` draws the first sentence's."""
        if cfg.plot_attention is not None and model.attention is None:
            raise ConfigError("--plot-attention needs a model trained with --attention")
        if cfg.plot_attention is not None:
            check_png_path(cfg.plot_attention, "--plot-attention")
        texts = _predict_sources(text, source, model)
        if cfg.plot_attention is not None and not any(texts):
            raise DataError(f"{source} has no sentence to draw the attention of")

        def results() -> Iterator[tuple[str, dict[str, Any]]]:
            plotted = cfg.plot_attention is None
            for start in range(0, len(texts), cfg.batch_size):
                chunk = texts[start : start + cfg.batch_size]
                rows = [i for i, t in enumerate(chunk) if text_tokens(t, model.level)]
                sources = [model.encode_source(chunk[i]) for i in rows]
                decoded = decode_all(model, sources, cfg.batch_size, cfg.beam_size, cfg.max_length)
                found = dict(zip(rows, decoded, strict=True))
                if not plotted and rows:
                    _plot_attention(model, sources[0], found[rows[0]], cfg.plot_attention)
                    plotted = True
                for i, line in enumerate(chunk):
                    yield _record(model, line, found.get(i))

        return results()

    def summary(self, metrics: dict[str, Any]) -> str:
        return (
            f"bleu {metrics['bleu']:.2f} | loss {metrics['loss']:.4f} nats/token | "
            f"{metrics['examples']} examples"
        )


def _record(model: Seq2Seq, text: str, hypothesis: Hypothesis | None) -> tuple[str, dict]:
    """The output line and JSON record of one input line (None: a blank line)."""
    if hypothesis is None:
        return "\n", {"source": text, "output": "", "score": None, "log_prob": None}
    output = model.output_text(hypothesis)
    record = {
        "source": text,
        "output": output,
        "score": hypothesis.score,
        "log_prob": hypothesis.log_prob,
    }
    return output + "\n", record


def _plot_attention(model: Seq2Seq, source: list[int], found: Hypothesis, path: str) -> None:
    """Draw the attention of one decoded sentence to the PNG ``path``."""
    device = model.head.weight.device
    output = [*found.tokens, Vocab.eos_id] if found.finished else found.tokens
    target_in = torch.tensor([[Vocab.bos_id, *output[:-1]]], device=device)  # (1, T)
    model.eval()
    with torch.no_grad():
        state = model.encode(torch.tensor([source], device=device), torch.tensor([len(source)]))
        weights = model.read_target(state, target_in)[1]  # (1, T, S)
    figure = attention_figure(
        weights[0].float().cpu().numpy(),
        model.source_tokens(source),
        model.target_vocab.decode(output),
    )
    save_png(figure, path, dpi=100)


TASK = SequenceToSequence()
