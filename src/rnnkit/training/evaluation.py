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
from rnnkit.data.text import decode_text, read_text, universal_newlines
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


_OPTION_TASKS = {
    "outside_bias": ("tag",),
    "word_votes": ("tag",),
    "naive_bayes": ("classify",),
    "top_k": ("classify",),
    "beam_size": ("seq2seq", "condgen"),
    "max_length": ("seq2seq", "condgen"),
    "plot_attention": ("seq2seq",),
}
"""The options of ``rnnkit eval`` / ``predict`` that only some tasks read."""


def _check_options(task: str, cfg: EvalConfig | PredictConfig) -> None:
    """Refuse an option, set away from its default, that the folder's task does not read."""
    default = type(cfg)()
    for name, tasks in _OPTION_TASKS.items():
        given = getattr(cfg, name, None)
        if task not in tasks and given != getattr(default, name, None):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag} is an option of {' and '.join(tasks)} models; this is a {task} model"
            )


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
        stream = getattr(sys.stdin, "buffer", None)  # None: a text-only stream (a notebook)
        raw = sys.stdin.read() if stream is None else stream.read()
        text = raw if stream is None else decode_text(raw, "<stdin>", cfg.encoding)
        return task.predict(model, universal_newlines(text), "<stdin>", cfg, device)
    path = Path(source)
    if path.suffix == ".npz":
        return task.predict_file(model, path, cfg, device)
    if path.is_dir():
        raise DataError(f"{path} is a folder; rnnkit predict reads one file (or - for stdin)")
    return task.predict(model, read_text(path, cfg.encoding), str(path), cfg, device)
