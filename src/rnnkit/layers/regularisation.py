r"""The regularisers of AWD-LSTM (Merity et al. 2018) for a recurrent stack, all for training only.

* :func:`embedding_dropout`: drop whole token types from a batch (Gal & Ghahramani 2016): a
  dropped token is zero at every position where it occurs; the others are scaled by ``1 / k``.
* :func:`locked_dropout`: variational dropout, one mask per sequence (batch row) shared by
  every time step, where :func:`rnnkit.layers.dropout.dropout` draws one per element.
* :func:`weight_dropped`: DropConnect (Wan et al. 2013) on each hidden-to-hidden matrix
  ``W_hh``: one mask per call, the same at every step of every sequence.
* :class:`LayerByLayer`: runs a stack one layer at a time with given weights, so that
  something else than the stack's own dropout can act between its layers.

Every mask is drawn as :func:`rnnkit.layers.dropout.dropout` draws its masks (from torch's
default generator, so seeds and saved random states reproduce it): kept elements are scaled by
``1 / k``, where ``k`` is within 2⁻¹⁶ of ``1 − p`` (exactly ``1 − p`` for p = 0.5, 0.25, ...).
The weights given to a stack go in through :func:`torch.func.functional_call`: the stack's own
parameters (and so its ``state_dict``) stay as they are, and the gradients of the dropped
weights flow back to them.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rnnkit.layers.dropout import dropout

StackState = Tensor | tuple[Tensor, ...]
"""A stack's state in torch's layout: (L, B, H), or a tuple of them (an LSTM's (h, c))."""


def embedding_dropout(x: Tensor, tokens: Tensor, num_embeddings: int, p: float) -> Tensor:
    """Drop whole token types: each of the ``num_embeddings`` types is dropped with probability
    ``p`` (one draw per call), its vectors zeroed wherever it occurs, the others scaled by 1/k.

    The same as looking the tokens up in an embedding matrix whose rows were dropped, at the
    cost of a (V,) mask. ``p == 0`` returns ``x`` as it is.

    Shapes: x (B, T, E) the embedded tokens, tokens (B, T) int64 -> (B, T, E).
    """
    if p == 0.0:
        return x
    scale = dropout(x.new_ones(num_embeddings), p)  # (V,) 0 or 1/k
    return x * scale[tokens].unsqueeze(-1)  # (B, T, E)


def locked_dropout(x: Tensor, p: float) -> Tensor:
    """Variational dropout: one mask per sequence ``b``, the same at every step of it.

    ``p == 0`` returns ``x`` as it is.

    Shapes: x (B, T, F) -> (B, T, F).
    """
    if p == 0.0:
        return x
    mask = dropout(x.new_ones(x.shape[0], 1, x.shape[2]), p)  # (B, 1, F) 0 or 1/k
    return x * mask  # (B, T, F)


def weight_dropped(stack: nn.Module, p: float) -> dict[str, Tensor]:
    """DropConnect on every hidden-to-hidden matrix of ``stack``: ``{name: W_hh ⊙ mask / k}``
    for each ``weight_hh_l*`` parameter, one new mask each per call.

    Give the result to :class:`LayerByLayer` or to ``functional_call(stack, weights, ...)``;
    the gradient of each dropped matrix reaches the parameter through the mask.

    Shapes: each W_hh (G·H, H) -> (G·H, H).
    """
    return {
        name: dropout(weight, p)
        for name, weight in stack.named_parameters()
        if name.startswith("weight_hh_l")
    }


class LayerByLayer:
    """Runs a stack of ``num_layers`` layers one layer at a time, calling ``between`` on the
    output of every layer but the last, where the stack would apply its own dropout.

    It builds two one-layer layers of the stack's kind on the ``meta`` device (shapes only, no
    memory): one for layer 0's input size, one for the others'. Layer ``l`` runs the first or
    second with the stack's parameters ``*_l{l}`` (or those given in ``weights``) in place of
    its ``*_l0``, through :func:`torch.func.functional_call`. It is a plain object, not a
    module: the stack keeps its parameters and its ``state_dict`` keys.

    Args:
        make_layer: builds one layer, ``make_layer(input_size, device=...)``: a one-layer
            stack of the same kind and options, ``batch_first=True``.
        input_size: D, features of the first layer's input.
        hidden_size: H, features of the other layers' input.

    Shapes:
        x (B, T, D), state (L, B, H) or a tuple of them, or None (zeros)
        -> (B, T, H), the final state in the same layout.
    """

    def __init__(
        self, make_layer: Callable[..., nn.Module], input_size: int, hidden_size: int
    ) -> None:
        self.first = make_layer(input_size, device="meta")
        self.rest = make_layer(hidden_size, device="meta")

    def __call__(
        self,
        stack: nn.Module,
        x: Tensor,
        state: StackState | None,
        weights: dict[str, Tensor],
        between: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, StackState]:
        params = dict(stack.named_parameters()) | weights
        finals = []
        for layer in range(stack.num_layers):
            if layer > 0:
                x = between(x)  # (B, T, H)
            one = self.first if layer == 0 else self.rest
            mine = {
                name: params[f"{name.removesuffix('_l0')}_l{layer}"]
                for name, _ in one.named_parameters()
            }
            x, final = functional_call(one, mine, (x, _layer_state(state, layer)))  # (B, T, H)
            finals.append(final if isinstance(final, tuple) else (final,))
        parts = tuple(torch.cat(part) for part in zip(*finals, strict=True))  # (L, B, ·) each
        return x, parts if len(parts) > 1 else parts[0]


def _layer_state(state: StackState | None, layer: int) -> StackState | None:
    """Layer ``layer``'s part of a stack's state: (1, B, ·), or a tuple of them."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(part[layer : layer + 1] for part in state)  # (1, B, ·) each
    return state[layer : layer + 1]  # (1, B, H)
