"""The line a finished run logs: what stopped it and which model it kept, by what measure."""

import logging
from pathlib import Path

from rnnkit.training.checkpoint import TrainerState
from rnnkit.training.control import finish_run


def _state() -> TrainerState:
    st = TrainerState(step=4600)
    st.best_val_loss, st.best_step = 1.2773, 4500
    st.best_metrics = {"loss": 1.2773, "bleu": 57.9422, "examples": 954}
    return st


def test_the_kept_model_is_named_by_the_metric_that_chose_it(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="rnnkit.training"):
        result = finish_run(Path("runs/x"), _state(), "max_steps", "bleu")
    line = caplog.records[-1].getMessage()
    assert line.startswith(
        "stopped by max_steps at step 4600; best val bleu 57.94 (step 4500; val loss there 1.2773)"
    )
    assert result.best_metrics["bleu"] == 57.9422


def test_a_run_chosen_by_its_loss_names_only_the_loss(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="rnnkit.training"):
        finish_run(Path("runs/x"), _state(), "max_time")
    line = caplog.records[-1].getMessage()
    assert "best val loss 1.2773 (step 4500)" in line and "bleu" not in line
