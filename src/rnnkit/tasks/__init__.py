"""Task models, one module per sequence shape: model head, loss, metrics and decoding.

``lm`` (many-to-many language modelling) predicts the next token of a text; ``classify``
(many-to-one) gives a label to a whole sequence; ``tag`` (synchronised many-to-many) gives a
label to every step; ``seq2seq`` (many-to-many, different lengths) writes a target text
from a source text; ``condgen`` (one-to-many) writes a text from a label or a vector. Each
module defines a :class:`rnnkit.tasks.base.Task`, the small interface the one training loop,
``rnnkit.load``, ``eval`` and ``predict`` use; they find a task by its name here and never
import a task module by name.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from rnnkit.errors import ConfigError

if TYPE_CHECKING:
    from rnnkit.tasks.base import Task

TASK_MODULES = {
    "lm": "rnnkit.tasks.lm",
    "classify": "rnnkit.tasks.classify",
    "tag": "rnnkit.tasks.tag",
    "seq2seq": "rnnkit.tasks.seq2seq",
    "condgen": "rnnkit.tasks.condgen",
}
"""Task name -> the module whose ``TASK`` object implements it."""


def get_task(name: str) -> Task:
    """The :class:`~rnnkit.tasks.base.Task` called ``name`` (``lm``, ``classify``, ``tag``,
    ``seq2seq``, ``condgen``)."""
    if name not in TASK_MODULES:
        raise ConfigError(f"--task must be one of {', '.join(TASK_MODULES)}; got {name!r}")
    return import_module(TASK_MODULES[name]).TASK
