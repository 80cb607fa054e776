r"""MinGRU and MinLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): RNNs whose gates see only x.

Neither gate depends on the previous state, so each layer is the linear recurrence
``h_t = a_t ⊙ h_{t−1} + b_t`` of :mod:`rnnkit.scan`, with ``a`` and ``b`` computed from the whole
input sequence by one matrix multiplication, and all time steps computed in parallel by a scan.
"""

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.layers.dropout import dropout
from rnnkit.onednn import linear
from rnnkit.scan import linear_scan, mingru_scan

_IMPLS = ("auto", "scan", "loop")


class _MinimalRNN(nn.Module, ABC):
    """Parameters, stacking, shapes and scan/loop dispatch shared by MinGRU and MinLSTM.

    A subclass sets ``_num_projections`` (G, how many H-sized projections of ``x_t`` its equations
    use: 2 for MinGRU, 3 for MinLSTM) and ``_coefficients`` (those projections -> ``a_t``, ``b_t``).
    """

    _num_projections: int

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        impl: str = "auto",
        bias: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if impl not in _IMPLS:
            raise ValueError(f"{name}: impl must be one of 'auto', 'scan', 'loop'; got {impl!r}")
        for arg, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if value < 1:
                raise ValueError(f"{name}: {arg} must be a positive integer; got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1); got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.impl = impl
        self.bias = bias
        self.dropout = dropout  # between layers, in train mode only (torch's meaning)
        factory = {"device": device, "dtype": dtype}
        rows = self._num_projections * hidden_size
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size
            weight = nn.Parameter(torch.empty(rows, layer_input_size, **factory))
            self.register_parameter(f"weight_ih_l{layer}", weight)
            bias_ih = nn.Parameter(torch.empty(rows, **factory)) if bias else None
            self.register_parameter(f"bias_ih_l{layer}", bias_ih)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(−1/√H, 1/√H), as in torch.nn.GRU."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"batch_first={self.batch_first}, impl={self.impl!r}, bias={self.bias}, "
            f"dropout={self.dropout}"
        )

    @abstractmethod
    def _coefficients(self, projections: Tensor) -> tuple[Tensor, Tensor]:
        """(..., G·H) projections of x_t -> a_t, b_t, each (..., H)."""

    def _scan(self, projections: Tensor, h0: Tensor, impl: str) -> Tensor:
        """Every state of one layer: projections (B, T, G·H), h0 (B, H) -> (B, T, H)."""
        a, b = self._coefficients(projections)  # 2 × (B, T, H)
        return linear_scan(a, b, h0, impl=impl)

    def _layer_parameters(self, layer: int) -> tuple[Tensor, Tensor | None]:
        return getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}")

    def forward(self, input: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the stack over a whole sequence, starting from state ``h``.

        Args:
            input: (T, B, D), or (B, T, D) if ``batch_first``, or unbatched (T, D).
            h: (L, B, H) (unbatched: (L, H)) state before the first step; None means zeros.
                Passing a call's ``h_n`` to the next continues the sequence exactly, so a long
                sequence can be run in chunks or one step at a time with the same results.

        Returns:
            output: the last layer's state after every step, (T, B, H) / (B, T, H) / (T, H).
            h_n: (L, B, H) (unbatched: (L, H)), every layer's state after the last step.
        """
        name = type(self).__name__
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size or input.numel() == 0:
            raise ValueError(
                f"{name}(input_size={self.input_size}) expects input of shape "
                f"{'(B, T, D)' if self.batch_first else '(T, B, D)'} or (T, D) with "
                f"D={self.input_size} and T, B ≥ 1; got input.shape={tuple(input.shape)}"
            )
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)  # (T, B, D) or (B, T, D)
        time_major = not (batched and self.batch_first)
        batch = x.shape[1] if time_major else x.shape[0]
        steps = x.shape[0] if time_major else x.shape[1]
        state_shape = (self.num_layers, batch, self.hidden_size)
        if h is None:
            h = x.new_zeros(state_shape)  # (L, B, H)
        else:
            expected = state_shape if batched else (self.num_layers, self.hidden_size)
            if h.shape != expected:
                raise ValueError(
                    f"{name}: h must have shape (L, B, H) = {expected} for this input; "
                    f"got h.shape={tuple(h.shape)}"
                )
            h = h if batched else h.unsqueeze(1)  # (L, B, H)
        impl = self.impl if self.impl != "auto" else ("scan" if steps > 1 else "loop")

        finals = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = dropout(x, self.dropout, self.training)  # as the input's layout
            weight, bias = self._layer_parameters(layer)
            # One matmul for all steps, on x as laid out (T- or B-major): no transposed copy.
            projections = linear(x, weight, bias)  # (T, B, G·H) or (B, T, G·H), G = 2 or 3
            if time_major:
                projections = projections.transpose(0, 1)  # (B, T, G·H) view
            states = self._scan(projections, h[layer], impl)  # (B, T, H)
            if layer == self.num_layers - 1 and states._base is not None:
                # A view of the scan's buffer, which its backward reads and autograd forbids
                # changing in place: the caller gets a copy of its own, laid out as the loop's.
                states = states.clone(memory_format=torch.contiguous_format)  # (B, T, H)
            finals.append(states[:, -1])
            x = states.transpose(0, 1) if time_major else states  # as the input's layout
        h_n = torch.stack(finals)  # (L, B, H)
        if not batched:
            return x.squeeze(1), h_n.squeeze(1)  # (T, H), (L, H)
        return x, h_n

    def step(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step through every layer, with as little overhead as possible (for sampling).

        Args:
            x: (B, D) input at this step.
            h: (L, B, H) state before it; None means zeros.

        Returns:
            y: (B, H) the last layer's new state; h: (L, B, H) every layer's new state.
        """
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}(input_size={self.input_size}).step expects x of shape "
                f"(B, D) with D={self.input_size}; got x.shape={tuple(x.shape)}"
            )
        if h is None:
            h = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)  # (L, B, H)
        states = []
        for layer in range(self.num_layers):
            if layer > 0 and self.training:
                x = dropout(x, self.dropout)  # (B, H)
            a, b = self._coefficients(F.linear(x, *self._layer_parameters(layer)))  # 2 × (B, H)
            x = torch.addcmul(b, a, h[layer])  # (B, H): a ⊙ h + b
            states.append(x)
        return x, torch.stack(states)  # (B, H), (L, B, H)


class MinGRU(_MinimalRNN):
    r"""Minimal GRU: a GRU whose update gate and candidate state see only the input.

        z_t = σ(Linear_z(x_t))        h̃_t = Linear_h(x_t)
        h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t

    i.e. ``h_t = a_t ⊙ h_{t−1} + b_t`` with ``a_t = 1 − z_t`` and ``b_t = z_t ⊙ h̃_t``. The
    paper's log-space version also passes ``h̃_t`` through ``g(x) = x + 0.5 (x ≥ 0), σ(x) (x < 0)``
    to keep it positive for a logarithm; :mod:`rnnkit.scan` works in linear space, where any sign
    is fine, so ``g`` is not applied and ``h̃_t`` is the plain linear map the equations state.

    Each layer ``l`` has ``weight_ih_l{l}`` (2H, D) (D = H for l > 0), packed ``(z, h̃)``, and
    ``bias_ih_l{l}`` (2H,) unless ``bias=False``, all from U(−1/√H, 1/√H). There is no
    ``weight_hh``: nothing multiplies ``h``. Layer ``l + 1`` reads layer ``l``'s states.

    Args:
        input_size: D, features per input step.
        hidden_size: H, features in ``h``.
        num_layers: L, stacked layers.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·).
        impl: ``"scan"`` (parallel over time, :func:`rnnkit.scan.linear_scan`), ``"loop"`` (one
            step at a time), or ``"auto"`` (scan when T > 1). All give the same numbers.
        bias: if False, the layers have no ``bias_ih_l{l}``.
        dropout: probability of dropout on each layer's output except the last's, in
            train mode only (as in torch.nn.GRU).
        device, dtype: where and in what type to create the parameters.

    Shapes:
        forward: input (T, B, D) / (B, T, D) / (T, D), h (L, B, H) or None
            -> output (T, B, H) / (B, T, H) / (T, H), h_n (L, B, H)
        step: x (B, D), h (L, B, H) or None -> y (B, H), h (L, B, H)
    """

    _num_projections = 2

    def _coefficients(self, projections: Tensor) -> tuple[Tensor, Tensor]:
        k, candidate = projections.chunk(2, dim=-1)  # 2 × (..., H): Linear_z(x), h̃
        z = torch.sigmoid(k)  # (..., H)
        return 1 - z, z * candidate  # a = 1 − z, b = z ⊙ h̃

    def _scan(self, projections: Tensor, h0: Tensor, impl: str) -> Tensor:
        """As ``linear_scan(1 − z, z ⊙ h̃, h0)``; the scan path fuses the gate's arithmetic into
        it (:func:`rnnkit.scan.mingru_scan`, fewer passes over memory)."""
        if impl == "scan":
            return mingru_scan(projections, h0)  # (B, T, H)
        return super()._scan(projections, h0, impl)


class MinLSTM(_MinimalRNN):
    r"""Minimal LSTM: forget and input gates that see only the input, normalised to sum to 1.

        f_t = σ(Linear_f(x_t))        i_t = σ(Linear_i(x_t))        h̃_t = Linear_h(x_t)
        f'_t = f_t / (f_t + i_t)      i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t

    i.e. ``h_t = a_t ⊙ h_{t−1} + b_t`` with ``a_t = f'_t`` and ``b_t = i'_t ⊙ h̃_t``. The
    normalised gates are computed stably as ``f'_t = σ(log f_t − log i_t)``, with ``log σ``
    evaluated directly, and ``i'_t = 1 − f'_t``: no ``f_t + i_t`` that rounds to 0 (both gates
    saturated shut) is ever divided by. As in :class:`MinGRU`, the paper's ``g`` (which keeps
    ``h̃_t`` positive for its log-space scan) is not applied: this scan works in linear space.

    Each layer ``l`` has ``weight_ih_l{l}`` (3H, D) (D = H for l > 0), packed ``(f, i, h̃)``, and
    ``bias_ih_l{l}`` (3H,) unless ``bias=False``, all from U(−1/√H, 1/√H). There is no cell
    state and no output gate: the state is ``h`` alone, as in the paper.

    Args, Shapes: as :class:`MinGRU`.
    """

    _num_projections = 3

    def _coefficients(self, projections: Tensor) -> tuple[Tensor, Tensor]:
        k_f, k_i, candidate = projections.chunk(3, dim=-1)  # 3 × (..., H)
        log_ratio = F.logsigmoid(k_f) - F.logsigmoid(k_i)  # (..., H): log f − log i
        f_norm = torch.sigmoid(log_ratio)  # (..., H): f' = f / (f + i)
        return f_norm, (1 - f_norm) * candidate  # i' ⊙ h̃, i' = i / (f + i) = 1 − f'
