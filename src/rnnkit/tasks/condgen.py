r"""One-to-many generation from a condition: a text written from a label (a surname of a given
language) or from a vector (an image's features: the captioning pattern).

The model is a language model over the item's tokens whose steps also see the condition v:

    input:  h_t = f(W_x x_t + W_v v + W_h h_{t-1})   v joins every step's input, so the
                                                     layer's weight_ih holds W_v beside W_x
    init:   h_0 = tanh(W_0 v + b_0)                  for every layer (an LSTM's c_0 = 0)
    both:   both
    p(x_{t+1} | x_<=t, v) = softmax(W_o dropout(h_t) + b_o)        x_0 = <bos>, ends at <eos>

For a plain RNN in ``input`` mode this is exactly h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v).
v is the label's embedding (``condition_embedding``, E features; one-hot when
``--embedding-size`` is 0), or the vector standardised with the training data's mean and
standard deviation (kept in vocab.json).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.config import EvalConfig, ModelConfig, PredictConfig, RunConfig, SampleConfig
from rnnkit.data.fields import MAX_SIZE, choice, integer, numbers, obj, strings
from rnnkit.data.generation import (
    ConditionedItems,
    ConditionKind,
    ItemBatches,
    decoder_batch,
    encode_items,
    items_meta,
    read_items,
    text_tokens,
    tokens_text,
    unknown_label_error,
)
from rnnkit.data.labelled import read_condition_vectors
from rnnkit.data.sequences import split_indices
from rnnkit.data.text import Level
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.layers.dropout import Dropout
from rnnkit.layers.packed import WEIGHTS, Weights
from rnnkit.sampling import Hypothesis, beam_search_batch, generate_tokens
from rnnkit.tasks.base import StepLoss, Task, TaskData
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
from rnnkit.tasks.sequence_data import is_features

LENGTH_ALPHA = 1.0
"""Beam scores are log-probabilities divided by length ** LENGTH_ALPHA (the mean per token)."""

_SAMPLE = SampleConfig()

DECODE_BATCH = 64
"""Evaluation reads and decodes at least this many items at a time (see seq2seq's)."""


class ConditionalGenerator(nn.Module):
    """A language model of items given a condition; see the module docstring.

    Parameters: ``embedding`` (:class:`TokenEmbedding`), ``condition_embedding`` (label
    conditions), ``rnn`` (layers of ``config.cell``, input E + K in ``input``/``both`` modes),
    ``init`` (W_0, (L·H, K), in ``init``/``both`` modes), ``head`` (W_o, (V, H)). Vector
    conditions are standardised with the buffers ``feature_mean`` and ``feature_std`` (D,),
    which are not saved with the weights (the model folder keeps them in vocab.json).

    Args:
        config: the architecture; ``condition_mode`` says where the condition enters.
        vocab_size: V, tokens of the items.
        num_labels: C, for label conditions; or
        vector_size: D, for vector conditions.

    Shapes:
        forward: conditions (B,) int64 label ids or (B, D) float vectors, tokens (B, T)
            -> logits (B, T, V)
        step: tokens (N,), DecoderState -> logits (N, V), DecoderState
    """

    def __init__(
        self,
        config: ModelConfig,
        vocab_size: int,
        *,
        num_labels: int | None = None,
        vector_size: int | None = None,
    ) -> None:
        super().__init__()
        if (num_labels is None) == (vector_size is None):
            raise ValueError("give exactly one of num_labels and vector_size")
        if config.bidirectional:
            raise ConfigError(
                "--task condgen writes text left to right; it cannot be bidirectional"
            )
        self.config = config
        self.kind: ConditionKind = "label" if num_labels is not None else "vector"
        self.embedding = TokenEmbedding(vocab_size, config.embedding_size)
        self.condition_embedding: TokenEmbedding | None = None
        if num_labels is not None:
            if config.feature_noise:
                raise ConfigError(
                    "--feature-noise perturbs condition vectors (.npz): label conditions have none"
                )
            self.condition_embedding = TokenEmbedding(num_labels, config.embedding_size)
            condition_size = self.condition_embedding.output_size
        else:
            condition_size = vector_size
            self.register_buffer("feature_mean", torch.zeros(vector_size), persistent=False)
            self.register_buffer("feature_std", torch.ones(vector_size), persistent=False)
        self.condition_size = condition_size
        mode = config.condition_mode
        self.condition_input = mode in ("input", "both")
        input_size = self.embedding.output_size + (condition_size if self.condition_input else 0)
        self.rnn = recurrent_layer(config, input_size)
        self.init: nn.Linear | None = None
        if mode in ("init", "both"):
            self.init = nn.Linear(condition_size, config.num_layers * config.hidden_size)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.embedding.weight
        self.vocab: Vocab | None = None
        self.level: Level = "char"
        self.labels: list[str] = []
        self.longest = 0

    def attach(
        self,
        vocab: Vocab,
        level: Level,
        longest: int,
        labels: Sequence[str] = (),
        standardise: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        """Give the model its vocabulary, its labels (label conditions) or the training
        vectors' mean and standard deviation (vector conditions), and the longest item."""
        if len(vocab) != self.embedding.num_tokens:
            raise ValueError(
                f"vocabulary has {len(vocab)} tokens but the model was built for "
                f"{self.embedding.num_tokens}"
            )
        if self.kind == "label" and len(labels) != self.condition_embedding.num_tokens:
            raise ValueError(f"{len(labels)} labels for a model of {self.condition_size}")
        if self.kind == "vector":
            mean, std = (torch.tensor(v, dtype=torch.float32) for v in standardise)  # (D,)
            if mean.shape != (self.condition_size,) or std.shape != mean.shape:
                raise ValueError(f"mean and std must have {self.condition_size} values")
            self.feature_mean.copy_(mean)
            self.feature_std.copy_(std)
        self.vocab, self.level, self.longest, self.labels = vocab, level, longest, list(labels)

    def condition(self, conditions: Tensor) -> Tensor:
        """v of each row: label ids (N,) -> their embeddings (N, K); vectors (N, D) ->
        standardised (N, D), plus Gaussian noise of deviation ``feature_noise`` in training."""
        if self.condition_embedding is not None:
            return self.condition_embedding(conditions)  # (N, K)
        v = (conditions - self.feature_mean) / self.feature_std  # (N, D)
        if self.training and self.config.feature_noise:
            v = v + self.config.feature_noise * torch.randn_like(v)  # (N, D)
        return v

    def initial_state(self, v: Tensor) -> State | None:
        """h_0 = tanh(W_0 v + b_0) of every layer, (L, N, H) (with c_0 = 0 for an LSTM), in
        ``init``/``both`` modes; None (zeros) in ``input`` mode."""
        if self.init is None:
            return None
        L, H = self.config.num_layers, self.config.hidden_size
        h = torch.tanh(self.init(v)).view(-1, L, H).transpose(0, 1).contiguous()  # (L, N, H)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def start(self, conditions: Tensor) -> DecoderState:
        """The state before ``<bos>``: h_0, with v as the context every step reads."""
        v = self.condition(conditions)  # (N, K)
        return DecoderState(self.initial_state(v), v)

    def forward(self, conditions: Tensor, tokens: Tensor, targets: Tensor | None = None) -> Tensor:
        """Next-token logits of items read from their start: (B,) or (B, D), (B, T) ->
        (B, T, V); ``tokens`` begin with ``<bos>``. Given ``targets`` (B, T) (the next tokens,
        ``IGNORE_INDEX`` at padding), the mean cross-entropy in nats per real token instead, a
        scalar, with the head computed at the real steps only (in train mode against targets
        smoothed by ``label_smoothing``)."""
        if targets is None:
            return self.read(tokens, self.start(conditions))[0]
        hidden = self._hidden(tokens, self.start(conditions))[0]  # (B, T, H)
        rows, real = real_steps(hidden, targets)  # (N, H), (N,)
        smoothing = self.config.label_smoothing if self.training else 0.0
        return real_token_loss(self.head(self.dropout(rows)), real, smoothing)

    def read(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Logits after each of ``tokens`` (B, T) -> (B, T, V), read from ``state``."""
        hidden, state = self._hidden(tokens, state)  # (B, T, H)
        return self.head(self.dropout(hidden)), state  # (B, T, V)

    def _hidden(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """The last layer's states after each of ``tokens`` (B, T) -> (B, T, H)."""
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        v = state.context  # (B, K)
        if self.condition_input:
            x = torch.cat([x, v[:, None, :].expand(-1, x.shape[1], -1)], dim=2)  # (B, T, E + K)
        hidden, rnn = self.rnn(x, state.rnn)  # (B, T, H)
        return hidden, DecoderState(rnn, v)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One step (no autograd): tokens (N,) -> logits (N, V), new state."""
        with torch.no_grad():
            x = self.embedding(tokens)  # (N, E)
            if self.condition_input:
                x = torch.cat([x, state.context], dim=1)  # (N, E + K)
            hidden, rnn = self.rnn.step(x, state.rnn)  # (N, H)
            return self.head(hidden), DecoderState(rnn, state.context)  # (N, V)

    @torch.no_grad()
    def decode(
        self, conditions: Tensor, *, beam_size: int = 1, max_length: int | None = None
    ) -> list[Hypothesis]:
        """Greedy (``beam_size`` 1) or beam-search items of a batch of conditions, each
        ending at ``<eos>`` or after ``max_length`` tokens (default: twice the longest
        training item). Runs in eval mode, in fp32, and restores the model's mode afterwards."""
        was_training = self.training
        self.eval()
        # In fp32 even under a bf16 autocast (validation), as Seq2Seq.decode.
        with torch.autocast(conditions.device.type, enabled=False):
            bos = torch.full((conditions.shape[0],), Vocab.bos_id, device=conditions.device)
            logits, state = self.step(bos, self.start(conditions))  # (N, V)
            limit = decode_limit(max_length, self.longest)
            eos, alpha = Vocab.eos_id, LENGTH_ALPHA
            found = beam_search_batch(  # beam 1 is greedy_batch
                self, logits, state, limit, beam_size, eos_id=eos, length_alpha=alpha
            )
        self.train(was_training)
        return found

    @torch.no_grad()
    def predict(
        self,
        conditions: Sequence[str] | np.ndarray | Tensor,
        *,
        beam_size: int = 1,
        max_length: int | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """The item written for each condition, as ``rnnkit predict`` writes it: greedy, or
        beam search of ``beam_size``; ``max_length`` as in :meth:`decode`.

        Args:
            conditions: labels (a list of str) for a model of labels; vectors (N, D) or one
                (D,), NumPy or torch, raw (standardised here as in training) for a model of
                vectors.

        Raises:
            DataError: a label the model never saw.
            ValueError: conditions of the other kind, or vectors not of D values.
        """
        if beam_size < 1 or batch_size < 1:
            raise ValueError("beam_size and batch_size must be at least 1")
        if isinstance(conditions, str):
            raise TypeError("give a list of labels, not one str")
        texts = isinstance(conditions, list | tuple) and all(isinstance(c, str) for c in conditions)
        if self.kind == "label":
            if not texts:
                raise ValueError("this model writes from labels: give a list of them")
            ids = self.label_ids(list(conditions), "conditions")  # (N,)
        else:
            if texts and conditions:
                raise ValueError(f"this model writes from vectors (N, {self.condition_size})")
            x = conditions.detach().cpu() if isinstance(conditions, Tensor) else conditions
            x = np.asarray(x, dtype=np.float32)
            x = x[None] if x.ndim == 1 else x
            if x.ndim != 2 or x.shape[1] != self.condition_size:
                raise ValueError(
                    f"vectors must be (N, D) with D = {self.condition_size}; got shape {x.shape}"
                )
            ids = torch.from_numpy(x)  # (N, D)
        device = self.head.weight.device
        out: list[str] = []
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size].to(device)
            found = self.decode(batch, beam_size=beam_size, max_length=max_length)
            out += [self.output_text(h) for h in found]
        return out

    def label_ids(self, labels: Sequence[str], where: str) -> Tensor:
        """Ids of labels: (N,) int64.

        Raises:
            DataError: a label the model never saw (the message lists the known ones).
        """
        index = {label: i for i, label in enumerate(self.labels)}
        for label in labels:
            if label not in index:
                raise unknown_label_error(label, self.labels, where)
        return torch.tensor([index[label] for label in labels], dtype=torch.long)  # (N,)

    def sample(
        self,
        condition: str | None,
        *,
        num_samples: int = _SAMPLE.num_samples,
        length: int = _SAMPLE.length,
        temperature: float = _SAMPLE.temperature,
        top_k: int | None = _SAMPLE.top_k,
        top_p: float | None = _SAMPLE.top_p,
        prime: str = _SAMPLE.prime,
        seed: int = _SAMPLE.seed,
        weights: Weights = _SAMPLE.weights,
    ) -> list[str]:
        """``num_samples`` items of the label ``condition``, drawn as one batch: each is the
        prime followed by sampled tokens up to its ``<eos>`` (or ``length`` tokens).

        Raises:
            ConfigError: no or an unknown ``condition`` (the message lists the labels), a
                vector-conditioned model, or a prime with tokens the model never saw.
        """
        if self.kind == "vector":
            raise ConfigError(
                "this condgen model writes from vectors, not labels; give them to "
                "`rnnkit predict MODEL vectors.npz`"
            )
        if condition not in self.labels:
            given = (
                "sampling a label-conditioned model needs --condition LABEL"
                if condition is None
                else f"unknown --condition {condition!r}"
            )
            raise ConfigError(
                f"{given}: the model knows {len(self.labels)} labels: {', '.join(self.labels)}"
            )
        vocab = self._vocab()
        prime_tokens = text_tokens(prime, self.level)
        unknown = vocab.unknown(prime_tokens)
        if unknown:
            raise ConfigError(
                f"the prime has {self.level} tokens the model never saw in training: "
                f"{', '.join(map(repr, unknown))}"
            )
        if weights not in WEIGHTS:
            raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
        device = self.head.weight.device
        banned = [vocab.pad_id, vocab.bos_id] + ([vocab.unk_id] if self.level == "char" else [])
        conditions = self.label_ids([condition] * num_samples, "--condition").to(device)
        view = _Sampling(self, conditions, banned)
        generator = torch.Generator(device).manual_seed(seed)
        self.eval()
        steps = generate_tokens(
            view,
            [vocab.bos_id, *vocab.encode(prime_tokens)],
            length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_samples=num_samples,
            generator=generator,
        )
        items: list[list[int]] = [[] for _ in range(num_samples)]
        done = [False] * num_samples
        with self._packed(weights):
            for chosen in steps:  # (N,)
                for i, token in enumerate(chosen.tolist()):
                    if done[i] or token == vocab.eos_id:
                        done[i] = True
                        continue
                    items[i].append(token)
                if all(done):
                    break
        return [tokens_text(prime_tokens + vocab.decode(item), self.level) for item in items]

    def _packed(self, weights: Weights) -> AbstractContextManager[Any]:
        """The recurrent layers' ``packed_step(weights)`` block (fp32: nothing to pack)."""
        if weights == "fp32" or not hasattr(self.rnn, "packed_step"):
            if weights != "fp32":
                raise ConfigError(f"weights={weights!r} needs an rnn, gru or lstm model")
            return nullcontext()
        try:
            return self.rnn.packed_step(weights)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def output_text(self, hypothesis: Hypothesis) -> str:
        """The text of a decoded hypothesis."""
        return tokens_text(self._vocab().decode(hypothesis.tokens), self.level)

    def _vocab(self) -> Vocab:
        if self.vocab is None:
            raise ValueError("this model has no vocabulary; load it with rnnkit.load(folder)")
        return self.vocab


class _Sampling(nn.Module):
    """The model bound to N conditions, as :func:`rnnkit.sampling.generate_tokens` calls it:
    a None state is the conditions' start; the ``banned`` tokens get logit -inf."""

    def __init__(self, model: ConditionalGenerator, conditions: Tensor, banned: list[int]) -> None:
        super().__init__()
        self.model = model
        self.conditions = conditions
        self.banned = torch.tensor(banned, device=conditions.device)

    def forward(self, tokens: Tensor, state: DecoderState | None = None) -> tuple[Tensor, Any]:
        start = self.model.start(self.conditions) if state is None else state
        with torch.no_grad():
            logits, state = self.model.read(tokens, start)  # (N, T, V)
        return logits.index_fill(-1, self.banned, -math.inf), state  # (N, T, V)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        logits, state = self.model.step(tokens, state)  # (N, V)
        return logits.index_fill_(-1, self.banned, -math.inf), state  # (N, V)


# --- evaluation ------------------------------------------------------------------------------


def _batch_rows(data: ConditionedItems, batch_size: int) -> Iterator[np.ndarray]:
    """Rows of ``data`` in batches of similar length."""
    order = np.argsort([len(item) for item in data.items], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def evaluate_items(
    model: ConditionalGenerator, data: ConditionedItems, batch_size: int, beam_size: int = 1
) -> dict[str, Any]:
    """``loss`` (nats per token given the condition, ``<eos>`` included), ``perplexity``,
    ``tokens``; for vector conditions also ``exact_match`` and ``bleu`` of the decoded items
    (greedy with ``beam_size`` 1)."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    total, count = 0.0, 0
    for rows in _batch_rows(data, batch_size):
        inputs, targets = decoder_batch([data.items[i] for i in rows])  # (B, T), (B, T)
        conditions = data.conditions[torch.from_numpy(rows)].to(device)
        tokens = int((targets >= 0).sum())
        total += model(conditions, inputs.to(device), targets.to(device)).item() * tokens
        count += tokens
    loss = total / count
    metrics: dict[str, Any] = {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "tokens": count,
    }
    if model.kind == "vector":
        outputs: list[str] = [""] * len(data.items)
        for rows in _batch_rows(data, batch_size):
            conditions = data.conditions[torch.from_numpy(rows)].to(device)
            for i, h in zip(rows, model.decode(conditions, beam_size=beam_size), strict=True):
                outputs[i] = model.output_text(h)
        matches = sum(o == r for o, r in zip(outputs, data.references, strict=True))
        metrics["exact_match"] = matches / len(outputs)
        metrics["bleu"] = corpus_bleu(outputs, data.references, model.level)
    model.train(was_training)
    return metrics


# --- the task --------------------------------------------------------------------------------


class ConditionalGeneration(Task):
    """``--task condgen``: items with a label (TSV ``label<TAB>text`` or a folder of
    ``<label>.txt``) or a vector (``.npz`` with ``x`` (N, D) and ``text`` (N,)).

    The kept model is the one of lowest validation loss; for vector conditions, of highest
    exact match of the greedy items (ties to the lower loss).
    """

    name = "condgen"
    best_metric = "loss"

    # Chosen by short timed runs on names/ and digits/; see config.py.
    PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {"cell": "gru", "num_layers": 1, "hidden_size": 256, "dropout": 0.2},
        "data": {"level": "char"},
        "train": {"batch_size": 64, "lr": 3e-3, "weight_decay": 0.01, "eval_every": 100},
    }

    # Vector conditions (.npz): Gaussian noise on the standardised vector in training, chosen
    # on a dev split of digits/ (config.py): without it the network learns the few hundred
    # training vectors by heart, and the same images stay wrong whatever the seed.
    VECTORS_PRESET: ClassVar[dict[str, dict[str, Any]]] = {
        **PRESET,
        "model": {**PRESET["model"], "feature_noise": 0.5},
    }

    def preset(self, data_path: str | None = None) -> dict[str, dict[str, Any]]:
        if is_features(data_path):
            return self.VECTORS_PRESET
        return self.PRESET

    def selection(self, run: RunConfig) -> tuple[str, bool]:
        if is_features(run.data.path):
            return "exact_match", True
        return "loss", False

    def load_data(self, run: RunConfig, meta: dict[str, Any] | None) -> TaskData:
        cfg = run.data
        if cfg.path is None:
            raise DataError(
                "--task condgen needs DATA: labelled texts (TSV label<TAB>text or a folder of "
                "<label>.txt) or an .npz of x (N, D) and text (N,)"
            )
        raw = read_items(cfg.path, cfg.level, cfg.encoding)
        n = len(raw.tokens)
        if cfg.val is not None:
            train_rows, val_raw = np.arange(n), read_items(cfg.val, cfg.level, cfg.encoding)
        else:
            labels = raw.conditions if raw.kind == "label" else None
            train_rows, val_rows = split_indices(n, cfg.val_frac, run.train.seed, labels)
            val_raw = None
        if meta is None:
            meta = items_meta(raw, train_rows, cfg.min_freq)
        data = encode_items(raw, meta, cfg.level)
        train = data.subset(train_rows)
        val = (
            encode_items(val_raw, meta, cfg.level) if val_raw is not None else data.subset(val_rows)
        )
        what = (
            f"{len(meta['conditions']['labels'])} labels"
            if raw.kind == "label"
            else f"vectors of {meta['conditions']['size']}"
        )
        summary = (
            f"{len(train.items)} train / {len(val.items)} val items, {what}, {cfg.level} "
            f"vocabulary {len(meta['vocab']['tokens'])}"
        )
        return TaskData(meta, train, val, raw.source, summary)

    def check_meta(self, run: RunConfig, meta: dict[str, Any]) -> None:
        obj(meta, "", ("vocab", "conditions", "longest"))
        Vocab.from_dict(meta["vocab"], "vocab")
        integer(meta["longest"], "longest", 1, MAX_SIZE)
        conditions = obj(
            meta["conditions"], "conditions", ("kind",), ("labels", "size", "mean", "std")
        )
        kind = choice(conditions["kind"], "conditions.kind", ("label", "vector"))
        if kind == "label":
            obj(conditions, "conditions", ("kind", "labels"))
            strings(conditions["labels"], "conditions.labels", least=1)
        else:
            obj(conditions, "conditions", ("kind", "size", "mean", "std"))
            size = integer(conditions["size"], "conditions.size", 1, MAX_SIZE)
            numbers(conditions["mean"], "conditions.mean", size)
            if min(numbers(conditions["std"], "conditions.std", size)) <= 0:
                raise ValueError("conditions.std must be positive")

    def build_model(self, run: RunConfig, meta: dict[str, Any]) -> ConditionalGenerator:
        vocab = Vocab.from_dict(meta["vocab"])
        conditions = meta["conditions"]
        longest = meta["longest"]
        if conditions["kind"] == "label":
            labels = conditions["labels"]
            model = ConditionalGenerator(run.model, len(vocab), num_labels=len(labels))
            model.attach(vocab, run.data.level, longest, labels=labels)
        else:
            model = ConditionalGenerator(run.model, len(vocab), vector_size=conditions["size"])
            standardise = (conditions["mean"], conditions["std"])
            model.attach(vocab, run.data.level, longest, standardise=standardise)
        return model

    def batches(self, run: RunConfig, data: TaskData) -> ItemBatches:
        return ItemBatches(data.train, run.train.batch_size, run.train.seed)

    def loss(self, model: nn.Module, batch: Any, state: Any, device: torch.device) -> StepLoss:
        conditions, inputs, targets = (t.to(device) for t in batch)
        return token_step_loss(model(conditions, inputs, targets), targets)

    def evaluate(
        self, model: nn.Module, val: Any, run: RunConfig, device: torch.device
    ) -> dict[str, Any]:
        return evaluate_items(model, val, max(run.train.batch_size, DECODE_BATCH))

    def evaluate_file(
        self, model: nn.Module, path: str | Path, cfg: EvalConfig, device: torch.device
    ) -> dict[str, Any]:
        """The metrics of :func:`evaluate_items` on every item of ``path`` (unknown tokens
        count as ``<unk>``; an unknown label is an error)."""
        raw = read_items(path, model.level, cfg.encoding)
        data = encode_items(raw, _meta_of(model), model.level)
        return evaluate_items(model, data, max(cfg.batch_size, DECODE_BATCH), cfg.beam_size)

    def predict(
        self, model: nn.Module, text: str, source: str, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Label conditions: one label per input line, one item per label."""
        if model.kind == "vector":
            raise DataError(
                f"{source}: this condgen model writes from vectors; give an .npz file with x "
                f"(N, {model.condition_size})"
            )
        lines = [line.strip() for line in text.removeprefix("\ufeff").splitlines()]
        labels = [line for line in lines if line]
        conditions = model.label_ids(labels, source)  # (N,)
        return _predictions(model, conditions, labels, cfg, device)

    def predict_file(
        self, model: nn.Module, path: str | Path, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Vector conditions: one item per row of ``x`` (N, D) of the ``.npz`` file."""
        if model.kind == "label":
            raise DataError(f"{path}: this condgen model writes from labels; give one per line")
        x = read_condition_vectors(path)  # (N, D)
        if x.shape[1] != model.condition_size:
            raise DataError(
                f"{path}: x has {x.shape[1]} features per row; the model was trained on "
                f"{model.condition_size}"
            )
        return _predictions(model, torch.from_numpy(x), list(range(len(x))), cfg, device)

    def summary(self, metrics: dict[str, Any]) -> str:
        line = (
            f"loss {metrics['loss']:.4f} nats/token | perplexity {metrics['perplexity']:.3f} | "
            f"{metrics['tokens']} tokens"
        )
        if "exact_match" in metrics:
            line += f" | exact match {metrics['exact_match']:.4f} | bleu {metrics['bleu']:.2f}"
        return line


def _meta_of(model: ConditionalGenerator) -> dict[str, Any]:
    """What :func:`_encode` needs of a loaded model."""
    if model.kind == "label":
        conditions: dict[str, Any] = {"kind": "label", "labels": model.labels}
    else:
        conditions = {"kind": "vector", "size": model.condition_size}
    return {"vocab": model.vocab.to_dict(), "conditions": conditions}


def _predictions(
    model: ConditionalGenerator,
    conditions: Tensor,
    names: list[Any],
    cfg: PredictConfig,
    device: torch.device,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """One decoded item per condition, in batches of ``cfg.batch_size``."""
    for start in range(0, len(names), cfg.batch_size):
        batch = conditions[start : start + cfg.batch_size].to(device)
        found = model.decode(batch, beam_size=cfg.beam_size, max_length=cfg.max_length)
        for name, h in zip(names[start : start + cfg.batch_size], found, strict=True):
            output = model.output_text(h)
            record = {"condition": name, "output": output, "score": h.score, "log_prob": h.log_prob}
            yield output + "\n", record


TASK = ConditionalGeneration()
