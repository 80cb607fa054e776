"""End to end, --task condgen: items from labels (TSV) and texts from vectors (.npz): train,
sample --condition, eval, predict, exact resume, kill -9, bad input; tiny models on generated
data."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import DataError

NAMES = {"ab": ["abba", "abab", "baba", "abb"], "cd": ["cdc", "dcdc", "ccd", "dd"]}
CAPTIONS = np.array(["zero", "one", "two"])
TINY = [
    *("--task", "condgen", "--hidden-size", "16", "--embedding-size", "8", "--num-layers", "1"),
    *("--dropout", "0", "--batch-size", "8", "--log-every", "5", "--eval-every", "10"),
]


def _vectors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 4): the caption is the index of the largest of the first three features."""
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return x, CAPTIONS[x[:, :3].argmax(axis=1)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    labelled = folder / "names.tsv"
    lines = [f"{label}\t{name}" for label, names in NAMES.items() for name in names * 6]
    labelled.write_text("\n".join(lines) + "\n", encoding="utf-8")
    x, text = _vectors(90, 0)
    np.savez(folder / "captions.npz", x=x, text=text)
    np.savez(folder / "vectors.npz", x=x[:7])
    return {"labelled": labelled, "captions": folder / "captions.npz", "x": folder / "vectors.npz"}


def _train(data_path: Path, out: Path, *flags: str) -> None:
    args = ["train", str(data_path), "--out", str(out), *TINY, "--lr", "2e-2"]
    assert main([*args, "--warmup-steps", "0", *flags]) == 0


@pytest.fixture(scope="module")
def labelled_model(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "names"
    _train(data["labelled"], out, "--max-steps", "40", "--condition-mode", "both")
    return out


@pytest.fixture(scope="module")
def vector_model(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "captions"
    _train(data["captions"], out, "--max-steps", "40", "--condition-mode", "input")
    return out


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rnnkit {command}: error: "), err
    return err[0]


# --- labels ------------------------------------------------------------------------------------


def test_label_model_learns_samples_evaluates_and_predicts(labelled_model, data, capsys) -> None:
    vocab = json.loads((labelled_model / "vocab.json").read_text())
    assert vocab["conditions"] == {"kind": "label", "labels": ["ab", "cd"]}
    losses = [r["loss"] for r in _records(labelled_model) if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    capsys.readouterr()
    args = ["sample", str(labelled_model), "--condition", "cd", "--num-samples", "5"]
    assert main([*args, "--temperature", "0.5", "--length", "10"]) == 0
    items = capsys.readouterr().out.split("\n")
    assert len(items) == 6 and items[-1] == ""  # one item per line
    assert all(0 < len(item) <= 10 and set(item) <= set("abcd") for item in items[:-1])
    assert main(["eval", str(labelled_model), str(data["labelled"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "perplexity", "tokens"}
    assert metrics["tokens"] == sum(len(n) + 1 for names in NAMES.values() for n in names * 6)
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]))
    source = data["labelled"].with_name("labels.txt")
    source.write_text("ab\ncd\n\nab\n", encoding="utf-8")
    assert main(["predict", str(labelled_model), str(source), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["condition"] for r in records] == ["ab", "cd", "ab"]
    assert records[0]["output"] == records[2]["output"]  # greedy: the same label, same item


def test_unknown_or_missing_condition_lists_the_labels(labelled_model, vector_model, capsys):
    capsys.readouterr()
    assert main(["sample", str(labelled_model), "--condition", "xy"]) == 2
    assert "unknown --condition 'xy': the model knows 2 labels" in _one_line_error(capsys, "sample")
    assert main(["sample", str(labelled_model)]) == 2
    assert "the model knows 2 labels: ab, cd" in _one_line_error(capsys, "sample")
    assert main(["sample", str(vector_model), "--condition", "ab"]) == 2
    assert "rnnkit predict MODEL vectors.npz" in _one_line_error(capsys, "sample")


# --- vectors -----------------------------------------------------------------------------------


def test_vector_model_eval_has_exact_match_and_bleu(vector_model, data, capsys) -> None:
    records = _records(vector_model)
    assert [r["step"] for r in records if "val_exact_match" in r] == [10, 20, 30, 40]
    capsys.readouterr()
    assert main(["eval", str(vector_model), str(data["captions"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "perplexity", "tokens", "exact_match", "bleu"}
    assert 0 <= metrics["exact_match"] <= 1 and 0 <= metrics["bleu"] <= 100
    model = rnnkit.load(vector_model)
    x = np.load(data["captions"])["x"]
    found = model.decode(torch.from_numpy(x))
    outputs = [model.output_text(h) for h in found]
    texts = np.load(data["captions"])["text"]
    expected = np.mean([o == t for o, t in zip(outputs, texts, strict=True)])
    assert metrics["exact_match"] == pytest.approx(expected)


def test_predict_one_text_per_vector(vector_model, data, capsys) -> None:
    capsys.readouterr()
    assert main(["predict", str(vector_model), str(data["x"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7
    assert main(["predict", str(vector_model), str(data["x"]), "--json", "--beam-size", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["condition"] for r in records] == list(range(7))
    assert all(r["score"] <= 0 for r in records)


def test_predict_in_python_writes_what_the_cli_writes(
    vector_model, labelled_model, data, tmp_path, capsys
) -> None:
    """ConditionalGenerator.predict: raw vectors (N, D) or one (D,), or labels, in one call;
    the same texts as `rnnkit predict`, in batches of any size."""
    capsys.readouterr()
    assert main(["predict", str(vector_model), str(data["x"]), "--beam-size", "3"]) == 0
    cli = capsys.readouterr().out.splitlines()
    model = rnnkit.load(vector_model)
    x = np.load(data["x"])["x"]  # (7, 4), raw: standardised inside, as in training
    assert model.predict(x, beam_size=3) == cli
    assert model.predict(torch.from_numpy(x), beam_size=3, batch_size=2) == cli
    assert model.predict(x[3], beam_size=3) == cli[3:4]
    for bad in (x[:, :3], ["ab"], np.zeros((2, 2, 4))):
        with pytest.raises(ValueError):
            model.predict(bad)
    source = tmp_path / "labels.txt"
    source.write_text("cd\nab\ncd\n", encoding="utf-8")
    assert main(["predict", str(labelled_model), str(source)]) == 0
    cli = capsys.readouterr().out.splitlines()
    labels = rnnkit.load(labelled_model)
    texts = labels.predict(["cd", "ab", "cd"])
    assert texts == cli and texts[0] != texts[1]
    assert all(len(t) <= 2 for t in labels.predict(["cd", "ab"], max_length=2))
    with pytest.raises(DataError, match="ef"):
        labels.predict(["ef"])
    with pytest.raises(TypeError):
        labels.predict("cd")
    with pytest.raises(ValueError, match="from labels"):
        labels.predict(x)


# --- exact resume and kill -9 ------------------------------------------------------------------


def test_resume_is_exact(data, tmp_path) -> None:
    common = [*TINY, "--num-layers", "2", "--dropout", "0.3", "--eval-every", "7"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = ["train", str(data["captions"]), *common]
    assert main([*args, "--out", str(whole), "--max-steps", "18"]) == 0
    assert main([*args, "--out", str(split), "--max-steps", "12"]) == 0
    assert main(["train", "--out", str(split), "--resume", "--max-steps", "18"]) == 0
    a = load_file(whole / "state" / "weights.safetensors")
    b = load_file(split / "state" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keys = ("step", "loss", "val_loss", "val_exact_match")
    losses = [tuple(r.get(k) for k in keys) for r in _records(whole)]
    resumed = [tuple(r.get(k) for k in keys) for r in _records(split)]
    assert [x for x in resumed if x[0] != 12] == losses  # step 12: the first run's final eval


def test_kill_9_leaves_a_folder_that_loads_samples_and_resumes(data, tmp_path, capsys) -> None:
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "rnnkit", "train", str(data["labelled"]), "--out", str(out)]
    process = subprocess.Popen(
        [*args, *TINY, "--eval-every", "2", "--max-steps", "100000", "--epochs", "10000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (out / "model.safetensors").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(rnnkit.load(out).sample("ab", num_samples=2, length=5)) == 2
    assert main(["sample", str(out), "--condition", "ab", "--length", "5"]) == 0
    assert 0 < len(capsys.readouterr().out.strip()) <= 5
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "1"]) == 0


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


def test_bad_npz_files(data, tmp_path, capsys) -> None:
    x, text = _vectors(10, 1)
    cases = {
        "no_text.npz": ({"x": x}, "has no array 'text'"),
        "no_x.npz": ({"text": text}, "has no array 'x'"),
        "disagree.npz": ({"x": x, "text": text[:9]}, "text has shape (9,) but x has shape (10, 4)"),
    }
    out = tmp_path / "out"
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        assert main(["train", str(tmp_path / name), "--out", str(out), *TINY]) == 2
        assert message in _one_line_error(capsys, "train")
        assert not out.exists()


def test_bad_predict_input(vector_model, labelled_model, data, tmp_path, capsys) -> None:
    capsys.readouterr()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((3, 5), dtype=np.float32))
    assert main(["predict", str(vector_model), str(wrong)]) == 2
    assert "x has 5 features per row; the model was trained on 4" in _one_line_error(
        capsys, "predict"
    )
    assert main(["predict", str(vector_model), str(data["x"]), "--beam-size", "0"]) == 2
    assert "--beam-size must be at least 1, got 0" in _one_line_error(capsys, "predict")
    labels = tmp_path / "labels.txt"
    labels.write_text("ab\nzz\n", encoding="utf-8")
    assert main(["predict", str(labelled_model), str(labels)]) == 2
    assert "labels.txt: unknown label 'zz'" in _one_line_error(capsys, "predict")
    assert capsys.readouterr().out == ""
    assert main(["predict", str(labelled_model), str(data["x"])]) == 2
    assert "writes from labels" in _one_line_error(capsys, "predict")
    out = tmp_path / "out"
    assert (
        main(["train", str(data["labelled"]), "--out", str(out), "--condition-mode", "init"]) == 2
    )
    assert "--condition-mode is an option of --task condgen" in _one_line_error(capsys, "train")
    assert not out.exists()
