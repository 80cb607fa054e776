"""The GPU preset of ``--task lm`` (config.GPU_LM_PRESET): chosen when the device resolves to
CUDA, under the config file and the flags. CUDA's presence is faked, so this runs on any CPU."""

import json
import tomllib

import pytest
import torch

from rnnkit.cli import main
from rnnkit.config import (
    GPU_LM_PRESET,
    ModelConfig,
    RunConfig,
    TrainConfig,
    engine_preset,
    run_to_dict,
)
from rnnkit.tasks import get_task

CPU_DEFAULTS = {
    "model": {
        "hidden_size": ModelConfig().hidden_size,
        "embedding_size": ModelConfig().embedding_size,
        "dropout": ModelConfig().dropout,
    },
    "train": {"batch_size": TrainConfig().batch_size, "lr": TrainConfig().lr},
}


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch):
    """``cuda(True)`` makes torch report a CUDA device, ``cuda(False)`` none."""

    def fake(available: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)

    return fake


def printed_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()
    assert main(["train", "--print-config", *args]) == 0
    return tomllib.loads(capsys.readouterr().out)


def chosen(config: dict, fields: dict) -> dict:
    """The values of ``config`` at the (section, field) names of ``fields``."""
    return {section: {k: config[section][k] for k in names} for section, names in fields.items()}


def test_the_preset_differs_from_the_cpu_defaults_in_every_field() -> None:
    assert set(GPU_LM_PRESET) == set(CPU_DEFAULTS)
    for section, values in GPU_LM_PRESET.items():
        assert set(values) == set(CPU_DEFAULTS[section])
        for name, value in values.items():
            assert value != CPU_DEFAULTS[section][name], name


@pytest.mark.parametrize(
    ("available", "device", "gpu"),
    [
        (True, None, True),  # auto picks CUDA
        (True, "cuda", True),
        (False, "cuda", True),  # what would run; the run itself refuses the absent CUDA
        (False, None, False),
        (False, "auto", False),
        (True, "cpu", False),
    ],
)
def test_preset_follows_the_resolved_device(cuda, capsys, available, device, gpu) -> None:
    cuda(available)
    config = printed_config(capsys, *(["--device", device] if device else []))
    assert chosen(config, GPU_LM_PRESET) == (GPU_LM_PRESET if gpu else CPU_DEFAULTS)
    assert config["model"]["num_layers"] == ModelConfig().num_layers  # not in the preset
    assert config["train"]["seq_len"] == TrainConfig().seq_len


def test_flags_and_the_config_file_win_over_the_preset(cuda, capsys, tmp_path) -> None:
    cuda(True)
    config = printed_config(capsys, "--batch-size", "48", "--hidden-size", "256")
    assert (config["train"]["batch_size"], config["model"]["hidden_size"]) == (48, 256)
    assert config["model"]["dropout"] == GPU_LM_PRESET["model"]["dropout"]  # the rest stays

    toml = tmp_path / "run.toml"
    toml.write_text("[model]\ndropout = 0.2\n[train]\nlr = 0.01\n")
    config = printed_config(capsys, "--config", str(toml), "--lr", "0.002")
    assert (config["model"]["dropout"], config["train"]["lr"]) == (0.2, 0.002)
    assert config["train"]["batch_size"] == GPU_LM_PRESET["train"]["batch_size"]

    toml.write_text('[train]\ndevice = "cpu"\n')  # the file's device decides the preset too
    config = printed_config(capsys, "--config", str(toml))
    assert chosen(config, GPU_LM_PRESET) == CPU_DEFAULTS


def test_other_tasks_and_the_numpy_engine_keep_their_presets(cuda, capsys) -> None:
    cuda(True)
    config = printed_config(capsys, "--task", "classify")
    classify = get_task("classify").preset()
    assert config["model"]["hidden_size"] == classify["model"]["hidden_size"]
    assert config["train"]["batch_size"] == classify["train"]["batch_size"]

    config = printed_config(capsys, "--engine", "numpy")
    numpy = engine_preset("numpy")
    assert config["model"]["hidden_size"] == numpy["model"]["hidden_size"]
    assert config["model"]["dropout"] == numpy["model"]["dropout"] == 0.0
    assert config["model"]["embedding_size"] == 0


def test_resume_keeps_the_saved_run(cuda, capsys, tmp_path) -> None:
    """A run saved on a CPU and resumed where CUDA is present keeps its own sizes."""
    saved = RunConfig(model=ModelConfig(hidden_size=8), train=TrainConfig(batch_size=2))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(run_to_dict(saved)), encoding="utf-8")
    cuda(True)
    config = printed_config(capsys, "--out", str(out), "--resume")
    assert (config["model"]["hidden_size"], config["train"]["batch_size"]) == (8, 2)
