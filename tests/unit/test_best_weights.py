"""--average-best K (training/best_weights.py): which evaluations are kept, their mean against a
hand computation, the swap and restore, and the state files (written once, then linked)."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rnnkit.errors import CheckpointError
from rnnkit.training.best_weights import BestWeights


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)  # frozen, as --freeze-embeddings
    return model


def _offer_steps(model: nn.Module, best: BestWeights, values: list[float]) -> dict[int, dict]:
    """Step s (1-based) sets the linear layer's weights to s and offers ``values[s - 1]``; the
    weights each step had."""
    seen = {}
    for step, value in enumerate(values, start=1):
        with torch.no_grad():
            model[1].weight.fill_(step)
            model[1].bias.fill_(-step)
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}
        best.offer(step, value)
    return seen


def test_it_keeps_the_k_best_of_a_metric_where_higher_is_better() -> None:
    model = _model()
    best = BestWeights(model, 3, higher_is_better=True)
    _offer_steps(model, best, [0.2, 0.5, 0.1, 0.5, math.nan, 0.4, 0.3])
    assert best.steps == [2, 4, 6]  # a tie goes to the earlier step; NaN never ranks
    assert [k.value for k in best.kept] == [0.5, 0.5, 0.4]


def test_it_keeps_the_k_lowest_losses() -> None:
    model = _model()
    best = BestWeights(model, 2, higher_is_better=False)
    _offer_steps(model, best, [3.0, 2.0, 2.5, 1.0, math.inf])
    assert best.steps == [4, 2]


def test_the_mean_is_that_of_the_kept_weights_and_the_model_is_restored() -> None:
    model = _model()
    best = BestWeights(model, 3, higher_is_better=True)
    seen = _offer_steps(model, best, [0.1, 0.9, 0.3, 0.8, 0.7, 0.2])
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with best.applied():
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    mean = (seen[2]["1.weight"] + seen[4]["1.weight"] + seen[5]["1.weight"]) / 3
    torch.testing.assert_close(inside["1.weight"], mean)  # steps 2, 4, 5: all 11/3
    torch.testing.assert_close(inside["1.bias"], torch.full((2,), -11 / 3))
    assert torch.equal(inside["0.weight"], own["0.weight"])  # frozen: the model's own
    for name, value in model.state_dict().items():
        assert torch.equal(value, own[name]), name
    with best.applied([4]):
        assert torch.equal(model[1].weight, seen[4]["1.weight"])
    with pytest.raises(ValueError, match="no kept evaluation"), best.applied([3]):
        pass


def test_a_kept_copy_does_not_follow_later_training() -> None:
    model = _model()
    best = BestWeights(model, 2, higher_is_better=True)
    _offer_steps(model, best, [0.5])
    with torch.no_grad():
        model[1].weight.add_(100.0)
    assert torch.equal(best.kept[0].weights[0], torch.ones(2, 3))


def test_k_below_2_does_nothing() -> None:
    model = _model()
    for k in (0, 1):
        best = BestWeights(model, k, higher_is_better=True)
        assert not best.enabled and not best.offer(1, 0.5) and best.kept == []


def test_the_state_files_are_written_once_then_linked_and_read_back(tmp_path) -> None:
    model = _model()
    best = BestWeights(model, 2, higher_is_better=True)
    _offer_steps(model, best, [0.3, 0.6])
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    best.write(first, None)
    assert sorted(p.name for p in first.iterdir()) == ["best-1.safetensors", "best-2.safetensors"]
    with torch.no_grad():
        model[1].weight.fill_(3)
    best.offer(3, 0.5)  # pushes step 1 (0.3) out
    best.write(second, first)
    assert sorted(p.name for p in second.iterdir()) == ["best-2.safetensors", "best-3.safetensors"]
    assert (second / "best-2.safetensors").stat().st_ino == (
        first / "best-2.safetensors"
    ).stat().st_ino
    assert (second / "best-3.safetensors").stat().st_nlink == 1

    again = BestWeights(_model(), 2, higher_is_better=True)
    again.read(second)
    assert again.steps == [2, 3] and [k.value for k in again.kept] == [0.6, 0.5]
    for ours, theirs in zip(best.kept, again.kept, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(ours.weights, theirs.weights, strict=True))


def test_a_file_that_does_not_fit_is_a_checkpoint_error(tmp_path) -> None:
    model = _model()
    best = BestWeights(model, 2, higher_is_better=True)
    _offer_steps(model, best, [0.3])
    best.write(tmp_path, None)
    path = tmp_path / "best-1.safetensors"
    tensors = load_file(path)
    tensors["param.1.bias"] = tensors["param.1.bias"][:1]
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"best-1\.safetensors does not fit the model"):
        BestWeights(model, 2, higher_is_better=True).read(tmp_path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"best-1\.safetensors is corrupted"):
        BestWeights(model, 2, higher_is_better=True).read(tmp_path)
