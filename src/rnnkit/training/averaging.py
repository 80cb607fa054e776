r"""Weight averaging over the tail of a run, where the learning rate is low (``--average``).

From the step at which the run's progress (:func:`rnnkit.training.optim.progress`) reaches
``--average-start``, every optimizer step updates an average ``a`` of the parameters ``w``:

    first step:  a = w
    ema:         a = d · a + (1 − d) · w             d = --ema-decay (Polyak averaging)
    swa:         a = a + (w − a) / (n + 1)           the mean of the n + 1 weights so far
                                                     (Izmailov et al. 2018, at every step)

The raw weights go on training; evaluation, and so the kept model (``model.safetensors``),
use the average once it has begun (:meth:`WeightAverage.applied`). The average and its step
count are part of the trainer state (``state/average.safetensors``, see
:mod:`rnnkit.training.checkpoint`), so a resumed run continues it exactly. It is parameters
only: buffers are the model's own, and any task's model can be averaged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rnnkit.config import TrainConfig

STEPS_KEY = "steps"
"""The key of the step count in :meth:`WeightAverage.state_dict`; the averages are under
``average.<parameter name>``."""


class WeightAverage:
    """The average of ``model``'s parameters that ``cfg.average`` asks for (or none).

    Build it once the model is on its device; it keeps the model's parameter objects (which
    training updates in place) and an average of each, of the same shape, dtype and device.

    With ``cfg.average == "none"`` it does nothing: :meth:`update` keeps nothing and
    :meth:`applied` leaves the model as it is, so the loop calls it either way.

    Attributes:
        steps: the optimizer steps averaged so far (0 before ``average_start``).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.kind = cfg.average
        self.start = cfg.average_start
        self.decay = cfg.ema_decay
        self.steps = 0
        named = list(model.named_parameters()) if self.enabled else []  # tied weights once
        self._names = [name for name, _ in named]
        self._params = [param for _, param in named]
        self._average = [param.detach().clone() for param in self._params]

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @torch.no_grad()
    def update(self, run_progress: float) -> None:
        """Count the weights after an optimizer step taken at ``run_progress`` in [0, 1]."""
        if not self.enabled or (self.steps == 0 and run_progress < self.start):
            return
        weight = 1.0 - self.decay if self.kind == "ema" else 1.0 / (self.steps + 1)
        for average, param in zip(self._average, self._params, strict=True):
            if self.steps == 0:
                average.copy_(param)
            else:
                average.lerp_(param, weight)  # a + weight · (w − a)
        self.steps += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block, the model's parameters hold the average (once averaging has
        begun; before, the model is left as it is); afterwards exactly the raw weights again."""
        if self.steps == 0:
            yield
            return
        with torch.no_grad():
            raw = [p.detach().clone() for p in self._params]
            for param, average in zip(self._params, self._average, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(self._params, raw, strict=True):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, Tensor]:
        """The step count (a 0-d int64 tensor) and the averages, on the CPU, by name."""
        averages = {f"average.{n}": a for n, a in zip(self._names, self._average, strict=True)}
        return {STEPS_KEY: torch.tensor(self.steps)} | {
            name: tensor.detach().cpu().contiguous() for name, tensor in averages.items()
        }

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        """Continue the average saved by :meth:`state_dict` (checked by
        :func:`rnnkit.training.folder_check.check_average_tensors`)."""
        self.steps = int(tensors[STEPS_KEY])
        for name, average in zip(self._names, self._average, strict=True):
            average.copy_(tensors[f"average.{name}"])
