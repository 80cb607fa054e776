"""The embedded default corpus: the Python standard library's own source code.

``rnnkit train`` with no DATA trains on it, so the first run needs no download. The choice is
deterministic for a given Python installation: the top-level ``*.py`` modules of
``sysconfig.get_paths()["stdlib"]`` (no packages, so no ``test/``, ``idlelib/`` or
``site-packages/``), sorted by file name, taken whole while the total stays within
:data:`MAX_CHARS` characters. Files that are not valid UTF-8 are skipped. The validation
split is then the end of the last modules in that order.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterable
from pathlib import Path

from rnnkit.errors import DataError

MAX_CHARS = 2_000_000
"""Upper bound on the corpus size: big enough to learn Python's look, small enough that the
vocabulary and the validation pass take seconds."""


def stdlib_files() -> list[Path]:
    """The top-level ``*.py`` modules of the standard library, sorted by name."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def stdlib_text(max_chars: int = MAX_CHARS) -> str:
    """The concatenated source of :func:`stdlib_files`, whole files up to ``max_chars``.

    Raises:
        DataError: no standard-library source was found (e.g. a zipped or stripped Python).
    """
    text = join_sources(stdlib_files(), max_chars)
    if not text:
        raise DataError(
            f"no Python source found in {sysconfig.get_paths()['stdlib']} for the default "
            f"corpus; give a text file or folder as DATA"
        )
    return text


def join_sources(files: Iterable[Path], max_chars: int) -> str:
    """The UTF-8 text of ``files`` in their order, whole files, stopping before the first that
    would take the total past ``max_chars``; unreadable or non-UTF-8 files are skipped."""
    pieces: list[str] = []
    total = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if total + len(text) > max_chars:
            break
        pieces.append(text)
        total += len(text)
    return "".join(pieces)
