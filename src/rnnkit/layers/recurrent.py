"""Drop-in ``torch.nn.RNN``, ``GRU`` and ``LSTM``, with GRU and LSTM variants torch lacks.

Each layer has torch's constructor arguments, ``forward`` signature, return values, parameter
names and state-dict keys (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...), so
``ours.load_state_dict(theirs.state_dict())`` works both ways and the outputs match. The extra
options add parameters named in the same style (``weight_ci_l0``, ...).

``impl`` chooses how ``forward`` computes:

* ``"fused"``: PyTorch's own kernels (``torch._VF.rnn_tanh / rnn_relu / gru / lstm``, which use
  cuDNN on CUDA); a ValueError for options they lack (peephole, ``reset_after=False``,
  ``reset_gate=False``).
* ``"loop"``: our own computation. Full-length batches run the whole-sequence functions of
  :mod:`rnnkit.layers.bptt` (hand-written backward, same numbers); batches with ``lengths`` (and
  packed input) and an LSTM with ``proj_size`` run the step functions of :mod:`rnnkit.cells` in
  :func:`run_direction`'s time loop under autograd.
* ``"auto"`` (default): ``"fused"`` where it computes the configuration, else ``"loop"``;
  except that RNN and GRU train full-length batches on CPU (autograd recording, weights that
  need gradients, ``hidden_size`` at least ``LOOP_MIN_HIDDEN``) with ``"loop"``, which is
  faster there in fp32 and bf16 alike: torch's CPU kernels for them step autograd through
  time, while the LSTM's is oneDNN's fused one. ``bench/layers.py``, 2-core Xeon, training
  tokens/s of loop / fused: RNN 1.29 and 1.24 (fp32, at (L, H) = (1, 128) and (2, 512)), 1.40
  and 1.40 (bf16); GRU 1.02 and 1.03 (fp32), 1.37 and 1.44 (bf16). Without autograd
  (evaluation, sampling) the two are within 20% either way, and ``"fused"`` keeps them.
  And an LSTM under CPU autocast runs ``"loop"`` where torch's oneDNN kernel would raise for
  the autocast dtype (a CPU without AVX-512, see ``LSTM._fused_fails_here``).

Padded batches with ``lengths`` run torch's kernel on a PackedSequence, except an LSTM on CPU
called with ``final_state=False`` (the task encoders of ``classify`` and ``tag`` do). There
torch's kernel for packed data steps autograd through time, and the backward of each step's
slice of the packed data zeroes a gradient as large as all of it, a cost that grows with the
square of the length, while on full-length batches it runs oneDNN's fused LSTM. So each
direction runs full length on the padded batch, the reverse one on each sequence reversed
within its own length (``RecurrentStack._run_fused_unpacked``): the same outputs, by
construction and by test. The RNN's and GRU's CPU kernels step through time on full-length
batches too, so they keep packing (unpacked was 0.9-1.1x there). Lengths that are all full
(no padding) run as no lengths. bench/tasks.py, 2-core EPYC, training examples/s of the task
models beside plain ``nn.LSTM`` on packed sequences: SST-2 1.41x, WNUT-17 1.78x, names 1.12x
(0.95x, 1.09x and 0.97x while packing).

Whatever runs, ``forward`` returns what torch's kernel returns: under autocast the same dtypes,
with autograd recording or not; an output of its own, laid out time-major in memory, on which
in-place ops (``F.dropout(out, inplace=True)``, ``masked_fill_``) work as on torch's.
"""

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import _VF, Tensor

from rnnkit import onednn
from rnnkit.cells import (
    Nonlinearity,
    gru_minimal_step,
    gru_minimal_update,
    gru_reset_before_step,
    gru_step,
    input_gates,
    lstm_step,
    lstm_update,
    rnn_step,
    rnn_update,
)
from rnnkit.layers import bptt, bptt_gru
from rnnkit.layers.stack import Direction, Impl, RecurrentStack, WholeSequence
from rnnkit.layers.time_loop import State

PEEPHOLE_NAMES = ("weight_ci", "weight_cf", "weight_co")


class RNN(RecurrentStack):
    r"""A stack of Elman RNN layers, drop-in for ``torch.nn.RNN``.

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)        (relu if asked)

    Args:
        input_size: D, features per input step.
        hidden_size: H, features in h.
        num_layers: L, stacked layers; layer l > 0 reads layer l − 1's output.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: if False, no ``bias_ih_l*`` / ``bias_hh_l*``.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·).
        dropout: probability of dropout on each layer's output except the last, in training.
        bidirectional: add a reverse direction per layer; outputs are concatenated (2H).
        impl: ``"auto"``, ``"fused"`` or ``"loop"`` (see the module docstring).

    Parameters per layer l and direction (suffix ``_reverse``): ``weight_ih_l{l}`` (H, D or
    num_directions·H), ``weight_hh_l{l}`` (H, H), ``bias_ih_l{l}``, ``bias_hh_l{l}`` (H,).

    Shapes:
        input (T, B, D) [or (B, T, D), (T, D), PackedSequence], h_0 (L·num_directions, B, H)
        ->  output (T, B, num_directions·H), h_n (L·num_directions, B, H)
    """

    _loop_trains_faster_on_cpu = True  # see the module docstring

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: Nonlinearity = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "auto",
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        shape = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(*shape, proj_size=0, device=device, dtype=dtype, num_gates=1, impl=impl)

    def _direction(self, layer: int, direction: int) -> Direction:
        weights = partial(self._param, layer=layer, direction=direction)
        project = partial(
            input_gates,
            weight_ih=weights("weight_ih"),
            bias_ih=weights("bias_ih"),
            bias_hh=weights("bias_hh"),
        )
        step = partial(rnn_step, weight_hh=weights("weight_hh"), nonlinearity=self.nonlinearity)
        return project, step

    def _sequence(self, layer: int, direction: int) -> WholeSequence:
        project = self._sequence_gates(layer, direction)
        weight_hh = self._param("weight_hh", layer, direction)
        return project, partial(
            bptt.rnn_sequence, weight_hh=weight_hh, nonlinearity=self.nonlinearity
        )

    def _fused_kernel(self) -> Callable[..., tuple[Tensor, ...]]:
        return _VF.rnn_tanh if self.nonlinearity == "tanh" else _VF.rnn_relu

    def _fast_step(self, layer: int, x: Tensor, state: State) -> State:
        return rnn_update(self._summed_gates(layer, x, state), self.nonlinearity)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.nonlinearity == "tanh" else f"{text}, nonlinearity='relu'"


class GRU(RecurrentStack):
    r"""A stack of GRU layers, drop-in for ``torch.nn.GRU``; the equations are
    :class:`rnnkit.cells.GRUCell`'s.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            :class:`RNN` (and ``torch.nn.GRU``).
        reset_after: True for torch's form, ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``;
            False for Cho et al.'s, ``n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)``.
        reset_gate: False for the simplified GRU with the update gate only: weights are (2H, ·)
            packed (z, n), and ``reset_after`` has no effect.
        impl: ``"auto"``, ``"fused"`` or ``"loop"``; fused needs the default GRU.

    Parameters per layer l and direction (suffix ``_reverse``): ``weight_ih_l{l}`` (3H, D or
    num_directions·H), ``weight_hh_l{l}`` (3H, H), ``bias_ih_l{l}``, ``bias_hh_l{l}`` (3H,),
    packed (r, z, n).

    Shapes:
        input (T, B, D) [or (B, T, D), (T, D), PackedSequence], h_0 (L·num_directions, B, H)
        ->  output (T, B, num_directions·H), h_n (L·num_directions, B, H)
    """

    _loop_trains_faster_on_cpu = True  # see the module docstring

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        reset_after: bool = True,
        reset_gate: bool = True,
        impl: Impl = "auto",
    ) -> None:
        self.reset_after = reset_after
        self.reset_gate = reset_gate
        shape = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        num_gates = 3 if reset_gate else 2
        super().__init__(
            *shape, proj_size=0, device=device, dtype=dtype, num_gates=num_gates, impl=impl
        )

    def _direction(self, layer: int, direction: int) -> Direction:
        weights = partial(self._param, layer=layer, direction=direction)
        weight_ih, bias_ih, bias_hh = weights("weight_ih"), weights("bias_ih"), weights("bias_hh")
        if not self.reset_gate:
            project = partial(input_gates, weight_ih=weight_ih, bias_ih=bias_ih, bias_hh=bias_hh)
            return project, partial(gru_minimal_step, weight_hh=weights("weight_hh"))
        step_fn = gru_step if self.reset_after else gru_reset_before_step
        step = partial(step_fn, weight_hh=weights("weight_hh"), bias_hh=bias_hh)
        return partial(F.linear, weight=weight_ih, bias=bias_ih), step

    def _sequence(self, layer: int, direction: int) -> WholeSequence:
        weights = partial(self._param, layer=layer, direction=direction)
        weight_ih, bias_ih, bias_hh = weights("weight_ih"), weights("bias_ih"), weights("bias_hh")
        weight_hh = weights("weight_hh")
        if self.reset_gate and self.reset_after:  # b_hn stays inside the reset product
            project = partial(F.linear, weight=weight_ih, bias=bias_ih)
            return project, partial(bptt_gru.gru_sequence, weight_hh=weight_hh, bias_hh=bias_hh)
        project = self._sequence_gates(layer, direction)
        if self.reset_gate:
            return project, partial(bptt_gru.gru_reset_before_sequence, weight_hh=weight_hh)
        return project, partial(bptt_gru.gru_one_gate_sequence, weight_hh=weight_hh)

    def _fused_kernel(self) -> Callable[..., tuple[Tensor, ...]]:
        return _VF.gru

    def _fused_unsupported(self) -> str | None:
        if not self.reset_gate:
            return "reset_gate=False"
        return None if self.reset_after else "reset_after=False"

    def _autocast_dtypes(
        self, initial: tuple[Tensor, ...]
    ) -> tuple[torch.dtype, tuple[torch.dtype, ...]]:
        """On CPU, torch's GRU computes its gates in the autocast dtype and
        ``h' = n + z ⊙ (h − n)`` in the type promoted with h's, so h keeps the initial state's
        dtype (float32 for float32 input); the loop, which runs the whole recurrence in the
        autocast dtype, returns that. Every variant follows the same rule."""
        dtype, parts = super()._autocast_dtypes(initial)
        if initial[0].device.type != "cpu":
            return dtype, parts
        hidden = torch.promote_types(initial[0].dtype, dtype)
        return hidden, (hidden,)

    def _fast_step(self, layer: int, x: Tensor, state: State) -> State:
        if self.reset_gate:  # r splits the recurrent product: no single addmm
            return super()._fast_step(layer, x, state)
        return gru_minimal_update(self._summed_gates(layer, x, state), state)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if not self.reset_after:
            text += ", reset_after=False"
        return text if self.reset_gate else f"{text}, reset_gate=False"


class LSTM(RecurrentStack):
    r"""A stack of LSTM layers, drop-in for ``torch.nn.LSTM``; the equations are
    :class:`rnnkit.cells.LSTMCell`'s.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            :class:`RNN` (and ``torch.nn.LSTM``).
        proj_size: P > 0 projects h to P features, ``h_t = W_hr (o_t ⊙ tanh(c_t))``, as torch.
        peephole: Gers & Schmidhuber's diagonal connections from c into i, f (c_{t−1}) and
            o (c_t); adds ``weight_ci_l{l}``, ``weight_cf_l{l}``, ``weight_co_l{l}`` (H,),
            initialised U(−1/√H, 1/√H) like every other parameter.
        impl: ``"auto"``, ``"fused"`` or ``"loop"``; fused needs ``peephole=False``.

    Parameters per layer l and direction (suffix ``_reverse``): ``weight_ih_l{l}`` (4H, D or
    num_directions·P), ``weight_hh_l{l}`` (4H, P), ``bias_ih_l{l}``, ``bias_hh_l{l}`` (4H,),
    packed (i, f, g, o); ``weight_hr_l{l}`` (P, H) with projection. P is H without projection.

    Shapes:
        input (T, B, D) [or (B, T, D), (T, D), PackedSequence],
        (h_0 (L·num_directions, B, P), c_0 (L·num_directions, B, H))
        ->  output (T, B, num_directions·P), (h_n, c_n) like (h_0, c_0)

    Padded batches: ``lstm(x, lengths=lengths, final_state=False)`` returns ``(output, None)``
    and, on CPU, runs faster than packing (see the module docstring)::

        out, _ = lstm(x, lengths=torch.tensor([5, 2, 4]), final_state=False)  # zero padding
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        peephole: bool = False,
        impl: Impl = "auto",
    ) -> None:
        self.peephole = peephole
        shape = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(
            *shape,
            proj_size=proj_size,
            device=device,
            dtype=dtype,
            num_gates=4,
            cell_vectors=PEEPHOLE_NAMES if peephole else (),
            impl=impl,
        )

    def _state_sizes(self) -> tuple[int, ...]:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def _peephole(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor] | None:
        if not self.peephole:
            return None
        w_ci, w_cf, w_co = (self._param(name, layer, direction) for name in PEEPHOLE_NAMES)
        return w_ci, w_cf, w_co

    def _direction(self, layer: int, direction: int) -> Direction:
        weights = partial(self._param, layer=layer, direction=direction)
        project = partial(
            input_gates,
            weight_ih=weights("weight_ih"),
            bias_ih=weights("bias_ih"),
            bias_hh=weights("bias_hh"),
        )
        step = partial(
            lstm_step,
            weight_hh=weights("weight_hh"),
            weight_hr=weights("weight_hr"),
            peephole=self._peephole(layer, direction),
        )
        return project, step

    def _sequence(self, layer: int, direction: int) -> WholeSequence | None:
        if self.proj_size:  # the projection runs in the autograd loop
            return None
        project = self._sequence_gates(layer, direction)
        weight_hh = self._param("weight_hh", layer, direction)
        peephole = self._peephole(layer, direction)
        return project, partial(bptt.lstm_sequence, weight_hh=weight_hh, peephole=peephole)

    def _fused_kernel(self) -> Callable[..., tuple[Tensor, ...]]:
        return _VF.lstm

    def _fused_unsupported(self) -> str | None:
        return "peephole=True" if self.peephole else None

    def _fused_fails_here(self) -> bool:
        """torch's CPU LSTM without projection runs oneDNN's kernel, under autocast in the
        autocast dtype, and that raises on a CPU without oneDNN's bf16 (or fp16) path, such as
        an AVX2-only one ("could not create a primitive descriptor"); ``impl="auto"`` runs the
        loop there instead, with the dtypes the kernel gives elsewhere."""
        weight = self.weight_hh_l0
        if self.proj_size or weight.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return False
        dtype = torch.get_autocast_dtype("cpu")
        if dtype == torch.bfloat16:
            return not onednn.bf16_onednn_works()
        return dtype == torch.float16 and not torch.ops.mkldnn._is_mkldnn_fp16_supported()

    def _runs_unpacked(self, x: Tensor, final_state: bool) -> bool:
        """Padded batches with lengths run unpacked (see the module docstring) on CPU where
        torch's kernel is oneDNN's (no projection, oneDNN present, no autocast) and the caller
        wants no final state: c_n is not among the outputs of an unpacked run."""
        return (
            not final_state
            and not self.proj_size
            and x.device.type == "cpu"
            and torch.backends.mkldnn.is_available()
            and not torch.is_autocast_enabled("cpu")
        )

    def _autocast_dtypes(
        self, initial: tuple[Tensor, ...]
    ) -> tuple[torch.dtype, tuple[torch.dtype, ...]]:
        """With ``proj_size`` on CPU, torch's LSTM is not oneDNN's: h = W_hr (o ⊙ tanh(c)) is a
        product in the autocast dtype, while c = f ⊙ c + i ⊙ g keeps the type promoted with the
        initial c's. Otherwise all in the autocast dtype (oneDNN's and cuDNN's kernels)."""
        dtype, parts = super()._autocast_dtypes(initial)
        if not self.proj_size or initial[0].device.type != "cpu":
            return dtype, parts
        return dtype, (dtype, torch.promote_types(initial[1].dtype, dtype))

    def _fast_step(self, layer: int, x: Tensor, state: State) -> State:
        h, c = state
        gates = self._summed_gates(layer, x, h)  # (B, 4H)
        return lstm_update(gates, c, self._param("weight_hr", layer), self._peephole(layer, 0))

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return f"{text}, peephole=True" if self.peephole else text
