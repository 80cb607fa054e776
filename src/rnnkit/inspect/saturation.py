r"""Gate saturation (Karpathy, Johnson & Fei-Fei 2015, section 4.2).

A σ gate is *left-saturated* at a step when its value is below 0.1 and *right-saturated* when
above 0.9. For every layer, gate and unit, :class:`SaturationCounter` counts the fraction of
steps spent in each; :func:`plot_saturation` draws the paper's scatter, one panel per layer and
one point per unit and gate: a unit near the top left is a gate that is almost always open
(an LSTM forget gate remembering), near the bottom right one that is almost always shut, near
the origin one that stays in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.inspect.activations import Trace, trace
from rnnkit.inspect.steps import cell_name, gate_names

LEFT, RIGHT = 0.1, 0.9
GATE_COLOURS = {"i": "#1b9e77", "f": "#d95f02", "o": "#7570b3", "r": "#e7298a", "z": "#66a61e"}


@dataclass(frozen=True)
class Saturation:
    """Per layer, gate name -> (left (H,), right (H,)): each unit's fraction of steps below
    0.1 and above 0.9. ``steps`` is how many steps were counted; ``cell`` the cell's name."""

    layers: list[dict[str, tuple[np.ndarray, np.ndarray]]]
    steps: int
    cell: str

    def to_dict(self) -> dict[str, Any]:
        """Per layer and gate: the mean fractions, how many units are saturated more than
        half the time on either side, and the per-unit fractions."""
        layers = []
        for index, gates in enumerate(self.layers):
            summary = {}
            for name, (left, right) in gates.items():
                summary[name] = {
                    "left_mean": round(float(left.mean()), 6),
                    "right_mean": round(float(right.mean()), 6),
                    "units_mostly_left": int((left > 0.5).sum()),
                    "units_mostly_right": int((right > 0.5).sum()),
                    "left": [round(float(v), 6) for v in left],
                    "right": [round(float(v), 6) for v in right],
                }
            layers.append({"layer": index, "gates": summary})
        return {"cell": self.cell, "steps": self.steps, "layers": layers}


class SaturationCounter:
    """Counts, chunk by chunk, the steps each gate unit spends below 0.1 and above 0.9."""

    def __init__(self, model: nn.Module) -> None:
        self.names = gate_names(model.rnn)
        self.cell = cell_name(model.rnn)
        if not self.names:
            raise ConfigError(
                f"gate saturation needs gates, and the {self.cell} cell has none; it works on "
                "gru, lstm, mingru and minlstm models"
            )
        self.steps = 0
        self.counts: list[dict[str, tuple[Tensor, Tensor]]] = []

    def update(self, chunk: Trace) -> None:
        """Add a chunk of :func:`rnnkit.inspect.activations.trace` run with ``gates=True``."""
        if not self.counts:
            self.counts = [
                {g: (_zeros(layer.gates[g]), _zeros(layer.gates[g])) for g in self.names}
                for layer in chunk.layers
            ]
        self.steps += chunk.positions.numel()
        for layer, counts in zip(chunk.layers, self.counts, strict=True):
            for name in self.names:
                gate = layer.gates[name]  # (n, H)
                left, right = counts[name]
                counts[name] = (
                    left + (gate < LEFT).sum(0).cpu(),
                    right + (gate > RIGHT).sum(0).cpu(),
                )  # (H,) each

    def result(self) -> Saturation:
        layers = [
            {
                name: ((left / self.steps).numpy(), (right / self.steps).numpy())
                for name, (left, right) in c.items()
            }
            for c in self.counts
        ]
        return Saturation(layers=layers, steps=self.steps, cell=self.cell)


def _zeros(gate: Tensor) -> Tensor:
    return torch.zeros(gate.shape[1], dtype=torch.long)  # (H,)


def gate_saturation(model: nn.Module, ids: Tensor, *, streams: int | None = None) -> Saturation:
    """The saturation of every gate of ``model`` (a language model) over ids (N,).

    Raises:
        ConfigError: the cell has no gates (a vanilla RNN).
    """
    counter = SaturationCounter(model)
    for chunk in trace(model, ids, streams=streams, gates=True):
        counter.update(chunk)
    return counter.result()


def plot_saturation(saturation: Saturation) -> Figure:
    """The 2015 paper's scatter: per layer, each unit's left- against right-saturated fraction."""
    count = len(saturation.layers)
    figure = Figure(figsize=(3.6 * count + 0.6, 3.9), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False, sharex=True, sharey=True)[0]
    for index, (ax, gates) in enumerate(zip(axes, saturation.layers, strict=True)):
        ax.plot([0, 1], [1, 0], color="#bbbbbb", lw=0.8, zorder=0)  # left + right ≤ 1
        for name, (left, right) in gates.items():
            ax.scatter(
                left,
                right,
                s=9,
                alpha=0.55,
                color=GATE_COLOURS.get(name, "#444444"),
                label=f"{name} gate",
                edgecolors="none",
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"layer {index + 1}", fontsize=11)
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("fraction right-saturated (> 0.9)")
    axes[-1].legend(loc="upper right", fontsize=8, framealpha=0.9, markerscale=1.8)
    figure.suptitle(
        f"Gate saturation of the {saturation.cell} over {saturation.steps:,} steps", fontsize=12
    )
    return figure
