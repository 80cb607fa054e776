"""The errors rnnkit raises for user mistakes; `cli` turns them into one-line messages (exit 2)."""

import json
from pathlib import Path
from typing import Any


class RnnkitError(Exception):
    """Base class: a mistake in the user's input, configuration or files, not a bug."""


class ConfigError(RnnkitError, ValueError):
    """An option or configuration value is invalid (e.g. ``dropout must be in [0, 1), got 1.5``)."""


class DataError(RnnkitError, ValueError):
    """A data file is missing, empty, undecodable or malformed; the message names the file."""


class CheckpointError(RnnkitError):
    """A model folder is missing files, has corrupted ones, or does not match the request."""


class TrainingError(RnnkitError):
    """Training cannot go on (the loss became NaN or diverged); the last good model is kept."""


def one_line(err: Exception) -> str:
    """The message of ``err`` on one line, at most 300 characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def read_folder_json(path: Path) -> Any:
    """The JSON in a model folder's file ``path``.

    Raises:
        CheckpointError: the file is missing (the folder is named), unreadable or not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path.parent} has no {path.name}; was it written by `rnnkit train`?"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
