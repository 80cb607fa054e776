"""Checks of the fields of a JSON object read from a file (a model folder's vocab.json,
trainer.json, a metrics.jsonl line), before anything uses them.

Each check takes the value and its name in the file, written as a path (``conditions.mean``,
``optimizer.param_groups[0].lr``), and returns the value or raises ``ValueError`` with one line
that names the field, what it must be and what it is; the reader of the file adds the file's
name (e.g. ``CheckpointError: runs/a/vocab.json is corrupted: conditions.size must be an
integer in [1, 2^31), got 'x'``). JSON has no other kinds than these: objects, lists,
strings, numbers (``int`` or ``float``; ``true`` is not a number here), booleans and null.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

MAX_SIZE = 2**31 - 1
"""The largest size (of a tensor dimension, a count of tokens) that a file may give."""

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 4, 4, 2


def shown(value: Any) -> str:
    """``repr(value)``, cut short: a field may hold a list of a million items."""
    return _SHORT.repr(value)


def is_integer(value: Any) -> bool:
    """Whether ``value`` is a JSON integer (``True`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number, integer or not (``True`` is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(value: Any, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
    """``value`` if it is an integer in [low, high]."""
    if not is_integer(value) or not low <= value <= high:
        power = (high + 1).bit_length() - 1
        bounds = f"[{low}, 2^{power})" if high + 1 == 2**power else f"[{low}, {high}]"
        raise ValueError(f"{name} must be an integer in {bounds}, got {shown(value)}")
    return value


def number(value: Any, name: str, low: float = -math.inf) -> float:
    """``value`` as a float if it is a finite number of at least ``low``."""
    if not is_number(value) or not math.isfinite(value) or value < low:
        what = "a finite number" + (f" of at least {low:g}" if low > -math.inf else "")
        raise ValueError(f"{name} must be {what}, got {shown(value)}")
    return float(value)


def numbers(value: Any, name: str, size: int, low: float = -math.inf) -> list[float]:
    """``value`` if it is a list of ``size`` finite numbers of at least ``low``."""
    if not isinstance(value, list) or len(value) != size:
        raise ValueError(f"{name} must be a list of {size} numbers, got {shown(value)}")
    return [number(v, f"{name}[{i}]", low) for i, v in enumerate(value)]


def choice(value: Any, name: str, choices: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``choices``."""
    if not any(value == c and type(value) is type(c) for c in choices):
        expected = ", ".join(map(repr, choices))
        expected = f"one of {expected}" if len(choices) > 1 else expected
        raise ValueError(f"{name} must be {expected}, got {shown(value)}")
    return value


def strings(value: Any, name: str, *, least: int = 0, single: bool = False) -> list[str]:
    """``value`` if it is a list of at least ``least`` distinct strings (of one character
    each with ``single``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings, got {shown(value)}")
    if len(value) < least:
        raise ValueError(f"{name} must have at least {least} entries, got {len(value)}")
    seen: set[str] = set()
    for v in value:
        if v in seen:
            raise ValueError(f"{name} holds {shown(v)} twice")
        seen.add(v)
    if single and any(len(v) != 1 for v in value):
        wrong = next(v for v in value if len(v) != 1)
        raise ValueError(f"{name} must hold single characters, got {shown(wrong)}")
    return value


def obj(value: Any, name: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """``value`` if it is a JSON object with every key of ``keys``, and no others than those
    and ``optional``."""
    where = f"{name} must be" if name else "the file must hold"
    if not isinstance(value, dict):
        raise ValueError(f"{where} a JSON object, got {shown(value)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{name or 'the file'} lacks {', '.join(map(repr, missing))}")
    unknown = sorted(set(value) - set(keys) - set(optional))
    if unknown:
        valid = ", ".join(map(repr, (*keys, *optional)))
        raise ValueError(
            f"{name or 'the file'} has unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; valid keys: {valid}"
        )
    return value


def key(name: str, child: str | int) -> str:
    """The path of a child field: ``key("conditions", "size") == "conditions.size"``,
    ``key("tags", 2) == "tags[2]"``."""
    if isinstance(child, int):
        return f"{name}[{child}]"
    return f"{name}.{child}" if name else child
