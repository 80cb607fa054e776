"""PackedSequence plumbing: a packed-order kernel called with the caller's batch order, padded
input with lengths run through such a kernel, and outputs packed exactly like an input; and,
for the runs that do not pack, each padded sequence reversed within its own length."""

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

# A state as a tuple of (L·num_directions, B, size) tensors: (h,) or (h, c).
Parts = tuple[Tensor, ...]
# Runs a kernel on packed data: (data, state in packed order, batch sizes) -> (data, state).
PackedKernel = Callable[[Tensor, Parts, Tensor], tuple[Tensor, Parts]]


def run_packed(
    kernel: PackedKernel, packed: PackedSequence, state: Parts
) -> tuple[PackedSequence, Parts]:
    """The kernel works in the packed (longest-first) order; ``state`` is in the caller's."""
    if packed.sorted_indices is not None:
        state = tuple(part.index_select(1, packed.sorted_indices) for part in state)  # sorted
    data, state = kernel(packed.data, state, packed.batch_sizes)  # (sum of lengths, F)
    if packed.unsorted_indices is not None:
        state = tuple(part.index_select(1, packed.unsorted_indices) for part in state)  # caller's
    out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return out, state


def run_padded(
    kernel: PackedKernel, x: Tensor, state: Parts, lengths: Tensor, batch_first: bool
) -> tuple[Tensor, Parts]:
    """Pack x (T, B, D) or (B, T, D) by ``lengths`` (B,), run the kernel, pad back with zeros."""
    packed = pack_padded_sequence(x, lengths, batch_first, enforce_sorted=False)
    packed_out, state = run_packed(kernel, packed, state)
    total = x.shape[1 if batch_first else 0]
    out, _ = pad_packed_sequence(packed_out, batch_first, total_length=total)  # like x
    return out, state


def pack_like(padded: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack outputs (B, T, F), in the caller's batch order, with ``like``'s sizes and order."""
    if like.sorted_indices is not None:
        padded = padded.index_select(0, like.sorted_indices)  # (B, T, F), longest first
    batch = torch.arange(padded.shape[0])  # (B,)
    lengths = (like.batch_sizes.unsqueeze(0) > batch.unsqueeze(1)).sum(1)  # (B,), longest first
    data = pack_padded_sequence(padded, lengths, batch_first=True).data  # (sum of lengths, F)
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class _Reorder(torch.autograd.Function):
    """x gathered along ``dim`` by an index that is its own inverse: the gradient is gathered
    by the same index (no zeroed buffer and scatter, as ``gather``'s own backward does)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, dim: int) -> Tensor:
        ctx.save_for_backward(index)
        ctx.dim = dim
        return x.gather(dim, index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return grad.gather(ctx.dim, index), None, None


def reversal_index(lengths: Tensor, steps: int, batch_first: bool) -> Tensor:
    """Where each step of a padded batch goes when every sequence is reversed within its own
    length: step t < n of a sequence of length n goes to n − 1 − t, and the padded steps
    t >= n to T + n − 1 − t, so they stay after the real ones. The map is its own inverse.

    Shapes: lengths (B,) in [1, T] -> (B, T) if ``batch_first`` else (T, B), int64.
    """
    index = (lengths[:, None] - 1 - torch.arange(steps)[None, :]) % steps  # (B, T)
    return index if batch_first else index.t()


def reverse_within(x: Tensor, index: Tensor, time_dim: int) -> Tensor:
    """x with each sequence reversed within its length, by :func:`reversal_index`'s index for
    the same layout; applied twice it gives x back.

    Shapes: x (B, T, F) with time_dim 1 or (T, B, F) with time_dim 0, index (B, T) or (T, B)
    -> like x.
    """
    expanded = index.unsqueeze(-1).expand(*index.shape, x.shape[-1])  # like x
    return _Reorder.apply(x, expanded, time_dim)
