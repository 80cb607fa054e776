"""Per-step tagging (``--task tag``): one label per step, synchronised with the input.

Embedding (plus, with ``--char-features``, a character BiLSTM of each word, and with
``--word-shape`` its casing class, ``word_shape.py``; or standardised features) -> recurrent
layers over the real steps -> dropout -> linear tag scores, read by a softmax or, with
``--crf``, a linear-chain CRF (Viterbi decoding; BIO-invalid moves are forbidden when the tags
are BIO). A unidirectional model is causal: each step is tagged from
the steps up to it (a label per frame of a feature stream, judged as the stream arrives); on
features, ``--frame-votes`` averages in a classifier of each frame alone (``frame_votes.py``).
Data: CoNLL/BIO ``token<TAB>...<TAB>tag`` files, or an ``.npz`` with per-step ``y`` (N, T).
The kept model is the one of best validation entity F1 (text) or per-step accuracy (features).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import EvalConfig, ModelConfig, PredictConfig, RunConfig
from rnnkit.data.examples import (
    CHAR_UNK,
    MAX_WORD_CHARS,
    EpochBatches,
    Examples,
    feature_statistics,
    sorted_batches,
)
from rnnkit.data.fields import strings
from rnnkit.data.labelled import TaggedSentences, parse_tag_input, read_conll
from rnnkit.data.text import IGNORE_INDEX
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.layers.dropout import Dropout
from rnnkit.tasks.base import StepLoss, Task, TaskData
from rnnkit.tasks.case_augment import case_augment
from rnnkit.tasks.crf import LinearChainCRF
from rnnkit.tasks.encoder import SequenceEncoder
from rnnkit.tasks.ensemble import (
    log_mean_probability,
    mean_member_loss,
    member_parameters,
    other_members,
    threads_for_members,
)
from rnnkit.tasks.frame_votes import frame_votes
from rnnkit.tasks.metrics import entity_metrics
from rnnkit.tasks.neighbour_words import neighbour_words
from rnnkit.tasks.sequence_data import (
    build_vocab,
    check_data_kind,
    check_feature_size,
    check_sequence_meta,
    feature_examples,
    feature_inputs,
    init_encoder,
    is_features,
    need_path,
    read_feature_file,
    refuse_text_options,
    split,
    unknown_advice,
)
from rnnkit.tasks.word_shape import word_shape
from rnnkit.tasks.word_votes import train_word_votes, word_votes

NO_OUTSIDE_TAG = "--outside-bias lowers the O tag of text tags: .npz labels have none"
"""The refusal of ``--outside-bias`` for a model of ``.npz`` labels (train, eval, predict)."""


def reads_characters(config: ModelConfig) -> bool:
    """Whether a tagger of text built with ``config`` reads its words' characters
    (``--char-features``, ``--word-votes``, ``--word-shape``), so that its folder keeps them."""
    return config.char_features or bool(config.word_votes) or config.word_shape


def is_bio(tags: list[str]) -> bool:
    """Whether every tag is ``O``, ``B-X`` or ``I-X``."""
    return all(t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2) for t in tags)


class Tagger(nn.Module):
    """Sequence -> a tag per step.

    Args:
        config: the architecture; ``config.crf`` adds a CRF over the tag scores.
        tags: the C tag names, in id order.
        vocab: the word vocabulary (text), or None (feature sequences).
        chars: the known characters for ``--char-features``, ``--word-votes`` and
            ``--word-shape`` (ids from 2 on), or None.
        feature_size: D for feature sequences, or None (text).
        lowercase: whether words are looked up in lower case (``--lowercase``; the
            characters keep their case).

    Shapes:
        forward: inputs (B, T) int64 or (B, T, D) float, lengths (B,), chars (B, T, W),
        word_lengths (B, T) -> scores (B, T, C)
    """

    def __init__(
        self,
        config: ModelConfig,
        tags: list[str],
        *,
        vocab: Vocab | None = None,
        chars: list[str] | None = None,
        feature_size: int | None = None,
        lowercase: bool = False,
    ) -> None:
        super().__init__()
        self.config, self.tags, self.vocab, self.chars = config, tags, vocab, chars
        self.lowercase = lowercase
        self.char_index = {c: i + 2 for i, c in enumerate(chars or [])}
        self.encoder = SequenceEncoder(
            config,
            vocab_size=None if vocab is None else len(vocab),
            feature_size=feature_size,
            num_chars=None if chars is None or not config.char_features else len(chars) + 2,
            shapes=word_shape(config, chars if vocab is not None else None),
        )
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.output_size, len(tags))
        # --lm-weight G: in training, the states also predict the neighbouring words.
        vocab_size = None if vocab is None else len(vocab)
        self.neighbours = neighbour_words(config, vocab_size)
        self.crf = LinearChainCRF(len(tags)) if config.crf else None
        if self.crf is not None and vocab is not None and is_bio(tags):
            self.crf.constrain_bio(tags)
        if config.outside_bias and vocab is None:
            raise ConfigError(NO_OUTSIDE_TAG)
        self.outside_bias = config.outside_bias  # eval/predict may set another
        # --frame-votes: one per-frame classifier beside the network(s), averaged with them.
        self.votes = frame_votes(config, feature_size, len(tags))  # refused on text first
        if self.votes is not None and config.crf:
            raise ConfigError(
                "--frame-votes averages probabilities per step, which --crf does not give: "
                "pass --no-frame-votes with --crf"
            )
        # --word-votes W: a classifier of each word alone, added to the scores when decoding.
        self.word_vote = word_votes(config, chars if vocab is not None else None, len(tags))
        self.word_weight = config.word_votes  # eval/predict may set another
        # --case-augment P: training sentences lower-cased at random (rnnkit.tasks.case_augment)
        self.lower = case_augment(config.case_augment, vocab, chars, lowercase)
        # --ensemble K: this network is the first member (rnnkit.tasks.ensemble); each member
        # has its own CRF.
        shape = dict(vocab=vocab, chars=chars, feature_size=feature_size, lowercase=lowercase)
        self.others = other_members(config, lambda member: Tagger(member, tags, **shape))

    def members(self) -> list[Tagger]:
        """The K networks of an ensemble (``[self]`` for one network)."""
        return [self, *self.others]

    def forward(
        self,
        inputs: Tensor,
        lengths: Tensor,
        chars: Tensor | None = None,
        word_lengths: Tensor | None = None,
    ) -> Tensor:
        """Tag scores (B, T, C) of a padded batch (emissions of the CRF). An ensemble's are,
        with a CRF, the mean of its members' emissions (read by :meth:`combined_crf`); with a
        softmax, the log of its members' mean probability, log (1/K) Σ_k softmax(s_k), with
        ``--frame-votes`` one more member (rnnkit.tasks.frame_votes)."""
        if not self.others and self.votes is None:
            return self._scores(inputs, lengths, chars, word_lengths)
        scores = [m._scores(inputs, lengths, chars, word_lengths) for m in self.members()]
        if self.votes is not None:
            scores.append(self.votes(self.encoder.features(inputs)))
        stacked = torch.stack(scores).float()  # (K [+ 1], B, T, C)
        if self.crf is not None:
            return stacked.mean(0)
        return log_mean_probability(stacked)  # (B, T, C)

    def _scores(
        self, inputs: Tensor, lengths: Tensor, chars: Tensor | None, word_lengths: Tensor | None
    ) -> Tensor:
        """This network's tag scores (B, T, C), without the other members."""
        out = self.encoder(inputs, lengths, chars, word_lengths)  # (B, T, dirs·H)
        return self.head(self.dropout(out))  # (B, T, C)

    def combined_crf(self) -> LinearChainCRF | None:
        """The CRF that decodes :meth:`forward`'s scores: this network's, or for an ensemble
        one whose transition, start and end scores are the members' means (with the mean
        emissions, the normalised geometric mean of the members' path distributions)."""
        if self.crf is None or not self.others:
            return self.crf
        crf = LinearChainCRF(self.crf.num_tags).to(self.crf.transitions.device)
        crfs = [m.crf for m in self.members()]
        with torch.no_grad():
            for name, value in crf.named_parameters():
                value.copy_(torch.stack([getattr(c, name) for c in crfs]).mean(0))
            for name, value in crf.named_buffers():  # the BIO constraints
                value.copy_(getattr(self.crf, name))
        return crf

    def scores(self, batch: dict[str, Tensor]) -> Tensor:
        """``forward`` on a batch dict (see :mod:`rnnkit.data.examples`), on the model's device."""
        return self._call(self, batch)  # (B, T, C)

    def _call(self, fn: Any, batch: dict[str, Tensor]) -> Tensor:
        """``fn(inputs, lengths, chars, word_lengths)`` of a batch dict, on the model's device."""
        device = self.head.weight.device
        chars = batch.get("chars")
        return fn(
            batch["inputs"].to(device),
            batch["lengths"],
            None if chars is None else chars.to(device),
            None if chars is None else batch["word_lengths"].to(device),
        )

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean negative log likelihood per real step (softmax, or the CRF's per token); in
        train mode the softmax's targets are smoothed by ``config.label_smoothing``. An
        ensemble's is the mean of its members' losses: each member learns on its own, as do
        the ``--frame-votes``; with ``--member-threads``, side by side on threads."""
        if self.lower is not None and self.training:
            batch = dict(batch)
            batch["inputs"], batch["chars"] = self.lower(batch["inputs"], batch.get("chars"))
        members = self.members()
        threads = threads_for_members(self.config, members, self.head.weight.device)
        if threads > 1:  # --member-threads: the members side by side (rnnkit.tasks.ensemble)
            own = member_parameters(members)
            calls = [functools.partial(m._loss, batch) for m in members]
            losses = [mean_member_loss(calls, own, threads) * len(members)]
        else:
            losses = [m._loss(batch) for m in members]
        if self.votes is not None:
            votes = self.votes(self.encoder.features(batch["inputs"].to(self.head.weight.device)))
            losses.append(self._softmax_loss(votes, batch))
        return torch.stack(losses).sum() / (len(members) + (self.votes is not None))

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        """This network's loss of :meth:`loss`, without the other members; in train mode
        plus ``--lm-weight`` times its states' loss on the neighbouring words."""
        states = self._call(self.encoder, batch)  # (B, T, dirs·H)
        emissions = self.head(self.dropout(states)).float()  # (B, T, C)
        if self.crf is not None:
            targets = batch["targets"].to(emissions.device)  # (B, T)
            loss = self.crf.nll(emissions, targets, batch["lengths"].to(emissions.device))
        else:
            loss = self._softmax_loss(emissions, batch)
        if self.neighbours is not None and self.training:
            words = batch["inputs"].to(states.device)  # (B, T)
            neighbours = self.neighbours.loss(self.dropout(states), words)
            loss = loss + self.config.lm_weight * neighbours
        return loss

    def _softmax_loss(self, scores: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Cross-entropy of scores (B, T, C) against the batch's targets (B, T), per real
        step; smoothed by ``config.label_smoothing`` in train mode."""
        targets = batch["targets"].to(scores.device)  # (B, T)
        smoothing = self.config.label_smoothing if self.training else 0.0
        return F.cross_entropy(
            scores.float().transpose(1, 2),
            targets,
            ignore_index=IGNORE_INDEX,
            label_smoothing=smoothing,
        )

    def decode(
        self, batch: dict[str, Tensor], probabilities: bool = True
    ) -> tuple[list[list[int]], list[list[float]]]:
        """The tag ids of each sequence and each tag's probability (the CRF's marginal), from
        the tag scores with ``outside_bias`` taken off the O tag's and, with ``--word-votes
        W``, W times the words' votes added (rnnkit.tasks.word_votes). Without
        ``probabilities`` (evaluation) the second list is empty and the marginals are not
        computed."""
        lengths = batch["lengths"]
        with torch.no_grad():
            emissions = self.scores(batch).float()  # (B, T, C)
            if self.outside_bias and "O" in self.tags:  # tags without O decode plainly
                emissions[..., self.tags.index("O")] -= self.outside_bias
            if self.word_vote is not None and self.word_weight:
                device = emissions.device
                chars, word_lengths = batch["chars"].to(device), batch["word_lengths"].to(device)
                votes = self.word_vote.log_ratio(chars, word_lengths)  # (B, T, C)
                emissions += self.word_weight * votes
        crf = self.combined_crf()
        if crf is None:
            best = emissions.argmax(-1)  # (B, T)
            paths = [best[b, : int(n)].tolist() for b, n in enumerate(lengths)]
        else:
            lengths = lengths.to(emissions.device)
            paths = crf.decode(emissions, lengths)
        if not probabilities:
            return paths, []
        if crf is None:
            probs = emissions.softmax(-1)  # (B, T, C)
        else:
            with torch.enable_grad():  # marginals: ∂ log Z / ∂ emissions
                emissions.requires_grad_(True)
                crf.log_partition(emissions, lengths).sum().backward(inputs=[emissions])
            probs = emissions.grad  # (B, T, C)
            best = torch.zeros(probs.shape[:2], dtype=torch.long)  # (B, T), 0 past the ends
            for b, path in enumerate(paths):
                best[b, : len(path)] = torch.tensor(path)
        picked = probs.gather(2, best.to(probs.device)[:, :, None]).squeeze(2).tolist()  # (B, T)
        return paths, [row[: len(path)] for row, path in zip(picked, paths, strict=True)]

    def encode_sentences(self, sentences: list[list[str]]) -> Examples:
        """Examples of token lists (unknown words become ``<unk>``); a ``str`` in the list is
        one sentence of whitespace-separated tokens."""
        if self.vocab is None:
            raise ValueError("this model reads feature sequences (N, T, D): use tag_features")
        if isinstance(sentences, str):
            raise TypeError("give a list of sentences, not one str")
        sentences = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        return Examples(
            lengths=np.array([len(s) for s in sentences], dtype=np.int64),
            ids=[self.word_ids(s) for s in sentences],
            chars=None if self.chars is None else [self.char_ids(s) for s in sentences],
        )

    def word_ids(self, words: list[str]) -> list[int]:
        """Each word's vocabulary id (looked up in lower case with ``lowercase``)."""
        return self.vocab.encode([w.lower() for w in words] if self.lowercase else words)

    def char_ids(self, words: list[str]) -> list[list[int]]:
        """Each word's character ids (cut to MAX_WORD_CHARS characters)."""
        index = self.char_index
        return [[index.get(c, CHAR_UNK) for c in w[:MAX_WORD_CHARS]] for w in words]

    @torch.no_grad()
    def tag_sentences(
        self, sentences: list[list[str]] | list[str], batch_size: int = 64
    ) -> list[list[str]]:
        """The tags of token lists (or of whitespace-separated sentences), in input order."""
        paths, _ = decode_all(
            self, self.encode_sentences(sentences), batch_size, probabilities=False
        )
        return [[self.tags[i] for i in path] for path in paths]

    @torch.no_grad()
    def tag_features(
        self,
        x: np.ndarray | Tensor,
        batch_size: int = 64,
        *,
        lengths: np.ndarray | Tensor | None = None,
    ) -> list[list[str]]:
        """The label of every real step of feature sequences x (N, T, D), zero-padded, with
        their ``lengths`` (N,) (default: T each); N lists of lengths[i] labels."""
        if self.vocab is not None:
            raise ValueError("this model reads text: use tag_sentences")
        paths, _ = decode_all(
            self, feature_inputs(x, lengths, self.encoder), batch_size, probabilities=False
        )
        return [[self.tags[i] for i in path] for path in paths]


def decode_all(
    model: Tagger, examples: Examples, batch_size: int, probabilities: bool = True
) -> tuple[list[list[int]], list[list[float]]]:
    """Tag ids and their probabilities for every example, in order, in eval mode; without
    ``probabilities``, empty lists in their place."""
    was_training = model.training
    model.eval()
    paths: list[list[int]] = [[] for _ in range(len(examples))]
    probs: list[list[float]] = [[] for _ in range(len(examples))]
    for index, batch in sorted_batches(examples, batch_size):
        batch_paths, batch_probs = model.decode(batch, probabilities)
        for j, (i, path) in enumerate(zip(index.tolist(), batch_paths, strict=True)):
            paths[i] = path
            if probabilities:
                probs[i] = batch_probs[j]
    model.train(was_training)
    return paths, probs


@torch.no_grad()
def mean_loss(model: Tagger, examples: Examples, batch_size: int) -> float:
    """Mean loss per real step over the examples (eval mode)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for _, batch in sorted_batches(examples, batch_size):
        n = int(batch["lengths"].sum())
        total += float(model.loss(batch)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


EVAL_BATCH = 64
"""Evaluation in training reads the validation sentences at least this many at a time, as
``rnnkit eval`` does by default: on WNUT-17's dev file (1,009 sentences, a preset model, 2
threads) 0.86 s against 1.19 s in the training batches of 16; the tags are the same."""


class Tagging(Task):
    """``--task tag``: see the module docstring."""

    name = "tag"
    best_metric = "f1"
    higher_is_better = True

    # The preset for 2 CPU cores; min_freq, lowercase, lr, outside_bias, word_votes, lm_weight,
    # weight_decay, average_best and embedding_init chosen on WNUT-17's dev split (config.py).
    PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            "cell": "lstm",
            "num_layers": 1,
            "hidden_size": 256,
            "embedding_size": 100,
            "dropout": 0.5,
            "bidirectional": True,
            "outside_bias": 1.0,
            "word_votes": 1.0,
            "lm_weight": 0.1,
            "embedding_init": "uniform",
        },
        "data": {"level": "word", "min_freq": 3, "lowercase": True},
        "train": {
            "batch_size": 16,
            "lr": 5e-3,
            "weight_decay": 0.1,
            "eval_every": 100,
            "average_best": 5,
        },
    }

    # Feature sequences (.npz, a label per frame): a smaller, slower-learning model, with no
    # validation split: 150 passes over every training sequence, the final weights kept; the
    # frames' own votes averaged in (--frame-votes); weight decay 0.01, as before text took
    # 0.1. Chosen on dev splits of japanese_vowels' frames (config.py).
    FEATURES_PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            **PRESET["model"],
            "hidden_size": 128,
            "outside_bias": 0.0,
            "word_votes": 0.0,
            "lm_weight": 0.0,
            "frame_votes": True,
            "embedding_init": "normal",  # no embeddings to start
        },
        "data": {"level": "word", "min_freq": 2, "val_frac": 0.0},
        "train": {
            **PRESET["train"],
            "lr": 1e-3,
            "weight_decay": 0.01,
            "epochs": 150,
            "average_best": 0,  # no validation split to rank evaluations on
        },
    }

    def preset(self, data_path: str | None = None) -> dict[str, dict[str, Any]]:
        if is_features(data_path):
            return self.FEATURES_PRESET
        return self.PRESET

    def selection(self, run: RunConfig) -> tuple[str, bool]:
        return ("accuracy", True) if is_features(run.data.path) else ("f1", True)

    # --- data ------------------------------------------------------------------------------

    def load_data(self, run: RunConfig, meta: dict[str, Any] | None) -> TaskData:
        path = need_path(run)
        if is_features(path):
            return self._load_features(run, path, meta)
        if run.data.level != "word":
            raise DataError("--task tag reads CoNLL tokens: use --level word (the default)")
        sentences = _read_conll(path, run.data.encoding)
        tags = meta["tags"] if meta else sorted({t for s in sentences.tags for t in s})
        index = {tag: i for i, tag in enumerate(tags)}
        examples = Examples(
            lengths=np.array([len(s) for s in sentences.tokens], dtype=np.int64),
            ids=sentences.tokens,  # words; encoded below, once the vocabulary exists
            y=[[index[t] for t in s] for s in sentences.tags],
        )

        def read_val(val_path: str) -> Examples:
            val = _read_conll(val_path, run.data.encoding)
            _check_tags(val, index, val_path, count_unknown=None)
            return Examples(
                lengths=np.array([len(s) for s in val.tokens], dtype=np.int64),
                ids=val.tokens,
                y=[[index[t] for t in s] for s in val.tags],
            )

        train, val = split(run, examples, None, read_val)
        lowercase = run.data.lowercase
        if meta:
            vocab, chars = Vocab.from_dict(meta["vocab"]), meta.get("chars")
        else:
            lookup = [[w.lower() for w in s] for s in train.ids] if lowercase else train.ids
            vocab = build_vocab(lookup, run.data.min_freq)
            known = sorted({c for s in train.ids for w in s for c in w})
            chars = known if reads_characters(run.model) else None
        model = Tagger(run.model, tags, vocab=vocab, chars=chars, lowercase=lowercase)
        for part in (train, val):
            part.chars = None if chars is None else [model.char_ids(s) for s in part.ids]
            part.ids = [model.word_ids(s) for s in part.ids]
        meta = {"kind": "text", "tags": tags, "vocab": vocab.to_dict(), "chars": chars}
        setup = {}
        if run.data.embeddings is not None:
            setup["embeddings"] = (run.data.embeddings, run.model.freeze_embeddings)
        summary = (
            f"{len(train)} train / {len(val)} val sentences, {int(train.lengths.sum())} train "
            f"tokens, {len(tags)} tags, vocabulary {len(vocab)}"
        )
        return TaskData(meta, train, val, path, summary, setup)

    def _load_features(self, run: RunConfig, path: str, meta: dict[str, Any] | None) -> TaskData:
        refuse_text_options(run, path)
        features = read_feature_file(path, "step")
        real = features.y[features.y != IGNORE_INDEX]
        tags = meta["tags"] if meta else [str(i) for i in range(int(real.max()) + 1)]
        examples = feature_examples(features)

        def read_val(val_path: str) -> Examples:
            val = read_feature_file(val_path, "step")
            check_feature_size(val, features.x.shape[2])
            if val.y.max() >= len(tags):
                raise DataError(f"{val_path}: label {int(val.y.max())} never occurs in training")
            return feature_examples(val)

        train, val = split(run, examples, None, read_val)
        mean, std = feature_statistics(train.x, train.lengths)
        meta = meta or {"kind": "features", "tags": tags, "feature_size": features.x.shape[2]}
        summary = (
            f"{len(train)} train / {len(val)} val sequences, {int(train.lengths.sum())} train "
            f"steps, {len(tags)} labels"
        )
        return TaskData(meta, train, val, path, summary, {"statistics": (mean, std)})

    # --- model -----------------------------------------------------------------------------

    def check_meta(self, run: RunConfig, meta: dict[str, Any]) -> None:
        if check_sequence_meta(run, meta, "tags", ("chars",)) == "features":
            return
        chars = meta["chars"]
        if chars is not None:
            strings(chars, "chars", single=True)
        cfg = run.model
        if (chars is not None) != reads_characters(cfg):
            raise ValueError(
                f"chars is {'a list' if chars is not None else 'null'}, but config.json has "
                f"char_features {str(cfg.char_features).lower()}, word_votes "
                f"{cfg.word_votes} and word_shape {str(cfg.word_shape).lower()}"
            )

    def build_model(self, run: RunConfig, meta: dict[str, Any]) -> Tagger:
        if meta.get("kind") == "features":
            return Tagger(run.model, list(meta["tags"]), feature_size=int(meta["feature_size"]))
        vocab = Vocab.from_dict(meta["vocab"])
        tags, chars, lowercase = list(meta["tags"]), meta.get("chars"), run.data.lowercase
        return Tagger(run.model, tags, vocab=vocab, chars=chars, lowercase=lowercase)

    def init_model(self, model: nn.Module, data: TaskData) -> None:
        for i, member in enumerate(model.members()):
            init_encoder(member.encoder, data, model.vocab, log=i == 0)
        if model.word_vote is not None:  # trained apart, once, before the tagger
            train_word_votes(model.word_vote, data.train.chars, data.train.y, len(model.tags))

    def batches(self, run: RunConfig, data: TaskData) -> EpochBatches:
        return EpochBatches(data.train, run.train.batch_size, run.train.seed)

    def loss(self, model: nn.Module, batch: Any, state: Any, device: torch.device) -> StepLoss:
        tokens = int(batch["lengths"].sum())
        return StepLoss(model.loss(batch), tokens, units=tokens)  # a mean per real step

    # --- metrics ---------------------------------------------------------------------------

    def evaluate(
        self, model: nn.Module, val: Any, run: RunConfig, device: torch.device
    ) -> dict[str, Any]:
        return _metrics(model, val, model.tags, max(run.train.batch_size, EVAL_BATCH))

    def evaluate_file(
        self, model: nn.Module, path: str | Path, cfg: EvalConfig, device: torch.device
    ) -> dict[str, Any]:
        _set_decoding(model, cfg)
        check_data_kind(model, path, features=is_features(path))
        tags = list(model.tags)
        if model.vocab is None:
            features = read_feature_file(path, "step")
            check_feature_size(features, model.encoder.feature_size)
            if features.y.max() >= len(tags) and not cfg.count_unknown_labels:
                raise DataError(
                    f"{path} has label {int(features.y.max())}, which training never saw; "
                    f"pass --count-unknown-labels to count those steps as wrong"
                )
            return _metrics(model, feature_examples(features), tags, cfg.batch_size)
        sentences = _read_conll(path, cfg.encoding)
        index = {tag: i for i, tag in enumerate(tags)}
        tags += _check_tags(sentences, index, path, cfg.count_unknown_labels)
        index = {tag: i for i, tag in enumerate(tags)}
        examples = model.encode_sentences(sentences.tokens)
        examples.y = [[index[t] for t in s] for s in sentences.tags]
        return _metrics(model, examples, tags, cfg.batch_size)

    def summary(self, metrics: dict[str, Any]) -> str:
        if "f1" not in metrics:
            return (
                f"accuracy {metrics['accuracy']:.4f} | loss {metrics['loss']:.4f} | "
                f"{metrics['sequences']} sequences, {metrics['tokens']} steps"
            )
        return (
            f"f1 {metrics['f1']:.4f} | precision {metrics['precision']:.4f} | recall "
            f"{metrics['recall']:.4f} | accuracy {metrics['accuracy']:.4f} | "
            f"{metrics['sentences']} sentences, {metrics['tokens']} tokens"
        )

    # --- prediction ------------------------------------------------------------------------

    def predict(
        self, model: nn.Module, text: str, source: str, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """CoNLL ``token<TAB>tag`` lines, a blank line after each sentence; the input is one
        sentence per line (whitespace-separated tokens) or CoNLL (first column)."""
        check_data_kind(model, source, features=False)
        _set_decoding(model, cfg)
        sentences, _ = parse_tag_input(text, source)
        if not sentences:
            raise DataError(f"{source} has no tokens to tag")
        paths, probs = decode_all(model, model.encode_sentences(sentences), cfg.batch_size)
        for tokens, path, p in zip(sentences, paths, probs, strict=True):
            tags = [model.tags[i] for i in path]
            text = "".join(f"{token}\t{tag}\n" for token, tag in zip(tokens, tags, strict=True))
            yield text + "\n", {"tokens": tokens, "tags": tags, "probabilities": p}

    def predict_file(
        self, model: nn.Module, path: str | Path, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One line of space-separated labels per sequence of an ``.npz``."""
        check_data_kind(model, path, features=True)
        _set_decoding(model, cfg)
        features = read_feature_file(path, "none")
        check_feature_size(features, model.encoder.feature_size)
        paths, probs = decode_all(model, feature_examples(features), cfg.batch_size)
        for i, (path_ids, p) in enumerate(zip(paths, probs, strict=True)):
            labels = [model.tags[t] for t in path_ids]
            yield " ".join(labels) + "\n", {"index": i, "tags": labels, "probabilities": p}


def _set_decoding(model: Tagger, cfg: EvalConfig | PredictConfig) -> None:
    """Decode with eval/predict's ``--outside-bias`` (off the O tag's score) and
    ``--word-votes`` (the votes' weight) where given; None keeps the model's own.

    Raises:
        ConfigError: a bias on a model of ``.npz`` labels, or votes on a model without them.
    """
    if cfg.outside_bias is not None:
        if model.vocab is None and cfg.outside_bias:
            raise ConfigError(NO_OUTSIDE_TAG)
        model.outside_bias = cfg.outside_bias
    if cfg.word_votes is not None:
        if model.word_vote is None and cfg.word_votes:
            raise ConfigError(
                "--word-votes weighs the votes this model was trained with, and it has none "
                "(trained with --word-votes 0, or on .npz features)"
            )
        model.word_weight = cfg.word_votes


def _read_conll(path: str | Path, encoding: str) -> TaggedSentences:
    """:func:`read_conll`, naming ``--task classify`` when the file is ``label<TAB>text``."""
    try:
        return read_conll(path, encoding=encoding)
    except DataError as err:
        if "BIO" in str(err) or "tag" in str(err):
            first = Path(path).read_text(encoding=encoding, errors="replace").split("\n", 1)[0]
            fields = first.split("\t")
            if len(fields) > 1 and " " in fields[1].strip():
                raise DataError(
                    f"{path} looks like label<TAB>text lines (the data of --task classify), "
                    f"not CoNLL token<TAB>tag ({err})"
                ) from None
            if len(fields) == 2 and "BIO" in str(err):  # one-word texts read the same way
                raise DataError(
                    f"{err} (if {path} holds label<TAB>text lines, they are the data of "
                    "--task classify)"
                ) from None
        raise


def _check_tags(
    sentences: TaggedSentences,
    index: dict[str, int],
    path: str | Path,
    count_unknown: bool | None,
) -> list[str]:
    """The tags that training never saw, sorted; an error unless ``count_unknown`` (None:
    validation data read in training, which has no such flag)."""
    unknown = sorted({t for s in sentences.tags for t in s} - set(index))
    if unknown and not count_unknown:
        raise DataError(
            f"{path} has tag(s) that training never saw: {', '.join(unknown[:5])}; "
            + unknown_advice(count_unknown, "tokens")
        )
    return unknown


def _metrics(model: Tagger, examples: Examples, tags: list[str], batch_size: int) -> dict:
    """Entity-level metrics (text) or per-step accuracy (features), with the mean loss over
    the steps whose tag the model knows."""
    paths, _ = decode_all(model, examples, batch_size, probabilities=False)
    unknown = 0 if model.crf is not None else IGNORE_INDEX  # the CRF scores every real step
    true = [list(y)[: len(p)] for y, p in zip(examples.y, paths, strict=True)]
    known = Examples(
        lengths=examples.lengths,
        ids=examples.ids,
        x=examples.x,
        y=[[t if t < len(model.tags) else unknown for t in y] for y in true],
        chars=examples.chars,
    )
    loss = mean_loss(model, known, batch_size)
    if model.vocab is None:
        flat_true = np.concatenate([np.asarray(y) for y in true])
        flat_pred = np.concatenate([np.asarray(p) for p in paths])
        return {
            "loss": loss,
            "accuracy": float((flat_true == flat_pred).mean()),
            "sequences": len(paths),
            "tokens": int(flat_true.size),
        }
    names = [[tags[i] for i in y] for y in true]
    predicted = [[tags[i] for i in p] for p in paths]
    return {"loss": loss} | entity_metrics(names, predicted)


TASK = Tagging()
