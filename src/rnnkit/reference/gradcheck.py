"""Centered finite differences, to check the hand-written gradients of a ``CharRNN``."""

from collections.abc import Callable

import numpy as np

from rnnkit.reference.model import CharRNN, PublicState


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / (‖a‖ + ‖b‖) over all elements; 0 when both are zero. Any equal shapes."""
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """(f(x + eps·e_k) − f(x − eps·e_k)) / 2eps for every element k of ``x``.

    ``x`` is perturbed in place and restored; ``f`` reads it. Shapes: x (...) -> (...).
    """
    grad = np.zeros_like(x)  # (...) like x
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)  # views, (x.size,)
    for k in range(flat_x.size):
        original = flat_x[k]
        flat_x[k] = original + eps
        plus = f()
        flat_x[k] = original - eps
        minus = f()
        flat_x[k] = original
        flat_grad[k] = (plus - minus) / (2 * eps)
    return grad


def gradient_check(
    model: CharRNN,
    inputs: np.ndarray,
    targets: np.ndarray,
    h0: PublicState | None = None,
    eps: float = 1e-5,
) -> dict[str, float]:
    """Relative error between :meth:`CharRNN.bptt` and finite differences of :meth:`CharRNN.loss`.

    Returns one entry per parameter name and one per initial-state array: ``"h0"``, plus
    ``"c0"`` for lstm. Use float64 and small problems (each element costs two forward passes);
    errors near 1e-9 are expected, above 1e-6 mean a wrong gradient.

    Shapes: inputs, targets (T,) or (B, T) int; h0 None (zeros) or as ``model.init_state``.
    """
    batch_size = np.shape(inputs)[0] if np.ndim(inputs) == 2 else None
    if h0 is None:
        h0 = model.init_state(batch_size)
    lstm = model.cell.state_len == 2
    state_arrays = [np.array(part, dtype=np.float64) for part in (h0 if lstm else (h0,))]
    state = tuple(state_arrays) if lstm else state_arrays[0]
    result = model.bptt(inputs, targets, state)

    def loss() -> float:
        return model.loss(inputs, targets, state)

    errors = {
        name: relative_error(result.grads[name], numerical_gradient(loss, model.params[name], eps))
        for name in model.params
    }
    analytic_state = result.d_h0 if lstm else (result.d_h0,)
    for name, array, analytic in zip(("h0", "c0"), state_arrays, analytic_state, strict=False):
        errors[name] = relative_error(analytic, numerical_gradient(loss, array, eps))
    return errors
