"""Buffers that the whole-sequence Functions reuse from call to call instead of allocating.

PyTorch on CPU has no caching allocator: each tensor comes from ``malloc``, and glibc hands large
ones out as fresh pages, which the kernel faults in one by one (zeroed) at their first write. A
time loop writes its (T, B, ...) buffers a step at a time, faulting them in as it goes: a
training step of the loop ``LSTM(128, 128)`` at B=64, T=100 took 22% less time once its buffers
were reused, and MinGRU's and MinLSTM's scans at T=2048 11% and 32% less. :func:`empty` keeps
the buffers of :mod:`rnnkit.layers.bptt`, :mod:`rnnkit.layers.bptt_gru` and :mod:`rnnkit.scan`
(CPU only; CUDA has its own caching allocator) and hands one out again once nothing refers to it
any more: not the output the caller kept, not the tensors saved for backward, not a gradient
still in use, not a storage object someone kept (``out.untyped_storage()``). Whether anything
does is read from two reference counts, compared with their values when nothing but the pool
held the buffer: the C++ count of the buffer's storage, which counts every tensor viewing it,
and the Python count of the storage's one Python object, which counts whoever keeps that object
(the C++ count cannot: once made, the Python object holds the storage until the storage dies,
kept or not). Each caller gets a view, never the pooled tensor itself. The layers return none
of these buffers as their outputs (they return copies), so a caller can reach them only through
the graph, e.g. ``out.grad_fn.saved_tensors``; a tensor or storage kept from there is seen too.

At most ``MAX_BUFFERS`` buffers are kept, and at most ``MAX_FREE_BYTES`` of them unused: beyond
that the least recently used free ones are dropped. The memory kept is what one call of each
layer used, which the next training step needs again anyway; :func:`clear` gives it back.
"""

import math
import sys
import threading

import torch
from torch import Tensor

MAX_BUFFERS = 64
MAX_FREE_BYTES = 1 << 30

_lock = threading.Lock()
# (flat buffer, its reference counts while nothing but the pool refers to it), least recent first
_pool: list[tuple[Tensor, tuple[int, int]]] = []


def _references(buffer: Tensor) -> tuple[int, int]:
    """(C++ references to the buffer's storage, Python references to its storage object)."""
    storage = buffer.untyped_storage()  # the storage's one Python object, made on first use
    return torch._C._storage_Use_Count(storage._cdata), sys.getrefcount(storage)


def empty(
    shape: tuple[int, ...] | torch.Size, like: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s device and ``dtype`` (default:
    ``like``'s), from the pool on CPU. Like ``torch.empty``, its contents are arbitrary."""
    dtype = like.dtype if dtype is None else dtype
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=like.device)
    numel = math.prod(shape)
    # A buffer made under inference mode could not be saved for backward by a later call.
    with _lock, torch.inference_mode(False):
        for index, (buffer, free) in enumerate(_pool):
            same_size = buffer.numel() == numel and buffer.dtype == dtype
            if same_size and _references(buffer) == free:
                _pool.append(_pool.pop(index))  # now the most recently used
                return buffer.view(shape)
        buffer = torch.empty(numel, dtype=dtype)
        _pool.append((buffer, _references(buffer)))
        view = buffer.view(shape)
        _drop_least_recent_free()
        return view


def _drop_least_recent_free() -> None:
    """Drop free buffers, least recently used first, down to the pool's limits."""
    free = {id(buffer) for buffer, counts in _pool if _references(buffer) == counts}
    free_bytes = sum(_nbytes(buffer) for buffer, _ in _pool if id(buffer) in free)
    size, kept = len(_pool), []
    for buffer, counts in _pool:
        if id(buffer) in free and (size > MAX_BUFFERS or free_bytes > MAX_FREE_BYTES):
            size, free_bytes = size - 1, free_bytes - _nbytes(buffer)
        else:
            kept.append((buffer, counts))
    _pool[:] = kept


def _nbytes(buffer: Tensor) -> int:
    return buffer.numel() * buffer.element_size()


def clear() -> None:
    """Forget every pooled buffer; those still in use stay alive with their users."""
    with _lock:
        _pool.clear()


def pooled_bytes() -> int:
    """Bytes held by the pool, in use or not."""
    with _lock:
        return sum(_nbytes(buffer) for buffer, _ in _pool)
