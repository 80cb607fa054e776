"""rnnkit.scan: the chunked scan equals the sequential loop, in values and gradients."""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rnnkit.scan import LinearScan, MinGRUScan, linear_scan, mingru_scan

B, T, H = 3, 5, 6
TOLERANCES = {torch.float32: 1e-5, torch.float64: 1e-10}


def _inputs(
    batch: int, steps: int, hidden: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.rand(batch, steps, hidden, dtype=dtype).requires_grad_()  # (B, T, H) in [0, 1)
    b = torch.randn(batch, steps, hidden, dtype=dtype).requires_grad_()  # (B, T, H)
    h0 = torch.randn(batch, hidden, dtype=dtype).requires_grad_()  # (B, H)
    return a, b, h0


def _states_and_grads(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, **scan_args: object
) -> list[torch.Tensor]:
    """h and the gradients of a fixed weighted sum of h with respect to a, b, h0."""
    h = linear_scan(a, b, h0, **scan_args)  # (B, T, H)
    weights = torch.linspace(-1.0, 1.0, h.numel(), dtype=h.dtype).view_as(h)  # (B, T, H)
    grads = torch.autograd.grad((h * weights).sum(), (a, b, h0))
    return [h.detach(), *grads]


def _assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float) -> None:
    for name, g, w in zip(("h", "grad a", "grad b", "grad h0"), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")


def test_loop_is_the_recurrence() -> None:
    a = torch.tensor([[[0.5], [0.25], [2.0]]])  # (1, 3, 1)
    b = torch.tensor([[[1.0], [-1.0], [3.0]]])  # (1, 3, 1)
    h0 = torch.tensor([[4.0]])  # (1, 1)
    # h1 = 0.5·4 + 1 = 3;  h2 = 0.25·3 − 1 = −0.25;  h3 = 2·(−0.25) + 3 = 2.5
    want = torch.tensor([[[3.0], [-0.25], [2.5]]])
    for impl in ("loop", "scan"):
        torch.testing.assert_close(linear_scan(a, b, h0, impl=impl, chunk_size=2), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 8])
def test_scan_equals_loop(dtype: torch.dtype, chunk_size: int) -> None:
    a, b, h0 = _inputs(B, T, H, dtype)
    want = _states_and_grads(a, b, h0, impl="loop")
    got = _states_and_grads(a, b, h0, impl="scan", chunk_size=chunk_size)
    _assert_all_close(got, want, TOLERANCES[dtype])


def test_default_h0_is_zeros() -> None:
    a, b, _ = _inputs(B, T, H, torch.float64)
    torch.testing.assert_close(
        linear_scan(a, b), linear_scan(a, b, torch.zeros(B, H, dtype=torch.float64))
    )


def test_time_major_memory_layout() -> None:
    """(B, T, H) views of (T, B, H) tensors, as the layers pass them, give the same result."""
    a, b, h0 = _inputs(B, T, H, torch.float64)
    a_t = a.detach().transpose(0, 1).contiguous().transpose(0, 1)  # (B, T, H), T-major memory
    b_t = b.detach().transpose(0, 1).contiguous().transpose(0, 1)  # (B, T, H), T-major memory
    torch.testing.assert_close(
        linear_scan(a_t, b_t, h0, chunk_size=2), linear_scan(a, b, h0, impl="loop")
    )


def test_mixed_dtypes_run_in_the_promoted_dtype() -> None:
    """bf16 coefficients (from autocast) with an fp32 state: both give the same fp32 states."""
    a, b, h0 = (t.detach() for t in _inputs(B, T, H, torch.float32))
    a, b = a.bfloat16(), b.bfloat16()
    want = linear_scan(a, b, h0, impl="loop")  # (B, T, H)
    got = linear_scan(a, b, h0, impl="scan", chunk_size=2)  # (B, T, H)
    assert want.dtype == got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradcheck() -> None:
    a, b, h0 = _inputs(2, 7, 3, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, h0: LinearScan.apply(a, b, h0, 3), (a, b, h0))


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 4),
    steps=st.integers(1, 70),
    hidden=st.integers(1, 7),
    chunk_size=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
@example(batch=1, steps=1, hidden=1, chunk_size=32, seed=0)  # a single step
@example(batch=2, steps=70, hidden=3, chunk_size=32, seed=1)  # 3 chunks, the last one padded
def test_scan_equals_loop_random_sizes(
    batch: int, steps: int, hidden: int, chunk_size: int, seed: int
) -> None:
    torch.manual_seed(seed)
    a, b, h0 = _inputs(batch, steps, hidden, torch.float64)
    want = _states_and_grads(a, b, h0, impl="loop")
    got = _states_and_grads(a, b, h0, impl="scan", chunk_size=chunk_size)
    _assert_all_close(got, want, TOLERANCES[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_sequence_with_a_near_one_and_near_zero_is_stable(dtype: torch.dtype) -> None:
    """Products of thousands of a ≈ 1 and of a ≈ 0 (down to exact 0) neither blow up nor drift."""
    steps = 3000
    near_one = 1.0 - 1e-7 * torch.rand(B, steps, H, dtype=torch.float64)  # (B, T, H)
    near_zero = 1e-30 * torch.rand(B, steps, H, dtype=torch.float64)  # (B, T, H)
    near_zero[:, ::7] = 0.0
    pick = torch.rand(B, steps, H) < 0.5  # (B, T, H)
    a = torch.where(pick, near_one, near_zero)  # (B, T, H)
    a[0] = near_one[0]  # one sequence stays near 1 for all steps: a long memory
    b = torch.randn(B, steps, H, dtype=torch.float64)  # (B, T, H)
    h0 = torch.randn(B, H, dtype=torch.float64)  # (B, H)
    exact = _states_and_grads(*(t.requires_grad_() for t in (a, b, h0)), impl="loop")

    inputs = [t.detach().to(dtype).requires_grad_() for t in (a, b, h0)]
    got = _states_and_grads(*inputs, impl="scan")
    for g, w in zip(got, exact, strict=True):
        assert torch.isfinite(g).all()
        scale = w.abs().max().item()  # sums of up to T terms: compare relative to their size
        tol = 1e-4 * scale if dtype == torch.float32 else 1e-10 * scale
        torch.testing.assert_close(g.double(), w, rtol=0.0, atol=tol)


def test_bad_arguments_are_explained() -> None:
    a, b, h0 = _inputs(B, T, H, torch.float32)
    with pytest.raises(ValueError, match="impl must be one of 'scan', 'loop'; got 'parallel'"):
        linear_scan(a, b, h0, impl="parallel")
    with pytest.raises(ValueError, match=r"a and b must both have shape \(B, T, H\)"):
        linear_scan(a, b[:, :-1], h0)
    with pytest.raises(ValueError, match=r"a and b must both have shape .* T ≥ 1"):
        linear_scan(a[:, :0], b[:, :0], h0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\) = \(3, 6\)"):
        linear_scan(a, b, h0[:, :-1])
    with pytest.raises(ValueError, match="chunk_size must be a positive number of steps; got 0"):
        linear_scan(a, b, h0, chunk_size=0)


def _mingru_by_autograd(projections: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """MinGRU's recurrence from its own equations, differentiated by autograd."""
    k, candidate = projections.chunk(2, dim=-1)  # 2 × (B, T, H)
    z = torch.sigmoid(k)
    return linear_scan(1 - z, z * candidate, h0, impl="loop")  # (B, T, H)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("steps", "chunk_size"), [(1, 32), (5, 2), (70, 32), (9, 9)])
@pytest.mark.parametrize("time_major", [False, True])
def test_mingru_scan_equals_its_equations(
    dtype: torch.dtype, steps: int, chunk_size: int, time_major: bool
) -> None:
    """States and gradients (projections, h0), also on a time-major (transposed) input."""
    projections = torch.randn(steps, B, 2 * H, dtype=dtype)  # (T, B, 2H)
    projections = (
        projections.transpose(0, 1) if time_major else projections.transpose(0, 1).contiguous()
    )
    h0 = torch.randn(B, H, dtype=dtype)  # (B, H)
    results = []
    for run in (_mingru_by_autograd, lambda p, h: mingru_scan(p, h, chunk_size=chunk_size)):
        p, h = projections.clone().requires_grad_(), h0.clone().requires_grad_()
        states = run(p, h)  # (B, T, H)
        weights = torch.linspace(-1.0, 1.0, states.numel(), dtype=dtype).view_as(states)
        results.append([states.detach(), *torch.autograd.grad((states * weights).sum(), (p, h))])
    for name, got, want in zip(("h", "grad projections", "grad h0"), *results[::-1], strict=True):
        tol = TOLERANCES[dtype]
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")


def test_mingru_scan_gradcheck() -> None:
    projections = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)  # (B, T, 2H)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)  # (B, H)
    assert torch.autograd.gradcheck(lambda p, h: MinGRUScan.apply(p, h, 3), (projections, h0))


def test_mingru_scan_runs_bf16_projections_in_fp32() -> None:
    """Under autocast the projections are bf16 and the state fp32: an fp32 recurrence, and each
    gradient in its input's dtype."""
    projections = torch.randn(B, T, 2 * H).bfloat16().requires_grad_()  # (B, T, 2H)
    h0 = torch.randn(B, H, requires_grad=True)  # (B, H)
    got = mingru_scan(projections, h0, chunk_size=2)  # (B, T, H)
    want = _mingru_by_autograd(projections.detach().float(), h0.detach())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert projections.grad.dtype == torch.bfloat16 and h0.grad.dtype == torch.float32


def test_mingru_scan_bad_arguments_are_explained() -> None:
    projections, h0 = torch.randn(B, T, 2 * H), torch.randn(B, H)
    with pytest.raises(ValueError, match=r"projections must have shape \(B, T, 2H\)"):
        mingru_scan(projections[..., :-1], h0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\) = \(3, 6\)"):
        mingru_scan(projections, h0[:, :-1])
    with pytest.raises(ValueError, match="chunk_size must be a positive number of steps; got 0"):
        mingru_scan(projections, h0, chunk_size=0)
