"""The errors rnnkit raises for user mistakes; `cli` turns them into one-line messages (exit 2)."""

import json
import re
from pathlib import Path
from typing import Any

MAX_JSON_DEPTH = 32
"""The deepest nesting of lists and objects that rnnkit reads from a JSON file (its own files
nest 4 deep); deeper would exhaust Python's stack."""

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


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


def parse_json(text: str) -> Any:
    """``json.loads(text)``, but nesting deeper than MAX_JSON_DEPTH is refused before parsing.

    Raises:
        ValueError: not JSON, or nested too deep (one line, without the file's name).
    """
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):  # brackets outside strings
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # only if the caller's stack is already nearly full
        raise ValueError("JSON nested too deep to read") from None


def read_folder_json(path: Path) -> Any:
    """The JSON in a model folder's file ``path``.

    Raises:
        CheckpointError: the file is missing (the folder is named), unreadable or not JSON.
    """
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path.parent} has no {path.name}; was it written by `rnnkit train`?"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
