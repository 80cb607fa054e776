"""End to end: `rnnkit train / sample / eval` in-process and as the installed command.

Tiny models (H 16, one layer, B 4, T 8) on a few hundred characters written to tmp_path.
"""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit.cli import main
from tests.e2e.support import corpus_text

TEXT = corpus_text(24)  # ~720 characters
TINY = [
    *("--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8", "--dropout", "0"),
    *("--batch-size", "4", "--seq-len", "8", "--log-every", "5", "--eval-every", "10"),
]
RNNKIT = Path(sys.executable).with_name("rnnkit")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    """A model folder trained for 40 steps, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "40", "--lr", "1e-2"]
    assert main([*args, "--warmup-steps", "0"]) == 0
    return out


def _digest(folder: Path) -> dict[str, str]:
    """Hash of every file below ``folder``, to check that nothing changed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# --- the happy path ----------------------------------------------------------------------------


def test_train_writes_the_model_folder_and_the_loss_goes_down(trained) -> None:
    for name in ("config.json", "vocab.json", "model.safetensors", "metrics.jsonl"):
        assert (trained / name).is_file(), name
    for name in ("trainer.json", "weights.safetensors", "optimizer.safetensors"):
        assert (trained / "state" / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "lm" and config["model"]["hidden_size"] == 16
    assert config["rnnkit_version"] == rnnkit.__version__
    records = _records(trained)
    train_losses = [r["loss"] for r in records if "loss" in r]
    val_losses = [r["val_loss"] for r in records if "val_loss" in r]
    assert [r["step"] for r in records if "loss" in r] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert len(val_losses) == 4
    assert train_losses[-1] < train_losses[0] - 0.3
    assert val_losses[-1] < val_losses[0]
    assert {"step", "time", "loss", "tokens_per_s", "lr"} <= set(records[0])
    assert not list(trained.glob(".*tmp*")) and not (trained / "state.tmp").exists()


def test_sample_prints_prime_plus_length_characters(trained, capsys) -> None:
    assert main(["sample", str(trained), "--length", "50", "--prime", "the ", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    text = out[:-1] if out.endswith("\n") and len(out) == 55 else out
    assert text.startswith("the ") and len(text) == 54
    assert set(text) <= set(TEXT)
    assert main(["sample", str(trained), "--length", "50", "--prime", "the ", "--seed", "7"]) == 0
    assert capsys.readouterr().out == out  # same seed, same text
    assert main(["sample", str(trained), "--length", "50", "--prime", "the ", "--seed", "8"]) == 0
    assert capsys.readouterr().out != out


def test_sample_several_and_greedy(trained, capsys) -> None:
    assert main(["sample", str(trained), "--length", "20", "--num-samples", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample ") == 3
    args = ["sample", str(trained), "--length", "30", "--temperature", "0", "--seed", "1"]
    assert main(args) == 0
    greedy = capsys.readouterr().out
    assert main([*args[:-1], "2"]) == 0
    assert capsys.readouterr().out == greedy  # greedy ignores the seed
    assert main(["sample", str(trained), "--length", "30", "--top-k", "1"]) == 0
    assert capsys.readouterr().out == greedy


def test_eval_json_over_the_whole_text(trained, corpus, capsys) -> None:
    assert main(["eval", str(trained), str(corpus), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "bpc", "perplexity", "tokens"}
    assert metrics["tokens"] == len(TEXT) - 1
    assert metrics["bpc"] == pytest.approx(metrics["loss"] / math.log(2))
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["loss"] < math.log(len(set(TEXT)))  # better than uniform
    assert main(["eval", str(trained), str(corpus)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("loss ") and f"{metrics['tokens']} tokens" in line


def test_load_and_generate(trained) -> None:
    lm = rnnkit.load(trained)
    assert lm.vocab is not None and not lm.training
    text = lm.generate(prime="the ", length=30, temperature=0.8, seed=1)
    assert isinstance(text, str) and len(text) == 34
    assert lm.generate(prime="the ", length=30, seed=1) == text
    assert len(lm.generate(length=5)) == 5


def test_word_level_and_other_cells(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "words"
    args = ["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "6"]
    assert main([*args, "--level", "word", "--cell", "gru", "--min-freq", "2"]) == 0
    assert main(["sample", str(out), "--length", "8", "--prime", "the cat"]) == 0
    assert capsys.readouterr().out.startswith("the cat")
    assert main(["eval", str(out), str(corpus), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "bpc" not in metrics and metrics["tokens"] == len(TEXT.split()) + 24 - 1
    for cell in ("rnn", "mingru", "minlstm"):
        args = ["train", str(corpus), "--out", str(tmp_path / cell), *TINY, "--cell", cell]
        assert main([*args, "--max-steps", "3", "--embedding-size", "0"]) == 0


def test_default_corpus_is_the_python_standard_library(tmp_path) -> None:
    out = tmp_path / "stdlib"
    args = ["train", "--out", str(out), "--hidden-size", "8", "--num-layers", "1"]
    args += ["--embedding-size", "4", "--dropout", "0", "--val-frac", "0.01"]
    assert main([*args, "--max-steps", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["data"]["path"] is None
    assert "d" in rnnkit.load(out).vocab and "(" in rnnkit.load(out).vocab


def test_val_file_bf16_and_other_optimizers(corpus, tmp_path) -> None:
    val = tmp_path / "val.txt"
    val.write_text("the cat sat on the log.\n", encoding="utf-8")
    for i, extra in enumerate(
        [
            ["--val", str(val), "--precision", "bf16"],
            ["--optimizer", "sgd", "--schedule", "step", "--grad-clip-value", "0.5"],
            ["--optimizer", "rmsprop", "--tie-weights", "--embedding-size", "16"],
            ["--optimizer", "adagrad", "--schedule", "constant", "--grad-clip", "0"],
        ]
    ):
        out = tmp_path / f"run{i}"
        assert (
            main(["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "3", *extra]) == 0
        )
        assert rnnkit.load(out).generate(length=4)
    records = _records(tmp_path / "run0")
    assert records[-1]["step"] == 3 and math.isfinite(records[-1]["val_loss"])


def test_python_m_rnnkit_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--hidden-size" in result.stdout and "examples:" in result.stdout


def test_config_file_and_print_config(corpus, tmp_path, capsys) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("[model]\nhidden_size = 24\ncell = 'gru'\n[train]\nlr = 0.5\n")
    args = ["train", str(corpus), "--config", str(toml), "--lr", "0.25", "--print-config"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "hidden_size = 24" in printed and 'cell = "gru"' in printed
    assert "lr = 0.25" in printed  # the flag overrides the file
    assert not (tmp_path / "runs").exists()


def test_existing_folder_needs_force_and_force_replaces_it(trained, corpus, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    before = _digest(out)
    assert main(["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a model" in err[0] and "--force" in err[0]
    assert _digest(out) == before
    args = ["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "2", "--force"]
    assert main(args) == 0
    assert [r["step"] for r in _records(out)] == [2]  # a new run, the old metrics are gone


# --- exact resume, Ctrl-C and kill -9 --------------------------------------------------------


def test_resume_is_exact_with_dropout(corpus, tmp_path) -> None:
    common = [
        *("train", str(corpus), *TINY, "--num-layers", "2", "--dropout", "0.3"),
        *("--log-every", "4", "--eval-every", "10"),
    ]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*common, "--out", str(whole), "--max-steps", "40"]) == 0
    assert main([*common, "--out", str(split), "--max-steps", "22"]) == 0
    assert json.loads((split / "state" / "trainer.json").read_text())["trainer"]["step"] == 22
    assert main(["train", "--out", str(split), "--resume", "--max-steps", "40"]) == 0
    a = load_file(whole / "state" / "weights.safetensors")
    b = load_file(split / "state" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [(r["step"], r.get("loss"), r.get("val_loss")) for r in _records(whole)]
    resumed = [(r["step"], r.get("loss"), r.get("val_loss")) for r in _records(split)]
    assert [x for x in resumed if x[0] != 22] == losses  # step 22: the first run's final eval


def test_resume_refuses_a_changed_model(trained, tmp_path, capsys) -> None:
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    before = _digest(out)
    assert main(["train", "--out", str(out), "--resume", "--hidden-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hidden-size 16 -> 32" in err[0]
    assert _digest(out) == before


def _start_training(corpus: Path, out: Path) -> subprocess.Popen:
    args = [str(RNNKIT), "train", str(corpus), "--out", str(out), *TINY, "--eval-every", "2"]
    return subprocess.Popen(
        [*args, "--max-steps", "100000", "--epochs", "10000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def test_kill_9_leaves_a_folder_that_loads_samples_and_resumes(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "killed"
    process = _start_training(corpus, out)
    _wait_for(out / "model.safetensors", process)
    time.sleep(0.3)  # somewhere in the middle of later steps and checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait()
    lm = rnnkit.load(out)
    assert len(lm.generate(prime="the", length=10)) == 13
    assert main(["sample", str(out), "--length", "10"]) == 0
    assert len(capsys.readouterr().out.rstrip("\n")) == 10
    assert json.loads((out / "config.json").read_text())["train"]["max_steps"] == 100000
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "1"]) == 0


def test_ctrl_c_saves_and_exits_130(corpus, tmp_path) -> None:
    out = tmp_path / "interrupted"
    process = _start_training(corpus, out)
    _wait_for(out / "model.safetensors", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()
    assert "interrupted at step" in err.decode()
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["step"] >= 2
    assert rnnkit.load(out).generate(length=3)


def test_installed_command(trained, corpus) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [str(RNNKIT), "eval", str(trained), str(corpus), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] == len(TEXT) - 1
    usage = subprocess.run([str(RNNKIT), "train", "--cell", "x"], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1


# --- bad input: exit 2, one line naming the file and the problem, nothing damaged ------------


def _bad(argv: list[str], capsys, *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rnnkit {argv[0]}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def victim(trained, tmp_path) -> Path:
    """A copy of the trained folder that a failing command must leave untouched."""
    out = tmp_path / "victim"
    shutil.copytree(trained, out)
    return out


def _train_over(victim: Path, data: Path | str, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(victim), "--force", *TINY, "--max-steps", "2", *extra]


def test_bad_data_files(victim, tmp_path, capsys) -> None:
    before = _digest(victim)
    _bad(_train_over(victim, tmp_path / "missing.txt"), capsys, "missing.txt", "does not exist")
    (tmp_path / "empty.txt").write_bytes(b"")
    _bad(_train_over(victim, tmp_path / "empty.txt"), capsys, "empty.txt", "is empty")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    _bad(
        _train_over(victim, tmp_path / "image.png"),
        capsys,
        "image.png",
        "not valid utf-8",
        "byte 0x89 at offset 0",
        "--encoding",
    )
    (tmp_path / "small.txt").write_text("tiny text here\n" * 2, encoding="utf-8")
    _bad(
        _train_over(victim, tmp_path / "small.txt"),
        capsys,
        "small.txt",
        "too small: 27 training char tokens",
        "needs 33",
    )
    assert _digest(victim) == before


def test_bad_options(victim, corpus, capsys) -> None:
    before = _digest(victim)
    _bad(_train_over(victim, corpus, "--hidden-size", "-3"), capsys, "--hidden-size", "-3")
    _bad(_train_over(victim, corpus, "--dropout", "1.0"), capsys, "--dropout", "[0, 1)", "1.0")
    _bad(_train_over(victim, corpus, "--cell", "gru2"), capsys, "--cell", "gru2")
    _bad(_train_over(victim, corpus, "--batch-size", "0"), capsys, "--batch-size")
    _bad(_train_over(victim, corpus, "--bidirectional"), capsys, "--bidirectional", "lm")
    numpy_engine = _train_over(victim, corpus, "--engine", "numpy")
    _bad(numpy_engine, capsys, "--engine numpy", "--embedding-size")
    _bad(_train_over(victim, corpus, "--encoding", "nope"), capsys, "--encoding", "nope")
    toml = victim.parent / "run.toml"
    toml.write_text("[model]\nhiden_size = 3\n", encoding="utf-8")
    _bad(_train_over(victim, corpus, "--config", str(toml)), capsys, "run.toml", "'hiden_size'")
    if not torch.cuda.is_available():
        _bad(_train_over(victim, corpus, "--device", "cuda"), capsys, "--device cuda")
    _bad(["sample", str(victim), "--temperature", "-1"], capsys, "--temperature", "-1")
    _bad(["sample", str(victim), "--prime", "thé Q"], capsys, "prime", "'é', 'Q'")
    assert _digest(victim) == before


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "model.safetensors"])
@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_damaged_model_folder(victim, corpus, capsys, name: str, damage: str) -> None:
    path = victim / name
    if damage == "missing":
        path.unlink()
        problem = f"has no {name}"
    else:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        problem = "corrupted"
    _bad(["sample", str(victim), "--length", "5"], capsys, name, problem)
    _bad(["eval", str(victim), str(corpus)], capsys, name, problem)


def test_mismatched_weights_and_missing_paths(victim, trained, tmp_path, capsys) -> None:
    config = json.loads((victim / "config.json").read_text())
    config["model"]["hidden_size"] = 32
    (victim / "config.json").write_text(json.dumps(config))
    _bad(["sample", str(victim)], capsys, "model.safetensors", "does not fit")
    _bad(["sample", str(tmp_path / "nowhere")], capsys, "nowhere", "does not exist")
    _bad(["eval", str(trained), str(tmp_path / "held.txt")], capsys, "held.txt", "does not exist")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_model(victim, capsys) -> None:
    best = (victim / "model.safetensors").read_bytes()
    args = ["train", "--out", str(victim), "--resume", "--max-steps", "60", "--lr", "1e30"]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and errors[0] == lines[-1]
    # NaN/inf on some CPUs; on others (an AMD EPYC) the loss stays finite and its moving
    # average passes the divergence limit first: either stops the run at step 4x.
    diverged = r"loss (became nan|became inf|\S+ \(moving average\)) at step 4\d"
    assert re.match(r"rnnkit train: error: " + diverged, errors[0])
    assert "model.safetensors keeps the model of step" in errors[0]
    assert (victim / "model.safetensors").read_bytes() == best
    assert json.loads((victim / "state" / "trainer.json").read_text())["trainer"]["step"] == 40


def test_sample_with_beam_search(trained, capsys) -> None:
    assert (
        main(["sample", str(trained), "--prime", "the", "--length", "10", "--beam-size", "3"]) == 0
    )
    expected = rnnkit.load(trained).generate(prime="the", length=10, beam_size=3)
    assert capsys.readouterr().out == expected + ("" if expected.endswith("\n") else "\n")
    assert len(expected) == 13
    _bad(["sample", str(trained), "--beam-size", "0"], capsys, "--beam-size", "at least 1")
