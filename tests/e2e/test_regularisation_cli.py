"""End to end: the LM's regularisers, --average and --patience through `rnnkit train`: flags,
config.json, the folder's averaged model, exact resume, early stopping, refusals.

Tiny models (H 16, B 4, T 8) on a few hundred characters written to tmp_path.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import rnnkit
from rnnkit.cli import main
from rnnkit.tasks.lm import LanguageModelling
from tests.e2e.support import LINES, InterruptAfter, corpus_text

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = corpus_text(24)  # ~720 characters
TINY = [
    *("--hidden-size", "16", "--num-layers", "2", "--embedding-size", "8", "--dropout", "0.3"),
    *("--batch-size", "4", "--seq-len", "8", "--log-every", "3", "--warmup-steps", "0"),
    *("--precision", "fp32"),
]
REGULARISERS = [
    *("--embedding-dropout", "0.1", "--input-dropout", "0.2", "--locked-dropout"),
    *("--weight-drop", "0.25"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _averages(folder: Path) -> dict[str, torch.Tensor]:
    saved = load_file(folder / "state" / "average.safetensors")
    return {k.removeprefix("average."): v for k, v in saved.items() if k != "steps"}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_flags_reach_print_config_and_config_json(corpus, tmp_path, capsys) -> None:
    flags = [*REGULARISERS, "--average", "ema", "--average-start", "0.25", "--ema-decay", "0.9"]
    flags += ["--patience", "4"]
    assert main(["train", str(corpus), *TINY, *flags, "--print-config"]) == 0
    printed = capsys.readouterr().out
    for line in (
        "embedding_dropout = 0.1",
        "input_dropout = 0.2",
        "locked_dropout = true",
        "weight_drop = 0.25",
        'average = "ema"',
        "average_start = 0.25",
        "ema_decay = 0.9",
        "patience = 4",
    ):
        assert line in printed.splitlines(), line
    out = tmp_path / "run"
    assert main(["train", str(corpus), "--out", str(out), *TINY, *flags, "--max-steps", "8"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["weight_drop"] == 0.25 and config["model"]["locked_dropout"] is True
    assert config["train"]["average"] == "ema" and config["train"]["patience"] == 4
    lm = rnnkit.load(out)  # loads, samples
    assert len(lm.generate(prime="the", length=10)) == 13


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_the_folder_keeps_the_averaged_weights(corpus, tmp_path, task: str) -> None:
    """SWA from half-way: the one evaluation (the final one) evaluates and keeps the mean of
    the weights after steps 6..12, while state/ keeps training's raw weights; for any task."""
    data = corpus
    if task == "classify":
        data = tmp_path / "items.tsv"
        data.write_text("".join(f"{i % 2}\t{LINES[i % 4]}\n" for i in range(40)), "utf-8")
    out = tmp_path / "swa"
    flags = ["--task", task, "--average", "swa", "--eval-every", "100", "--max-steps", "12"]
    assert main(["train", str(data), "--out", str(out), *TINY, *flags]) == 0
    steps = load_file(out / "state" / "average.safetensors")["steps"]
    assert int(steps) == 7  # progress 6/12 = 0.5 is the first averaged step
    kept, raw = (
        load_file(out / "model.safetensors"),
        load_file(out / "state" / "weights.safetensors"),
    )
    averages = _averages(out)  # parameters only: buffers (classify's class weights) are the model's
    assert _equal({k: kept[k] for k in averages}, averages)
    assert not _equal({k: raw[k] for k in averages}, averages)
    assert _equal(
        {k: v for k, v in kept.items() if k not in averages},
        {k: v for k, v in raw.items() if k not in averages},
    )
    assert [r["step"] for r in _records(out) if "val_loss" in r] == [12]


@pytest.mark.parametrize("average", ["ema", "swa"])
def test_resume_with_average_is_exact(corpus, tmp_path, monkeypatch, average: str) -> None:
    """Interrupted at step 13 of 24, averaging since step 6, and resumed: the raw weights, the
    averaged weights and their count, the kept model and every logged number equal those of
    the run that was never stopped (with every regulariser on, so masks are drawn too)."""
    from rnnkit.training import loop

    argv = ["train", str(corpus), *TINY, *REGULARISERS, "--average", average]
    argv += ["--average-start", "0.25", "--ema-decay", "0.8", "--eval-every", "5"]
    argv += ["--max-steps", "24"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*argv, "--out", str(whole)]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(loop, "StopOnInterrupt", InterruptAfter(13))
        assert main([*argv, "--out", str(split)]) == 130  # as after Ctrl-C
    assert int(load_file(split / "state" / "average.safetensors")["steps"]) == 8
    assert main(["train", "--out", str(split), "--resume"]) == 0
    for name in ("state/weights.safetensors", "state/average.safetensors", "model.safetensors"):
        assert _equal(load_file(whole / name), load_file(split / name)), name
    assert int(load_file(whole / "state" / "average.safetensors")["steps"]) == 19
    keep = ("step", "loss", "val_loss", "lr")
    assert [tuple(r.get(k) for k in keep) for r in _records(split)] == [
        tuple(r.get(k) for k in keep) for r in _records(whole)
    ]


def test_resume_refuses_another_average_and_a_damaged_one(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "ema"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--average", "ema"]
    assert main([*argv, "--average-start", "0", "--max-steps", "4"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--average", "swa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--average 'ema' -> 'swa'" in err[0]

    path = out / "state" / "average.safetensors"
    saved = load_file(path)
    saved["average.head.bias"] = saved["average.head.bias"][:-1]
    save_file(saved, path)
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # "resuming ...", then the error
    assert err[-1].startswith("rnnkit train: error: ")
    assert "average.safetensors is corrupted: average.head.bias must be" in err[-1]
    path.unlink()
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "6"]) == 2
    assert "lacks average.safetensors" in capsys.readouterr().err


def test_patience_stops_after_n_evaluations_without_a_better_model(
    corpus, tmp_path, monkeypatch, capsys
) -> None:
    """Validation losses forced to 3.0, 2.9, 3.1, 3.2, 2.5, 2.6, 2.5, 2.7 (one evaluation per
    step): with --patience 3 the run stops at step 8, after three evaluations that did not
    beat step 5's (a tie is no gain), and the folder keeps step 5's weights."""
    losses = iter([3.0, 2.9, 3.1, 3.2, 2.5, 2.6, 2.5, 2.7, 1.0, 1.0])
    weights = {}

    def evaluate(self, model, val, run, device):
        weights[len(weights) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        loss = next(losses)
        return {"loss": loss, "bpc": loss, "perplexity": loss, "tokens": 1}

    monkeypatch.setattr(LanguageModelling, "evaluate", evaluate)
    out = tmp_path / "patient"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "1", "--patience"]
    assert main([*argv, "3", "--max-steps", "30"]) == 0
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["step"] == 8 and trainer["best_step"] == 5 and trainer["evals_since_best"] == 3
    assert [r["val_loss"] for r in _records(out) if "val_loss" in r][-1] == 2.7
    kept = load_file(out / "model.safetensors")
    assert _equal(kept, weights[5]) and not _equal(kept, weights[8])
    err = capsys.readouterr().err
    assert "stopped by patience (3 evaluations without a better model) at step 8" in err


def test_the_lm_regularisers_are_refused_elsewhere(corpus, tmp_path, capsys) -> None:
    args = ["train", str(corpus), "--out", str(tmp_path / "x"), "--task", "classify"]
    assert main([*args, "--weight-drop", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "rnnkit train: error: --weight-drop is an option of --task lm, not of --task classify"
    ]
    numpy = [
        "train",
        str(corpus),
        "--out",
        str(tmp_path / "y"),
        "--engine",
        "numpy",
        "--cell",
        "rnn",
    ]
    assert main([*numpy, "--locked-dropout"]) == 2
    assert "--engine numpy needs --locked-dropout off" in capsys.readouterr().err
    assert main([*numpy, "--average", "ema"]) == 2
    assert "--engine numpy needs --average none" in capsys.readouterr().err


def test_patience_stops_every_process_at_the_same_step(corpus, tmp_path, capsys) -> None:
    """Only rank 0 evaluates: the others learn the count from it. With a learning rate too
    small to change the loss, every evaluation after the first ties, and both processes stop
    after step 3 (a rank that went on would wait for the other until --dist-timeout)."""
    out = tmp_path / "ddp"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "1", "--lr", "1e-30"]
    argv += ["--patience", "2", "--max-steps", "40", "--nproc", "2", "--dist-timeout", "60"]
    assert main(argv) == 0
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["step"] == 3 and trainer["best_step"] == 1


def test_patience_stops_the_numpy_engine_too(corpus, tmp_path) -> None:
    """The NumPy engine shares the stop reasons: with the loss unchanged by a vanishing
    learning rate, --patience 2 stops it after step 3, keeping step 1's model."""
    out = tmp_path / "numpy"
    argv = ["train", str(corpus), "--out", str(out), "--engine", "numpy", "--cell", "rnn"]
    argv += ["--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--lr", "1e-30"]
    assert main([*argv, "--eval-every", "1", "--patience", "2", "--max-steps", "40"]) == 0
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["step"] == 3 and trainer["best_step"] == 1 and trainer["evals_since_best"] == 2


def test_word_regularisers_train_a_classifier_and_are_refused_on_features(tmp_path, capsys):
    """classify / tag take --embedding-dropout and --word-dropout on text; feature inputs have
    no words: one line, exit 2, no folder."""
    tsv = tmp_path / "items.tsv"
    items = [f"{'ab'[i % 2]}\t{line}\n" for i, line in enumerate(LINES * 5)]
    tsv.write_text("".join(items), "utf-8")
    out = tmp_path / "run"
    args = ["train", str(tsv), "--task", "classify", "--out", str(out), "--max-steps", "3"]
    flags = ["--embedding-dropout", "0.3", "--word-dropout", "0.2", "--hidden-size", "8"]
    assert main([*args, *flags]) == 0
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["embedding_dropout"] == 0.3 and model["word_dropout"] == 0.2
    features = tmp_path / "x.npz"
    generator = np.random.default_rng(0)
    np.savez(features, x=generator.normal(size=(40, 4, 3)), y=np.arange(40) % 2)
    refused = tmp_path / "refused"
    args = ["train", str(features), "--task", "classify", "--out", str(refused)]
    capsys.readouterr()
    assert main([*args, "--embedding-dropout", "0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rnnkit train: error: --embedding-dropout drops words: feature inputs have none"]
    assert not refused.exists()
