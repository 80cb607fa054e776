"""rnnkit.inspect.report and .viz: the self-contained page and what goes into it."""

import base64
import json
import re

import numpy as np
import pytest
import torch

from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.inspect.features import choose_features
from rnnkit.inspect.report import PageData, ShownLayer, quantize, render_page
from rnnkit.inspect.search import CellScore
from rnnkit.inspect.text import encode_text
from rnnkit.inspect.viz import build_report
from rnnkit.tasks.lm import LanguageModel

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = 'print("hi </script> there")\nif (a[1] > 2):\n    x = "y"\n' * 6


def payload(page: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="rnnkit-data">(.*?)</script>', page, re.S
    )
    return json.loads(match.group(1))


def decode(b64: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def test_quantize_keeps_each_cell_within_half_a_step() -> None:
    values = np.array([[0.5, -0.25, 0.1], [3.0, -6.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    q, scales = quantize(values)
    assert q.dtype == np.int8 and q[1, 1] == -127 and q[0, 0] == 127
    np.testing.assert_allclose(q * scales[:, None] / 127, values, atol=0.5 * 6.0 / 127)
    assert np.all(q[2] == 0)


def small_page(pieces: list[str]) -> PageData:
    count = len(pieces)
    return PageData(
        title="T <b>",
        summary="s",
        pieces=pieces,
        vocab=["<pad>", "a", "\n"],
        layers=[
            ShownLayer("layer 1 · h", 4, [0, 3], np.linspace(-1, 1, 2 * count).reshape(2, count))
        ],
        top_ids=np.tile(np.array([[1, 2]]), (count, 1)),
        top_probs=np.tile(np.array([[0.75, 0.25]]), (count, 1)),
        next_prob=np.full(count, 0.5),
        best=[("in_quotes", [CellScore("in_quotes", 0, "h", 3, 0.9, 0.8)])],
        baselines={"in_quotes": 0.7},
        initial=(0, 3),
        figures=[("A plot", b"\x89PNG fake", "caption")],
        notes=["a note"],
    )


def test_page_is_self_contained_and_its_data_round_trips() -> None:
    pieces = list('ab</script><script>alert(1)</script>\n"')
    page = render_page(small_page(pieces))
    assert "<h1>T &lt;b&gt;</h1>" in page  # the title is escaped
    assert "<script>alert(1)" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # only data: URLs
    assert "http://" not in page and "https://" not in page and "<link" not in page
    data = payload(page)
    assert "".join(data["pieces"]) == "".join(pieces)
    values = decode(data["layers"][0]["values"], "int8").reshape(2, len(pieces))
    assert values[0, 0] == -127 and values[1, -1] == 127
    assert decode(data["top_ids"], "<u2").tolist()[:2] == [1, 2]
    assert decode(data["top_probs"], "uint8").tolist()[:2] == [191, 64]
    assert data["initial"] == {"layer": 0, "cell": 3}
    assert data["best"][0]["cells"][0] == {"layer": 0, "cell": 3, "corr": 0.9, "probe": 0.8}
    assert data["best"][0]["baseline"] == 0.7


def lstm_and_text() -> tuple[LanguageModel, object]:
    vocab = Vocab.build(TEXT)
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=6, embedding_size=4, dropout=0)
    model = LanguageModel(config, len(vocab)).eval()
    model.attach_vocab(vocab, "char")
    return model, encode_text(TEXT, vocab, "char")


def test_report_holds_every_cell_of_a_short_text_with_predictions_and_plots() -> None:
    model, text = lstm_and_text()
    page = build_report(model, text, choose_features([]), title="x", best=3)
    data = payload(page)
    assert [layer["name"] for layer in data["layers"]] == ["layer 1 · tanh(c)", "layer 2 · tanh(c)"]
    assert all(layer["cells"] == list(range(6)) for layer in data["layers"])
    count = len(text)
    ids = decode(data["top_ids"], "<u2").reshape(count, 5)
    with torch.no_grad():
        logits, _ = model(text.ids[None])
    assert np.array_equal(ids[:, 0], logits[0].argmax(-1).numpy())
    probs = decode(data["top_probs"], "uint8").reshape(count, 5) / 255
    assert np.all(np.diff(probs, axis=1) <= 1 / 255)  # most likely first
    features = [group["feature"] for group in data["best"]]
    assert features[:3] == ["in_quotes", "in_parens", "bracket_depth"]
    assert all(len(group["cells"]) == 3 for group in data["best"])
    assert page.count("data:image/png;base64,") == 2  # saturation and gradient flow
    assert data["vocab"][model.vocab.index["\n"]] == "\n"


def test_a_small_budget_keeps_the_best_cells_and_one_cell_per_layer() -> None:
    model, text = lstm_and_text()
    budget = 3 * len(text)  # three cells in all
    data = payload(
        build_report(
            model, text, choose_features(["in_quotes"]), title="x", max_values=budget, best=2
        )
    )
    kept = [(i, c) for i, layer in enumerate(data["layers"]) for c in layer["cells"]]
    best = [(c["layer"], c["cell"]) for c in data["best"][0]["cells"]]
    assert set(best) <= set(kept) and len(kept) == 3
    assert all(layer["cells"] for layer in data["layers"])
    assert data["initial"] == {"layer": best[0][0], "cell": best[0][1]}
