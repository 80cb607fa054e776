"""Schedules, optimisers, trainer state on disk and the folder policy."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from rnnkit.config import ModelConfig, RunConfig, TrainConfig
from rnnkit.data.vocab import Vocab
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.tasks.lm import LanguageModel
from rnnkit.training import checkpoint
from rnnkit.training.optim import learning_rate, make_optimizer, progress

CFG = TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1, max_steps=110, epochs=None)


def test_warmup_is_linear() -> None:
    assert [learning_rate(CFG, s, 0.0) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]


def test_cosine_goes_from_lr_to_min_frac() -> None:
    assert learning_rate(CFG, 10, 0.0) == pytest.approx(1.0)
    assert learning_rate(CFG, 10, 0.5) == pytest.approx(0.55)
    assert learning_rate(CFG, 10, 1.0) == pytest.approx(0.1)
    values = [learning_rate(CFG, 10, p / 10) for p in range(11)]
    assert values == sorted(values, reverse=True)


def test_step_decay_multiplies_at_each_fraction() -> None:
    cfg = dataclasses.replace(CFG, schedule="step", step_gamma=0.5, step_every=0.25)
    got = [learning_rate(cfg, 50, p) for p in (0.0, 0.24, 0.25, 0.5, 0.99, 1.0)]
    assert got == [1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]


def test_constant_schedule() -> None:
    cfg = dataclasses.replace(CFG, schedule="constant")
    assert learning_rate(cfg, 10, 0.7) == 1.0


def test_progress_follows_the_nearest_limit() -> None:
    assert progress(CFG, 55, steps_per_epoch=1000, elapsed=0.0) == pytest.approx(0.5)
    timed = TrainConfig(max_time=100.0, epochs=10, max_steps=None)
    assert progress(timed, 3, steps_per_epoch=1000, elapsed=25.0) == pytest.approx(0.25)
    assert progress(timed, 5000, steps_per_epoch=1000, elapsed=25.0) == pytest.approx(0.5)
    assert progress(timed, 0, steps_per_epoch=1, elapsed=500.0) == 1.0


def test_time_based_cosine_follows_elapsed_time() -> None:
    timed = TrainConfig(lr=1.0, warmup_steps=0, max_time=60.0, epochs=None, min_lr_frac=0.0)
    lrs = [learning_rate(timed, 5, progress(timed, 5, 100, t)) for t in (0.0, 30.0, 60.0)]
    assert lrs == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd", "adagrad"])
def test_make_optimizer(name: str) -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = make_optimizer([param], TrainConfig(optimizer=name, lr=0.5))
    assert optimizer.param_groups[0]["lr"] == 0.5
    param.sum().backward()
    optimizer.step()
    assert (param < 1).all()
    assert bool(optimizer.defaults.get("fused")) is (
        name != "rmsprop"
    )  # torch has no fused RMSprop


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adagrad"])
def test_fused_optimizer_takes_the_same_steps(name: str) -> None:
    """The fused kernel is an implementation detail: three steps land where the plain one does."""
    torch.manual_seed(0)
    start, grads = torch.randn(4, 5), [torch.randn(4, 5) for _ in range(3)]
    cfg = TrainConfig(optimizer=name, lr=0.1, weight_decay=0.01)
    fused = torch.nn.Parameter(start.clone())
    plain = torch.nn.Parameter(start.clone())
    fused_optimizer = make_optimizer([fused], cfg)
    assert fused_optimizer.defaults["fused"] is True
    optimizers = [fused_optimizer, type(fused_optimizer)([plain], lr=0.1, weight_decay=0.01)]
    for grad in grads:
        for param, optimizer in zip((fused, plain), optimizers, strict=True):
            param.grad = grad.clone()
            optimizer.step()
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)


def _model() -> LanguageModel:
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=6, embedding_size=4, dropout=0.5)
    return LanguageModel(config, 9)


def test_state_round_trip_is_exact(tmp_path) -> None:
    model = _model()
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    tokens = torch.randint(0, 9, (3, 5))
    logits, hidden = model(tokens)  # (3, 5, 9)
    logits.sum().backward()
    optimizer.step()
    trainer = checkpoint.TrainerState(step=7, chunk=3, elapsed=1.5, best_val_loss=2.0)
    checkpoint.save_state(tmp_path, trainer, model, optimizer, hidden)
    expected_rng = torch.get_rng_state()
    after = torch.rand(4)

    restored = _model()
    restored_opt = make_optimizer(restored.parameters(), TrainConfig())
    loaded, loaded_hidden = checkpoint.load_state(
        tmp_path, restored, restored_opt, torch.device("cpu"), carried=hidden
    )
    assert loaded == trainer
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert torch.equal(torch.rand(4), after)  # dropout will draw the same numbers
    for a, b in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), restored.parameters(), strict=True):
        a, b = optimizer.state[p], restored_opt.state[q]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert restored_opt.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]
    assert isinstance(loaded_hidden, tuple) and len(loaded_hidden) == 2  # the LSTM's (h, c)
    for saved, restored_part in zip(hidden, loaded_hidden, strict=True):
        assert torch.equal(saved, restored_part)
    assert not (tmp_path / "state.tmp").exists() and not (tmp_path / "state.old").exists()


def test_state_falls_back_to_the_old_copy_after_a_crash_between_renames(tmp_path) -> None:
    model = _model()
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    checkpoint.save_state(tmp_path, checkpoint.TrainerState(step=3), model, optimizer, None)
    (tmp_path / "state").rename(tmp_path / "state.old")
    loaded, hidden = checkpoint.load_state(tmp_path, model, optimizer, torch.device("cpu"))
    assert loaded.step == 3 and hidden is None


def test_missing_state_is_a_checkpoint_error(tmp_path) -> None:
    model = _model()
    with pytest.raises(CheckpointError, match="no saved trainer state"):
        checkpoint.load_state(
            tmp_path, model, make_optimizer(model.parameters(), TrainConfig()), "cpu"
        )


def test_new_folder_policy(tmp_path) -> None:
    checkpoint.check_new_folder(tmp_path / "new", force=False)
    checkpoint.check_new_folder(tmp_path, force=False)  # an empty folder is fine
    checkpoint.start_folder(tmp_path, RunConfig(), Vocab.build("ab"))
    with pytest.raises(ConfigError, match=r"already holds a model .*--resume.*--force"):
        checkpoint.check_new_folder(tmp_path, force=False)
    checkpoint.check_new_folder(tmp_path, force=True)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    checkpoint.write_json(tmp_path / "a.json", {"x": math.pi})

    def fail(tmp) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.atomic_write(tmp_path / "a.json", fail)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert "3.14159" in (tmp_path / "a.json").read_text()


def test_precision_auto_follows_the_hardware() -> None:
    from rnnkit.training.loop import pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    native = bool({"avx512_bf16", "amx_bf16"} & set(flags))
    assert pick_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert pick_precision("auto", cpu, cpu_bf16=False) == "fp32"
    assert pick_precision("bf16", cpu, cpu_bf16=False) == "bf16"  # asked for: kept


@pytest.mark.parametrize(("task", "expected"), [("lm", "bf16"), ("classify", "fp32")])
def test_auto_precision_on_a_bf16_cpu_is_bf16_only_for_the_lm(
    tmp_path, monkeypatch, caplog, task: str, expected: str
) -> None:
    """On a CPU with native bf16 the LM trains in bf16, the tasks whose small layers are slower
    in it (classify here) in fp32; the run's log line says which."""
    from rnnkit.config import DataConfig
    from rnnkit.training import control
    from rnnkit.training.loop import train

    monkeypatch.setattr(control, "native_cpu_bf16", lambda: True)
    if task == "lm":
        path = tmp_path / "text.txt"
        path.write_text("the cat sat on the mat. " * 40)
        data = DataConfig(path=str(path), val_frac=0.1)
    else:
        path = tmp_path / "labelled.tsv"
        path.write_text("".join(f"{'ab'[i % 2]}\t{'xy'[i % 2] * (2 + i % 3)}\n" for i in range(40)))
        data = DataConfig(path=str(path), level="char", val_frac=0.2)
    run = RunConfig(
        task=task,
        out=str(tmp_path / "run"),
        model=ModelConfig(cell="gru", num_layers=1, hidden_size=8, embedding_size=8),
        data=data,
        train=TrainConfig(batch_size=4, seq_len=8, max_steps=2, eval_every=2),
    )
    with caplog.at_level("INFO", logger="rnnkit"):
        train(run)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ")]
    assert line.endswith(f"cpu, {expected}")


def test_epoch_default_applies_only_when_no_limit_is_set() -> None:
    assert TrainConfig(epochs=None, max_steps=None, max_time=None).epoch_limit == 10
    assert TrainConfig(max_time=600.0).epoch_limit is None  # --max-time alone is not cut short
    assert TrainConfig(max_steps=50).epoch_limit is None
    assert TrainConfig(epochs=3, max_time=600.0).epoch_limit == 3
