"""Config dataclasses: defaults, validation messages, TOML files, generated CLI flags."""

import dataclasses

import pytest

from rnnkit.cli import build_parser
from rnnkit.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    merge,
    read_toml,
    run_from_dict,
    to_toml,
)
from rnnkit.errors import ConfigError

DESIGN_FLAGS = [
    "--task",
    "--out",
    "--cell",
    "--num-layers",
    "--hidden-size",
    "--embedding-size",
    "--dropout",
    "--bidirectional",
    "--batch-size",
    "--seq-len",
    "--lr",
    "--optimizer",
    "--grad-clip",
    "--max-steps",
    "--max-time",
    "--epochs",
    "--val-frac",
    "--val",
    "--eval-every",
    "--log-every",
    "--seed",
    "--precision",
    "--device",
    "--engine",
    "--resume",
    "--level",
    "--min-freq",
]


def test_default_preset() -> None:
    run = RunConfig()
    assert (run.model.cell, run.model.num_layers, run.model.hidden_size) == ("lstm", 2, 512)
    assert (run.model.embedding_size, run.model.dropout) == (64, 0.4)
    assert run.train.weight_decay is None and run.train.effective_weight_decay == 0.3
    assert (run.train.batch_size, run.train.seq_len) == (32, 100)
    assert (run.train.optimizer, run.train.lr, run.train.warmup_steps) == ("adamw", 5e-3, 50)
    assert (run.train.schedule, run.train.min_lr_frac, run.train.grad_clip) == ("cosine", 0.1, 1.0)
    assert run.data.val_frac == 0.1 and run.data.level == "char"
    assert run.train.precision == "auto"


@pytest.mark.parametrize(("optimizer", "decay"), [("adamw", 0.3), ("adam", 0.0), ("sgd", 0.0)])
def test_weight_decay_default_is_decoupled_only(optimizer: str, decay: float) -> None:
    assert TrainConfig(optimizer=optimizer).effective_weight_decay == decay
    assert TrainConfig(optimizer=optimizer, weight_decay=0.02).effective_weight_decay == 0.02


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelConfig(dropout=1.0), r"--dropout must be in \[0, 1\), got 1.0"),
        (lambda: ModelConfig(hidden_size=-3), "--hidden-size must be at least 1, got -3"),
        (lambda: ModelConfig(num_layers=0), "--num-layers must be at least 1, got 0"),
        (lambda: ModelConfig(cell="gru2"), "--cell must be one of rnn, gru, lstm.*got 'gru2'"),
        (
            lambda: ModelConfig(impl="scan"),
            "--impl must be one of auto, fused, loop for --cell lstm, got 'scan'",
        ),
        (lambda: ModelConfig(cell="mingru", impl="fused"), "--impl must be one of auto, scan"),
        (lambda: ModelConfig(embedding_size=-1), "--embedding-size must be 0 or more, got -1"),
        (lambda: ModelConfig(tie_weights=True), "--tie-weights needs .* got 64 and 512"),
        (lambda: DataConfig(val_frac=1.0), r"--val-frac must be in \[0, 1\), got 1.0"),
        (lambda: DataConfig(val_frac=-0.1), r"--val-frac must be in \[0, 1\), got -0.1"),
        (
            lambda: RunConfig(data=DataConfig(val_frac=0.0)),
            "--val-frac 0 \\(no validation\\) is not for --task lm",
        ),
        (
            lambda: RunConfig(
                task="classify", data=DataConfig(val_frac=0.0), train=TrainConfig(patience=2)
            ),
            "--patience counts evaluations without a better model, and --val-frac 0",
        ),
        (lambda: DataConfig(encoding="klingon"), "--encoding must be a known .*'klingon'"),
        (lambda: TrainConfig(lr=-1.0), "--lr must be positive, got -1.0"),
        (lambda: TrainConfig(batch_size=0), "--batch-size must be at least 1, got 0"),
        (lambda: TrainConfig(max_time=0), "--max-time must be positive, got 0"),
        (lambda: SampleConfig(top_p=1.5), r"--top-p must be in \(0, 1\], got 1.5"),
        (
            lambda: RunConfig(model=ModelConfig(bidirectional=True)),
            "--bidirectional cannot be used with --task lm",
        ),
    ],
)
def test_bad_values_name_the_option_and_the_value(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().hidden_size = 3  # type: ignore[misc]


def test_toml_overrides_and_round_trip(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'out = "runs/x"\n[model]\nhidden_size = 128\ncell = "gru"\n[train]\nlr = 1\n',
        encoding="utf-8",
    )
    run = merge(RunConfig(), read_toml(path))
    assert (run.out, run.model.hidden_size, run.model.cell, run.train.lr) == (
        "runs/x",
        128,
        "gru",
        1.0,
    )
    assert run.model.num_layers == 2  # untouched defaults
    path.write_text(to_toml(run), encoding="utf-8")
    assert merge(RunConfig(), read_toml(path)) == run


def test_toml_unknown_keys_are_listed(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[model]\nhiden_size = 3\nlayers = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown keys 'hiden_size', 'layers' in .*\[model\]"):
        read_toml(path)
    path.write_text("[modle]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*valid keys: data, model"):
        read_toml(path)


def test_toml_wrong_type_and_bad_syntax(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[model]\nhidden_size = "big"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="--hidden-size must be an integer, got 'big'"):
        read_toml(path)
    path.write_text("[model\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_toml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")


def test_run_from_dict_reads_config_json_shape() -> None:
    saved = {"rnnkit_version": "0.1.0", **dataclasses.asdict(RunConfig())}
    assert run_from_dict(saved, "config.json") == RunConfig()


def test_design_flags_exist_exactly() -> None:
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {flag for action in train._actions for flag in action.option_strings}
    missing = [flag for flag in DESIGN_FLAGS if flag not in flags]
    assert not missing


def test_flags_carry_type_default_and_help() -> None:
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.option_strings[0]: a for a in train._actions if a.option_strings}
    assert actions["--hidden-size"].type is int
    assert "(default: 512)" in actions["--hidden-size"].help
    assert actions["--cell"].choices == ("rnn", "gru", "lstm", "mingru", "minlstm")
    assert actions["--dropout"].type is float
