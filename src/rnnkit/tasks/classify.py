"""Many-to-one classification (``--task classify``): one label per sequence.

Embedding (or standardised features) -> recurrent layers over the real steps -> pooling
(``last``, ``mean``, ``max`` or ``attention``) -> dropout -> linear head over the C labels.
Data: a TSV ``label<TAB>text``, a folder of ``<label>.txt`` files (one item per line), or an
``.npz`` of feature sequences with ``y`` (N,). The kept model is the one of best validation
accuracy (ties: lower loss).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import EvalConfig, ModelConfig, PredictConfig, RunConfig
from rnnkit.data.examples import EpochBatches, Examples, feature_statistics, sorted_batches
from rnnkit.data.fields import MAX_SIZE, choice, integer
from rnnkit.data.labelled import LabelledTexts, read_labelled_texts
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.layers.dropout import Dropout
from rnnkit.tasks.base import StepLoss, Task, TaskData
from rnnkit.tasks.encoder import SequenceEncoder
from rnnkit.tasks.ensemble import log_mean_probability, other_members
from rnnkit.tasks.frame_votes import frame_votes
from rnnkit.tasks.metrics import classification_metrics, plot_confusion
from rnnkit.tasks.naive_bayes import NaiveBayes
from rnnkit.tasks.pooling import Pooling
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

BAYES_GRAMS = "bayes_grams"
"""The key of vocab.json that holds G, the n-grams of ``--naive-bayes``'s tables."""


def text_tokens(text: str, level: str, lowercase: bool = False) -> list[str]:
    """The tokens of one item: its characters, or its whitespace-separated words (in lower
    case with ``lowercase``)."""
    if lowercase:
        text = text.lower()
    return list(text) if level == "char" else text.split()


def choose_level(texts: list[str]) -> str:
    """``--level auto``: ``word`` when the items average two or more words, else ``char``
    (surnames, single words: their letters are what tells the classes apart)."""
    words = sum(len(t.split()) for t in texts) / max(len(texts), 1)
    return "word" if words >= 2 else "char"


class Classifier(nn.Module):
    """Sequence -> class logits.

    Args:
        config: the architecture; ``config.pooling`` picks how steps become one vector.
        labels: the C label names, in id order.
        vocab: the token vocabulary (text), or None (feature sequences).
        level: ``"char"`` or ``"word"``, how text is cut into tokens.
        lowercase: whether text is looked up in lower case (``--lowercase``).
        feature_size: D for feature sequences, or None (text).
        bayes_grams: G, the n-grams of ``--naive-bayes``'s tables (text; 0: none).

    Shapes:
        forward: inputs (B, T) int64 or (B, T, D) float, lengths (B,) -> logits (B, C)
    """

    def __init__(
        self,
        config: ModelConfig,
        labels: list[str],
        *,
        vocab: Vocab | None = None,
        level: str = "word",
        lowercase: bool = False,
        feature_size: int | None = None,
        bayes_grams: int = 0,
    ) -> None:
        super().__init__()
        self.config, self.labels, self.vocab, self.level = config, labels, vocab, level
        self.lowercase = lowercase
        self.encoder = SequenceEncoder(
            config, vocab_size=None if vocab is None else len(vocab), feature_size=feature_size
        )
        self.pooling = Pooling(config.pooling, config.hidden_size, self.encoder.num_directions)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(self.pooling.output_size, len(labels))
        self.register_buffer("class_weight", torch.ones(len(labels)))
        # --frame-votes: one per-frame classifier beside the network(s), averaged with them.
        self.votes = frame_votes(config, feature_size, len(labels))
        # --naive-bayes W: n-gram counts whose probabilities, to the power W, multiply the
        # network's (rnnkit.tasks.naive_bayes); eval and predict may set another W.
        self.bayes = None
        if config.naive_bayes and vocab is not None and bayes_grams:
            self.bayes = NaiveBayes(len(vocab), len(labels), bayes_grams)
        self.bayes_weight = config.naive_bayes
        # --ensemble K: this network is the first member (rnnkit.tasks.ensemble).
        shape = dict(vocab=vocab, level=level, lowercase=lowercase, feature_size=feature_size)
        self.others = other_members(config, lambda member: Classifier(member, labels, **shape))

    def members(self) -> list[Classifier]:
        """The K networks of an ensemble (``[self]`` for one network)."""
        return [self, *self.others]

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Class logits (B, C) of a padded batch. An ensemble gives the log of its members'
        mean probability, log (1/K) Σ_k softmax(z_k), whose softmax is that mean. With
        ``--naive-bayes W``, W times the counts' log-probabilities are added to the
        network's (fp32), so that the softmax is their normalised product."""
        if not self.others and self.votes is None:
            logits = self._logits(inputs, lengths)  # (B, C)
        else:
            logits = log_mean_probability(self.member_logits(inputs, lengths))  # (B, C)
        if self.bayes is None or not self.bayes_weight:
            return logits
        counts = self.bayes(inputs, lengths).to(logits.device)  # (B, C)
        return logits.float().log_softmax(-1) + self.bayes_weight * counts

    def member_logits(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Each member's class logits: (B, T[, D]), (B,) -> (K, B, C); with ``--frame-votes``
        (K + 1, B, C), the last the frames' mean vote (log-probabilities)."""
        logits = [member._logits(inputs, lengths) for member in self.members()]
        if self.votes is not None:
            votes = self.votes(self.encoder.features(inputs))  # (B, T, C), running means
            last = (lengths - 1).to(votes.device)  # (B,)
            mean_vote = votes[torch.arange(len(last), device=votes.device), last]  # (B, C)
            logits = [z.float() for z in logits] + [mean_vote]  # fp32, as the votes are
        return torch.stack(logits)

    def _logits(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """This network's logits (B, C), without the other members."""
        out = self.encoder(inputs, lengths)  # (B, T, dirs·H)
        pooled = self.pooling(out, lengths.to(out.device))  # (B, dirs·H)
        return self.head(self.dropout(pooled))  # (B, C)

    def encode_texts(self, texts: list[str]) -> Examples:
        """Examples of raw texts (unknown tokens become ``<unk>``)."""
        if self.vocab is None:
            raise ValueError("this model reads feature sequences (N, T, D), not texts")
        if isinstance(texts, str):
            raise TypeError("give a list of texts, not one str")
        ids = [self.vocab.encode(text_tokens(t, self.level, self.lowercase)) for t in texts]
        return Examples(lengths=np.array([len(i) for i in ids], dtype=np.int64), ids=ids)

    @torch.no_grad()
    def predict_proba(
        self,
        inputs: list[str] | np.ndarray | Tensor,
        batch_size: int = 64,
        *,
        lengths: np.ndarray | Tensor | None = None,
    ) -> Tensor:
        """Class probabilities (N, C), in input order, of raw texts (a text model) or of
        feature sequences x (N, T, D), zero-padded, with their ``lengths`` (N,) (default: T
        each), standardised as in training (a model of ``.npz`` features)."""
        if self.vocab is not None:
            if lengths is not None:
                raise ValueError("lengths are for feature sequences; this model reads text")
            return probabilities(self, self.encode_texts(inputs), batch_size)
        return probabilities(self, feature_inputs(inputs, lengths, self.encoder), batch_size)

    def predict(
        self,
        inputs: list[str] | np.ndarray | Tensor,
        batch_size: int = 64,
        *,
        lengths: np.ndarray | Tensor | None = None,
    ) -> list[str]:
        """The most probable label of each input (as :meth:`predict_proba`), by name."""
        best = self.predict_proba(inputs, batch_size, lengths=lengths).argmax(-1)  # (N,)
        return [self.labels[i] for i in best.tolist()]


@torch.no_grad()
def probabilities(model: Classifier, examples: Examples, batch_size: int) -> Tensor:
    """Softmax probabilities (N, C) of the examples, in their order, in eval mode."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    out = torch.empty(len(examples), len(model.labels))  # (N, C)
    for index, batch in sorted_batches(examples, batch_size):
        logits = model(batch["inputs"].to(device), batch["lengths"])  # (B, C)
        out[torch.from_numpy(index)] = logits.float().softmax(-1).cpu()
    model.train(was_training)
    return out


class Classification(Task):
    """``--task classify``: see the module docstring."""

    name = "classify"
    plots = True
    best_metric = "accuracy"
    higher_is_better = True

    # The preset for 2 CPU cores; lr chosen on the dev splits of names/ and SST-2, weight decay
    # 0.1, embedding dropout 0.1 (whole characters dropped from a batch), the mean of the 5
    # best evaluations and the n-gram counts' weight 0.1 (--naive-bayes) on names/' dev halves
    # (character-level items; config.py). The other presets keep 0.01, no embedding dropout,
    # one evaluation's weights and no counts.
    PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            "cell": "lstm",
            "num_layers": 1,
            "hidden_size": 256,
            "embedding_size": 128,
            "dropout": 0.3,
            "bidirectional": True,
            "pooling": "max",
            "embedding_dropout": 0.1,
            "naive_bayes": 0.1,
        },
        "data": {"level": "auto"},
        "train": {
            "batch_size": 32,
            "lr": 5e-3,
            "weight_decay": 0.1,
            "eval_every": 100,
            "average_best": 5,
        },
    }

    # Word-level text: an ensemble of 8 networks, chosen on SST-2's dev split (config.py). Such
    # data sets are learnt by heart within a few hundred steps, so a time budget is better
    # spent on several networks than on one; names (characters) and features keep one network.
    WORDS_PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        **PRESET,
        "model": {
            **PRESET["model"],
            "ensemble": 8,
            "embedding_dropout": 0.0,
            "naive_bayes": 0.0,
        },
        "train": {**PRESET["train"], "weight_decay": 0.01, "average_best": 0},
    }

    # Feature sequences (.npz): the frames' own votes averaged in (--frame-votes), chosen on
    # splits of japanese_vowels' training utterances in recording order (config.py).
    FEATURES_PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        **PRESET,
        "model": {
            **PRESET["model"],
            "frame_votes": True,
            "embedding_dropout": 0.0,
            "naive_bayes": 0.0,
        },
        "train": {**PRESET["train"], "weight_decay": 0.01, "average_best": 0},
    }

    def preset(self, data_path: str | None = None) -> dict[str, dict[str, Any]]:
        if is_features(data_path):
            return self.FEATURES_PRESET
        return self.WORDS_PRESET if _word_items(data_path) else self.PRESET

    # --- data ------------------------------------------------------------------------------

    def load_data(self, run: RunConfig, meta: dict[str, Any] | None) -> TaskData:
        path = need_path(run)
        if is_features(path):
            return self._load_features(run, path, meta)
        items = _read_texts(path, run.data.encoding)
        if meta is None:
            level = run.data.level if run.data.level != "auto" else choose_level(items.texts)
            labels = _two_labels_at_least(sorted(set(items.labels)), path)
        else:
            level, labels = meta["level"], meta["labels"]
        index = {label: i for i, label in enumerate(labels)}
        lowercase = run.data.lowercase
        tokens = [text_tokens(t, level, lowercase) for t in items.texts]
        examples = Examples(
            lengths=np.array([len(t) for t in tokens], dtype=np.int64),
            y=[index[label] for label in items.labels],
        )

        def read_val(val_path: str) -> Examples:
            val = _read_texts(val_path, run.data.encoding)
            _check_labels(val.labels, index, val_path, count_unknown=None)
            val_tokens = [text_tokens(t, level, lowercase) for t in val.texts]
            return Examples(
                lengths=np.array([len(t) for t in val_tokens], dtype=np.int64),
                y=[index[label] for label in val.labels],
                ids=val_tokens,  # encoded below, once the vocabulary exists
            )

        examples.ids = tokens
        train, val = split(run, examples, examples.y, read_val)
        vocab = (
            Vocab.from_dict(meta["vocab"]) if meta else build_vocab(train.ids, run.data.min_freq)
        )
        train.ids = [vocab.encode(t) for t in train.ids]
        val.ids = [vocab.encode(t) for t in val.ids]
        meta = {"kind": "text", "level": level, "labels": labels, "vocab": vocab.to_dict()}
        setup = self._setup(run, train, labels)
        if run.model.naive_bayes:
            counts = NaiveBayes.counted(len(vocab), len(labels), train, train.y)
            meta[BAYES_GRAMS] = len(counts.keys)
            setup["naive_bayes"] = counts.state_dict()
        if run.data.embeddings is not None:
            setup["embeddings"] = (run.data.embeddings, run.model.freeze_embeddings)
        return TaskData(meta, train, val, path, self._summary(train, val, labels, level), setup)

    def _load_features(self, run: RunConfig, path: str, meta: dict[str, Any] | None) -> TaskData:
        refuse_text_options(run, path)
        if run.model.naive_bayes:
            raise ConfigError(
                f"--naive-bayes counts the tokens of text; {path} holds feature sequences"
            )
        features = read_feature_file(path, "sequence")
        if meta:
            labels = meta["labels"]
        else:
            labels = [str(i) for i in range(int(features.y.max()) + 1)]
            _two_labels_at_least([str(y) for y in np.unique(features.y)], path)
        examples = feature_examples(features)

        def read_val(val_path: str) -> Examples:
            val = read_feature_file(val_path, "sequence")
            check_feature_size(val, features.x.shape[2])
            if val.y.max() >= len(labels):
                raise DataError(f"{val_path}: label {int(val.y.max())} never occurs in training")
            return feature_examples(val)

        train, val = split(run, examples, list(features.y), read_val)
        mean, std = feature_statistics(train.x, train.lengths)
        meta = meta or {"kind": "features", "labels": labels, "feature_size": features.x.shape[2]}
        setup = self._setup(run, train, labels) | {"statistics": (mean, std)}
        return TaskData(meta, train, val, path, self._summary(train, val, labels, "feature"), setup)

    @staticmethod
    def _setup(run: RunConfig, train: Examples, labels: list[str]) -> dict[str, Any]:
        if run.train.class_weights == "balanced":
            return {"class_weight": balanced_weights(list(train.y), len(labels))}
        return {}

    @staticmethod
    def _summary(train: Examples, val: Examples, labels: list[str], level: str) -> str:
        return f"{len(train)} train / {len(val)} val examples ({level} level), {len(labels)} labels"

    # --- model -----------------------------------------------------------------------------

    def check_meta(self, run: RunConfig, meta: dict[str, Any]) -> None:
        kind = check_sequence_meta(run, meta, "labels", ("level",), optional=(BAYES_GRAMS,))
        if kind == "text":
            choice(meta["level"], "level", ("char", "word"))
            if BAYES_GRAMS in meta:
                integer(meta[BAYES_GRAMS], BAYES_GRAMS, 1, MAX_SIZE)

    def build_model(self, run: RunConfig, meta: dict[str, Any]) -> Classifier:
        if meta.get("kind") == "features":
            return Classifier(run.model, meta["labels"], feature_size=int(meta["feature_size"]))
        vocab = Vocab.from_dict(meta["vocab"])
        labels, level, lowercase = list(meta["labels"]), meta["level"], run.data.lowercase
        return Classifier(
            run.model,
            labels,
            vocab=vocab,
            level=level,
            lowercase=lowercase,
            bayes_grams=int(meta.get(BAYES_GRAMS, 0)),
        )

    def init_model(self, model: nn.Module, data: TaskData) -> None:
        for i, member in enumerate(model.members()):
            init_encoder(member.encoder, data, model.vocab, log=i == 0)
        if "class_weight" in data.setup:
            model.class_weight.copy_(data.setup["class_weight"])
        if model.bayes is not None:
            model.bayes.load_state_dict(data.setup["naive_bayes"])

    def batches(self, run: RunConfig, data: TaskData) -> EpochBatches:
        return EpochBatches(data.train, run.train.batch_size, run.train.seed)

    def loss(self, model: nn.Module, batch: Any, state: Any, device: torch.device) -> StepLoss:
        # Each member learns on its own: the loss is the mean of the members' losses, not the
        # loss of their averaged prediction.
        logits = model.member_logits(batch["inputs"].to(device), batch["lengths"])  # (K, B, C)
        targets = batch["targets"].to(device)  # (B,)
        flat = logits.flatten(0, 1).float()  # (K·B, C)
        repeated = targets.repeat(len(logits))  # (K·B,)
        # Training only: evaluation has its own loss, plain cross-entropy.
        gamma, smoothing = model.config.focal_gamma, model.config.label_smoothing
        if gamma:
            loss = focal_loss(flat, repeated, gamma, model.class_weight)
        else:
            loss = F.cross_entropy(
                flat, repeated, weight=model.class_weight, label_smoothing=smoothing
            )
        units = float(model.class_weight[targets].sum())  # the weighted mean's denominator
        return StepLoss(loss, int(batch["lengths"].sum()), units=units)

    # --- metrics ---------------------------------------------------------------------------

    def evaluate(
        self, model: nn.Module, val: Any, run: RunConfig, device: torch.device
    ) -> dict[str, Any]:
        return _metrics(model, val, model.labels, run.train.batch_size)

    def evaluate_file(
        self, model: nn.Module, path: str | Path, cfg: EvalConfig, device: torch.device
    ) -> dict[str, Any]:
        labels = list(model.labels)
        check_data_kind(model, path, features=is_features(path))
        _set_naive_bayes(model, cfg)
        if model.vocab is None:
            features = read_feature_file(path, "sequence")
            check_feature_size(features, model.encoder.feature_size)
            examples = feature_examples(features)
            known = len(labels)  # the class ids 0 .. C-1, named "0" .. "C-1"
            found = sorted({int(i) for i in np.unique(features.y)} - set(range(known)))
            unknown = [str(i) for i in found]
            _check_labels(unknown, {}, path, cfg.count_unknown_labels)
            renumber = {i: known + j for j, i in enumerate(found)}  # ids after the known ones
            examples.y = np.array([renumber.get(int(i), int(i)) for i in features.y])
            labels += unknown
        else:
            items = _read_texts(path, cfg.encoding)
            index = {label: i for i, label in enumerate(labels)}
            unknown = _check_labels(items.labels, index, path, cfg.count_unknown_labels)
            labels += unknown
            index = {label: i for i, label in enumerate(labels)}
            examples = model.encode_texts(items.texts)
            examples.y = [index[label] for label in items.labels]
        return _metrics(model, examples, labels, cfg.batch_size)

    def summary(self, metrics: dict[str, Any]) -> str:
        return (
            f"accuracy {metrics['accuracy']:.4f} | macro_f1 {metrics['macro_f1']:.4f} | "
            f"loss {metrics['loss']:.4f} | {metrics['examples']} examples"
        )

    def plot(self, metrics: dict[str, Any], path: str | Path) -> None:
        plot_confusion(metrics["confusion"], metrics["labels"], path)

    # --- prediction ------------------------------------------------------------------------

    def predict(
        self, model: nn.Module, text: str, source: str, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One result per input line (raw text); a blank line gives a blank line (and a record
        whose label is None), so that output line n is input line n. A file whose every line
        holds a TAB is read as ``label<TAB>text`` and the text after the first TAB is
        classified."""
        check_data_kind(model, source, features=False)
        _set_naive_bayes(model, cfg)
        lines = text.splitlines()
        if lines and all("\t" in line for line in lines if line.strip()):
            lines = [line.split("\t", 1)[1] if "\t" in line else line for line in lines]
        lines = [line.strip() for line in lines]
        texts = [line for line in lines if line]
        if not texts:
            raise DataError(f"{source} has no text to classify")
        probs = model.predict_proba(texts, cfg.batch_size)  # (N, C)
        ranked = _ranked(model.labels, probs, cfg.top_k, [{"text": t} for t in texts])
        for line in lines:
            blank = {"text": "", "label": None, "probability": None}
            yield next(ranked) if line else ("\n", blank)

    def predict_file(
        self, model: nn.Module, path: str | Path, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        check_data_kind(model, path, features=True)
        _set_naive_bayes(model, cfg)
        features = read_feature_file(path, "none")
        check_feature_size(features, model.encoder.feature_size)
        probs = probabilities(model, feature_examples(features), cfg.batch_size)  # (N, C)
        yield from _ranked(
            model.labels, probs, cfg.top_k, [{"index": i} for i in range(len(probs))]
        )


def _ranked(
    labels: list[str], probs: Tensor, top_k: int, records: list[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``label<TAB>probability`` (k pairs per line) and the JSON record of each row."""
    k = min(top_k, len(labels))
    values, ids = probs.topk(k, dim=-1)  # (N, k), (N, k)
    for record, row_values, row_ids in zip(records, values.tolist(), ids.tolist(), strict=True):
        top = [
            {"label": labels[i], "probability": p} for i, p in zip(row_ids, row_values, strict=True)
        ]
        line = "\t".join(f"{t['label']}\t{t['probability']:.4f}" for t in top) + "\n"
        yield (
            line,
            record
            | {"label": top[0]["label"], "probability": top[0]["probability"]}
            | ({"top": top} if k > 1 else {}),
        )


def _two_labels_at_least(labels: list[str], path: str) -> list[str]:
    """``labels``, the training data's distinct labels, sorted, once there are two or more.

    Raises:
        DataError: one label only (a classifier of one class learns nothing; scikit-learn's
            classifiers refuse it too), naming ``path`` and the label.
    """
    if len(labels) < 2:
        raise DataError(
            f"{path}: every item has the label {labels[0]!r}; classify needs at least two labels"
        )
    return labels


def _set_naive_bayes(model: Classifier, cfg: EvalConfig | PredictConfig) -> None:
    """Weigh the model's n-gram counts by eval/predict's ``--naive-bayes`` where given; None
    keeps the model's own weight.

    Raises:
        ConfigError: a weight above 0 for a model without counts.
    """
    if cfg.naive_bayes is None:
        return
    if model.bayes is None and cfg.naive_bayes:
        raise ConfigError(
            "--naive-bayes weighs the n-gram counts this model was trained with, and it has "
            "none (trained with --naive-bayes 0, or on .npz features)"
        )
    model.bayes_weight = cfg.naive_bayes


def _word_items(path: str | Path | None) -> bool:
    """Whether the text data at ``path`` (a TSV or a folder of ``.txt`` files) holds items of
    two or more words on average, judged from the first MiB of each file as ``--level auto``
    judges all of it; False for features or an unreadable path (training reports those)."""
    if path is None or is_features(path):
        return False
    path = Path(path)
    texts: list[str] = []
    try:
        for file in sorted(path.glob("*.txt")) if path.is_dir() else [path]:
            with open(file, "rb") as f:
                head = f.read(1 << 20).decode("utf-8", errors="replace")
            lines = [line for line in head.splitlines() if line.strip()]
            texts += lines if path.is_dir() else [line.partition("\t")[2] for line in lines]
    except OSError:
        return False
    return bool(texts) and choose_level(texts) == "word"


def _read_texts(path: str | Path, encoding: str) -> LabelledTexts:
    """:func:`read_labelled_texts`, refusing a CoNLL file (a tagger's data) by its look."""
    items = read_labelled_texts(path, encoding=encoding)
    tag_like = sum(1 for t in items.texts if t == "O" or t[:2] in ("B-", "I-"))
    if tag_like > 0.5 * len(items.texts):
        raise DataError(
            f"{path} looks like CoNLL token<TAB>tag lines (the data of --task tag), "
            f"not label<TAB>text"
        )
    return items


def _check_labels(
    labels: list[str], index: dict[str, int], path: str | Path, count_unknown: bool | None
) -> list[str]:
    """The labels that training never saw, in their order in ``labels``; an error unless
    ``count_unknown`` (None: validation data read in training, which has no such flag)."""
    unknown = sorted(set(labels) - set(index), key=labels.index)
    if unknown and not count_unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise DataError(
            f"{path} has {len(unknown)} label(s) that training never saw: {shown}; "
            + unknown_advice(count_unknown, "items")
        )
    return unknown


def _metrics(model: Classifier, examples: Examples, labels: list[str], batch_size: int) -> dict:
    """classification_metrics plus ``loss`` (mean cross-entropy over the items whose label
    the model knows)."""
    probs = probabilities(model, examples, batch_size)  # (N, C)
    true = torch.as_tensor(list(examples.y), dtype=torch.long)  # (N,)
    known = true < probs.shape[1]
    picked = probs[known].gather(1, true[known, None]).clamp_min(1e-12)  # (K, 1)
    loss = float(-picked.log().mean()) if known.any() else float("nan")
    metrics = classification_metrics(true.tolist(), probs.argmax(-1).tolist(), labels)
    return {"loss": loss} | metrics


def focal_loss(logits: Tensor, targets: Tensor, gamma: float, weight: Tensor) -> Tensor:
    """``--focal-gamma``: the focal loss of Lin et al. (2017), -(1 - p)^gamma · log p of each
    item's true class probability p, averaged as ``F.cross_entropy`` averages with class
    weights: sum_i w[y_i] · l_i / sum_i w[y_i]. ``logits`` (N, C), ``targets`` (N,) class ids,
    ``weight`` (C,); gamma 0 is cross-entropy. 1 - p is taken as -expm1(log p), exact near
    p = 1, and kept above 1e-12 so that gamma < 1 has a finite gradient there."""
    log_p = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (N,)
    focus = (-torch.expm1(log_p)).clamp_min(1e-12).pow(gamma)  # (N,): (1 - p)^gamma
    w = weight[targets]  # (N,)
    return -(w * focus * log_p).sum() / w.sum()


def balanced_weights(y: list[int], num_labels: int) -> Tensor:
    """``--class-weights balanced``: N / (C · count) per class (0 for absent classes)."""
    counts = Counter(y)
    n = len(y)
    return torch.tensor(
        [n / (num_labels * counts[c]) if counts[c] else 0.0 for c in range(num_labels)]
    )


TASK = Classification()
