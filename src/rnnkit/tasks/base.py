"""The task interface: what the one training loop, ``rnnkit.load``, ``eval`` and ``predict``
need from a sequence shape.

A task module (``tasks/lm.py``, ``tasks/classify.py``, ``tasks/tag.py``) defines a subclass of
:class:`Task` and an instance of it named ``TASK``. The loop asks it, in this order:

    preset(data_path)           defaults of the task (by kind of data), under the config file and
                                the flags
    check_meta(run, meta)       (resume) check the folder's vocabularies and labels
    load_data(run, meta)        read the data; build vocabularies/labels (or reuse ``meta``)
    build_model(run, meta)      the model, with its vocabularies and labels attached
    batches(run, data)          the training batches of any epoch, by position
    loss(model, batch, state)   the loss of one batch (and the state carried to the next)
    evaluate(model, data, run)  the validation metrics; ``best_metric`` picks the kept model

and ``rnnkit eval`` / ``rnnkit predict`` call :meth:`Task.evaluate_file` / :meth:`Task.predict`.
``meta`` is the JSON object saved as the model folder's vocab.json.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from rnnkit.config import EvalConfig, PredictConfig, RunConfig
from rnnkit.errors import ConfigError


class Batches(Protocol):
    """The training batches of a run: ``len()`` per epoch, any one by (epoch, index).

    A batch depends only on (seed, epoch, index), so a resumed run draws the same ones.
    """

    def __len__(self) -> int: ...

    def get(self, epoch: int, index: int) -> Any: ...


@dataclass(frozen=True)
class TaskData:
    """A task's data, read and encoded.

    Attributes:
        meta: vocabularies and labels, JSON-ready (the model folder's vocab.json).
        train: the training examples, in the task's own form.
        val: the validation examples, in the task's own form.
        source: where the data came from, for messages.
        summary: one line for the log, e.g. ``6920 train / 872 val examples, 2 labels``.
        setup: what :meth:`Task.init_model` needs for a new model (feature statistics,
            pretrained vectors, class weights), by name.
    """

    meta: dict[str, Any]
    train: Any
    val: Any
    source: str
    summary: str
    setup: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepLoss:
    """The loss of one training batch.

    Attributes:
        loss: scalar, mean over the batch's counted units (tokens or examples), float32.
        count: how many tokens the batch holds (for tokens/s).
        state: what to carry into the next batch (the LM's recurrent state), or None.
        units: what ``loss`` is the mean over (tokens, examples, or the sum of the class
            weights of a weighted mean); with several processes each rank's mean weighs by
            it. None: the batch's examples (its first dimension).
    """

    loss: Tensor
    count: int
    state: Any = None
    units: float | None = None


class Task(ABC):
    """One sequence shape. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: the ``--task`` name.
        best_metric: the validation metric that picks the kept model (a key of
            :meth:`evaluate`'s dict).
        higher_is_better: whether a larger ``best_metric`` is better (accuracy, F1).
        carries_state: whether the recurrent state flows from one batch to the next within
            an epoch (truncated BPTT over streams); it restarts from zeros at each epoch.
        plots: whether ``rnnkit eval --plot`` draws the metrics (:meth:`plot`).
        cpu_bf16: whether ``--precision auto`` trains in bf16 on a CPU that has it natively;
            only where that was measured faster (the language model), else fp32.
    """

    name: ClassVar[str]
    best_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    carries_state: ClassVar[bool] = False
    plots: ClassVar[bool] = False
    cpu_bf16: ClassVar[bool] = False

    def preset(self, data_path: str | None = None) -> dict[str, dict[str, Any]]:
        """Overrides of the dataclass defaults for this task (see :func:`rnnkit.config.merge`),
        for the training data at ``data_path`` where the task presets differ by kind of data
        (text or feature sequences); None: the task's text preset."""
        return {}

    @abstractmethod
    def load_data(self, run: RunConfig, meta: dict[str, Any] | None) -> TaskData:
        """Read ``run.data``; build the vocabularies and labels, or reuse ``meta`` (resume).

        Raises:
            DataError: the data are missing or malformed (one line naming file and line).
        """

    def check_meta(self, run: RunConfig, meta: dict[str, Any]) -> None:
        """Check a model folder's vocab.json (``meta``) field by field, and against ``run``,
        before :meth:`load_data` or :meth:`build_model` reads it. A task whose vocab.json
        has fields overrides this; the default accepts any JSON object.

        Raises:
            ValueError: one line that names the field (see :mod:`rnnkit.data.fields`).
        """
        return None

    @abstractmethod
    def build_model(self, run: RunConfig, meta: dict[str, Any]) -> nn.Module:
        """The model of ``run.model`` for these vocabularies and labels, on the CPU."""

    @abstractmethod
    def batches(self, run: RunConfig, data: TaskData) -> Batches:
        """The training batches of ``data.train``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, state: Any, device: torch.device) -> StepLoss:
        """Forward one batch (moved to ``device``) and return its loss.

        With several processes, ``batch`` is this rank's share of the global batch (see
        :mod:`rnnkit.training.distributed`); set ``StepLoss.units`` unless the loss is a mean
        over the batch's examples.
        """

    @abstractmethod
    def evaluate(
        self, model: nn.Module, val: Any, run: RunConfig, device: torch.device
    ) -> dict[str, Any]:
        """Metrics of ``model`` on ``val``: a dict with ``loss`` and ``best_metric``."""

    @abstractmethod
    def evaluate_file(
        self, model: nn.Module, path: str | Path, cfg: EvalConfig, device: torch.device
    ) -> dict[str, Any]:
        """``rnnkit eval``: the metrics of a loaded model on a data file (DESIGN.md's keys)."""

    def predict(
        self, model: nn.Module, text: str, source: str, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``rnnkit predict``: per result, the output text and its JSON record."""
        raise ConfigError(f"rnnkit predict does not work on {self.name} models")

    def predict_file(
        self, model: nn.Module, path: str | Path, cfg: PredictConfig, device: torch.device
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``rnnkit predict`` on a binary input file (``.npz`` feature sequences)."""
        raise ConfigError(f"rnnkit predict of {self.name} models reads text, not {path}")

    def plot(self, metrics: dict[str, Any], path: str | Path) -> None:
        """``rnnkit eval --plot``: draw the metrics as a PNG."""
        raise ConfigError(f"rnnkit eval --plot has no picture for {self.name} models")

    def summary(self, metrics: dict[str, Any]) -> str:
        """One readable line of the metrics, for ``rnnkit eval`` without ``--json``."""
        return " | ".join(
            f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
            for key, value in metrics.items()
            if isinstance(value, (int, float))
        )

    def selection(self, run: RunConfig) -> tuple[str, bool]:
        """The validation metric that picks the kept model, and whether higher is better:
        ``(best_metric, higher_is_better)`` unless the task's data call for another."""
        return self.best_metric, self.higher_is_better

    def init_model(self, model: nn.Module, data: TaskData) -> None:
        """Set up a new model from the data before training (e.g. pretrained embeddings, tag's
        word votes); not called on resume, whose weights come from the folder. Its seconds
        count in ``--max-time``. Nothing by default."""
        return None

    def is_better(
        self, metrics: dict[str, Any], best: dict[str, Any] | None, run: RunConfig
    ) -> bool:
        """Whether ``metrics`` beat the kept model's (``best``, None before the first).

        Ties on the selection metric go to the lower loss; non-finite values never win.
        """
        name, higher = self.selection(run)
        value = metrics[name]
        if not math.isfinite(value) or not math.isfinite(metrics["loss"]):
            return False
        if best is None or name not in best:
            return True
        old = best[name]
        if value == old:
            return metrics["loss"] < best["loss"]
        return value > old if higher else value < old
