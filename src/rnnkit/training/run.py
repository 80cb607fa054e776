"""``rnnkit train``'s entry point: the torch loop, or the NumPy reference engine."""

from __future__ import annotations

from rnnkit.config import RunConfig
from rnnkit.errors import ConfigError
from rnnkit.training.control import TrainResult
from rnnkit.training.distributed import env_world_size
from rnnkit.training.loop import train as train_torch
from rnnkit.training.numpy_engine import train_numpy


def train(
    run: RunConfig,
    *,
    resume: bool = False,
    force: bool = False,
    show_progress: bool = False,
    note: str | None = None,
) -> TrainResult:
    """Train ``run`` with its engine (``run.train.engine``); see
    :func:`rnnkit.training.loop.train` for the arguments and errors (the NumPy engine logs no
    ``note``: nothing adapts its defaults)."""
    if run.train.engine == "numpy":
        if run.task != "lm":
            raise ConfigError(f"--engine numpy trains language models only; got --task {run.task}")
        if env_world_size() > 1:
            raise ConfigError("--engine numpy trains in one process; start it without torchrun")
        return train_numpy(run, resume=resume, force=force)
    return train_torch(run, resume=resume, force=force, show_progress=show_progress, note=note)
