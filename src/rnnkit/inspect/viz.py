r"""``rnnkit viz``: one pass over the text gathers everything the HTML report shows.

In a single :func:`rnnkit.inspect.activations.trace` over the text: the cell statistics for
the best cells per feature (:mod:`rnnkit.inspect.search`, without ablation), the gate
saturation counts, the five most likely next tokens after every token, and the values of the
cells the page colours by (tanh(c) for an LSTM, h otherwise) kept as float16. Then the gradient
flow over a few windows, the two plots, and :func:`rnnkit.inspect.report.render_page`.

The page holds at most ``max_values`` cell values (one byte each): every cell when the text is
short enough, else the best cells per feature first and then the cells that vary most, as many
as fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.text import token_text
from rnnkit.inspect.activations import trace
from rnnkit.inspect.features import Feature, probe_targets, token_features
from rnnkit.inspect.gradients import gradient_flow, plot_gradient_flow
from rnnkit.inspect.report import TOP_K, PageData, ShownLayer, figure_png, render_page
from rnnkit.inspect.saturation import SaturationCounter, plot_saturation
from rnnkit.inspect.search import (
    CellScore,
    CellStatistics,
    UnitGroup,
    group_values,
    rank_cells,
    unit_groups,
)
from rnnkit.inspect.steps import cell_name, gate_names
from rnnkit.inspect.text import EncodedText

# How the page is checked in a real browser (the e2e test and bench/inspect_findings.py): Debian's
# chromium, headless, started with these flags.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
MAX_VALUES = 8_000_000
"""Cell values on the page, at most (one byte each, a third more in base64)."""


def _chosen_columns(
    stats: CellStatistics, groups: Sequence[UnitGroup], best: Sequence[int], budget: int
) -> list[int]:
    """The columns on the page, sorted: the best ones, then the most varying, ``budget`` in all
    (but at least one per group, so that every layer can be picked)."""
    total = stats.sum_x.numel()
    if budget >= total:
        return list(range(total))
    variance = stats.sum_xx / stats.count - (stats.sum_x / stats.count).square()  # (K,)
    by_variance = variance.argsort(descending=True).tolist()
    chosen = dict.fromkeys(best[:budget])
    for group, start in _starts(groups):
        if not any(start <= c < start + group.size for c in chosen):
            chosen[next(c for c in by_variance if start <= c < start + group.size)] = None
    for column in by_variance:
        if len(chosen) >= budget:
            break
        chosen.setdefault(column, None)
    return sorted(chosen)


def _starts(groups: Sequence[UnitGroup]) -> list[tuple[UnitGroup, int]]:
    """Each group with its first column."""
    out, start = [], 0
    for group in groups:
        out.append((group, start))
        start += group.size
    return out


def _page_layers(
    stats: CellStatistics,
    groups: Sequence[UnitGroup],
    best: Sequence[CellScore],
    shown: Tensor,
    budget: int,
) -> list[ShownLayer]:
    """The cells of each layer on the page, with their values from ``shown`` (N, K).

    ``groups`` has one group per layer (``unit_groups(model, "shown")``), so page layer l is
    model layer l."""
    starts = _starts(groups)
    best_columns = [starts[s.layer][1] + s.cell for s in best]
    chosen = _chosen_columns(stats, groups, best_columns, budget)
    layers = []
    for group, start in starts:
        cells = [c - start for c in chosen if start <= c < start + group.size]
        kind = "tanh(c)" if group.kind == "c" else "h"
        values = shown[:, [start + c for c in cells]].float().t().numpy()  # (C, N)
        layers.append(ShownLayer(f"layer {group.layer + 1} · {kind}", group.size, cells, values))
    return layers


def _figures(
    model: nn.Module, ids: Tensor, saturation: SaturationCounter | None, windows: int
) -> list[tuple[str, bytes, str]]:
    """The saturation plot (where the cell has gates) and the gradient flow plot, as PNG."""
    figures = []
    if saturation is not None:
        png = figure_png(plot_saturation(saturation.result()))
        caption = (
            "Each point is one unit's gate: the fraction of steps it spent below 0.1 (x) and "
            "above 0.9 (y)."
        )
        figures.append(("Gate saturation", png, caption))
    if ids.numel() >= 3:
        flow = gradient_flow(model, ids, windows=windows)
        caption = (
            f"Mean ‖∂loss_T/∂h_t‖ against the distance T − t, over {flow.windows} positions "
            "of this text."
        )
        figures.append(("Gradient flow", figure_png(plot_gradient_flow(flow)), caption))
    return figures


def _vocab_text(model: nn.Module) -> list[str]:
    """How each token id reads on the page."""
    tokens = model.vocab.tokens
    return [token_text(t, None, model.level) or t for t in tokens]


def build_report(
    model: nn.Module,
    text: EncodedText,
    features: Sequence[Feature],
    *,
    title: str,
    max_values: int = MAX_VALUES,
    best: int = 5,
    page_size: int = 4000,
    streams: int | None = None,
    gradient_windows: int = 16,
) -> str:
    """The HTML report of ``model`` (a :class:`rnnkit.tasks.lm.LanguageModel` with its
    vocabulary) over ``text``: see the module doc. Returns the page as a string."""
    count = len(text)
    values = token_features(text.pieces, features)  # (N, M)
    groups = unit_groups(model, "shown")
    stats = CellStatistics(groups, values, probe_targets(values, features))
    saturation = SaturationCounter(model) if gate_names(model.rnn) else None
    shown = torch.empty(count, sum(g.size for g in groups), dtype=torch.float16)  # (N, K)
    top_ids = torch.zeros(count, TOP_K, dtype=torch.int32)  # (N, K)
    top_probs = torch.zeros(count, TOP_K)  # (N, K)
    next_log_prob = torch.zeros(count, dtype=torch.float64)  # (N,)
    ids = text.ids
    for chunk in trace(model, ids, streams=streams, gates=saturation is not None, logits=True):
        positions = chunk.positions.cpu()  # (n,)
        stats.update(chunk)
        if saturation is not None:
            saturation.update(chunk)
        shown[positions] = group_values(chunk, groups).cpu().half()  # (n, K)
        log_probs = F.log_softmax(chunk.logits.float(), dim=-1).cpu()  # (n, V)
        best_lp, best_ids = log_probs.topk(min(TOP_K, log_probs.shape[1]), dim=1)  # (n, K)
        top_ids[positions, : best_ids.shape[1]] = best_ids.int()
        top_probs[positions, : best_ids.shape[1]] = best_lp.exp()
        scored = positions < count - 1  # (n,)
        after = ids[positions[scored] + 1].unsqueeze(1)  # (s, 1)
        next_log_prob[positions[scored]] = log_probs[scored].gather(1, after).squeeze(1).double()

    ranking = rank_cells(stats, features, top=best)
    by_feature: dict[str, list[CellScore]] = {}
    for score in ranking.cells:
        by_feature.setdefault(score.feature, []).append(score)
    layers = _page_layers(stats, groups, ranking.cells, shown, max(1, max_values // count))
    first = ranking.cells[0] if ranking.cells else None
    initial = (first.layer, first.cell) if first else (0, layers[0].cells[0])
    figures = _figures(model, ids, saturation, gradient_windows)
    scored = next_log_prob[: count - 1]
    loss = float(-scored.mean()) if count > 1 else math.nan
    config = model.config
    summary = (
        f"{cell_name(model.rnn)} · {config.num_layers} × {config.hidden_size} · "
        f"{count:,} {text.level} tokens · loss {loss:.3f} nats/token"
        + (f" ({loss / math.log(2):.3f} bits per character)" if text.level == "char" else "")
    )
    notes = [
        "Each token is coloured by the chosen cell's value after the model read it; hover for "
        "the model's next-token predictions.",
    ]
    if text.unknown:
        notes.append(
            f"{sum(text.unknown.values())} tokens are not in the model's vocabulary "
            "and were read as <unk>."
        )
    on_page = sum(len(layer.cells) for layer in layers)
    if on_page < stats.sum_x.numel():
        notes.append(
            f"The page holds {on_page} of {stats.sum_x.numel()} cells (the best per "
            "feature, then those that vary most); a shorter text holds more."
        )
    if ranking.skipped:
        notes.append(f"Constant on this text, so not ranked: {', '.join(ranking.skipped)}.")
    data = PageData(
        title=title,
        summary=summary,
        pieces=text.pieces,
        vocab=_vocab_text(model),
        layers=layers,
        top_ids=top_ids.numpy(),
        top_probs=top_probs.numpy(),
        next_prob=np.append(scored.exp().numpy(), 0.0),
        best=list(by_feature.items()),
        baselines=ranking.probe_baselines,
        initial=initial,
        figures=figures,
        notes=notes,
        page_size=page_size,
    )
    return render_page(data)
