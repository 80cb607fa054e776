"""rnnkit: readable, fast recurrent neural networks on PyTorch.

Shape glossary, used in code, docstrings and tests:

    B batch · T time steps · D input features · E embedding size · H hidden size ·
    V vocabulary · C classes · L layers · num_directions (1 or 2, written out)

Tensors are batch-first ``(B, T, ...)`` inside rnnkit; the drop-in layers follow torch's
``batch_first`` argument. A stack's final state has torch's layout
``(L * num_directions, B, H)``, ordered ``l0, l0_reverse, l1, ...``.

The public names below are imported on first use, so ``import rnnkit.reference`` (the NumPy
engine) works on a machine without torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RNNCell": "rnnkit.cells",
    "GRUCell": "rnnkit.cells",
    "LSTMCell": "rnnkit.cells",
    "RNN": "rnnkit.layers",
    "GRU": "rnnkit.layers",
    "LSTM": "rnnkit.layers",
    "MinGRU": "rnnkit.layers",
    "MinLSTM": "rnnkit.layers",
    "load": "rnnkit.training.checkpoint",
    "ConfigError": "rnnkit.errors",
    "DataError": "rnnkit.errors",
    "CheckpointError": "rnnkit.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name in {"reference", "cells", "layers", "data", "tasks", "training", "inspect"}:
        return import_module(f"rnnkit.{name}")
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
