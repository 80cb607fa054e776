"""End to end, --task seq2seq: train, eval, predict (beam, JSON, attention plot), exact resume,
kill -9, bad input; tiny models on generated pairs (a sentence -> its words reversed)."""

import json
import random
import re
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
from rnnkit.config import EvalConfig
from rnnkit.tasks.decoder import corpus_bleu
from rnnkit.tasks.seq2seq import TASK, Seq2Seq

WORDS = ["red", "green", "blue", "cat", "dog", "sun"]
TINY = [
    *("--task", "seq2seq", "--hidden-size", "16", "--embedding-size", "8", "--num-layers", "1"),
    *("--dropout", "0", "--batch-size", "8", "--log-every", "5", "--eval-every", "10"),
]


def _pairs(n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.tsv"
    path.write_text(_pairs(120, 0), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "s2s"
    args = ["train", str(pairs), "--out", str(out), *TINY, "--max-steps", "40", "--lr", "2e-2"]
    args += ["--val-frac", "0.2"]  # the preset has none
    assert main([*args, "--attention", "dot", "--bidirectional", "--warmup-steps", "0"]) == 0
    return out


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rnnkit {command}: error: "), err
    return err[0]


# --- the happy path ----------------------------------------------------------------------------


def test_train_writes_the_folder_and_learns(trained) -> None:
    for name in ("config.json", "vocab.json", "model.safetensors", "metrics.jsonl", "state"):
        assert (trained / name).exists()
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "seq2seq" and config["model"]["attention"] == "dot"
    vocab = json.loads((trained / "vocab.json").read_text())
    assert set(vocab["source"]["tokens"][4:]) == set(WORDS) and vocab["longest_target"] == 4
    records = _records(trained)
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]
    assert [r["step"] for r in records if "val_bleu" in r] == [10, 20, 30, 40]
    model = rnnkit.load(trained)
    assert isinstance(model, Seq2Seq) and not model.training
    assert all(isinstance(s, str) for s in model.translate(["red cat", "sun"], beam_size=2))


def test_eval_json_greedy_and_beam(trained, pairs, capsys) -> None:
    assert main(["eval", str(trained), str(pairs), "--json"]) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert set(greedy) == {"bleu", "loss", "examples"} and greedy["examples"] == 120
    assert 0 <= greedy["bleu"] <= 100 and greedy["loss"] > 0
    assert main(["eval", str(trained), str(pairs), "--json", "--beam-size", "3"]) == 0
    beam = json.loads(capsys.readouterr().out)
    assert beam["loss"] == greedy["loss"]  # the loss is teacher-forced, the same
    assert main(["eval", str(trained), str(pairs)]) == 0
    assert capsys.readouterr().out.startswith("bleu ")


def test_predict_one_line_per_input_line(trained, tmp_path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("red cat dog\n\nsun blue\ngreen\tignored column\n", encoding="utf-8")
    png = tmp_path / "attention.png"
    args = ["predict", str(trained), str(source), "--beam-size", "2", "--plot-attention", str(png)]
    assert main(args) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[4] == ""  # 4 results, blank kept
    assert all(set(line.split()) <= set(WORDS) for line in lines)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["predict", str(trained), str(source), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in records] == ["red cat dog", "", "sun blue", "green"]
    assert records[0]["score"] <= 0 and records[0]["log_prob"] <= records[0]["score"]
    model = rnnkit.load(trained)
    assert [r["output"] for r in records] == [
        *model.translate(["red cat dog"]),
        "",
        *model.translate(["sun blue", "green"]),
    ]


def test_the_preset_trains_on_every_pair_and_keeps_the_final_weights(pairs, tmp_path, caplog):
    """No validation split by default: every pair trains, no evaluation runs, and
    model.safetensors holds the weights of the last step, also after a resume."""
    common = ["train", str(pairs), *TINY, "--dropout", "0.2", "--eval-every", "8"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    with caplog.at_level("INFO", logger="rnnkit"):
        assert main([*common, "--out", str(whole), "--max-steps", "20"]) == 0
    assert "120 train / 0 val pairs" in caplog.text
    assert "keeps the weights of step 20" in caplog.text
    records = _records(whole)
    assert records and not any(k.startswith("val_") for r in records for k in r)
    kept = load_file(whole / "model.safetensors")
    final = load_file(whole / "state" / "weights.safetensors")
    assert kept.keys() == final.keys() and all(torch.equal(kept[k], final[k]) for k in kept)
    assert main([*common, "--out", str(split), "--max-steps", "11"]) == 0
    assert main(["train", "--out", str(split), "--resume", "--max-steps", "20"]) == 0
    again = load_file(split / "model.safetensors")
    assert all(torch.equal(kept[k], again[k]) for k in kept)
    logged = [(r["step"], r["loss"], r["lr"]) for r in records]
    assert [(r["step"], r["loss"], r["lr"]) for r in _records(split)] == logged


# --- exact resume and kill -9 -------------------------------------------------------------------


def test_resume_is_exact_with_dropout_and_teacher_forcing(pairs, tmp_path) -> None:
    common = [
        *("train", str(pairs), *TINY, "--num-layers", "2", "--dropout", "0.3"),
        *("--teacher-forcing", "0.5", "--attention", "additive", "--eval-every", "8"),
        *("--val-frac", "0.2"),
    ]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*common, "--out", str(whole), "--max-steps", "20"]) == 0
    assert main([*common, "--out", str(split), "--max-steps", "11"]) == 0
    assert main(["train", "--out", str(split), "--resume", "--max-steps", "20"]) == 0
    a = load_file(whole / "state" / "weights.safetensors")
    b = load_file(split / "state" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keys = ("step", "loss", "val_loss", "val_bleu")
    losses = [tuple(r.get(k) for k in keys) for r in _records(whole)]
    resumed = [tuple(r.get(k) for k in keys) for r in _records(split)]
    assert [x for x in resumed if x[0] != 11] == losses  # step 11: the first run's final eval


def test_kill_9_leaves_a_folder_that_loads_predicts_and_resumes(pairs, tmp_path, capsys) -> None:
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "rnnkit", "train", str(pairs), "--out", str(out), *TINY]
    process = subprocess.Popen(
        [*args, "--eval-every", "2", "--max-steps", "100000", "--epochs", "10000"],
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
    assert len(rnnkit.load(out).translate(["red cat"])) == 1
    source = tmp_path / "in.txt"
    source.write_text("red cat\nsun\n", encoding="utf-8")
    assert main(["predict", str(out), str(source)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "1"]) == 0


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "flags", "message"),
    [
        ("red cat\tcat red\nred dog cat dog\n", [], r"pairs.tsv:2: no TAB"),
        ("red cat\tcat red\nred\t  \n", [], r"pairs.tsv:2: column 2 is empty"),
        ("\tcat\n", [], r"pairs.tsv:1: column 1 is empty"),
        ("a b c\tc b a\nb c d\td c b\n", ["--max-length", "2"], r"every one of its 2 pairs"),
    ],
)
def test_bad_pairs(content, flags, message, tmp_path, capsys) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["train", str(path), "--out", str(out), *TINY, *flags]) == 2
    line = _one_line_error(capsys, "train")
    assert re.search(message, line), line
    assert not out.exists()


def test_bad_options(trained, pairs, tmp_path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("red cat\n", encoding="utf-8")
    assert main(["predict", str(trained), str(source), "--beam-size", "0"]) == 2
    assert "--beam-size must be at least 1, got 0" in _one_line_error(capsys, "predict")
    assert main(["eval", str(trained), str(pairs), "--beam-size", "0"]) == 2
    _one_line_error(capsys, "eval")
    assert main(["predict", str(trained), str(source), "--plot-attention", "a.jpg"]) == 2
    assert ".png" in _one_line_error(capsys, "predict")
    assert main(["sample", str(trained)]) == 2
    assert "use rnnkit predict" in _one_line_error(capsys, "sample")
    out = tmp_path / "out"
    assert main(["train", str(pairs), "--out", str(out), "--attention", "dot"]) == 2
    assert "--attention is an option of --task seq2seq" in _one_line_error(capsys, "train")
    assert main(["train", str(pairs), "--out", str(out), *TINY, "--cell", "minlstm"]) == 2
    assert "--cell minlstm" in _one_line_error(capsys, "train")
    assert not out.exists()


def test_plot_attention_needs_attention(pairs, tmp_path, capsys) -> None:
    out = tmp_path / "plain"
    args = ["train", str(pairs), "--out", str(out), *TINY, "--attention", "none"]
    assert main([*args, "--max-steps", "2"]) == 0
    capsys.readouterr()
    png = tmp_path / "a.png"
    assert main(["predict", str(out), str(pairs), "--plot-attention", str(png)]) == 2
    assert "--plot-attention needs a model trained with --attention" in _one_line_error(
        capsys, "predict"
    )
    assert not png.exists()


# --- --char-features: rare and unseen source words read from their spelling -------------------


def test_char_features_spell_unseen_source_words(pairs, tmp_path, capsys) -> None:
    common = ["train", str(pairs), *TINY, "--max-steps", "10", "--warmup-steps", "0"]
    spelled, plain = tmp_path / "spelled", tmp_path / "plain"
    assert main([*common, "--out", str(spelled), "--char-features"]) == 0
    assert main([*common, "--out", str(plain), "--no-char-features"]) == 0
    vocab = json.loads((spelled / "vocab.json").read_text())
    assert vocab["source_frequent"] == 4 + len(WORDS)  # every word seen twice or more
    assert vocab["source_chars"] == sorted(set("".join(WORDS)))
    assert "source_frequent" not in json.loads((plain / "vocab.json").read_text())
    model, unspelled = rnnkit.load(spelled), rnnkit.load(plain)
    assert unspelled.encode_source("red cats") == unspelled.encode_source("red dogs")
    assert model.encode_source("red cats") != model.encode_source("red dogs")
    source = tmp_path / "in.txt"
    source.write_text("red cats\nsun\n", encoding="utf-8")
    assert main(["predict", str(spelled), str(source), "--json", "--beam-size", "2"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in records] == ["red cats", "sun"]
    png = tmp_path / "attention.png"
    assert main(["predict", str(spelled), str(source), "--plot-attention", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("red cats\tcats red\nblue dogs sun\tsun dogs blue\n", encoding="utf-8")
    assert main(["eval", str(spelled), str(unseen), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 2
    fresh = rnnkit.load(spelled)
    metrics = TASK.evaluate_file(fresh, unseen, EvalConfig(), torch.device("cpu"))
    assert fresh.source_embedding.words[-2:] == ["cats", "dogs"]  # eval spelled them
    outputs = fresh.translate(["red cats", "blue dogs sun"])
    assert metrics["bleu"] == corpus_bleu(outputs, ["cats red", "sun dogs blue"], "word")
    # at --level char the tokens are characters already: nothing is spelled
    chars = tmp_path / "chars"
    assert main([*common, "--out", str(chars), "--level", "char", "--char-features"]) == 0
    assert "source_frequent" not in json.loads((chars / "vocab.json").read_text())


def test_char_features_must_match_the_vocabulary(pairs, tmp_path, capsys) -> None:
    out = tmp_path / "spelled"
    args = ["train", str(pairs), "--out", str(out), *TINY, "--max-steps", "2"]
    assert main([*args, "--char-features"]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    config["model"]["char_features"] = False
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    source = tmp_path / "in.txt"
    source.write_text("red cat\n", encoding="utf-8")
    assert main(["predict", str(out), str(source)]) == 2
    line = _one_line_error(capsys, "predict")
    assert "vocab.json is corrupted: source_frequent is present" in line, line
