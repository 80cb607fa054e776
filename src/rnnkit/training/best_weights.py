r"""The mean of the weights of a run's K best evaluations (``--average-best K``).

Every evaluation that ranks among the K best so far on the validation metric that keeps the
model (the task's, e.g. entity F1 or accuracy; the loss for lm) leaves a copy of the trainable
parameters here. When the run ends, the loop evaluates their mean

    w̄ = (1/K) Σ_k w_(k)        w_(k): the weights of the k-th best evaluation

and keeps it in ``model.safetensors`` unless it scores below every one of the K (weights too
far apart to average, e.g. from before and after a change of basin); then the best alone
stays. This is checkpoint averaging (Vaswani et al. 2017 averaged a model's last checkpoints;
a "uniform soup" of Wortsman et al. 2022), with the checkpoints chosen by the validation
metric. It is not required to beat the best evaluation on the same data: on a small, noisy
dev set the best evaluation is partly a lucky one (its score there is biased upwards by the
choice), and the mean of several good ones is the steadier model on data that chose nothing.
On WNUT-17's dev halves the mean of the 5 best scored above the best alone on the held-out
half in six runs of six, while on the half that chose them it was below it in four
(src/rnnkit/config.py).

The kept copies are part of the trainer state: each is a file ``best-<step>.safetensors`` of
``state/`` (the parameters and the evaluation's ``value``), written once when its evaluation
enters the K best and carried into each later state folder by a hard link, so a resumed run
ends with the same mean as an uninterrupted one. Only parameters that train are averaged:
buffers and frozen weights (``--freeze-embeddings``, tag's word votes) are the model's own.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rnnkit.errors import CheckpointError

FILE = re.compile(r"best-(\d+)\.safetensors")
"""The name of one kept evaluation's file in ``state/``."""

VALUE_KEY = "value"
"""The key of the evaluation's metric value in its file (the parameters are under
``param.<name>``)."""


@dataclass
class Kept:
    """One of the K best evaluations: its step, its metric value and the weights it had."""

    step: int
    value: float
    weights: list[Tensor]

    @property
    def file_name(self) -> str:
        return f"best-{self.step}.safetensors"


class BestWeights:
    """The K best evaluations' weights of ``model`` and their mean (``k`` < 2: does nothing).

    Args:
        model: the model being trained; its trainable parameters are copied and averaged.
        k: how many evaluations to keep.
        higher_is_better: the direction of the metric that ranks the evaluations.
    """

    def __init__(self, model: nn.Module, k: int, higher_is_better: bool) -> None:
        self.k = k
        self.higher = higher_is_better
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] if k > 1 else []
        self._names = [name for name, _ in named]
        self._params = [param for _, param in named]
        self.kept: list[Kept] = []  # best first; ties go to the earlier step

    @property
    def enabled(self) -> bool:
        return self.k > 1

    def _better(self, value: float, other: float) -> bool:
        """Whether ``value`` ranks strictly before ``other`` on the metric."""
        return value > other if self.higher else value < other

    @torch.no_grad()
    def offer(self, step: int, value: float) -> bool:
        """Keep a copy of the model's weights if ``value`` (its evaluation at ``step``) ranks
        among the K best so far; whether it was kept. Non-finite values are never kept."""
        if not self.enabled or not math.isfinite(value):
            return False
        place = next(
            (i for i, other in enumerate(self.kept) if self._better(value, other.value)),
            len(self.kept),
        )
        if place >= self.k:
            return False
        weights = [p.detach().to("cpu", copy=True) for p in self._params]
        self.kept.insert(place, Kept(step, float(value), weights))
        del self.kept[self.k :]
        return True

    def holds_up(self, value: float) -> bool:
        """Whether the mean, scoring ``value``, is kept: unless it scores below every kept
        evaluation (a mean of weights too far apart to average), or is not finite."""
        worst = self.kept[-1].value
        return math.isfinite(value) and not self._better(worst, value)

    @property
    def steps(self) -> list[int]:
        """The steps of the kept evaluations, best first."""
        return [kept.step for kept in self.kept]

    @contextmanager
    def applied(self, steps: list[int] | None = None) -> Iterator[None]:
        """Within the block, the model's trainable parameters hold the mean of the kept
        weights (of those kept at ``steps``, if given), accumulated in float64 and cast to
        each parameter's dtype; its own weights are restored after."""
        chosen = [kept for kept in self.kept if steps is None or kept.step in steps]
        if not chosen:
            raise ValueError(f"no kept evaluation at steps {steps}")
        saved = [p.detach().clone() for p in self._params]
        with torch.no_grad():
            for i, param in enumerate(self._params):
                total = torch.zeros(param.shape, dtype=torch.float64)
                for kept in chosen:
                    total += kept.weights[i].double()
                param.copy_((total / len(chosen)).to(param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for param, own in zip(self._params, saved, strict=True):
                    param.copy_(own)

    def write(self, folder: Path, previous: Path | None) -> None:
        """Put each kept evaluation's file in the new state ``folder``: a hard link to the one
        in the ``previous`` state folder where it is there, else written anew."""
        for kept in self.kept:
            target, source = folder / kept.file_name, None
            if previous is not None and (previous / kept.file_name).is_file():
                source = previous / kept.file_name
            if source is not None:
                try:
                    os.link(source, target)
                    continue
                except OSError:  # a file system without hard links: write it again
                    pass
            tensors = {f"param.{n}": w for n, w in zip(self._names, kept.weights, strict=True)}
            tensors[VALUE_KEY] = torch.tensor(kept.value, dtype=torch.float64)
            save_file(tensors, str(target))

    def read(self, folder: Path) -> None:
        """Take the kept evaluations from a state ``folder`` written by :meth:`write`.

        Raises:
            CheckpointError: a file that cannot be read, or whose tensors do not fit the model
                (one line naming it).
        """
        self.kept = []
        for path in sorted(folder.iterdir()):
            match = FILE.fullmatch(path.name)
            if not match:
                continue
            try:
                tensors = load_file(str(path))
            except (SafetensorError, OSError) as err:
                raise CheckpointError(f"{path} is corrupted: {err}") from None
            expected = {f"param.{n}": p for n, p in zip(self._names, self._params, strict=True)}
            if set(tensors) != {*expected, VALUE_KEY} or any(
                tensors[key].shape != param.shape for key, param in expected.items()
            ):
                raise CheckpointError(
                    f"{path} does not fit the model: it is not the kept weights of this run "
                    "(--average-best)"
                )
            weights = [
                tensors[f"param.{n}"].to(p.dtype)
                for n, p in zip(self._names, self._params, strict=True)
            ]
            kept = Kept(int(match.group(1)), float(tensors[VALUE_KEY]), weights)
            self.kept.append(kept)
        # best first, ties to the earlier step, as offer() ranks them
        self.kept.sort(key=lambda kept: (-kept.value if self.higher else kept.value, kept.step))
        del self.kept[self.k :]
