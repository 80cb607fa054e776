"""Optimisers and gradient clipping for dicts of NumPy parameters, updated in place.

Both optimisers take ``step(params, grads)`` with dicts of the same keys and shapes and have a
``state_dict()`` of plain ndarrays (empty for SGD), so a trainer can save and resume them.
"""

import numpy as np


def clip_gradients(grads: dict[str, np.ndarray], clip: float) -> None:
    """Clip every gradient element to [−clip, clip], in place (min-char-rnn's np.clip)."""
    for grad in grads.values():
        np.clip(grad, -clip, clip, out=grad)


class SGD:
    """Plain gradient descent: p ← p − lr · g."""

    def __init__(self, lr: float = 0.1):
        self.lr = lr

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        for name, grad in grads.items():
            params[name] -= self.lr * grad

    def state_dict(self) -> dict[str, np.ndarray]:
        """SGD keeps no state: an empty dict."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Accepts the empty dict that :meth:`state_dict` returns."""
        if state:
            raise ValueError(f"SGD has no state to load; got keys {sorted(state)}")


class Adagrad:
    """Adagrad as in min-char-rnn: mem ← mem + g²;  p ← p − lr · g / √(mem + eps).

    Args:
        params: the parameters to optimise; the memory starts as zeros of their shapes.
        lr: learning rate.
        eps: added under the square root.
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 0.1, eps: float = 1e-8):
        self.lr = lr
        self.eps = eps
        self.memory = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update the memory and ``params`` in place from ``grads`` (same keys and shapes)."""
        for name, grad in grads.items():
            self.memory[name] += grad * grad
            params[name] -= self.lr * grad / np.sqrt(self.memory[name] + self.eps)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The accumulated squared gradients, one array per parameter (copies)."""
        return {name: mem.copy() for name, mem in self.memory.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the memory saved by :meth:`state_dict`; keys and shapes must match."""
        if set(state) != set(self.memory):
            raise ValueError(
                f"Adagrad state must have the keys {sorted(self.memory)}; got {sorted(state)}"
            )
        for name, mem in state.items():
            if mem.shape != self.memory[name].shape:
                raise ValueError(
                    f"Adagrad memory {name} must have shape {self.memory[name].shape}; "
                    f"got {mem.shape}"
                )
            self.memory[name] = np.array(mem, dtype=np.float64)
