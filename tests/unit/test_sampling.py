"""rnnkit.sampling: carried state, greedy, seeded sampling, top-k / top-p, batches, beam search."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from rnnkit.sampling import beam_search, filter_logits, generate_tokens, greedy

# Distinct small sizes: vocabulary, embedding, hidden, layers.
V, E, H, L = 7, 5, 6, 2
PRIME = [3, 1, 4, 1]


RNNKIT_CELLS = {"lstm": "LSTM", "gru": "GRU", "mingru": "MinGRU", "minlstm": "MinLSTM"}


def _rnnkit_layer(cell: str) -> type[nn.Module] | None:
    """The rnnkit.layers class of ``cell`` if it imports and has step(), else None."""
    try:
        import rnnkit.layers as layers
    except ImportError:
        return None
    layer = getattr(layers, RNNKIT_CELLS[cell], None)
    return layer if hasattr(layer, "step") else None


def _cases(*cells: str) -> list:
    """(cell, backend) parameters: torch's LSTM and GRU, and each rnnkit layer that exists."""
    torch_cases = [(cell, "torch") for cell in cells if cell in ("lstm", "gru")]
    rnnkit_cases = [
        pytest.param(
            cell,
            "rnnkit",
            marks=pytest.mark.skipif(_rnnkit_layer(cell) is None, reason="not in rnnkit.layers"),
        )
        for cell in cells
    ]
    return torch_cases + rnnkit_cases


ALL_CELLS = ("lstm", "gru", "mingru", "minlstm")


class ToyLM(nn.Module):
    """Embedding -> 2-layer recurrent stack -> Linear, with the model contract of
    rnnkit.sampling. ``backend`` "torch" steps torch.nn.LSTM / GRU on one-step sequences;
    "rnnkit" uses the rnnkit.layers class of ``cell`` and its ``step()``."""

    def __init__(self, cell: str = "lstm", backend: str = "torch") -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        layer = (
            _rnnkit_layer(cell) if backend == "rnnkit" else {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        )
        assert layer is not None, f"rnnkit.layers has no {cell}"
        self.rnn = layer(E, H, num_layers=L, batch_first=True)
        self.head = nn.Linear(H, V)
        # Larger output weights than the default init, so the distribution is far from uniform
        # and greedy / beam choices are not decided by rounding.
        nn.init.normal_(self.head.weight, std=2.0)
        self.uses_layer_step = backend == "rnnkit"

    def forward(self, tokens: Tensor, state: object = None) -> tuple[Tensor, object]:
        out, state = self.rnn(self.embedding(tokens), state)  # (N, T, H)
        return self.head(out), state  # (N, T, V)

    def step(self, tokens: Tensor, state: object) -> tuple[Tensor, object]:
        x = self.embedding(tokens)  # (N, E)
        if self.uses_layer_step:
            y, state = self.rnn.step(x, state)  # (N, H)
        else:
            out, state = self.rnn(x[:, None], state)  # (N, 1, H)
            y = out[:, 0]  # (N, H)
        return self.head(y), state  # (N, V)


class SpyLM(ToyLM):
    """Records each call: its kind, the tokens' shape and whether grad was enabled."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...], bool]] = []

    def forward(self, tokens: Tensor, state: object = None) -> tuple[Tensor, object]:
        self.calls.append(("forward", tuple(tokens.shape), torch.is_grad_enabled()))
        return super().forward(tokens, state)

    def step(self, tokens: Tensor, state: object) -> tuple[Tensor, object]:
        self.calls.append(("step", tuple(tokens.shape), torch.is_grad_enabled()))
        return super().step(tokens, state)


def _model(cell: str = "lstm", backend: str = "torch", seed: int = 0) -> ToyLM:
    torch.manual_seed(seed)
    return ToyLM(cell, backend).eval()


def _sample(model: nn.Module, length: int, seed: int, **kwargs: object) -> Tensor:
    """(N, length) tokens from generate_tokens with a generator seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    steps = list(generate_tokens(model, PRIME, length, generator=generator, **kwargs))
    return torch.stack(steps, dim=1)  # (N, length)


def _next_logits(model: nn.Module, continuation: Tensor) -> Tensor:
    """Full-forward logits that predict each token of ``continuation`` (N, t) after PRIME."""
    prime = torch.tensor(PRIME).expand(continuation.size(0), -1)  # (N, T)
    sequence = torch.cat([prime, continuation], dim=1)[:, :-1]  # (N, T + t - 1)
    with torch.no_grad():
        logits, _ = model(sequence)  # (N, T + t - 1, V)
    return logits[:, len(PRIME) - 1 :]  # (N, t, V)


def _log_prob(model: nn.Module, continuation: list[int]) -> float:
    """Total log-probability of ``continuation`` after PRIME under a full forward."""
    tokens = torch.tensor([continuation])  # (1, t)
    log_probs = _next_logits(model, tokens).log_softmax(dim=-1)  # (1, t, V)
    return log_probs.gather(-1, tokens[..., None]).sum().item()


# --- carried state --------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "backend"), _cases(*ALL_CELLS))
def test_stepping_with_carried_state_equals_the_whole_sequence(cell: str, backend: str) -> None:
    model = _model(cell, backend)
    tokens = torch.randint(V, (3, 9))  # (N, T)
    with torch.no_grad():
        expected, _ = model(tokens)  # (N, T, V)
        first, state = model(tokens[:, :2])  # (N, 2, V)
        steps = [first[:, 0], first[:, 1]]
        for t in range(2, 9):
            logits, state = model.step(tokens[:, t], state)  # (N, V)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


def test_the_prime_is_fed_once_then_one_step_per_token_without_grad() -> None:
    model = SpyLM().eval()
    tokens = list(generate_tokens(model, PRIME, 6, num_samples=2))
    assert len(tokens) == 6
    assert model.calls == [("forward", (2, len(PRIME)), False)] + [("step", (2,), False)] * 5


def test_the_callers_grad_mode_is_untouched_between_tokens() -> None:
    for token in generate_tokens(_model(), PRIME, 4):
        assert torch.is_grad_enabled()
        assert not token.requires_grad


def test_length_zero_yields_nothing_and_runs_nothing() -> None:
    model = SpyLM()
    assert list(generate_tokens(model, PRIME, 0)) == []
    assert greedy(model, PRIME, 0) == []
    assert beam_search(model, PRIME, 0, beam_size=3) == []
    assert model.calls == []


# --- greedy -------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "backend"), _cases(*ALL_CELLS))
def test_greedy_equals_argmax_of_the_full_forward(cell: str, backend: str) -> None:
    model = _model(cell, backend)
    continuation = torch.tensor([greedy(model, PRIME, 12)])  # (1, 12)
    assert continuation.shape == (1, 12)
    expected = _next_logits(model, continuation).argmax(dim=-1)  # (1, 12)
    assert torch.equal(continuation, expected)


def test_temperature_zero_is_greedy_for_every_sample() -> None:
    model = _model()
    tokens = _sample(model, 10, seed=0, temperature=0.0, num_samples=3, top_k=3)  # (3, 10)
    assert tokens.dtype == torch.long
    expected = torch.tensor(greedy(model, PRIME, 10))  # (10,)
    assert torch.equal(tokens, expected.expand(3, -1))


@pytest.mark.parametrize("filters", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 4, "top_p": 1e-6}])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_keeping_only_the_top_token_is_greedy(filters: dict, temperature: float) -> None:
    model = _model()
    tokens = _sample(model, 15, seed=1, temperature=temperature, **filters)  # (1, 15)
    assert tokens[0].tolist() == greedy(model, PRIME, 15)


# --- seeded sampling ------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_tokens_and_other_seeds_differ() -> None:
    model = _model()
    first = _sample(model, 40, seed=7)  # (1, 40)
    assert torch.equal(first, _sample(model, 40, seed=7))
    assert not torch.equal(first, _sample(model, 40, seed=8))
    assert first.min() >= 0 and first.max() < V


def test_tokens_are_what_torch_multinomial_draws_from_the_same_seed() -> None:
    model = _model()
    tokens = _sample(model, 12, seed=4, temperature=0.8, top_k=5, num_samples=3)  # (3, 12)
    generator = torch.Generator().manual_seed(4)
    expected = torch.empty(3, 0, dtype=torch.long)  # (3, t)
    for _ in range(12):
        probe = torch.cat([expected, torch.zeros(3, 1, dtype=torch.long)], dim=1)  # (3, t + 1)
        logits = _next_logits(model, probe)[:, -1]  # (3, V), full forward over the prefix
        probs = filter_logits(logits / 0.8, top_k=5).softmax(dim=-1)  # (3, V)
        drawn = torch.multinomial(probs, 1, generator=generator)  # (3, 1)
        expected = torch.cat([expected, drawn], dim=1)  # (3, t + 1)
    assert torch.equal(tokens, expected)


def test_sampling_follows_the_models_distribution() -> None:
    # 4000 independent one-token samples: their frequencies match softmax(logits / T).
    model = _model()
    temperature = 1.5
    tokens = _sample(model, 1, seed=3, temperature=temperature, num_samples=4000)  # (4000, 1)
    counts = torch.bincount(tokens[:, 0], minlength=V).double()  # (V,)
    with torch.no_grad():
        logits, _ = model(torch.tensor([PRIME]))  # (1, T, V)
    expected = (logits[0, -1] / temperature).softmax(dim=-1).double()  # (V,)
    torch.testing.assert_close(counts / 4000, expected, atol=0.03, rtol=0.0)


# --- batched sampling -----------------------------------------------------------------------


def test_batched_samples_are_independent_and_each_follows_its_own_state() -> None:
    model = _model()
    tokens = _sample(model, 20, seed=5, num_samples=6, top_k=2, temperature=3.0)  # (6, 20)
    assert tokens.shape == (6, 20)
    assert len({tuple(row) for row in tokens.tolist()}) == 6  # rows differ
    # Each row's token at each step lies in the top 2 of the full forward over that row's
    # own prefix: so each row carried its own state.
    top2 = _next_logits(model, tokens).topk(2, dim=-1).indices  # (6, 20, 2)
    assert (top2 == tokens[..., None]).any(dim=-1).all()


# --- filter_logits --------------------------------------------------------------------------

PROBS = torch.tensor([[0.50, 0.05, 0.30, 0.15], [0.10, 0.40, 0.05, 0.45]])


def _kept(logits: Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row > -math.inf).flatten().tolist()) for row in logits]


@pytest.mark.parametrize(
    ("top_k", "top_p", "expected"),
    [
        (None, None, [{0, 1, 2, 3}, {0, 1, 2, 3}]),
        (1, None, [{0}, {3}]),
        (2, None, [{0, 2}, {1, 3}]),
        (3, None, [{0, 2, 3}, {0, 1, 3}]),
        (9, None, [{0, 1, 2, 3}, {0, 1, 2, 3}]),
        (None, 0.01, [{0}, {3}]),
        (None, 0.45, [{0}, {3}]),
        (None, 0.55, [{0, 2}, {1, 3}]),
        (None, 0.9, [{0, 2, 3}, {0, 1, 3}]),
        (None, 0.97, [{0, 1, 2, 3}, {0, 1, 2, 3}]),
        (None, 1.0, [{0, 1, 2, 3}, {0, 1, 2, 3}]),
        (2, 0.9, [{0, 2}, {1, 3}]),
        (3, 0.6, [{0, 2}, {1, 3}]),  # top_p applies to the top-k renormalised: 0.5/0.95 < 0.6
    ],
)
def test_filter_logits_keeps_exactly_the_right_tokens(
    top_k: int | None, top_p: float | None, expected: list[set[int]]
) -> None:
    logits = PROBS.log() + 2.0  # (2, 4), any shift gives the same softmax
    original = logits.clone()
    filtered = filter_logits(logits, top_k, top_p)  # (2, 4)
    assert _kept(filtered) == expected
    kept = filtered > -math.inf
    assert torch.equal(filtered[kept], logits[kept])  # kept logits unchanged
    assert torch.equal(logits, original)  # input not modified


def _largest(values: Tensor, empty: float) -> float:
    """The largest of ``values`` (1-D), or ``empty`` when there are none."""
    return values.max().item() if values.numel() else empty


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-6.0, 6.0), min_size=1, max_size=12),
    top_p=st.floats(0.001, 1.0),
    top_k=st.one_of(st.none(), st.integers(1, 14)),
)
def test_filter_logits_keeps_the_smallest_set_reaching_p(
    values: list[float], top_p: float, top_k: int | None
) -> None:
    logits = torch.tensor([values], dtype=torch.float64)  # (1, V)
    after_k = filter_logits(logits, top_k, None)  # (1, V)
    kept_k = after_k > -math.inf  # (1, V)
    assert kept_k.sum() == min(top_k or len(values), len(values))
    assert _largest(logits[~kept_k], -math.inf) <= logits[kept_k].min()  # the largest ones
    probs = after_k.softmax(dim=-1)[0]  # (V,)
    kept = (filter_logits(logits, top_k, top_p) > -math.inf)[0]  # (V,)
    assert probs[kept].max() == probs.max()  # a most probable token is always kept
    assert _largest(probs[~kept], 0.0) <= probs[kept].min()  # the most probable ones
    mass = probs[kept].sum().item()
    assert mass >= top_p - 1e-9  # the set reaches p ...
    assert mass - probs[kept].min().item() < top_p + 1e-9  # ... and no smaller one does


# --- beam search ----------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "backend"), _cases(*ALL_CELLS))
def test_beam_of_one_is_greedy(cell: str, backend: str) -> None:
    model = _model(cell, backend)
    assert beam_search(model, PRIME, 12, beam_size=1) == greedy(model, PRIME, 12)


@pytest.mark.parametrize(("cell", "backend"), _cases("lstm", "gru", "mingru"))
def test_a_wide_enough_beam_finds_the_most_probable_sequence(cell: str, backend: str) -> None:
    model = _model(cell, backend, seed=2)
    length = 3
    # Beam V^(length-1) keeps every prefix, so the search is exhaustive.
    found = beam_search(model, PRIME, length, beam_size=V ** (length - 1))
    candidates = torch.tensor(list(itertools.product(range(V), repeat=length)))  # (V^3, 3)
    log_probs = _next_logits(model, candidates).log_softmax(dim=-1)  # (V^3, 3, V)
    totals = log_probs.gather(-1, candidates[..., None]).sum(dim=(1, 2))  # (V^3,)
    assert found == candidates[totals.argmax()].tolist()
    assert _log_prob(model, found) >= _log_prob(model, greedy(model, PRIME, length)) - 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_beam_of_three_scores_at_least_greedy(cell: str) -> None:
    model = _model(cell, seed=3)
    found = beam_search(model, PRIME, 10, beam_size=3)
    assert len(found) == 10
    assert _log_prob(model, found) >= _log_prob(model, greedy(model, PRIME, 10)) - 1e-6


def test_beam_search_rejects_a_state_it_cannot_reindex() -> None:
    class DictStateLM(ToyLM):
        def forward(self, tokens: Tensor, state: object = None) -> tuple[Tensor, object]:
            logits, state = super().forward(tokens, state)
            return logits, {"lstm": state}

    with pytest.raises(TypeError, match="returned dict"):
        beam_search(DictStateLM(), PRIME, 3, beam_size=2)


# --- argument checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, r"temperature must be a finite number >= 0 .*got -0.1"),
        ({"temperature": math.nan}, r"temperature must be a finite number >= 0 .*got nan"),
        ({"temperature": math.inf}, r"temperature must be a finite number >= 0 .*got inf"),
        ({"top_k": 0}, r"top_k must be >= 1 .*got 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\] .*got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\] .*got 1.5"),
        ({"length": -1}, r"length must be >= 0; got -1"),
        ({"prime": []}, r"prime must hold at least one token id"),
        ({"num_samples": 0}, r"num_samples must be >= 1; got 0"),
    ],
)
def test_generate_tokens_rejects_bad_arguments_when_called(kwargs: dict, message: str) -> None:
    arguments = {"prime": PRIME, "length": 5, **kwargs}
    prime, length = arguments.pop("prime"), arguments.pop("length")
    with pytest.raises(ValueError, match=message):
        generate_tokens(_model(), prime, length, **arguments)  # no iteration needed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((PRIME, 5, 0), r"beam_size must be >= 1; got 0"),
        ((PRIME, -2, 3), r"length must be >= 0; got -2"),
        (([], 5, 3), r"prime must hold at least one token id"),
    ],
)
def test_beam_search_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        beam_search(_model(), *args)


def test_filter_logits_rejects_bad_arguments() -> None:
    logits = torch.zeros(2, V)  # (N, V)
    with pytest.raises(ValueError, match=r"top_k must be >= 1"):
        filter_logits(logits, top_k=-3)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        filter_logits(logits, top_p=-0.5)
    with pytest.raises(ValueError, match=r"shape \(N, V\); got shape \(7,\)"):
        filter_logits(logits[0], top_k=2)
