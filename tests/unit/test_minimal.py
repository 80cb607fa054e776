"""MinGRU and MinLSTM: the paper's equations, and the same numbers from every way of running them.

scan == loop == step by step == chunk by chunk with carried state, for outputs, final states and
the gradients of the input, the initial state and every parameter.
"""

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.layers.minimal import MinGRU, MinLSTM

B, T, D, H = 3, 5, 4, 6
TOLERANCES = {torch.float32: 1e-5, torch.float64: 1e-10}
LAYERS = [MinGRU, MinLSTM]

Run = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _paper_equations(model: MinGRU | MinLSTM, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The equations of Feng et al. (2024) written out step by step: x (T, B, D), h0 (L, B, H)."""
    for layer in range(model.num_layers):
        weight = getattr(model, f"weight_ih_l{layer}")
        bias = getattr(model, f"bias_ih_l{layer}")
        h = h0[layer]  # (B, H)
        states = []
        for x_t in x:
            projections = x_t @ weight.T + bias  # (B, G·H)
            if isinstance(model, MinGRU):
                z = torch.sigmoid(projections[:, :H])
                candidate = projections[:, H:]
                h = (1 - z) * h + z * candidate
            else:
                f = torch.sigmoid(projections[:, :H])
                i = torch.sigmoid(projections[:, H : 2 * H])
                candidate = projections[:, 2 * H :]
                h = f / (f + i) * h + i / (f + i) * candidate
            states.append(h)
        x = torch.stack(states)  # (T, B, H)
    return x


@pytest.mark.parametrize("cls", LAYERS)
def test_computes_the_papers_equations(cls: type[MinGRU | MinLSTM]) -> None:
    model = cls(D, H, num_layers=2, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)  # (T, B, D)
    h0 = torch.randn(2, B, H, dtype=torch.float64)  # (L, B, H)
    output, h_n = model(x, h0)
    want = _paper_equations(model, x, h0)  # (T, B, H)
    torch.testing.assert_close(output, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_n[-1], want[-1], rtol=1e-10, atol=1e-10)


def _run_whole(model: MinGRU | MinLSTM, impl: str) -> Run:
    def run(x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.impl = impl
        return model(x, h0)

    return run


def _run_in_chunks(model: MinGRU | MinLSTM, sizes: list[int]) -> Run:
    def run(x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.impl = "auto"
        outputs, h = [], h0
        for chunk in x.split(sizes):
            output, h = model(chunk, h)  # (t, B, H), (L, B, H)
            outputs.append(output)
        return torch.cat(outputs), h

    return run


def _run_step_by_step(model: MinGRU | MinLSTM) -> Run:
    def run(x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, h = [], h0
        for x_t in x:
            y, h = model.step(x_t, h)  # (B, H), (L, B, H)
            outputs.append(y)
        return torch.stack(outputs), h

    return run


def _results(model: MinGRU | MinLSTM, run: Run, x: torch.Tensor, h0: torch.Tensor) -> dict:
    """Output, h_n and the gradients of a fixed weighted sum of both."""
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    output, h_n = run(x, h0)  # (T, B, H), (L, B, H)
    loss = (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum() + (
        h_n * torch.linspace(2, -1, h_n.numel()).view_as(h_n)
    ).sum()
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, (x, h0, *params))
    results = {"output": output.detach(), "h_n": h_n.detach()}
    results.update(zip(("grad input", "grad h0", *names), grads, strict=True))
    return results


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_scan_loop_steps_and_chunks_agree(
    cls: type[MinGRU | MinLSTM], dtype: torch.dtype, num_layers: int
) -> None:
    model = cls(D, H, num_layers=num_layers, dtype=dtype)
    x = torch.randn(T, B, D, dtype=dtype)  # (T, B, D)
    h0 = torch.randn(num_layers, B, H, dtype=dtype)  # (L, B, H)
    want = _results(model, _run_whole(model, "loop"), x, h0)
    for how, run in {
        "scan": _run_whole(model, "scan"),
        "steps": _run_step_by_step(model),
        "chunks 2+1+2": _run_in_chunks(model, [2, 1, 2]),
    }.items():
        got = _results(model, run, x, h0)
        for key in want:
            torch.testing.assert_close(
                got[key],
                want[key],
                rtol=TOLERANCES[dtype],
                atol=TOLERANCES[dtype],
                msg=lambda m, how=how, key=key: f"{how}, {key}: {m}",
            )


@pytest.mark.parametrize("cls", LAYERS)
def test_scan_equals_loop_over_several_scan_chunks(cls: type[MinGRU | MinLSTM]) -> None:
    """T = 70 spans three chunks of the scan (the last one padded), unlike T = 5."""
    model = cls(D, H, dtype=torch.float64)
    x = torch.randn(70, B, D, dtype=torch.float64)  # (T, B, D)
    h0 = torch.randn(1, B, H, dtype=torch.float64)  # (L, B, H)
    want = _results(model, _run_whole(model, "loop"), x, h0)
    got = _results(model, _run_whole(model, "scan"), x, h0)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-10)


@settings(max_examples=8, deadline=None)
@given(
    cls=st.sampled_from(LAYERS),
    steps=st.integers(1, 12),
    num_layers=st.integers(1, 3),
    cut=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_carried_state_continues_the_sequence(
    cls: type[MinGRU | MinLSTM], steps: int, num_layers: int, cut: int, seed: int
) -> None:
    torch.manual_seed(seed)
    model = cls(D, H, num_layers=num_layers, batch_first=True, dtype=torch.float64)
    x = torch.randn(B, steps, D, dtype=torch.float64)  # (B, T, D)
    whole, h_whole = model(x)
    first, h = model(x[:, :cut])
    rest = [model(x[:, cut:], h)] if cut < steps else []
    got = torch.cat([first, *(output for output, _ in rest)], dim=1)  # (B, T, H)
    torch.testing.assert_close(got, whole, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rest[0][1] if rest else h, h_whole, rtol=1e-10, atol=1e-10)


def test_minlstm_with_both_gates_shut_stays_finite() -> None:
    """f = i = σ(−200) round to 0 in fp32, so f / (f + i) would be 0 / 0; f' must be 1/2."""
    model = MinLSTM(D, H)
    with torch.no_grad():
        model.weight_ih_l0.zero_()
        model.bias_ih_l0.copy_(torch.cat([torch.full((2 * H,), -200.0), torch.ones(H)]))
    h0 = torch.full((1, B, H), 3.0)  # (L, B, H)
    output, _ = model(torch.randn(T, B, D), h0)
    # h_t = ½ h_{t−1} + ½ · 1 from h_0 = 3:  h_t = 1 + 2 · 2^{−t}
    want = 1 + 2 * 0.5 ** torch.arange(1, T + 1.0)  # (T,)
    torch.testing.assert_close(output, want[:, None, None].expand(T, B, H))


@pytest.mark.parametrize("cls", LAYERS)
def test_step_under_no_grad_matches_forward(cls: type[MinGRU | MinLSTM]) -> None:
    model = cls(D, H, num_layers=2)
    x = torch.randn(T, B, D)  # (T, B, D)
    output, h_n = model(x)
    with torch.no_grad():
        h = None
        for t in range(T):
            y, h = model.step(x[t], h)
            torch.testing.assert_close(y, output[t].detach())
    torch.testing.assert_close(h, h_n.detach())


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes(cls: type[MinGRU | MinLSTM], batch_first: bool) -> None:
    model = cls(D, H, num_layers=2, batch_first=batch_first)
    x = torch.randn(B, T, D) if batch_first else torch.randn(T, B, D)
    output, h_n = model(x)
    assert output.shape == ((B, T, H) if batch_first else (T, B, H))
    assert h_n.shape == (2, B, H)
    # unbatched (T, D), whatever batch_first says, as in torch.nn.GRU
    output, h_n = model(torch.randn(T, D), torch.randn(2, H))
    assert output.shape == (T, H)
    assert h_n.shape == (2, H)
    y, h = model.step(torch.randn(B, D))
    assert y.shape == (B, H)
    assert h.shape == (2, B, H)


def test_batch_first_gives_the_same_numbers() -> None:
    time_major = MinLSTM(D, H, num_layers=2)
    batch_major = MinLSTM(D, H, num_layers=2, batch_first=True)
    batch_major.load_state_dict(time_major.state_dict())
    x = torch.randn(T, B, D)  # (T, B, D)
    output, h_n = time_major(x)
    output_bf, h_n_bf = batch_major(x.transpose(0, 1))
    torch.testing.assert_close(output_bf, output.transpose(0, 1))
    torch.testing.assert_close(h_n_bf, h_n)


@pytest.mark.parametrize(("cls", "gates"), [(MinGRU, 2), (MinLSTM, 3)])
def test_parameters_are_named_and_initialised_like_torch(
    cls: type[MinGRU | MinLSTM], gates: int
) -> None:
    model = cls(D, H, num_layers=2)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    assert shapes == {
        "weight_ih_l0": (gates * H, D),
        "bias_ih_l0": (gates * H,),
        "weight_ih_l1": (gates * H, H),
        "bias_ih_l1": (gates * H,),
    }
    bound = 1 / math.sqrt(H)
    assert all(p.abs().max() <= bound for p in model.parameters())
    no_bias = cls(D, H, bias=False)
    assert [name for name, _ in no_bias.named_parameters()] == ["weight_ih_l0"]
    assert no_bias(torch.randn(T, B, D))[0].shape == (T, B, H)


def test_exported_from_rnnkit() -> None:
    assert rnnkit.MinGRU is MinGRU
    assert rnnkit.MinLSTM is MinLSTM


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'scan', 'loop'; got 'fast'"):
        MinGRU(D, H, impl="fast")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer; got 0"):
        MinLSTM(D, 0)
    model = MinGRU(D, H, num_layers=2)
    with pytest.raises(
        ValueError, match=r"MinGRU\(input_size=4\) expects input of shape \(T, B, D\)"
    ):
        model(torch.randn(T, B, D + 1))
    with pytest.raises(ValueError, match=r"got input.shape=\(3, 5, 4, 1\)"):
        model(torch.randn(B, T, D, 1))
    with pytest.raises(ValueError, match=r"got input.shape=\(0, 3, 4\)"):
        model(torch.randn(0, B, D))
    with pytest.raises(ValueError, match=r"h must have shape \(L, B, H\) = \(2, 3, 6\)"):
        model(torch.randn(T, B, D), torch.randn(1, B, H))
    with pytest.raises(ValueError, match=r"step expects x of shape \(B, D\) with D=4"):
        model.step(torch.randn(B, D + 1))


@pytest.mark.parametrize("layer_class", [MinGRU, MinLSTM])
def test_dropout_acts_between_layers_in_train_mode_only(layer_class: type) -> None:
    layer = layer_class(4, 6, num_layers=2, dropout=0.5, batch_first=True)
    x = torch.randn(3, 5, 4)  # (B, T, D)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])
    plain = layer_class(4, 6, num_layers=2, batch_first=True)
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x)[0], plain(x)[0])
    layer.train()
    assert not torch.allclose(layer(x)[0], plain(x)[0])
    with pytest.raises(ValueError, match="dropout must be in"):
        layer_class(4, 6, dropout=1.0)
