"""Using a trained model folder on new data: ``rnnkit eval`` and ``rnnkit predict``.

Both read the folder's task from config.json and let that task do the work, so they serve
every sequence shape.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnnkit.config import EvalConfig, PredictConfig
from rnnkit.data.text import read_text
from rnnkit.errors import ConfigError, DataError
from rnnkit.tasks import get_task
from rnnkit.training.checkpoint import load, read_run_config
from rnnkit.training.control import pick_device


def evaluate_folder(folder: str | Path, data: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """The metrics of the model in ``folder`` on the held-out ``data`` (DESIGN.md's keys per
    task: ``loss``, ``bpc``, ``perplexity``, ``tokens`` for ``lm``; ``accuracy`` ... for
    ``classify``; ``precision``, ``recall``, ``f1`` ... for ``tag``).

    Raises:
        CheckpointError: the model folder is missing or damaged.
        DataError: the data are missing or malformed.
    """
    device = pick_device(cfg.device)
    task = get_task(read_run_config(folder).task)
    _check_options(task.name, cfg)
    model = load(folder, device=device)
    return task.evaluate_file(model, data, cfg, device)


def _check_options(task: str, cfg: EvalConfig | PredictConfig) -> None:
    """Refuse an option the folder's task does not read."""
    if cfg.outside_bias is not None and task != "tag":
        raise ConfigError(f"--outside-bias is an option of tag models; this is a {task} model")


def predict_folder(
    folder: str | Path, source: str | Path, cfg: PredictConfig
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Per result of the model in ``folder`` on the input ``source`` (a file, or ``-`` for
    standard input): the output text and its JSON record.

    Raises:
        CheckpointError, DataError, ConfigError: as :func:`evaluate_folder`, or a task that
            does not predict.
    """
    device = pick_device(cfg.device)
    task = get_task(read_run_config(folder).task)
    _check_options(task.name, cfg)
    model = load(folder, device=device)
    if str(source) == "-":
        return task.predict(model, sys.stdin.read(), "<stdin>", cfg, device)
    path = Path(source)
    if path.suffix == ".npz":
        return task.predict_file(model, path, cfg, device)
    if path.is_dir():
        raise DataError(f"{path} is a folder; rnnkit predict reads one file (or - for stdin)")
    return task.predict(model, read_text(path, cfg.encoding), str(path), cfg, device)
