r"""Interpretable-cell search: which hidden cells track which text features.

Every cell (``h`` of each layer, and ``tanh(c)`` of an LSTM's) is scored against every feature
(:mod:`rnnkit.inspect.features`) by

* the Pearson correlation of its value after each token with the feature there, over the whole
  text, from running sums (:class:`CellStatistics` sees the text chunk by chunk); and
* the accuracy of the best one-cell threshold probe, ``value > θ`` or ``value < θ`` predicting
  the feature's probe target, fitted and measured on up to ``sample`` positions spread evenly
  over the text (an upper bound for a held-out probe, by a parameter and a sign). The probe is
  fitted to each feature's :data:`PROBE_CANDIDATES` cells of highest |correlation| (every cell
  of a model that has no more): a threshold on a cell that barely correlates with a feature
  rarely predicts it, and sorting every cell of a 2x512 LSTM at every sampled position would
  cost more than reading the text.

:func:`find_cells` ranks the cells per feature by |correlation| (and, separately, by probe
accuracy), and for the best few measures the change in loss when the cell is held at its mean
(:mod:`rnnkit.inspect.ablation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.inspect.ablation import ablation_deltas
from rnnkit.inspect.activations import Trace, trace
from rnnkit.inspect.features import Feature, probe_targets, token_features
from rnnkit.inspect.steps import has_cell_state
from rnnkit.inspect.text import EncodedText

Kind = Literal["h", "c"]
SAMPLE = 10_000
"""Positions the threshold probe is fitted on, at most."""
PROBE_CANDIDATES = 128
"""Cells per feature (those of highest |correlation|) the threshold probe is fitted to."""


@dataclass(frozen=True)
class UnitGroup:
    """The cells of one layer of one kind: ``h``, or ``c`` (read as tanh(c)) of an LSTM."""

    layer: int
    kind: Kind
    size: int


def unit_groups(model: nn.Module, kinds: Literal["all", "shown"] = "all") -> list[UnitGroup]:
    """The groups of cells to score: ``"all"`` is h of every layer and an LSTM's tanh(c) too;
    ``"shown"`` is what the HTML report colours by: tanh(c) for an LSTM, h otherwise."""
    rnn = model.rnn
    out_size = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    groups = []
    for layer in range(rnn.num_layers):
        if not has_cell_state(rnn) or kinds == "all":
            groups.append(UnitGroup(layer, "h", out_size))
        if has_cell_state(rnn):
            groups.append(UnitGroup(layer, "c", rnn.hidden_size))
    return groups


def group_values(chunk: Trace, groups: Sequence[UnitGroup]) -> Tensor:
    """The groups' values side by side: (n, K), K the total of their sizes; c as tanh(c)."""
    parts = []
    for group in groups:
        layer = chunk.layers[group.layer]
        parts.append(layer.h if group.kind == "h" else torch.tanh(layer.c))  # (n, size)
    return torch.cat(parts, dim=1)  # (n, K)


class CellStatistics:
    """Running sums for the correlations, the group means and the probe's sample of positions.

    Args:
        groups: the cells to score.
        values: (N, M) every feature at every position.
        targets: (N, M) bool, the probe targets (:func:`rnnkit.inspect.features.probe_targets`).
        sample: at most this many positions, evenly spaced, are kept for the probe.
    """

    def __init__(
        self, groups: Sequence[UnitGroup], values: Tensor, targets: Tensor, sample: int = SAMPLE
    ) -> None:
        self.groups = list(groups)
        self.values, self.targets = values, targets
        size = sum(g.size for g in groups)
        self.stride = max(1, math.ceil(values.shape[0] / sample))
        self.count = 0
        # Sums of x − shift, shift being the first chunk's means: the sums stay small, so each
        # chunk's can be taken in float32 and the variance suffers no cancellation.
        self.shift: Tensor | None = None  # (K,)
        self.sum_x = torch.zeros(size, dtype=torch.float64)  # (K,)
        self.sum_xx = torch.zeros(size, dtype=torch.float64)  # (K,)
        self.sum_xf = torch.zeros(size, values.shape[1], dtype=torch.float64)  # (K, M)
        self._raw_c: list[list[Tensor | None]] = []  # per chunk, per group: Σc of c groups
        self._sample: list[Tensor] = []
        self._sample_positions: list[Tensor] = []

    def update(self, chunk: Trace) -> None:
        """Add a chunk of :func:`rnnkit.inspect.activations.trace`."""
        x = group_values(chunk, self.groups)  # (n, K)
        if self.shift is None:
            self.shift = x.mean(0)  # (K,)
        centred = x - self.shift  # (n, K)
        positions = chunk.positions.cpu()  # (n,)
        features = self.values[positions].to(x.device)  # (n, M)
        self.count += x.shape[0]
        self.sum_x += centred.sum(0).double().cpu()
        self.sum_xx += centred.square().sum(0).double().cpu()
        self.sum_xf += (centred.t() @ features).double().cpu()  # (K, M)
        raw = [  # c itself, for holding it at its mean; h is already in sum_x
            chunk.layers[g.layer].c.sum(0).double().cpu() if g.kind == "c" else None
            for g in self.groups
        ]
        self._raw_c.append(raw)
        chosen = positions % self.stride == 0  # (n,)
        self._sample.append(x.cpu()[chosen])  # (s, K)
        self._sample_positions.append(positions[chosen])  # (s,)

    def unit(self, column: int) -> tuple[UnitGroup, int]:
        """The group and the index within it of column ``column``."""
        for group in self.groups:
            if column < group.size:
                return group, column
            column -= group.size
        raise IndexError(f"column {column} is beyond the {self.sum_x.numel()} cells")

    def means(self) -> Tensor:
        """(K,) each cell's mean over the text (of c itself for the c groups)."""
        mean_x = self.shift.cpu().double() + self.sum_x / self.count  # (K,)
        parts = []
        for index, (group, start) in enumerate(self._starts()):
            if group.kind == "c":
                parts.append(sum(chunk[index] for chunk in self._raw_c) / self.count)  # (size,)
            else:
                parts.append(mean_x[start : start + group.size])  # (size,)
        return torch.cat(parts).float()  # (K,)

    def _starts(self) -> list[tuple[UnitGroup, int]]:
        out, start = [], 0
        for group in self.groups:
            out.append((group, start))
            start += group.size
        return out

    def correlations(self) -> Tensor:
        """(K, M) Pearson correlation of each cell with each feature; 0 where either is constant."""
        n = self.count
        mean_x = self.sum_x / n  # (K,) of x − shift, as all three sums
        features = self.values.double()  # (N, M)
        mean_f = features.mean(0)  # (M,)
        var_x = (self.sum_xx / n - mean_x.square()).clamp(min=0)  # (K,)
        var_f = features.var(0, correction=0)  # (M,)
        cov = self.sum_xf / n - mean_x.unsqueeze(1) * mean_f  # (K, M)
        scale = (var_x.unsqueeze(1) * var_f).sqrt()  # (K, M)
        ok = scale > 1e-12
        return torch.where(ok, cov / scale.clamp(min=1e-300), 0.0).clamp(-1, 1)  # (K, M)

    def sample_targets(self) -> Tensor:
        """(s, M) bool, the probe targets at the sampled positions."""
        return self.targets[torch.cat(self._sample_positions)]

    def probe_accuracy(self, corr: Tensor, candidates: int = PROBE_CANDIDATES) -> Tensor:
        """(K, M) accuracy of the best threshold probe, on the sample, for each feature's
        ``candidates`` cells of highest |correlation| ``corr`` (K, M); -1 for the others."""
        x = torch.cat(self._sample)  # (s, K)
        targets = self.sample_targets()  # (s, M)
        out = torch.full(corr.shape, -1.0)  # (K, M)
        for m in range(corr.shape[1]):
            columns = corr[:, m].abs().topk(min(candidates, corr.shape[0])).indices  # (C,)
            out[columns, m] = probe_accuracy(x[:, columns], targets[:, m : m + 1])[:, 0]
        return out


def probe_accuracy(x: Tensor, targets: Tensor) -> Tensor:
    """Best accuracy of ``x[:, k] > θ`` or ``x[:, k] < θ`` as a predictor of ``targets[:, m]``.

    Thresholds lie between distinct values (or below / above all of them). x (s, K) float,
    targets (s, M) bool -> (K, M).
    """
    values = x.double().numpy()  # (s, K)
    labels = targets.numpy()  # (s, M)
    count = values.shape[0]
    j = np.arange(1, count + 1)  # (s,) values at or below each cut
    out = torch.empty(values.shape[1], labels.shape[1])  # (K, M)
    for k in range(values.shape[1]):
        ordered = np.sort(values[:, k])  # (s,)
        # A cut after the j lowest values is a threshold only where the next value is larger.
        cut = np.append(ordered[1:] > ordered[:-1], True)  # (s,)
        for m in range(labels.shape[1]):
            positives = np.sort(values[labels[:, m], k])  # (P,)
            below = np.searchsorted(positives, ordered, side="right")  # (s,) positives ≤ cut
            above_is_one = (positives.size - below + (j - below)) / count  # (s,)
            accuracy = np.maximum(above_is_one, 1 - above_is_one)[cut].max()
            none_below = max(positives.size, count - positives.size) / count  # θ below all
            out[k, m] = max(float(accuracy), none_below)
    return out


@dataclass(frozen=True)
class CellScore:
    """How well one cell tracks one feature.

    ``kind`` is ``"h"`` or ``"c"`` (an LSTM's tanh(c)); ``ablation_delta_loss`` is the loss
    change in nats per token with the cell held at its mean (None where not measured).
    """

    feature: str
    layer: int
    kind: Kind
    cell: int
    corr: float
    probe_accuracy: float
    ablation_delta_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CellSearch:
    """The result of :func:`find_cells`.

    Attributes:
        cells: per feature (in order), the best cells by |correlation|, best first.
        cells_by_probe: per feature, the best cells by probe accuracy, best first.
        probe_baselines: per feature, the accuracy of always guessing the more frequent
            value of its probe target (on the probe's sample): what a probe must beat.
        skipped: features constant on this text (nothing to correlate with).
        tokens: positions scored.
    """

    cells: list[CellScore]
    cells_by_probe: list[CellScore]
    probe_baselines: dict[str, float]
    skipped: list[str]
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        """``{"cells": [...], "cells_by_probe": [...], "probe_baselines": {...},
        "skipped_features": [...], "tokens"}``."""
        return {
            "cells": [s.to_dict() for s in self.cells],
            "cells_by_probe": [s.to_dict() for s in self.cells_by_probe],
            "probe_baselines": self.probe_baselines,
            "skipped_features": self.skipped,
            "tokens": self.tokens,
        }


def rank_cells(
    stats: CellStatistics,
    features: Sequence[Feature],
    *,
    top: int,
    deltas: dict[int, float] | None = None,
) -> CellSearch:
    """Rank the cells of ``stats`` per feature; ``deltas`` maps columns to ablation results."""
    corr = stats.correlations()  # (K, M)
    probe = stats.probe_accuracy(corr, max(top, PROBE_CANDIDATES))  # (K, M)
    var_f = stats.values.var(0, correction=0)  # (M,)
    deltas = deltas or {}
    cells, by_probe, skipped = [], [], []
    for m, feature in enumerate(features):
        if var_f[m] <= 0:
            skipped.append(feature.name)
            continue

        def score(column: int, m: int = m, name: str = feature.name) -> CellScore:
            group, index = stats.unit(column)
            return CellScore(
                name,
                group.layer,
                group.kind,
                index,
                round(float(corr[column, m]), 6),
                round(float(probe[column, m]), 6),
                deltas.get(column),
            )

        k = min(top, corr.shape[0])
        cells += [score(int(c)) for c in corr[:, m].abs().topk(k).indices]
        by_probe += [score(int(c)) for c in probe[:, m].topk(k).indices]
    share = stats.sample_targets().float().mean(0)  # (M,) of the targets that are True
    baselines = {
        f.name: round(float(torch.maximum(share[m], 1 - share[m])), 6)
        for m, f in enumerate(features)
        if f.name not in skipped
    }
    return CellSearch(cells, by_probe, baselines, skipped, stats.count)


def best_columns(stats: CellStatistics, features: Sequence[Feature], per_feature: int) -> list[int]:
    """The ``per_feature`` best columns by |correlation| of each non-constant feature, once each."""
    corr = stats.correlations()  # (K, M)
    var_f = stats.values.var(0, correction=0)  # (M,)
    columns: dict[int, None] = {}
    for m in range(len(features)):
        if var_f[m] > 0 and per_feature > 0:
            k = min(per_feature, corr.shape[0])
            columns |= dict.fromkeys(int(c) for c in corr[:, m].abs().topk(k).indices)
    return list(columns)


def find_cells(
    model: nn.Module,
    text: EncodedText,
    features: Sequence[Feature],
    *,
    top: int = 10,
    ablate: int = 3,
    ablation_tokens: int = 2000,
    streams: int | None = None,
    sample: int = SAMPLE,
) -> CellSearch:
    """Score every cell of ``model`` against ``features`` over ``text`` (see the module doc).

    Args:
        model: a :class:`rnnkit.tasks.lm.LanguageModel`.
        top: cells listed per feature.
        ablate: the best this many per feature (by |correlation|) are ablated, over the first
            ``ablation_tokens`` tokens of the text; 0 skips ablation.
        streams: see :mod:`rnnkit.inspect.activations`.
        sample: positions for the probe, at most.
    """
    values = token_features(text.pieces, features)  # (N, M)
    stats = CellStatistics(unit_groups(model), values, probe_targets(values, features), sample)
    for chunk in trace(model, text.ids, streams=streams):
        stats.update(chunk)
    deltas: dict[int, float] = {}
    columns = best_columns(stats, features, ablate)
    if columns and text.ids.numel() >= 2:
        means = stats.means()  # (K,)
        units = [(*stats.unit(c), float(means[c])) for c in columns]
        window = text.ids[: max(2, ablation_tokens)]  # (A,)
        found = ablation_deltas(model, window, [(g.layer, g.kind, i, v) for g, i, v in units])
        deltas = {c: round(d, 6) for c, d in zip(columns, found, strict=True)}
    return rank_cells(stats, features, top=top, deltas=deltas)
