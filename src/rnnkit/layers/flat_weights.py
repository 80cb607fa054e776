"""Flat weights: a layer's fused-kernel weights as views of one contiguous buffer.

cuDNN reads all the weights of a recurrent stack from one buffer in its own layout. torch's
``_VF.lstm`` / ``gru`` / ``rnn_tanh`` / ``rnn_relu`` on CUDA hand cuDNN the buffer the weights
already live in when they are views of one; otherwise they copy the weights into a fresh one at
every call and warn "RNN module weights are not part of single contiguous chunk of memory".
``torch.nn.RNNBase.flatten_parameters`` keeps its weights in such a buffer; these functions do
the same for :class:`rnnkit.layers.stack.RecurrentStack`, which decides when to call them.

Each parameter keeps its identity: it is pointed at its slice of the buffer in place
(``Tensor.set_``), so an optimizer that holds it keeps training it, and its values, name and
``state_dict`` entry do not change.
"""

import torch
from torch import Tensor
from torch.backends.cudnn import rnn as cudnn_rnn

# The cuDNN mode of each torch._VF kernel, by the kernel's name.
CUDNN_MODES = {"rnn_relu": "RNN_RELU", "rnn_tanh": "RNN_TANH", "lstm": "LSTM", "gru": "GRU"}


def can_flatten(weights: list[Tensor]) -> bool:
    """Whether ``weights`` can share one buffer: one device, one dtype, none aliasing another
    (tied weights stay as they are, as torch leaves them)."""
    first = weights[0]
    same_kind = all(w.device == first.device and w.dtype == first.dtype for w in weights)
    return same_kind and len({w.data_ptr() for w in weights}) == len(weights)


def in_one_buffer(weights: list[Tensor]) -> bool:
    """Whether every weight already lies in one storage: flattened before and not moved since
    (``.to()`` and ``load_state_dict(assign=True)`` give each weight a storage of its own)."""
    return len({w.untyped_storage().data_ptr() for w in weights}) == 1


def cudnn_takes(weights: list[Tensor]) -> bool:
    """Whether cuDNN runs a fused kernel on these weights: CUDA tensors of a dtype it accepts,
    cuDNN enabled, and torch able to flatten for it."""
    return torch._use_cudnn_rnn_flatten_weight() and all(
        torch.backends.cudnn.is_acceptable(w) for w in weights
    )


@torch.no_grad()
def concatenate(weights: list[Tensor]) -> Tensor:
    """Copy ``weights`` one after the other into a new buffer and make each a view of its slice.

    The layout of any device without cuDNN: the kernel's order, each weight contiguous.
    Returns the buffer, (sum of the weights' sizes,).
    """
    buffer = torch.empty(
        sum(w.numel() for w in weights), dtype=weights[0].dtype, device=weights[0].device
    )  # (N,)
    offset = 0
    for weight in weights:
        view = buffer[offset : offset + weight.numel()].view(weight.shape)  # weight's shape
        view.copy_(weight)
        weight.set_(view)
        offset += weight.numel()
    return buffer


@torch.no_grad()
def cudnn_flatten(
    weights: list[Tensor],
    *,
    kernel: str,
    input_size: int,
    hidden_size: int,
    proj_size: int,
    num_layers: int,
    batch_first: bool,
    bidirectional: bool,
) -> Tensor:
    """Copy ``weights`` (the kernel's order, as ``torch.nn``'s ``_flat_weights``) into a buffer
    in cuDNN's layout and make each a view of its part, with torch's own
    ``torch._cudnn_rnn_flatten_weight`` (what ``torch.nn.RNNBase.flatten_parameters`` calls).

    ``kernel`` is the ``torch._VF`` kernel's name (a key of :data:`CUDNN_MODES`). Returns the
    buffer.
    """
    per_direction = len(weights) // (num_layers * (2 if bidirectional else 1))
    with torch.cuda.device_of(weights[0]):
        return torch._cudnn_rnn_flatten_weight(
            weights,
            per_direction,
            input_size,
            cudnn_rnn.get_cudnn_mode(CUDNN_MODES[kernel]),
            hidden_size,
            proj_size,
            num_layers,
            batch_first,
            bidirectional,
        )
