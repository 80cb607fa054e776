"""Weight averaging (--average ema|swa): the averages against a hand computation, the swap
in and out of the model, the saved state; and the counter of --patience."""

import pytest
import torch
from torch import nn

from rnnkit.config import RunConfig, TrainConfig, run_from_dict
from rnnkit.errors import ConfigError
from rnnkit.training.averaging import WeightAverage
from rnnkit.training.checkpoint import TrainerState
from rnnkit.training.control import stop_reason

pytestmark = pytest.mark.usefixtures("single_thread")

PROGRESS = [0.1, 0.3, 0.5, 0.6, 0.8, 1.0]  # after each of six optimizer steps


def _steps(model: nn.Module, average: WeightAverage) -> list[dict[str, torch.Tensor]]:
    """Six "optimizer steps" that set the weights to new random values; the weights of each."""
    seen = []
    for p in PROGRESS:
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(torch.randn_like(param))
        average.update(p)
        seen.append({name: param.detach().clone() for name, param in model.named_parameters()})
    return seen


def _applied(model: nn.Module, average: WeightAverage) -> dict[str, torch.Tensor]:
    with average.applied():
        return {name: param.detach().clone() for name, param in model.named_parameters()}


def test_ema_against_a_hand_computation() -> None:
    model = nn.Linear(4, 3)
    average = WeightAverage(model, TrainConfig(average="ema", average_start=0.5, ema_decay=0.8))
    seen = _steps(model, average)
    assert average.steps == 4  # from progress 0.5 on
    for name in seen[0]:
        expected = seen[2][name]  # the first averaged step: its weights
        for weights in seen[3:]:
            expected = 0.8 * expected + 0.2 * weights[name]
        torch.testing.assert_close(_applied(model, average)[name], expected)


def test_swa_is_the_mean_of_the_averaged_steps() -> None:
    model = nn.Linear(4, 3)
    average = WeightAverage(model, TrainConfig(average="swa", average_start=0.3))
    seen = _steps(model, average)
    assert average.steps == 5
    for name in seen[0]:
        expected = torch.stack([weights[name] for weights in seen[1:]]).mean(0)
        torch.testing.assert_close(_applied(model, average)[name], expected)


def test_applied_restores_the_raw_weights_exactly() -> None:
    model = nn.Linear(4, 3)
    average = WeightAverage(model, TrainConfig(average="ema", average_start=0.0))
    seen = _steps(model, average)
    inside = _applied(model, average)
    assert not torch.equal(inside["weight"], seen[-1]["weight"])
    for name, param in model.named_parameters():
        assert torch.equal(param, seen[-1][name])  # bit for bit: the run trains on from them


def test_nothing_is_averaged_before_the_start_or_with_none() -> None:
    model = nn.Linear(4, 3)
    late = WeightAverage(model, TrainConfig(average="swa", average_start=0.9))
    off = WeightAverage(model, TrainConfig())
    for p in PROGRESS[:-1]:  # up to 0.8
        late.update(p)
        off.update(p)
    assert late.steps == 0 and off.steps == 0 and not off.enabled
    for average in (late, off):
        assert torch.equal(_applied(model, average)["weight"], model.weight)
    assert set(off.state_dict()) == {"steps"}


def test_state_dict_continues_the_average_exactly() -> None:
    torch.manual_seed(3)
    model = nn.Linear(4, 3)
    cfg = TrainConfig(average="ema", average_start=0.0, ema_decay=0.7)
    first = WeightAverage(model, cfg)
    _steps(model, first)
    saved = first.state_dict()
    assert set(saved) == {"steps", "average.weight", "average.bias"}
    resumed = WeightAverage(model, cfg)
    resumed.load_state_dict(saved)
    assert resumed.steps == first.steps == 6
    for average in (first, resumed):
        average.update(1.0)
    assert torch.equal(_applied(model, first)["weight"], _applied(model, resumed)["weight"])


def test_tied_weights_are_averaged_once() -> None:
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    model[1].weight = model[0].weight
    average = WeightAverage(model, TrainConfig(average="swa", average_start=0.0))
    assert set(average.state_dict()) == {"steps", "average.0.weight", "average.1.bias"}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("average_start", 1.0, r"--average-start must be in \[0, 1\)"),
        ("average_start", -0.1, r"--average-start must be in \[0, 1\)"),
        ("ema_decay", 1.0, r"--ema-decay must be in \(0, 1\)"),
        ("ema_decay", 0.0, r"--ema-decay must be in \(0, 1\)"),
        ("patience", 0, "--patience must be at least 1"),
        ("average", "mean", "--average must be one of"),
    ],
)
def test_bad_values_are_one_line_config_errors(name: str, value, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        if name == "average":
            run_from_dict({"train": {name: value}}, "run.toml")
        else:
            TrainConfig(**{name: value})


def test_patience_counts_evaluations_in_a_row_without_a_better_model() -> None:
    run = RunConfig(train=TrainConfig(patience=2, max_steps=100))
    st = TrainerState()
    for better, stops in [(True, False), (False, False), (True, False), (False, False)]:
        st.count_evaluation(better)
        assert (stop_reason(run, st) == "patience") is stops
    st.count_evaluation(False)
    assert st.evals_since_best == 2 and stop_reason(run, st) == "patience"
    assert stop_reason(RunConfig(train=TrainConfig(max_steps=100)), st) is None


def test_trainer_json_of_older_runs_has_no_patience_counter() -> None:
    values = TrainerState().__dict__ | {"evals_since_best": 3}
    assert TrainerState.from_dict(values, "trainer").evals_since_best == 3
    del values["evals_since_best"]
    assert TrainerState.from_dict(values, "trainer").evals_since_best == 0
    with pytest.raises(ValueError, match=r"trainer\.evals_since_best must be an integer"):
        TrainerState.from_dict(values | {"evals_since_best": "2"}, "trainer")
