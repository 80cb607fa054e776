"""What RNN, GRU and LSTM share: torch's parameter names, input and state handling, stacking,
bidirection, padding and packing, and the choice between PyTorch's fused kernels and our loop.

The concrete layers (:mod:`rnnkit.layers.recurrent`) only say how one direction of one layer takes
a step, which fused kernel (if any) computes the same numbers, and how ``step()`` does it fast.
"""

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from rnnkit import onednn
from rnnkit.cells import input_gates
from rnnkit.layers import flat_weights
from rnnkit.layers.dropout import dropout
from rnnkit.layers.packed import PackedLinear, Weights, check_weights
from rnnkit.layers.packing import (
    pack_like,
    reversal_index,
    reverse_within,
    run_packed,
    run_padded,
)
from rnnkit.layers.time_loop import (
    SequenceFn,
    State,
    StepFn,
    hidden_of,
    run_direction,
    run_sequence,
)

Impl = Literal["auto", "fused", "loop"]
# A stack's state in torch's layout: h (L·num_directions, B, H), or (h, c) for an LSTM.
StackState = Tensor | tuple[Tensor, Tensor]
# How one direction of one layer is computed: the input projection of all steps, then the step.
Direction = tuple[Callable[[Tensor], Tensor], StepFn]
# The same as a whole-sequence function with a hand-written backward (rnnkit.layers.bptt).
WholeSequence = tuple[Callable[[Tensor], Tensor], SequenceFn]

IMPLS = ("auto", "fused", "loop")


class RecurrentStack(nn.Module, ABC):
    """Base of the drop-in layers; see :class:`rnnkit.layers.LSTM` for the public contract.

    Subclasses pass ``num_gates`` (and any per-unit ``cell_vectors`` such as peepholes) and
    implement ``_direction``, ``_sequence`` and ``_fused_kernel``; they may override
    ``_fused_unsupported``, ``_state_sizes`` and ``_fast_step``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        proj_size: int,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        *,
        num_gates: int,
        cell_vectors: Sequence[str] = (),
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {arg} must be a bool; got {value!r}")
        if min(input_size, hidden_size, num_layers) <= 0:
            raise ValueError(
                f"{name}: input_size, hidden_size and num_layers must be positive; got "
                f"input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}"
            )
        if isinstance(dropout, bool) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be a probability in [0, 1]; got {dropout!r}")
        if not 0 <= proj_size < hidden_size:
            raise ValueError(f"{name}: proj_size must be in [0, hidden_size); got {proj_size}")
        if impl not in IMPLS:
            raise ValueError(f"{name}: impl must be one of {IMPLS}; got {impl!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout={dropout} acts between layers, so it has no effect with "
                "num_layers=1",
                stacklevel=3,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.impl = impl
        # Per layer [W_ih | W_hh] packed for step(), only inside packed_step(); see there.
        self._step_weights: list[PackedLinear] | None = None

        factory = {"device": device, "dtype": dtype}
        gate_size = num_gates * hidden_size
        out_size = proj_size or hidden_size
        self._fused_weight_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * self.num_directions
            for direction in range(self.num_directions):
                shapes = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, out_size)}
                if bias:
                    shapes |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                fused_names = [self._name(base, layer, direction) for base in shapes]
                shapes |= {vector: (hidden_size,) for vector in cell_vectors}
                for base, shape in shapes.items():
                    parameter = nn.Parameter(torch.empty(shape, **factory))
                    self.register_parameter(self._name(base, layer, direction), parameter)
                self._fused_weight_names += fused_names
        self.reset_parameters()
        self._uses_fused()  # raises now if impl="fused" cannot compute this configuration
        self._flatten_for_cudnn()

    # --- what subclasses provide -------------------------------------------------------------

    @abstractmethod
    def _direction(self, layer: int, direction: int) -> Direction:
        """The input projection of all steps and the step function of one layer and direction."""

    @abstractmethod
    def _sequence(self, layer: int, direction: int) -> WholeSequence | None:
        """The input projection and the whole-sequence function with hand-written backward that
        ``impl="loop"`` runs on full-length sequences, or None where it has none."""

    @abstractmethod
    def _fused_kernel(self) -> Callable[..., tuple[Tensor, ...]]:
        """The ``torch._VF`` function computing this layer (``rnn_tanh``, ``gru``, ``lstm``...)."""

    def _fused_unsupported(self) -> str | None:
        """Why PyTorch's fused kernel cannot compute this configuration, or None if it can."""
        return None

    def _sequence_gates(self, layer: int, direction: int) -> Callable[[Tensor], Tensor]:
        """``W_ih x + b_ih + b_hh`` of all steps for the whole-sequence functions: x (..., D)
        -> (..., G·H), through :func:`rnnkit.onednn.linear` (they are differentiable once
        anyway; the autograd loop of :meth:`_direction` keeps ``F.linear``)."""
        weights = partial(self._param, layer=layer, direction=direction)
        return partial(
            input_gates,
            weight_ih=weights("weight_ih"),
            bias_ih=weights("bias_ih"),
            bias_hh=weights("bias_hh"),
            linear=onednn.linear,
        )

    def _fast_step(self, layer: int, x: Tensor, state: State) -> State:
        """One step of one layer for ``step()``: x (B, D or H), state -> new state."""
        project, step = self._direction(layer, 0)
        return step(project(x), state)

    # --- parameters and state ----------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @staticmethod
    def _name(base: str, layer: int, direction: int) -> str:
        """torch's parameter name, e.g. ``weight_hh_l1_reverse``."""
        return f"{base}_l{layer}{'_reverse' if direction else ''}"

    def _param(self, base: str, layer: int, direction: int = 0) -> Tensor | None:
        """The parameter ``base`` of one layer and direction, or None if it has none."""
        return self._parameters.get(self._name(base, layer, direction))

    # --- flat weights for cuDNN (rnnkit.layers.flat_weights) ---------------------------------

    def _fused_weights(self) -> list[Tensor]:
        """The fused kernel's weights in its order (torch.nn's ``_flat_weights``)."""
        return [getattr(self, name) for name in self._fused_weight_names]

    def flatten_parameters(self) -> None:
        """Make the fused kernel's weights views of one contiguous buffer, as ``torch.nn.RNN`` /
        ``GRU`` / ``LSTM`` keep theirs on CUDA.

        Where cuDNN runs the layer (CUDA weights it accepts), the buffer has cuDNN's layout, so
        that the kernel reads the weights where they are instead of compacting a copy at every
        call. That happens by itself on construction, after ``.to()`` / ``.cuda()``, after
        ``load_state_dict(..., assign=True)`` and after unpickling or ``copy.deepcopy``.
        Elsewhere, only when called, the buffer holds the weights one after the other in the
        kernel's order: the CPU kernels read each weight where it lies, so nothing gains from
        it and nothing flattens there by itself.

        Parameters stay the same objects, with the same values, names and ``state_dict``;
        optimizers holding them keep training them. Does nothing where the weights already
        share one buffer, alias one another, or where the fused kernel cannot compute the
        configuration (peephole, ``reset_after=False``, ``reset_gate=False``).
        """
        weights = self._fused_weights()
        if (
            self._fused_unsupported() is not None
            or not flat_weights.can_flatten(weights)
            or flat_weights.in_one_buffer(weights)
        ):
            return
        if not flat_weights.cudnn_takes(weights):
            flat_weights.concatenate(weights)
            return
        flat_weights.cudnn_flatten(
            weights,
            kernel=self._fused_kernel().__name__,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            proj_size=self.proj_size,
            num_layers=self.num_layers,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
        )

    def _runs_on_cudnn(self) -> bool:
        """Whether forward's fused kernel would run on cuDNN with these weights, which is where
        the weights are kept flat by themselves."""
        return self._fused_unsupported() is None and flat_weights.cudnn_takes(self._fused_weights())

    def _flatten_for_cudnn(self) -> None:
        if self._runs_on_cudnn():
            self.flatten_parameters()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "RecurrentStack":
        """``.to()``, ``.cuda()``, ``.half()``... give each weight a storage of its own; flatten
        them again for cuDNN."""
        module = super()._apply(fn, recurse)
        self._flatten_for_cudnn()
        return module

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """``load_state_dict(..., assign=True)`` replaces the parameters; flatten them again for
        cuDNN (a plain load copies into the flat buffer in place)."""
        super()._load_from_state_dict(*args, **kwargs)
        self._flatten_for_cudnn()

    def __setstate__(self, state: dict) -> None:
        """Unpickling and ``copy.deepcopy`` give each weight a storage of its own."""
        super().__setstate__(state)
        self._flatten_for_cudnn()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(−1/√H, 1/√H), as torch initialises its recurrent layers."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """torch's per-layer-and-direction lists of the fused kernel's weights."""
        per_direction = len(self._fused_weight_names) // (self.num_layers * self.num_directions)
        names = self._fused_weight_names
        return [
            [getattr(self, n) for n in names[i : i + per_direction]]
            for i in range(0, len(names), per_direction)
        ]

    def _state_sizes(self) -> tuple[int, ...]:
        """Feature sizes of the state's parts: (H,), or (P or H, H) for an LSTM's (h, c)."""
        return (self.hidden_size,)

    def _initial_state(
        self, hx: StackState | None, batch_size: int, batched: bool, like: Tensor
    ) -> tuple[Tensor, ...]:
        """hx checked against the input and returned batched, as a tuple of (L·dirs, B, size)."""
        stack = self.num_layers * self.num_directions
        sizes = self._state_sizes()
        if hx is None:
            zeros = [like.new_zeros(stack, batch_size, size) for size in sizes]  # (L·dirs, B, ·)
            return tuple(zeros)
        parts = hx if isinstance(hx, tuple) else (hx,)
        if not all(isinstance(part, Tensor) for part in parts):
            raise TypeError(
                f"{type(self).__name__}: the initial state must be a Tensor"
                f"{' or a tuple (h, c) of Tensors' if len(sizes) > 1 else ''}; "
                f"got {type(hx).__name__}"
            )
        expected = [(stack, batch_size, size) if batched else (stack, size) for size in sizes]
        got = [tuple(part.shape) for part in parts]
        if got != expected:
            raise ValueError(
                f"{type(self).__name__}: expected the initial state of shape "
                f"{expected if len(sizes) > 1 else expected[0]} for this input; "
                f"got {got if len(sizes) > 1 else got[0]}"
            )
        return parts if batched else tuple(part.unsqueeze(1) for part in parts)  # (L·dirs, B, ·)

    @staticmethod
    def _user_state(parts: tuple[Tensor, ...]) -> StackState:
        return parts if len(parts) > 1 else parts[0]

    @staticmethod
    def _state_at(parts: tuple[Tensor, ...], index: int) -> State:
        """The state of layer-and-direction ``index``: (B, H) or an (h, c) pair."""
        return tuple(part[index] for part in parts) if len(parts) > 1 else parts[0][index]

    @staticmethod
    def _stack_states(states: list[State]) -> tuple[Tensor, ...]:
        """Per layer-and-direction states -> a tuple of (L·dirs, B, size)."""
        if isinstance(states[0], tuple):
            parts = zip(*states, strict=True)  # all h, then all c
            return tuple(torch.stack(part) for part in parts)  # (L·dirs, B, ·) each
        return (torch.stack(states),)  # (L·dirs, B, H)

    def _check_input(self, x: Tensor) -> None:
        """x (..., D) must have input_size features and, outside autocast, the weights' dtype."""
        name = type(self).__name__
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}(input_size={self.input_size}) got input with {x.shape[-1]} features "
                f"per step (x.shape={tuple(x.shape)}); check that the input's last dimension "
                "matches input_size"
            )
        dtype = self.weight_ih_l0.dtype
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"{name} has {dtype} weights but got input of dtype {x.dtype}; convert the "
                f"input with x.to({dtype}) or the layer with .to({x.dtype})"
            )

    # --- forward -------------------------------------------------------------------------------

    # impl="auto" trains full-length batches on CPU with the loop (set by RNN and GRU), from
    # this hidden size up: below it the loop's fixed cost per call loses (0.85x at H=16, B=4,
    # T=8; 1.16-1.19x at H=32, B=32, T=50).
    _loop_trains_faster_on_cpu = False
    LOOP_MIN_HIDDEN = 32

    @property
    def resolved_impl(self) -> Literal["fused", "loop"]:
        """What ``forward`` runs on full-length sequences here and now: ``"fused"`` or
        ``"loop"`` (what ``impl="auto"`` chose; it may depend on the device and on whether
        autograd is recording, see :mod:`rnnkit.layers.recurrent`)."""
        return "fused" if self._uses_fused() else "loop"

    def _uses_fused(self, variable_length: bool = False) -> bool:
        """Whether forward runs PyTorch's fused kernel; raises if impl='fused' cannot.

        ``variable_length``: the batch has lengths or is packed, where the loop would fall back
        to its autograd time loop.
        """
        reason = self._fused_unsupported()
        if self.impl == "fused" and reason is not None:
            raise ValueError(
                f"{type(self).__name__}: impl='fused' runs PyTorch's own kernel, which does not "
                f"support {reason}; use impl='loop' or impl='auto'"
            )
        if self.impl != "auto":
            return self.impl == "fused"
        if reason is not None or self._fused_fails_here():
            return False
        return variable_length or not self._loop_trains_faster_here()

    def _fused_fails_here(self) -> bool:
        """Whether torch's kernel raises for this layer here and now though it supports the
        configuration (see :class:`rnnkit.layers.LSTM`); ``impl="auto"`` then runs the loop."""
        return False

    def _loop_trains_faster_here(self) -> bool:
        """Whether this is training on CPU of a layer whose loop beats torch's kernel there."""
        weight = self.weight_hh_l0
        return (
            self._loop_trains_faster_on_cpu
            and self.hidden_size >= self.LOOP_MIN_HIDDEN
            and weight.device.type == "cpu"
            and weight.requires_grad
            and torch.is_grad_enabled()
        )

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: StackState | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        final_state: bool = True,
    ) -> tuple[Tensor | PackedSequence, StackState | None]:
        """Run the stack over a sequence, as ``torch.nn.RNN / GRU / LSTM`` do.

        Args:
            input: (T, B, D), or (B, T, D) if ``batch_first``, or unbatched (T, D), or a
                ``PackedSequence``.
            hx: initial state in torch's layout, h (L·num_directions, B, H) or for an LSTM
                (h, c); unbatched input takes (L·num_directions, H). Zeros if None.
            lengths: (B,) real length of each padded sequence (not with a PackedSequence):
                states freeze after each sequence's end and outputs there are zero.
            final_state: False where the caller does not use h_n, which is then returned as
                None; an LSTM given ``lengths`` on CPU then runs faster (see
                :class:`rnnkit.layers.LSTM`).

        Returns:
            (output, h_n): output (T, B, num_directions·H) in the input's layout (a
            PackedSequence for packed input); h_n like hx, or None if not ``final_state``.
            With ``proj_size`` P, H above is P for the output and h.
        """
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("a PackedSequence carries its own lengths; do not pass lengths")
            out, state = self._forward_packed(input, hx)
            return out, (state if final_state else None)
        if input.dim() not in (2, 3):
            raise ValueError(
                f"{type(self).__name__} expects input of 3 dimensions (batched) or 2 "
                f"(unbatched); got input.shape={tuple(input.shape)}"
            )
        self._check_input(input)
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        x = input if batched else input.unsqueeze(batch_dim)  # (T, B, D) or (B, T, D)
        batch_size, num_steps = x.shape[batch_dim], x.shape[1 - batch_dim]
        state = self._initial_state(hx, batch_size, batched, x)
        if lengths is not None:
            lengths = self._check_lengths(lengths, batch_size, num_steps)
            if bool((lengths == num_steps).all()):
                lengths = None  # no padding: the full-length paths compute the same
        if self._uses_fused(variable_length=lengths is not None):
            if lengths is not None and self._runs_unpacked(x, final_state):
                out = self._run_fused_unpacked(x, state, lengths)
            else:
                out, state = self._run_fused_padded(x, state, lengths)
        else:
            x_bt = x if self.batch_first else x.transpose(0, 1)  # (B, T, D)
            lengths = None if lengths is None else lengths.to(x.device)
            out, final, shares_buffer = self._run_loop(x_bt, state, lengths)  # (B, T, dirs·H)
            out, state = self._as_fused_returns(out, final, state, self.batch_first, shares_buffer)
        if not final_state:
            return (out if batched else out.squeeze(batch_dim)), None
        if not batched:
            out = out.squeeze(batch_dim)  # (T, dirs·H)
            state = tuple(part.squeeze(1) for part in state)  # (L·dirs, ·)
        return out, self._user_state(state)

    def _check_lengths(
        self, lengths: Tensor | Sequence[int], batch_size: int, steps: int
    ) -> Tensor:
        lengths = torch.as_tensor(lengths, dtype=torch.long)  # (B,)
        if lengths.shape != (batch_size,) or lengths.min() < 0 or lengths.max() > steps:
            raise ValueError(
                f"{type(self).__name__}: lengths must hold {batch_size} values in [0, {steps}] "
                f"for input of {batch_size} sequences of {steps} steps; got {lengths.tolist()}"
            )
        return lengths

    def _forward_packed(
        self, packed: PackedSequence, hx: StackState | None
    ) -> tuple[PackedSequence, StackState]:
        batch_size = int(packed.batch_sizes[0])
        self._check_input(packed.data)
        state = self._initial_state(hx, batch_size, True, packed.data)  # original batch order
        if self._uses_fused(variable_length=True):
            out, state = run_packed(self._run_fused, packed, state)
            return out, self._user_state(state)
        x, lengths = pad_packed_sequence(packed, batch_first=True)  # (B, T, D), (B,)
        out, final, _ = self._run_loop(x, state, lengths.to(x.device))  # (B, T, dirs·H)
        out, final = self._as_fused_returns(
            out, final, state, batch_first=True, shares_buffer=False
        )
        return pack_like(out, packed), self._user_state(final)

    def _as_fused_returns(
        self,
        out: Tensor,
        final: tuple[Tensor, ...],
        initial: tuple[Tensor, ...],
        batch_first: bool,
        shares_buffer: bool,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The loop's output and final state as torch's kernel returns them.

        Under autocast, in the dtypes torch's kernel gives (:meth:`_autocast_dtypes`), whether
        autograd records or not. The output is contiguous time-major in memory, as torch's (so
        that ``F.dropout`` draws the same mask for both), and never a view of a whole-sequence
        function's buffer (``shares_buffer``), which that function saved for backward and
        autograd forbids changing in place: in-place ops on it, such as
        ``F.dropout(out, inplace=True)``, work as on torch's. That copy costs one pass over the
        output, here or in the dtype conversion.

        Shapes: out (B, T, dirs·H) -> (B, T, dirs·H) if ``batch_first`` else (T, B, dirs·H);
        final and initial (L·dirs, B, ·) each.
        """
        if torch.is_autocast_enabled(out.device.type):
            out_dtype, state_dtypes = self._autocast_dtypes(initial)
            shares_buffer = shares_buffer and out.dtype == out_dtype
            out = out.to(out_dtype)  # (B, T, dirs·H), a copy with the same strides if converted
            final = tuple(part.to(dtype) for part, dtype in zip(final, state_dtypes, strict=True))
        time_major = out.transpose(0, 1)  # (T, B, dirs·H)
        if shares_buffer or not time_major.is_contiguous():
            time_major = time_major.clone(memory_format=torch.contiguous_format)  # (T, B, ·)
        return (time_major.transpose(0, 1) if batch_first else time_major), final

    def _autocast_dtypes(
        self, initial: tuple[Tensor, ...]
    ) -> tuple[torch.dtype, tuple[torch.dtype, ...]]:
        """The dtypes of torch's kernel's output and final state parts under autocast, given the
        initial state parts: here the autocast dtype for all, as torch's RNN gives (its products
        are autocast, and so is h = φ(·) after the first step), so do its oneDNN LSTM on CPU and
        every cuDNN kernel. :class:`rnnkit.layers.GRU` and :class:`rnnkit.layers.LSTM` refine
        it for their CPU kernels."""
        dtype = torch.get_autocast_dtype(initial[0].device.type)
        return dtype, tuple(dtype for _ in initial)

    def _run_loop(
        self, x: Tensor, state: tuple[Tensor, ...], lengths: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...], bool]:
        """Our cells over time, layer by layer. x (B, T, D) -> (B, T, dirs·H), final state, and
        whether that output is a view of a whole-sequence function's buffer.

        Full-length batches run the whole-sequence functions of :mod:`rnnkit.layers.bptt`
        (hand-written backward); with ``lengths``, the autograd loop freezes finished sequences.
        """
        finals: list[State] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                initial, reverse = self._state_at(state, index), direction == 1
                sequence = self._sequence(layer, direction) if lengths is None else None
                if sequence is None:
                    project, step = self._direction(layer, direction)
                    out, final = run_direction(step, project(x), initial, lengths, reverse)
                else:
                    project, run = sequence
                    out, final = run_sequence(run, project, x, initial, reverse)  # (B, T, H)
                outputs.append(out)
                finals.append(final)
            if self.bidirectional:  # concatenated time-major, torch's layout in memory
                both = torch.cat([out.transpose(0, 1) for out in outputs], dim=2)  # (T, B, 2H)
                x = both.transpose(0, 1)  # (B, T, 2H)
            else:
                x = outputs[0]  # (B, T, H)
            if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
                x = dropout(x, self.dropout)  # (B, T, dirs·H)
        shares_buffer = sequence is not None and not self.bidirectional  # the last layer's
        return x, self._stack_states(finals), shares_buffer

    def _run_fused(
        self, x: Tensor, state: tuple[Tensor, ...], batch_sizes: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """PyTorch's kernel on padded x (``batch_first`` layout) or on packed data.

        In training with dropout between layers on CPU, the kernel runs one layer at a time and
        :func:`rnnkit.layers.dropout.dropout` acts between them: torch's own dropout there
        draws its mask with ``bernoulli_``, which took 10% of a training step of the default
        2x512 language model. The numbers are those of one call, with another random mask.
        """
        if not (self.training and self.dropout > 0 and self.num_layers > 1 and x.is_cpu):
            return self._fused_call(x, state, self._fused_weights(), self.num_layers, batch_sizes)
        per_layer = len(self._fused_weight_names) // self.num_layers
        dirs = self.num_directions
        finals = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = dropout(x, self.dropout)  # (·, dirs·H) as the kernel returned it
            names = self._fused_weight_names[layer * per_layer : (layer + 1) * per_layer]
            layer_state = tuple(part[layer * dirs : (layer + 1) * dirs] for part in state)
            weights = [getattr(self, name) for name in names]
            x, final = self._fused_call(x, layer_state, weights, 1, batch_sizes)
            finals.append(final)
        return x, tuple(torch.cat(parts) for parts in zip(*finals, strict=True))  # (L·dirs, B, ·)

    def _fused_call(
        self,
        x: Tensor,
        state: tuple[Tensor, ...],
        weights: list[Tensor],
        num_layers: int,
        batch_sizes: Tensor | None,
        bidirectional: bool | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One call of the kernel over ``num_layers`` layers whose ``weights`` are given (of
        both directions, or of one if ``bidirectional`` is False)."""
        hx = state if len(state) > 1 else state[0]
        both = self.bidirectional if bidirectional is None else bidirectional
        options = (self.bias, num_layers, self.dropout, self.training, both)
        if batch_sizes is None:
            result = self._fused_kernel()(x, hx, weights, *options, self.batch_first)
        else:
            result = self._fused_kernel()(x, batch_sizes, hx, weights, *options)
        return result[0], tuple(result[1:])

    def _run_fused_padded(
        self, x: Tensor, state: tuple[Tensor, ...], lengths: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        if lengths is None:
            return self._run_fused(x, state)
        self._check_not_empty(lengths)
        return run_padded(self._run_fused, x, state, lengths, self.batch_first)

    def _check_not_empty(self, lengths: Tensor) -> None:
        if lengths.min() == 0:
            raise ValueError(
                f"{type(self).__name__}: impl='fused' packs the batch, which needs every length "
                f"to be at least 1; got {lengths.tolist()}; use impl='loop' for empty sequences"
            )

    def _runs_unpacked(self, x: Tensor, final_state: bool) -> bool:
        """Whether a padded batch with lengths runs :meth:`_run_fused_unpacked`, where that is
        faster than packing (:class:`rnnkit.layers.LSTM` says where)."""
        return False

    def _run_fused_unpacked(self, x: Tensor, state: tuple[Tensor, ...], lengths: Tensor) -> Tensor:
        """PyTorch's kernel on a padded batch with lengths, without packing it: the output only.

        Each direction of each layer runs the kernel on the whole padded batch, as on
        full-length sequences:

        * padded steps come after each sequence's real ones, so the forward direction's
          outputs at real steps do not depend on them;
        * the reverse direction reads each sequence reversed within its own length
          (:func:`rnnkit.layers.packing.reverse_within`), so it too reads the real steps
          first, and its outputs are put back in order the same way;
        * padded inputs are zeroed, so that what the kernel computes past the ends stays
          finite and never turns a gradient into NaN; outputs there are zeroed.

        The kernel's final state has stepped through the padding, so none is returned.

        Shapes: x (B, T, D) or (T, B, D), as ``batch_first`` says; lengths (B,); state parts
        (L·dirs, B, ·) -> output like x with dirs·H features.
        """
        self._check_not_empty(lengths)
        time_dim = 1 if self.batch_first else 0
        steps = x.shape[time_dim]
        index = reversal_index(lengths, steps, self.batch_first).to(x.device)  # (B, T) / (T, B)
        real = torch.arange(steps)[None, :] < lengths[:, None]  # (B, T)
        real = (real if self.batch_first else real.t()).unsqueeze(-1).to(x.device)  # like x
        x = x.masked_fill(~real, 0.0)  # like x
        per_direction = self.all_weights  # the kernel's weights of each layer and direction
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = dropout(x, self.dropout)  # like x
            outputs = []
            for direction in range(self.num_directions):
                i = layer * self.num_directions + direction
                weights = per_direction[i]
                initial = tuple(part[i : i + 1] for part in state)  # (1, B, ·) each
                source = x if direction == 0 else reverse_within(x, index, time_dim)
                out, _ = self._fused_call(source, initial, weights, 1, None, bidirectional=False)
                outputs.append(out if direction == 0 else reverse_within(out, index, time_dim))
            x = torch.cat(outputs, dim=-1) if self.num_directions == 2 else outputs[0]
        return x.masked_fill(~real, 0.0)  # like x, dirs·H features

    # --- one step, for sampling --------------------------------------------------------------

    @torch.no_grad()
    def step(self, x: Tensor, hx: StackState | None = None) -> tuple[Tensor, StackState]:
        """One time step through every layer, without autograd: the fast path for sampling.

        Equals ``forward`` on a one-step sequence, at a fraction of its per-call overhead:
        summed-gate layers (RNN, LSTM, one-gate GRU) compute
        ``W_ih x + b_ih + W_hh h + b_hh`` in one buffer, then apply the cell's update. Inside
        :meth:`packed_step` that sum is one product per layer with packed weights.

        Args:
            x: (B, D), one step of input.
            hx: state in torch's layout, h (L, B, H) or (h, c); zeros if None.

        Returns:
            (y, hx'): y (B, H) the last layer's output (P with ``proj_size``), hx' like hx.
        """
        if self.bidirectional:
            raise ValueError(
                f"{type(self).__name__}.step() runs one step forward in time, but a bidirectional "
                "layer needs the whole sequence; use forward() instead"
            )
        if x.dim() != 2:
            raise ValueError(f"step() expects x of shape (B, D); got x.shape={tuple(x.shape)}")
        self._check_input(x)
        state = self._initial_state(hx, x.shape[0], True, x)
        per_layer = [part.unbind(0) for part in state]  # parts × L × (B, ·)
        finals = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = dropout(x, self.dropout)  # (B, H)
            layer_state = tuple(part[layer] for part in per_layer)
            final = self._fast_step(layer, x, layer_state if len(state) > 1 else layer_state[0])
            finals.append(final)
            x = hidden_of(final)  # (B, H)
        return x, self._user_state(self._stack_states(finals))

    def packed_step(self, weights: Weights = "fp32") -> AbstractContextManager[None]:
        """A ``with`` block inside which ``step()`` multiplies one packed ``[W_ih | W_hh]``
        per layer.

        Entering copies each layer's ``weight_ih`` and ``weight_hh`` side by side into one
        (G·H, D + H) matrix and sums ``bias_ih + bias_hh``, so that a step costs one matrix
        product per layer. ``weights`` chooses how the matrix is stored (see
        :class:`rnnkit.layers.packed.PackedLinear`): ``"fp32"`` (the parameters' dtype; the
        same numbers as outside the block up to float rounding), ``"bf16"`` or ``"int8"``
        (weight-only, one scale per output channel): fewer bytes per step, approximate logits.

        The packed copy is a snapshot taken on entry: parameters changed inside the block
        (by an optimizer, ``load_state_dict`` or ``.data``) are not seen until the next block.
        ``forward`` is never affected. Only summed-gate layers (RNN, LSTM, the one-gate GRU)
        pack; a GRU with a reset gate keeps its usual step, for which only ``"fp32"`` is
        allowed. Example::

            with lstm.packed_step("int8"):
                for x in inputs:                  # each (B, D)
                    y, state = lstm.step(x, state)

        Raises:
            ValueError: now, not on entry: ``weights`` is unknown, or reduced for a layer
                that cannot pack.
        """
        check_weights(weights)
        if not self._has_summed_gates():
            if weights != "fp32":
                raise ValueError(
                    f"{type(self).__name__}: weights={weights!r} needs summed gates (RNN, LSTM, "
                    "GRU(reset_gate=False)); a GRU with a reset gate samples with fp32 weights"
                )
            return nullcontext()
        return self._packed(weights)

    @contextmanager
    def _packed(self, weights: Weights) -> Iterator[None]:
        packed = []
        for layer in range(self.num_layers):
            both = torch.cat([self._param("weight_ih", layer), self._param("weight_hh", layer)], 1)
            bias = (
                self._param("bias_ih", layer) + self._param("bias_hh", layer) if self.bias else None
            )
            packed.append(PackedLinear(both, bias, weights))  # (G·H, D + H), (G·H,)
        previous, self._step_weights = self._step_weights, packed
        try:
            yield
        finally:
            self._step_weights = previous

    def _has_summed_gates(self) -> bool:
        """Whether each step's pre-activations are one sum ``W_ih x + b_ih + W_hh h + b_hh``:
        RNN, LSTM and the one-gate GRU, not a GRU whose reset gate splits the product."""
        return not getattr(self, "reset_gate", False)

    def _summed_gates(self, layer: int, x: Tensor, h: Tensor) -> Tensor:
        """W_ih x + b_ih + W_hh h + b_hh accumulated in one buffer.  x (B, D), h (B, H) -> (B, G·H).

        Outside :meth:`packed_step` nothing is cached, so weights changed in any way (even
        through ``.data``) are seen.
        """
        if self._step_weights is not None:
            return self._step_weights[layer](torch.cat([x, h], dim=1))  # (B, G·H)
        weight_ih, weight_hh = self._param("weight_ih", layer), self._param("weight_hh", layer)
        if not self.bias:
            return (x @ weight_ih.t()).addmm_(h, weight_hh.t())  # (B, G·H)
        gates = torch.addmm(self._param("bias_ih", layer), x, weight_ih.t())  # (B, G·H)
        return gates.addmm_(h, weight_hh.t()).add_(self._param("bias_hh", layer))  # (B, G·H)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {
            "num_layers": 1,
            "bias": True,
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
            "proj_size": 0,
            "impl": "auto",
        }
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text
