"""The NumPy engine against torch autograd: same weights → same loss, state and every gradient.

The torch model is the one the engine describes: one-hot input → torch.nn.RNN / GRU / LSTM →
torch.nn.Linear, cross-entropy summed over steps and batch, all in float64.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.reference import CharRNN, relative_error

TORCH_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
V, H = 4, 6  # vocabulary, hidden: distinct small sizes


def torch_twin(m: CharRNN) -> tuple[nn.Module, nn.Linear]:
    """torch modules holding copies of ``m``'s parameters."""
    rnn = TORCH_LAYERS[m.cell_name](V, H, batch_first=True, dtype=torch.float64)
    head = nn.Linear(H, V, dtype=torch.float64)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, f"{name}_l0").copy_(torch.from_numpy(m.params[name]))
        head.weight.copy_(torch.from_numpy(m.params["weight_out"]))
        head.bias.copy_(torch.from_numpy(m.params["bias_out"]))
    return rnn, head


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("batch_size", "steps"), [(None, 5), (3, 5), (2, 40)])
def test_loss_state_and_gradients_equal_torch_autograd(
    cell: str, batch_size: int | None, steps: int
) -> None:
    rng = np.random.default_rng(0)
    m = CharRNN(cell, vocab_size=V, hidden_size=H, seed=0)
    shape = (steps,) if batch_size is None else (batch_size, steps)
    inputs, targets = rng.integers(0, V, shape), rng.integers(0, V, shape)
    state_shape = (H,) if batch_size is None else (batch_size, H)
    h0_parts = [0.5 * rng.standard_normal(state_shape) for _ in range(2 if cell == "lstm" else 1)]
    h0 = tuple(h0_parts) if cell == "lstm" else h0_parts[0]

    result = m.bptt(inputs, targets, h0)

    rnn, head = torch_twin(m)
    # torch's state has a leading layer axis: (1, H) unbatched, (1, B, H) batched
    torch_h0 = [torch.tensor(part[None], requires_grad=True) for part in h0_parts]
    x = F.one_hot(torch.from_numpy(inputs), V).to(torch.float64)  # (T, V) or (B, T, V)
    out, torch_h = rnn(x, tuple(torch_h0) if cell == "lstm" else torch_h0[0])  # (..., T, H)
    logits = head(out)  # (..., T, V)
    loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1),
                           reduction="sum")  # fmt: skip
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=1e-12)
    torch_grads = {
        "weight_ih": rnn.weight_ih_l0.grad,
        "weight_hh": rnn.weight_hh_l0.grad,
        "bias_ih": rnn.bias_ih_l0.grad,
        "bias_hh": rnn.bias_hh_l0.grad,
        "weight_out": head.weight.grad,
        "bias_out": head.bias.grad,
    }
    for name, grad in torch_grads.items():
        assert relative_error(result.grads[name], grad.numpy()) < 1e-8, name
    ours_h = result.h if cell == "lstm" else (result.h,)
    theirs_h = torch_h if cell == "lstm" else (torch_h,)
    ours_d_h0 = result.d_h0 if cell == "lstm" else (result.d_h0,)
    for ours, theirs, d_ours, d_theirs in zip(ours_h, theirs_h, ours_d_h0, torch_h0, strict=True):
        assert ours.shape == state_shape and d_ours.shape == state_shape
        assert relative_error(ours, theirs.detach().numpy()[0]) < 1e-12
        assert relative_error(d_ours, d_theirs.grad.numpy()[0]) < 1e-8
