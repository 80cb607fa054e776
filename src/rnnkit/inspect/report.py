"""The HTML page of ``rnnkit viz``: one self-contained file, no network, no server.

:func:`render_page` writes the page around :class:`PageData`: the CSS and JavaScript of this
package (``report.css``, ``report.js``) inline, the data as one JSON block (cell values as int8
with one scale per cell, next-token predictions as uint16 ids and uint8 probabilities, each
base64), and the plots as PNG ``data:`` images. The script renders the text a page at a time
(``page_size`` tokens), so a text of 100,000 characters stays responsive.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
from matplotlib.figure import Figure

from rnnkit.inspect.search import CellScore

TOP_K = 5
"""Next-token predictions shown on hover."""


@dataclass(frozen=True)
class ShownLayer:
    """The cells of one layer that the page can colour by.

    Attributes:
        name: e.g. ``"layer 1 · tanh(c)"``.
        size: how many cells the layer has (``cells`` may be fewer).
        cells: the indices of the cells on the page.
        values: (len(cells), N) float32, each cell's value after every token.
    """

    name: str
    size: int
    cells: list[int]
    values: np.ndarray


@dataclass(frozen=True)
class PageData:
    """Everything on the page.

    Attributes:
        title, summary: the heading and the line under it.
        pieces: N strings, the text of each token.
        vocab: the text of each token id (for the predictions).
        layers: the cells to colour by, per layer.
        top_ids: (N, K) the K most likely next tokens after each token.
        top_probs: (N, K) their probabilities.
        next_prob: (N,) the probability given to the token that came next (0 for the last).
        best: per feature, its best cells (shown as a list to jump to).
        baselines: per feature, the accuracy of always guessing its more frequent value.
        initial: (layer, cell) shown first.
        figures: (title, PNG bytes, caption) of each plot.
        notes: lines of small print under the text.
        page_size: tokens per page.
    """

    title: str
    summary: str
    pieces: list[str]
    vocab: list[str]
    layers: list[ShownLayer]
    top_ids: np.ndarray
    top_probs: np.ndarray
    next_prob: np.ndarray
    best: list[tuple[str, list[CellScore]]]
    baselines: dict[str, float]
    initial: tuple[int, int]
    figures: list[tuple[str, bytes, str]]
    notes: list[str]
    page_size: int = 4000


def figure_png(figure: Figure, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, int8 values and the scale that maps 127 back: (C, N) -> (C, N) int8, (C,)."""
    scales = np.abs(values).max(axis=1, initial=0.0).clip(min=1e-6)  # (C,)
    q = np.rint(values / scales[:, None] * 127).clip(-127, 127).astype(np.int8)  # (C, N)
    return q, scales


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _payload(data: PageData) -> dict[str, object]:
    layers = []
    for layer in data.layers:
        q, scales = quantize(layer.values.astype(np.float32))
        layers.append(
            {
                "name": layer.name,
                "size": layer.size,
                "cells": layer.cells,
                "scales": [float(f"{s:.5g}") for s in scales],
                "values": _b64(q),
            }
        )
    best = [
        {
            "feature": feature,
            "baseline": data.baselines.get(feature),
            "cells": [
                {"layer": s.layer, "cell": s.cell, "corr": s.corr, "probe": s.probe_accuracy}
                for s in scores
            ],
        }
        for feature, scores in data.best
    ]
    return {
        "pieces": data.pieces,
        "vocab": data.vocab,
        "layers": layers,
        "top_k": int(data.top_ids.shape[1]),
        "top_ids": _b64(data.top_ids.astype("<u2")),
        "top_probs": _b64(np.rint(data.top_probs * 255).clip(0, 255).astype(np.uint8)),
        "next_prob": _b64(np.rint(data.next_prob * 255).clip(0, 255).astype(np.uint8)),
        "best": best,
        "initial": {"layer": data.initial[0], "cell": data.initial[1]},
        "page_size": data.page_size,
    }


def _asset(name: str) -> str:
    return resources.files("rnnkit.inspect").joinpath(name).read_text(encoding="utf-8")


def render_page(data: PageData) -> str:
    """The HTML page (a string) for ``data``; see the module doc."""
    payload = json.dumps(_payload(data), ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # a JSON string never ends the <script> block
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>"
        for title, png, caption in data.figures
    )
    plots = f'<section class="card plots">{figures}</section>' if figures else ""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(data.title)}</title>
<style>
{_asset("report.css")}
</style>
</head>
<body>
<header>
<h1>{html.escape(data.title)}</h1>
<div class="meta">{html.escape(data.summary)}</div>
</header>
<main>
<section class="card">
<div class="controls">
<span class="group"><label for="layer">Layer</label><select id="layer"></select></span>
<span class="group"><label for="cell">Cell</label>
<button id="cell-prev" title="previous cell">◀</button><select id="cell"></select>
<button id="cell-next" title="next cell">▶</button></span>
<span class="legend">−1 <span class="bar"></span> +1</span>
</div>
<div id="cell-info"></div>
<div id="text"></div>
<div class="pager"><button id="page-prev">◀ previous</button><span id="page-label"></span>
<button id="page-next">next ▶</button></div>
{notes}
</section>
<aside class="card">
<h2>Best cells per feature</h2>
<div id="best"></div>
</aside>
{plots}
</main>
<div id="tooltip"></div>
<noscript>This page needs JavaScript to colour the text.</noscript>
<script type="application/json" id="rnnkit-data">{payload}</script>
<script>
{_asset("report.js")}
</script>
</body>
</html>
"""
