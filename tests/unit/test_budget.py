"""The budget-adaptive preset of --task lm (training/budget.py): the rule table, the passes
estimate, the probe, and how `rnnkit train` layers the preset under the config file and flags.

The machine's speed is faked wherever a row depends on it; the tests that run the probe check
what it leaves behind, never how fast it measured."""

import json
import math
import re
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.cli import main
from rnnkit.config import (
    FALLBACK_EPOCHS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    merge,
)
from rnnkit.tasks import get_task
from rnnkit.training import budget
from rnnkit.training.budget import (
    LM_BUDGET_ROWS,
    BudgetRow,
    adapt,
    choose,
    estimate_passes,
    pick_row,
    row_overrides,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# A table of the real one's shape, with values no default has, so that each test sees which
# row was applied whatever the lead engineer's timed runs make of LM_BUDGET_ROWS.
ROWS = (
    BudgetRow("slow", 9.0, {"hidden_size": 12, "dropout": 0.05, "lr": 7e-3}, max_tokens_per_s=100),
    BudgetRow("few", 3.0, {"hidden_size": 24, "dropout": 0.15, "weight_decay": 0.05}),
    BudgetRow("some", 6.0, {"hidden_size": 20, "dropout": 0.25, "weight_decay": 0.15}),
    BudgetRow("many", math.inf, {}),
)
B, T = 4, 10
SMALL = ["--embedding-size", "8", "--num-layers", "1", "--batch-size", str(B), "--seq-len", str(T)]
SMALL += ["--log-every", "1", "--warmup-steps", "0"]


@pytest.fixture
def rows(monkeypatch):
    monkeypatch.setattr(budget, "LM_BUDGET_ROWS", ROWS)


@pytest.fixture
def speed(monkeypatch):
    """``speed(x)`` makes the probe report x tokens/s; ``speed.calls`` counts its runs."""

    def fake(tokens_per_s: float | None) -> None:
        def measure(run, data, **_):
            fake.calls += 1
            if tokens_per_s is None:
                raise AssertionError("the probe ran")
            return tokens_per_s

        monkeypatch.setattr(budget, "measure_tokens_per_s", measure)

    fake.calls = 0
    return fake


@pytest.fixture
def text(tmp_path):
    """A 2,000-character corpus: 1,800 train tokens, 44 chunks of B x T = 1,760 per pass."""
    path = tmp_path / "text.txt"
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat\n"]
    body = "".join(words[(i * 7) % 6] for i in range(600))[:2000]
    path.write_text(body, encoding="utf-8")
    return path


TOKENS_PER_PASS = ((1800 - 1) // B // T) * B * T  # TokenStreams: L = (N - 1) // B, L // T chunks


def printed(capsys, *args) -> tuple[str, dict]:
    """(the first line, the TOML) of `rnnkit train --print-config ARGS`."""
    capsys.readouterr()
    assert main(["train", "--print-config", *map(str, args)]) == 0
    out = capsys.readouterr().out
    return out.splitlines()[0], tomllib.loads(out)


# --- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("passes", "tokens_per_s", "name"),
    [
        (0.2, None, "few"),
        (3.0, None, "few"),  # "at most": the boundary belongs to the row
        (3.01, None, "some"),
        (6.0, 5_000.0, "some"),
        (6.5, None, "many"),
        (1e6, None, "many"),
        (4.0, 50.0, "slow"),  # a slow machine, few passes
        (4.0, 100.0, "slow"),
        (4.0, 101.0, "some"),  # fast enough: the passes decide
        (9.5, 50.0, "many"),  # slow, but many passes
        (2.0, None, "few"),  # speed unknown: the speed's row never fits
    ],
)
def test_the_first_fitting_row_is_picked(passes, tokens_per_s, name) -> None:
    assert pick_row(passes, tokens_per_s, ROWS).name == name


def test_a_table_that_fits_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no budget row fits 4\.0 passes"):
        pick_row(4.0, None, ROWS[:2])


def test_the_real_table_is_complete_and_ends_with_todays_preset() -> None:
    last = LM_BUDGET_ROWS[-1]
    assert last.max_passes == math.inf and last.max_tokens_per_s is None and last.settings == {}
    assert pick_row(8.0, 1e9) is last  # many passes keep the defaults (config.py's runs)
    for row in LM_BUDGET_ROWS:  # no row is shadowed by the rows before it
        assert pick_row(row.max_passes, row.max_tokens_per_s) is row
        merge(RunConfig(), row_overrides(row, RunConfig()))  # fields exist, values are valid


def test_row_settings_that_do_not_fit_the_run_are_left_out() -> None:
    row = ROWS[1]
    adamw = row_overrides(row, RunConfig())
    assert adamw == {"model": {"hidden_size": 24, "dropout": 0.15}, "train": {"weight_decay": 0.05}}
    adam = row_overrides(row, RunConfig(train=TrainConfig(optimizer="adam")))
    assert adam["train"] == {}  # decay is an L2 term there, 0 unless asked for
    tied = RunConfig(model=ModelConfig(tie_weights=True, embedding_size=512))
    assert row_overrides(row, tied)["model"] == {"dropout": 0.15}  # E must stay equal to H


# --- the passes --------------------------------------------------------------------------------


def test_passes_from_epochs_or_the_fallback() -> None:
    budget_ = estimate_passes(TrainConfig(epochs=3), None, None)
    assert (budget_.passes, budget_.text) == (3.0, "epochs 3 = 3 passes")
    budget_ = estimate_passes(TrainConfig(), None, None)
    assert budget_.passes == FALLBACK_EPOCHS and "no limit set" in budget_.text


def test_passes_from_steps() -> None:
    cfg = TrainConfig(max_steps=50, batch_size=4, seq_len=10)
    budget_ = estimate_passes(cfg, 1000, None)
    assert budget_.passes == pytest.approx(2.0)
    assert budget_.text == "max_steps 50 x 4 x 10 = 2k tokens = 2.0 passes over 1k train tokens"
    assert estimate_passes(cfg, None, None) is None  # unknown data


def test_passes_from_time_and_the_measured_speed() -> None:
    cfg = TrainConfig(max_time=600.0)
    budget_ = estimate_passes(cfg, 1_000_000, 9_812.0)
    assert budget_.passes == pytest.approx(600 * 9_812 / 1e6)
    assert budget_.tokens_per_s == 9_812.0
    assert budget_.text == (
        "max_time 600 s x ~9,800 tokens/s (measured) = 5.9M tokens = 5.9 passes over "
        "1.0M train tokens"
    )
    assert estimate_passes(cfg, 1_000_000, None) is None  # not measured


def test_the_first_limit_reached_decides() -> None:
    cfg = TrainConfig(epochs=3, max_steps=50, max_time=10.0, batch_size=4, seq_len=10)
    assert estimate_passes(cfg, 1000, 500.0).passes == pytest.approx(2.0)  # steps: 2 passes
    assert estimate_passes(cfg, 1000, 100.0).passes == pytest.approx(1.0)  # time: 1 pass
    assert estimate_passes(cfg, 100, 100.0).passes == 3.0  # epochs
    slow = estimate_passes(cfg, 1000, 500.0)
    assert slow.tokens_per_s == 500.0  # known, whichever limit binds


# --- the choice, with the speed faked ----------------------------------------------------------


def _run(text, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(path=str(text)),
        model=ModelConfig(embedding_size=8, num_layers=1),
        train=TrainConfig(batch_size=B, seq_len=T, **train),
    )


def test_time_limited_runs_are_measured_and_the_passes_pick_the_row(rows, speed, text) -> None:
    speed(1_000.0)  # tokens/s
    max_time = 2 * TOKENS_PER_PASS / 1_000.0  # seconds for 2 passes
    choice = choose(_run(text, max_time=max_time))
    assert speed.calls == 1
    assert choice.budget.passes == pytest.approx(2.0) and choice.row == "few"
    assert choice.overrides == row_overrides(ROWS[1], _run(text))
    speed(50.0)  # a slow machine: its row for few passes, the last one for many
    assert choose(_run(text, max_time=4 * TOKENS_PER_PASS / 50.0)).row == "slow"
    assert choose(_run(text, max_time=200 * TOKENS_PER_PASS / 50.0)).row == "many"
    assert speed.calls == 3


def test_steps_and_epochs_need_no_probe(rows, speed, text) -> None:
    speed(None)  # the probe must not run
    choice = choose(_run(text, max_steps=5 * TOKENS_PER_PASS // (B * T)))
    assert choice.budget.passes == pytest.approx(5.0) and choice.row == "some"
    assert choose(_run(text, epochs=1)).row == "few"


def test_what_is_not_adapted(rows, speed, text) -> None:
    speed(None)
    assert choose(merge(_run(text), {"run": {"task": "classify"}})) is None
    for run, why in [
        (merge(_run(text), {"train": {"engine": "numpy"}}), "--engine numpy"),
        (merge(_run(text), {"train": {"device": "cuda"}}), "on CUDA the GPU preset applies"),
        (_run(text, max_steps=5), "2 processes"),
        (merge(_run(text, max_steps=5), {"data": {"path": str(text) + ".gone"}}), "cannot be read"),
    ]:
        choice = choose(run, world_size=2 if why == "2 processes" else 1)
        assert choice.row is None and choice.overrides == {} and why in choice.line, choice.line
    choice = choose(_run(text, max_time=5.0), probe=False)  # the probe skipped
    assert choice.row is None and "speed not measured" in choice.line


def test_adapt_puts_the_preset_under_the_layers(rows, speed, text) -> None:
    speed(1_000.0)
    base = RunConfig()
    user = {"data": {"path": str(text)}, "model": {"embedding_size": 8, "dropout": 0.3}}
    user["train"] = {"batch_size": B, "seq_len": T, "epochs": 2}
    toml = {"train": {"weight_decay": 0.2}}
    run, choice = adapt(base, toml, user)
    assert choice.row == "few"
    assert run.model.hidden_size == 24  # the row's
    assert run.model.dropout == 0.3 and run.train.weight_decay == 0.2  # the layers'
    assert run.model.embedding_size == 8 and run.train.epochs == 2
    assert choice.line == (
        'budget: epochs 2 = 2 passes -> row "few": hidden_size 24, dropout 0.3 (yours), '
        "lr 0.005, weight_decay 0.2 (yours)"
    )


# --- rnnkit train -------------------------------------------------------------------------------


def test_flags_and_the_config_file_win(rows, speed, text, tmp_path, capsys) -> None:
    speed(1_000.0)
    max_time = 2 * TOKENS_PER_PASS / 1_000.0
    args = [text, *SMALL, "--max-time", max_time]
    _, config = printed(capsys, *args)
    assert (config["model"]["hidden_size"], config["model"]["dropout"]) == (24, 0.15)
    assert config["train"]["weight_decay"] == 0.05

    _, config = printed(capsys, *args, "--dropout", "0.3", "--hidden-size", "16")
    assert (config["model"]["hidden_size"], config["model"]["dropout"]) == (16, 0.3)
    assert config["train"]["weight_decay"] == 0.05  # the rest is the row's

    toml = tmp_path / "run.toml"
    toml.write_text("[model]\ndropout = 0.35\n[train]\nweight_decay = 0.25\n")
    _, config = printed(capsys, *args, "--config", toml, "--weight-decay", "0.01")
    assert (config["model"]["dropout"], config["train"]["weight_decay"]) == (0.35, 0.01)
    assert config["model"]["hidden_size"] == 24

    toml.write_text("[train]\nmax_time = 1e9\n")  # the file's limit counts too: many passes
    _, config = printed(capsys, text, *SMALL, "--config", toml)
    assert config["model"]["dropout"] == ModelConfig().dropout


def test_print_config_and_the_log_give_the_reason(rows, speed, text, tmp_path, capsys) -> None:
    speed(1_000.0)
    line, _ = printed(capsys, text, *SMALL, "--max-time", "20", "--dropout", "0.3")
    passes = 20 * 1_000 / TOKENS_PER_PASS
    assert line == (
        f"# budget: max_time 20 s x ~1,000 tokens/s (measured) = 20k tokens = {passes:.1f} "
        f'passes over 2k train tokens -> row "many": hidden_size {ModelConfig().hidden_size}, '
        f"dropout 0.3 (yours), lr 0.005, weight_decay 0.3"
    )
    line, _ = printed(capsys, text, *SMALL, "--max-steps", "22")  # half a pass
    assert line.startswith("# budget: max_steps 22 x 4 x 10 = 880 tokens = 0.5 passes over 2k")
    assert line.endswith('row "few": hidden_size 24, dropout 0.15, lr 0.005, weight_decay 0.05')

    out = tmp_path / "run"
    assert main(["train", str(text), *SMALL, "--max-steps", "22", "--out", str(out)]) == 0
    log = capsys.readouterr().err.splitlines()
    assert log[0] == line.removeprefix("# ")  # the log's first line, before the run's own
    assert json.loads((out / "config.json").read_text())["model"]["hidden_size"] == 24

    line, _ = printed(capsys, text, "--task", "classify")
    assert not line.startswith("#")  # no line for other tasks

    gone = str(text) + ".gone"  # a user's mistake stays one line: the run's error, no budget
    assert main(["train", gone, *SMALL, "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"rnnkit train: error: {gone} does not exist"]
    assert main(["train", str(text), *SMALL, "--max-steps", "22", "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1  # the folder needs --force


def test_resume_keeps_the_saved_choice(rows, speed, text, tmp_path, capsys, monkeypatch) -> None:
    speed(None)
    out = tmp_path / "run"
    assert main(["train", str(text), *SMALL, "--max-steps", "3", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["model"]["hidden_size"], saved["model"]["dropout"]) == (24, 0.15)  # "few"

    other = (BudgetRow("other", math.inf, {"hidden_size": 40, "dropout": 0.45}),)
    monkeypatch.setattr(budget, "LM_BUDGET_ROWS", other)
    line, config = printed(capsys, "--out", out, "--resume", "--max-time", "100")
    assert not line.startswith("#")  # nothing decided again (and the probe did not run)
    assert (config["model"]["hidden_size"], config["model"]["dropout"]) == (24, 0.15)
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "5"]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == saved["model"]
    assert speed.calls == 0


# --- the probe ----------------------------------------------------------------------------------


def test_the_probe_restores_the_random_state_and_the_threads(text) -> None:
    run = _run(text, max_time=5.0, threads=2)
    task = get_task("lm")
    data = task.load_data(run, None)
    torch.manual_seed(123)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    tokens_per_s = budget.measure_tokens_per_s(run, data, warmup=1, steps=2)
    assert tokens_per_s > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads == 1  # the module runs on one thread


def test_a_run_after_the_probe_trains_the_same_weights(speed, text, tmp_path) -> None:
    """With the row's settings all given, a run whose probe ran (for real) and a run whose
    probe was skipped train the same weights: the probe changes nothing the run draws."""
    chosen = ["--hidden-size", "16", "--dropout", "0.2", "--lr", "0.01", "--weight-decay", "0.1"]
    args = ["train", str(text), *SMALL, *chosen, "--max-steps", "6", "--max-time", "1e6"]
    assert main([*args, "--out", str(tmp_path / "probed")]) == 0
    speed(1_000.0)
    assert main([*args, "--out", str(tmp_path / "faked")]) == 0
    probed = load_file(tmp_path / "probed" / "model.safetensors")
    faked = load_file(tmp_path / "faked" / "model.safetensors")
    assert probed.keys() == faked.keys()
    for name in probed:
        assert torch.equal(probed[name], faked[name]), name


def test_the_line_format_holds_for_the_real_probe(text, capsys) -> None:
    line, _ = printed(capsys, text, *SMALL, "--hidden-size", "16", "--max-time", "30")
    assert re.fullmatch(
        r"# budget: max_time 30 s x ~[\d,]+ tokens/s \(measured\) = \S+ tokens = [\d.]+ passes "
        r'over 2k train tokens -> row "[^"]+": hidden_size 16 \(yours\), dropout [\d.]+, '
        r"lr [\d.e-]+, weight_decay [\d.]+",
        line,
    ), line


def test_a_row_that_changes_the_model_reports_the_chosen_models_passes(rows, text, monkeypatch):
    """The candidate (H 512) probes at 50 tokens/s: 4 passes pick "slow", whose H 12 runs at
    150 tokens/s: a second probe, of the run that will train, reports 12 passes."""
    probed = []

    def measure(run, data, **_):
        probed.append(run.model.hidden_size)
        return 150.0 if run.model.hidden_size == 12 else 50.0

    monkeypatch.setattr(budget, "measure_tokens_per_s", measure)
    user = {"data": {"path": str(text)}, "model": {"embedding_size": 8, "num_layers": 1}}
    user["train"] = {"batch_size": B, "seq_len": T, "max_time": 4 * TOKENS_PER_PASS / 50.0}
    run, choice = adapt(RunConfig(), user)
    assert probed == [512, 12] and choice.row == "slow" and run.model.hidden_size == 12
    assert choice.budget.passes == pytest.approx(4.0)
    assert choice.chosen.passes == pytest.approx(12.0)
    assert choice.line.endswith("; the chosen model measured ~150 tokens/s = 12.0 passes")
    probed.clear()  # the user's hidden size: the model does not change, one probe
    user["model"]["hidden_size"] = 512
    _, choice = adapt(RunConfig(), user)
    assert probed == [512] and choice.chosen is None and "chosen model" not in choice.line
