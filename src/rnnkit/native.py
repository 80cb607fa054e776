"""rnnkit's native code: C kernels compiled on first use with the system's C compiler.

Some work is many small operations on a few thousand numbers, which torch runs one dispatch at
a time: batch-1 sampling of an LSTM language model is the case (``rnnkit/csrc/lstm_sample.c``,
used by :mod:`rnnkit.tasks.lm_step`). Such a kernel is compiled once per machine, the first time
it is needed, with ``cc -O3 -march=native -fopenmp`` (``$CC`` if set), into rnnkit's cache
folder (``$RNNKIT_CACHE``, else ``$XDG_CACHE_HOME/rnnkit``, else ``~/.cache/rnnkit``), named by
a hash of the source, the command and the CPU, and loaded with :mod:`ctypes`. The library is
written under a temporary name and renamed into place, so a crash or a second process never
leaves half a file.

Nothing depends on it: where there is no compiler, the compiler fails, the cache cannot be
written, or ``RNNKIT_NATIVE=0``, :func:`library` returns None and callers keep torch's path
(the reason is in :func:`unavailable_reason`). Nothing is downloaded.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).parent / "csrc"
FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native"],  # a compiler without OpenMP: one thread
    ["-O3"],  # a compiler that does not know -march=native
)
_reasons: dict[str, str] = {}


def cache_folder() -> Path:
    """Where compiled kernels are kept: ``$RNNKIT_CACHE``, else ``$XDG_CACHE_HOME/rnnkit``,
    else ``~/.cache/rnnkit``."""
    if os.environ.get("RNNKIT_CACHE"):
        return Path(os.environ["RNNKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def _cpu_signature() -> str:
    """The CPU's model and feature flags (a library built with -march=native runs only there)."""
    wanted = ("model name", "flags", "Features", "CPU part")
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            lines = sorted({line for line in info if line.startswith(wanted)})
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


@functools.cache
def library(name: str) -> ctypes.CDLL | None:
    """The compiled ``csrc/<name>.c``, built on first use; None where it cannot be had (see
    :func:`unavailable_reason`). Cached per process."""
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        _reasons[name] = "RNNKIT_NATIVE=0"
        return None
    compiler = _compiler()
    if compiler is None:
        _reasons[name] = f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
        return None
    source = (SOURCES / f"{name}.c").read_bytes()
    errors = []
    for flags in FLAG_SETS:
        parts = [source, compiler.encode(), " ".join(flags).encode(), _cpu_signature().encode()]
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
        path = cache_folder() / f"{name}-{key}.so"
        try:
            if not path.exists():
                _compile(compiler, flags, SOURCES / f"{name}.c", path)
            return ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as error:
            errors.append(f"{' '.join(flags)}: {_first_error(str(error))}")
    _reasons[name] = f"compiling {name}.c failed ({'; '.join(errors)})"
    return None


def unavailable_reason(name: str) -> str | None:
    """Why :func:`library` returned None for ``name`` (None if it did not, or was not asked)."""
    return _reasons.get(name)


def _first_error(message: str) -> str:
    """The compiler's first line that says ``error``, else the message's last line."""
    lines = message.strip().splitlines() or [""]
    return next((line.strip() for line in lines if "error" in line), lines[-1].strip())


def _compile(compiler: str, flags: list[str], source: Path, path: Path) -> None:
    """Compile ``source`` into the shared library ``path``: written under a temporary name in
    the same folder, then renamed into place (``os.replace``).

    Raises:
        OSError: the folder cannot be written, or the compiler fails (its last line).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".so", dir=path.parent)
    os.close(handle)
    try:
        command = [compiler, *flags, "-shared", "-fPIC", "-o", temporary, str(source), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(done.stderr.strip() or f"{compiler} exited with {done.returncode}")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
