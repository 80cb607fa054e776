r"""Gradient flow: how strongly the loss at step T reaches back to the hidden state at step t.

For ``windows`` positions T spread over the text, the model reads ``warmup`` tokens without
gradients (to bring its state where it would be), then ``distance + 1`` tokens with them, and
the loss of its prediction at T (of the token after T) is differentiated with respect to each
layer's h_t, t = T − distance … T: the total derivative, through the next step and the next
layer both (:class:`rnnkit.inspect.steps.LayerSteps` ``step_h``). The result is the mean over the
windows of ‖∂loss_T/∂h_t‖ against the distance T − t. A vanilla RNN's falls by orders of
magnitude within tens of steps (Bengio et al. 1994; Pascanu et al. 2013); an LSTM's cell path
keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from rnnkit.errors import DataError
from rnnkit.inspect.steps import cell_name, initial_states, run_model

CELL_COLOURS = {
    "rnn": "#d62728",
    "gru": "#2ca02c",
    "lstm": "#1f77b4",
    "mingru": "#9467bd",
    "minlstm": "#8c564b",
}


@dataclass(frozen=True)
class GradientFlow:
    """Mean ‖∂loss_T/∂h_t‖ per layer (rows) and distance T − t = 0 … D (columns).

    Attributes:
        norms: (L, D + 1) float64.
        windows: how many positions T were averaged.
        cell: the model's cell.
    """

    norms: np.ndarray
    windows: int
    cell: str

    @property
    def distances(self) -> list[int]:
        return list(range(self.norms.shape[1]))

    def to_dict(self) -> dict[str, Any]:
        """``cell``, ``windows``, ``distances`` and per layer the ``norms`` and the ``relative``
        norms (divided by the one at distance 0)."""
        layers = []
        for index, row in enumerate(self.norms):
            relative = row / row[0] if row[0] > 0 else np.zeros_like(row)
            layers.append(
                {
                    "layer": index,
                    "norms": [float(f"{v:.6g}") for v in row],
                    "relative": [float(f"{v:.6g}") for v in relative],
                }
            )
        return {
            "cell": self.cell,
            "windows": self.windows,
            "distances": self.distances,
            "layers": layers,
        }


def gradient_flow(
    model: nn.Module,
    ids: Tensor,
    *,
    distance: int = 100,
    windows: int = 32,
    warmup: int = 50,
) -> GradientFlow:
    """‖∂loss_T/∂h_t‖ against T − t for a language model over ids (N,) (see the module doc).

    Windows T are evenly spread over the text; a short text gets fewer windows, a shorter
    warm-up and, below ``distance + 2`` tokens, a shorter distance.

    Raises:
        DataError: fewer than 3 tokens.
    """
    count = ids.numel()
    if count < 3:
        raise DataError(f"gradient flow needs at least 3 tokens; the text has {count}")
    model.eval()
    distance = min(distance, count - 2)
    warmup = max(0, min(warmup, count - 2 - distance))
    ends = torch.linspace(distance + warmup, count - 2, windows).round().long().unique()  # (W,)
    device = model.head.weight.device
    ids = ids.to(device)
    offsets = torch.arange(-distance - warmup, 1, device=device)  # (warmup + D + 1,)
    tokens = ids[ends.to(device).unsqueeze(1) + offsets]  # (W, warmup + D + 1)
    targets = ids[ends.to(device) + 1]  # (W,)

    states = initial_states(model.rnn, tokens.shape[0], model.head.weight)
    with torch.no_grad():
        if warmup:
            _, _, states = run_model(model, tokens[:, :warmup], states, logits=False)
    with torch.enable_grad():
        per_layer, logits, _ = run_model(model, tokens[:, warmup:], states, step_h=True)
        loss = F.cross_entropy(logits[:, -1].float(), targets, reduction="sum")
        steps = [h for layer in per_layer for h in layer.step_h]  # L·(D + 1) × (W, H)
        grads = torch.autograd.grad(loss, steps, allow_unused=True)
    norms = np.zeros((len(per_layer), distance + 1))
    for index, grad in enumerate(grads):
        layer, step = divmod(index, distance + 1)
        if grad is not None:  # a step nothing after it reads, e.g. a layer's last
            norms[layer, distance - step] = grad.norm(dim=1).mean().item()
    return GradientFlow(norms=norms, windows=int(ends.numel()), cell=cell_name(model.rnn))


def plot_gradient_flow(flow: GradientFlow, title: str | None = None) -> Figure:
    """One model's mean ‖∂loss_T/∂h_t‖ against T − t, one line per layer, log scale."""
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.subplots()
    colour = CELL_COLOURS.get(flow.cell, "#333333")
    count = flow.norms.shape[0]
    for layer, row in enumerate(flow.norms):
        alpha = 0.45 + 0.55 * (layer + 1) / count
        ax.semilogy(
            flow.distances,
            _positive(row),
            color=colour,
            alpha=alpha,
            lw=1.8,
            label=f"layer {layer + 1}",
            ls="-" if layer == count - 1 else "--",
        )
    _label(ax)
    ax.legend(fontsize=9)
    ax.set_title(title or f"Gradient flow in the {flow.cell} ({flow.windows} positions)")
    return figure


def plot_gradient_comparison(panels: Mapping[str, Mapping[str, GradientFlow]]) -> Figure:
    """Side by side, one panel per title (e.g. untrained, trained), one line per model: the
    last layer's mean ‖∂loss_T/∂h_t‖ against T − t, on one shared log scale."""
    figure = Figure(figsize=(5.2 * len(panels) + 0.4, 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, flows) in zip(axes, panels.items(), strict=True):
        for name, flow in flows.items():
            colour = CELL_COLOURS.get(flow.cell)
            ax.semilogy(flow.distances, _positive(flow.norms[-1]), lw=1.8, color=colour, label=name)
        _label(ax)
        ax.set_title(title)
        ax.legend(fontsize=9)
    axes[0].set_ylabel("mean ‖∂loss_T / ∂h_t‖")
    for ax in axes[1:]:
        ax.set_ylabel("")
    figure.suptitle("Gradient flow: how far back the loss reaches", fontsize=12)
    return figure


def _positive(row: np.ndarray) -> np.ndarray:
    """Zeros (gradients below float range) as NaN, so that a log axis leaves a gap."""
    return np.where(row > 0, row, np.nan)


def _label(ax: Any) -> None:
    ax.set_xlabel("distance T − t (steps)")
    ax.set_ylabel("mean ‖∂loss_T / ∂h_t‖")
    ax.grid(alpha=0.3, which="both", lw=0.5)
