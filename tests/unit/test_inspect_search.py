"""rnnkit.inspect.search and .ablation: correlations, threshold probes, ablation, and a planted
quote cell that must be found first."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.inspect.ablation import ablation_deltas
from rnnkit.inspect.activations import activations, trace
from rnnkit.inspect.features import (
    BUILTIN,
    Feature,
    choose_features,
    probe_targets,
    token_features,
)
from rnnkit.inspect.search import (
    CellStatistics,
    find_cells,
    group_values,
    probe_accuracy,
    unit_groups,
)
from rnnkit.inspect.text import encode_text
from rnnkit.tasks.lm import LanguageModel

pytestmark = pytest.mark.usefixtures("single_thread")

QUOTES = 'He said "hello there" and left. She said "no (way)" twice.\nThen "yes".\n' * 20


def quote_lstm(vocab: Vocab, hidden: int = 6, unit: int = 2) -> LanguageModel:
    """A one-layer LSTM on one-hot characters whose cell ``unit`` flips at every ``"``.

    Its input gate opens and its forget gate shuts only on a quote; its candidate is
    ``tanh(3 − 10 h)``, minus the sign of the cell's own output, so each quote flips ``c``
    between about +1 (inside) and -1 (outside); its output gate is always open. The other
    units keep their random weights but do not feed it.
    """
    config = ModelConfig(cell="lstm", num_layers=1, hidden_size=hidden, embedding_size=0, dropout=0)
    model = LanguageModel(config, len(vocab)).eval()
    quote, big = vocab.index['"'], 20.0
    rnn = model.rnn
    with torch.no_grad():
        for gate in range(4):
            row = gate * hidden + unit
            rnn.weight_ih_l0[row] = 0.0
            rnn.weight_hh_l0[row] = 0.0
            rnn.bias_hh_l0[row] = 0.0
        i, f, g, o = (gate * hidden + unit for gate in range(4))
        rnn.bias_ih_l0[i], rnn.weight_ih_l0[i, quote] = -big, 2 * big
        rnn.bias_ih_l0[f], rnn.weight_ih_l0[f, quote] = big, -2 * big
        rnn.bias_ih_l0[g], rnn.weight_hh_l0[g, unit] = 3.0, -10.0
        rnn.bias_ih_l0[o] = big
    return model


def test_a_planted_quote_cell_comes_first_for_in_quotes() -> None:
    vocab = Vocab.build(QUOTES)
    model = quote_lstm(vocab)
    text = encode_text(QUOTES, vocab, "char")
    result = find_cells(model, text, choose_features([]), top=4, ablate=1)
    in_quotes = [s for s in result.cells if s.feature == "in_quotes"]
    assert (in_quotes[0].layer, in_quotes[0].cell) == (0, 2)
    assert in_quotes[0].corr > 0.99 and in_quotes[0].probe_accuracy == 1.0
    assert in_quotes[0].ablation_delta_loss is not None
    best_probe = next(s for s in result.cells_by_probe if s.feature == "in_quotes")
    assert (best_probe.cell, best_probe.probe_accuracy) == (2, 1.0)
    assert result.skipped == ["indent"]  # no line of QUOTES is indented
    share = token_features(text.pieces, [Feature("in_quotes")])[:, 0].mean().item()
    assert result.probe_baselines["in_quotes"] == pytest.approx(max(share, 1 - share), abs=1e-6)
    assert set(result.probe_baselines) == {f for f in BUILTIN if f != "indent"}
    assert all(s.feature != "indent" for s in result.cells)
    assert result.to_dict()["cells"][0] == in_quotes[0].to_dict() | {"feature": "in_quotes"}


def test_correlations_equal_numpys_and_means_are_the_cells_means() -> None:
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=5, embedding_size=4, dropout=0)
    vocab = Vocab.build(QUOTES)
    model = LanguageModel(config, len(vocab)).eval()
    text = encode_text(QUOTES[:700], vocab, "char")
    features = choose_features(["in_parens", "column", "word_start"])
    values = token_features(text.pieces, features)  # (N, M)
    groups = unit_groups(model)
    assert [(g.layer, g.kind) for g in groups] == [(0, "h"), (0, "c"), (1, "h"), (1, "c")]
    stats = CellStatistics(groups, values, probe_targets(values, features), sample=100)
    for chunk in trace(model, text.ids, streams=3, warmup=20, chunk_size=16):
        stats.update(chunk)
    full = activations(model, text.ids, streams=3, warmup=20, chunk_size=16)
    x = group_values(full, groups).double().numpy()  # (N, K)
    expected = np.corrcoef(np.concatenate([x, values.double().numpy()], axis=1), rowvar=False)
    np.testing.assert_allclose(stats.correlations().numpy(), expected[:20, 20:], atol=1e-6)
    raw = torch.cat([full.layers[0].h, full.layers[0].c, full.layers[1].h, full.layers[1].c], 1)
    torch.testing.assert_close(stats.means(), raw.mean(0))
    assert stats.unit(13) == (groups[2], 3)
    assert len(torch.cat(stats._sample)) == 100  # every 7th of 700 positions


def brute_force_probe(x: np.ndarray, y: np.ndarray) -> float:
    best = 0.0
    for threshold in [-np.inf, *np.unique(x)]:
        above = x > threshold
        best = max(best, (above == y).mean(), (above != y).mean())
    return best


def test_probe_accuracy_is_the_best_single_threshold() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=(40, 5)).astype(np.float32)  # many ties
    x[:, 4] = np.arange(40)  # a perfect cell for the target below
    y = np.zeros((40, 2), dtype=bool)
    y[:, 0] = rng.random(40) < 0.4
    y[:, 1] = np.arange(40) >= 25
    got = probe_accuracy(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    for k in range(5):
        for m in range(2):
            assert got[k, m] == pytest.approx(brute_force_probe(x[:, k], y[:, m])), (k, m)
    assert got[4, 1] == 1.0


def test_ablation_matches_a_hand_written_loop_and_an_unused_cell_costs_nothing() -> None:
    config = ModelConfig(cell="rnn", num_layers=1, hidden_size=6, embedding_size=3, dropout=0)
    model = LanguageModel(config, 9).eval()
    with torch.no_grad():  # unit 5 is read by nothing: neither the next step nor the head
        model.rnn.weight_hh_l0[:, 5] = 0.0
        model.head.weight[:, 5] = 0.0
    ids = torch.randint(0, 9, (60,))
    held, deltas = 0.25, ablation_deltas(model, ids, [(0, "h", 1, 0.25), (0, "h", 5, -0.7)])

    def loss(unit: int | None) -> float:
        rnn, h, total = model.rnn, torch.zeros(1, 6), 0.0
        with torch.no_grad():
            for t in range(59):
                x = model.embed(ids[t : t + 1])  # (1, E)
                h = torch.tanh(
                    x @ rnn.weight_ih_l0.t()
                    + rnn.bias_ih_l0
                    + h @ rnn.weight_hh_l0.t()
                    + rnn.bias_hh_l0
                )
                if unit is not None:
                    h[0, unit] = held
                total += F.cross_entropy(model.head(h), ids[t + 1 : t + 2]).item()
        return total / 59

    assert deltas[0] == pytest.approx(loss(1) - loss(None), abs=1e-5)
    assert abs(deltas[0]) > 1e-4
    assert deltas[1] == pytest.approx(0.0, abs=1e-6)


def test_ablation_in_segments_is_the_mean_over_the_segments_read_alone() -> None:
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=5, embedding_size=3, dropout=0)
    model = LanguageModel(config, 9).eval()
    ids = torch.randint(0, 9, (61,))  # 60 predictions: two segments of 30
    units = [(0, "c", 1, 0.5), (1, "h", 4, -0.2)]
    together = ablation_deltas(model, ids, units, segment=30)
    first, second = ablation_deltas(model, ids[:31], units), ablation_deltas(model, ids[30:], units)
    expected = [(a + b) / 2 for a, b in zip(first, second, strict=True)]
    assert together == pytest.approx(expected, abs=1e-6)
    assert together != pytest.approx(ablation_deltas(model, ids, units), abs=1e-6)


def test_search_works_on_minimal_rnns_and_word_level() -> None:
    text_words = "the cat sat on the mat\nthe dog ( sat ) on the log\n" * 10
    vocab = Vocab.build([*text_words.split(), "<eos>"])
    config = ModelConfig(cell="minlstm", num_layers=2, hidden_size=4, embedding_size=3, dropout=0)
    model = LanguageModel(config, len(vocab)).eval()
    text = encode_text(text_words, vocab, "word")
    result = find_cells(model, text, [Feature("in_parens"), Feature("word_start")], top=2)
    # a token is read whole: after it, no word is just starting, so word_start is 0 throughout
    assert {s.feature for s in result.cells} == {"in_parens"}
    assert result.skipped == ["word_start"]
    assert all(s.kind == "h" for s in result.cells)
    assert all(s.ablation_delta_loss is not None for s in result.cells[:2])
