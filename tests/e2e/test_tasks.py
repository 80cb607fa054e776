"""End to end for the sequence tasks `classify` and `tag`, on text and on `.npz` feature
sequences: train, eval, predict, and every guarantee of the one training loop per task (exact
resume, Ctrl-C, kill -9, NaN, a failed run that damages nothing, metrics.jsonl, limits, bf16).

Tiny generated data and models (H 8, one layer), so that each run takes about a second.
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rnnkit
import rnnkit.tasks.tag as tag_module
import rnnkit.tasks.word_shape as word_shape_module
from rnnkit.cli import main
from tests.e2e.support import InterruptAfter

RNNKIT = Path(sys.executable).with_name("rnnkit")
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only cost
TINY = [
    *("--hidden-size", "8", "--embedding-size", "8", "--num-layers", "1"),
    *("--batch-size", "8", "--log-every", "2", "--eval-every", "5", "--warmup-steps", "0"),
]
WORDS = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "dull"], "mid": ["okay", "so"]}
FILLER = ["the", "film", "a", "plot", "was", "very"]


def _classify_text(folder: Path) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(90):
        label = list(WORDS)[i % 3]
        words = rng.choices(WORDS[label], k=2) + rng.choices(FILLER, k=rng.randint(1, 5))
        rng.shuffle(words)
        lines.append(f"{label}\t{' '.join(words)}")
    path = folder / "items.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _classify_npz(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    lengths = rng.integers(2, 8, size=60)
    x = rng.normal(size=(60, 7, 3)).astype(np.float32) + y[:, None, None]
    x[np.arange(7)[None, :] >= lengths[:, None]] = 0
    path = folder / "seqs.npz"
    np.savez(path, x=x, lengths=lengths, y=y)
    return path


def _tag_text(folder: Path) -> Path:
    rng = random.Random(1)
    sentences = []
    for _ in range(60):
        rows = []
        for _ in range(rng.randint(2, 7)):
            r = rng.random()
            if r < 0.25:
                rows.append(f"{rng.choice(['Paris', 'Rome', 'Oslo'])}\tB-loc")
            elif r < 0.4:
                rows += [f"{rng.choice(['Ann', 'Bob'])}\tB-per", "Smith\tI-per"]
            else:
                rows.append(f"{rng.choice(FILLER)}\tO")
        sentences.append("\n".join(rows))
    path = folder / "ner.conll"
    path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return path


def _tag_npz(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 9, size=40)
    x = rng.normal(size=(40, 8, 3)).astype(np.float32)
    y = (np.cumsum(x[..., 0], axis=1) > 0).astype(np.int64)  # depends on the frames so far
    x[np.arange(8)[None, :] >= lengths[:, None]] = 0
    path = folder / "frames.npz"
    np.savez(path, x=x, lengths=lengths, y=y)
    return path


KINDS = {
    "classify-text": ("classify", _classify_text, ["--level", "word"]),
    "classify-npz": ("classify", _classify_npz, []),
    "tag-text": ("tag", _tag_text, ["--crf", "--char-features", "--case-augment", "0.5"]),
    # the features preset has no validation split (tested below); these runs validate
    "tag-npz": (
        "tag",
        _tag_npz,
        ["--no-bidirectional", "--feature-noise", "0.2", "--val-frac", "0.1"],
    ),
}
METRIC = {"classify": "accuracy", "tag-text": "f1", "tag-npz": "accuracy"}


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request, tmp_path_factory) -> tuple[str, Path, list[str]]:
    """(task, data file, the task's flags) for each kind of data."""
    task, make, flags = KINDS[request.param]
    data = make(tmp_path_factory.mktemp(request.param))
    return request.param, data, ["--task", task, *TINY, *flags]


@pytest.fixture(scope="module")
def trained(kind, tmp_path_factory) -> Path:
    name, data, flags = kind
    out = tmp_path_factory.mktemp("runs") / name
    assert main(["train", str(data), "--out", str(out), *flags, "--max-steps", "20"]) == 0
    return out


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _metric(name: str) -> str:
    return METRIC.get(name, METRIC.get(name.split("-")[0]))


# --- train, eval, predict --------------------------------------------------------------------


def test_train_writes_the_folder_and_metrics(kind, trained) -> None:
    name, _, _ = kind
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == name.split("-")[0]
    records = _records(trained)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [5, 10, 15, 20]
    assert all(f"val_{_metric(name)}" in r for r in evals)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 10 and all(np.isfinite(losses))
    trainer = json.loads((trained / "state" / "trainer.json").read_text())["trainer"]
    best = max(evals, key=lambda r: (r[f"val_{_metric(name)}"], -r["val_loss"]))
    assert trainer["best_step"] == best["step"]  # kept by the task's metric, not the loss


def test_the_loss_goes_down(kind, tmp_path) -> None:
    _name, data, flags = kind
    out = tmp_path / "longer"
    assert (
        main(["train", str(data), "--out", str(out), *flags, "--max-steps", "120", "--lr", "1e-2"])
        == 0
    )
    losses = [r["loss"] for r in _records(out) if "loss" in r]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_eval_json_has_the_design_keys(kind, trained, capsys) -> None:
    name, data, _ = kind
    assert main(["eval", str(trained), str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    if name.startswith("classify"):
        keys = {"accuracy", "macro_f1", "loss", "examples", "labels", "per_class", "confusion"}
        assert keys <= set(metrics)
        n = len(metrics["labels"])
        assert len(metrics["confusion"]) == n and sum(map(sum, metrics["confusion"])) == 90 - 30 * (
            name == "classify-npz"
        )
        assert metrics["examples"] == sum(map(sum, metrics["confusion"]))
        correct = sum(metrics["confusion"][i][i] for i in range(n))
        assert metrics["accuracy"] == pytest.approx(correct / metrics["examples"])
        png = trained.parent / f"{name}-confusion.png"
        assert main(["eval", str(trained), str(data), "--plot", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    elif name == "tag-text":
        assert {"precision", "recall", "f1", "accuracy", "per_type", "sentences", "tokens"} <= set(
            metrics
        )
        assert metrics["sentences"] == 60 and set(metrics["per_type"]) <= {"loc", "per"}
    else:
        assert {"accuracy", "loss", "sequences", "tokens"} <= set(metrics)
        assert metrics["sequences"] == 40


def test_predict(kind, trained, tmp_path, capsys) -> None:
    name, data, _ = kind
    if name == "classify-text":
        source = tmp_path / "in.txt"
        source.write_text("a great film\nawful dull plot\n", encoding="utf-8")
        assert main(["predict", str(trained), str(source), "--top-k", "2"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2
        for line in lines:
            fields = line.split("\t")
            assert len(fields) == 4 and fields[0] in WORDS and fields[2] in WORDS
            assert float(fields[1]) >= float(fields[3])
        assert main(["predict", str(trained), str(source), "--json"]) == 0
        records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["text"] for r in records] == ["a great film", "awful dull plot"]
        model = rnnkit.load(trained)
        probs = model.predict_proba(["a great film"])
        assert records[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    elif name == "tag-text":
        source = tmp_path / "in.txt"
        source.write_text("Ann Smith saw Paris\nthe film\n", encoding="utf-8")
        assert main(["predict", str(trained), str(source)]) == 0
        out = capsys.readouterr().out
        sentences = [block.splitlines() for block in out.strip("\n").split("\n\n")]
        assert [[row.split("\t")[0] for row in s] for s in sentences] == [
            ["Ann", "Smith", "saw", "Paris"],
            ["the", "film"],
        ]
        model = rnnkit.load(trained)
        expected = model.tag_sentences([["Ann", "Smith", "saw", "Paris"], ["the", "film"]])
        assert [[row.split("\t")[1] for row in s] for s in sentences] == expected
    else:
        assert main(["predict", str(trained), str(data)]) == 0
        lines = capsys.readouterr().out.splitlines()
        lengths = np.load(data)["lengths"]
        assert len(lines) == len(lengths)
        if name == "tag-npz":
            assert [len(line.split()) for line in lines] == lengths.tolist()


# --- the loop's guarantees, per task ---------------------------------------------------------


def _interrupted_then_resumed(argv: list[str], out: Path, at: int, monkeypatch) -> None:
    from rnnkit.training import loop

    with monkeypatch.context() as patch:
        patch.setattr(loop, "StopOnInterrupt", InterruptAfter(at))
        assert main([*argv, "--out", str(out)]) == 130  # as after Ctrl-C
    assert json.loads((out / "state" / "trainer.json").read_text())["trainer"]["step"] == at
    assert main(["train", "--out", str(out), "--resume"]) == 0


def _same_run(whole: Path, split: Path) -> None:
    a = load_file(whole / "state" / "weights.safetensors")
    b = load_file(split / "state" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keep = ("step", "loss", "val_loss", "lr")
    assert [tuple(r.get(k) for k in keep) for r in _records(split)] == [
        tuple(r.get(k) for k in keep) for r in _records(whole)
    ]


def test_resume_is_exact_with_dropout_past_warmup(kind, tmp_path, monkeypatch) -> None:
    """Interrupted at step 13 of 24 (no warm-up: the cosine decay runs all along) and resumed:
    the same weights, logged losses and learning rates as the run that was never stopped."""
    _, data, flags = kind
    argv = ["train", str(data), *flags, "--dropout", "0.3", "--max-steps", "24"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*argv, "--out", str(whole)]) == 0
    _interrupted_then_resumed(argv, split, 13, monkeypatch)
    _same_run(whole, split)


class _StepClock:
    """A clock for the loop that moves 0.5 s with every batch it draws: a time-limited run is
    then the same run however often it is interrupted and resumed."""

    def __init__(self, patch) -> None:
        import time as real_time

        from rnnkit.training import loop

        self.now = 0.0
        fake = types.SimpleNamespace(
            monotonic=lambda: self.now, strftime=real_time.strftime, gmtime=real_time.gmtime
        )
        patch.setattr(loop, "time", fake)
        real_get_task = loop.get_task

        def get_task(name):
            task = real_get_task(name)
            real_batches = type(task).batches

            class Timed(type(task)):
                def batches(inner, run, data):
                    batches = real_batches(inner, run, data)
                    real_get = batches.get

                    def get(epoch, index):
                        self.now += 0.5
                        return real_get(epoch, index)

                    batches.get = get
                    return batches

            timed = Timed.__new__(Timed)
            timed.__dict__.update(task.__dict__)
            return timed

        patch.setattr(loop, "get_task", get_task)


def test_resume_under_max_time_is_exact(kind, tmp_path, monkeypatch) -> None:
    """--max-time 12 on a clock of 0.5 s per step: interrupted at step 13 and resumed, the
    run's elapsed time, learning rates (the schedule follows the clock), losses and final
    weights equal the uninterrupted run's, which stops at step 24."""
    _, data, flags = kind
    argv = ["train", str(data), *flags, "--dropout", "0.3", "--max-time", "12"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    with monkeypatch.context() as patch:
        _StepClock(patch)
        assert main([*argv, "--out", str(whole)]) == 0
    with monkeypatch.context() as patch:
        _StepClock(patch)
        _interrupted_then_resumed_patched(argv, split, 13, patch)
    _same_run(whole, split)
    for out in (whole, split):
        trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
        assert trainer["step"] == 24 and trainer["elapsed"] == 12.0
    times = [(r["step"], r["time"]) for r in _records(split)]
    assert times == [(r["step"], r["time"]) for r in _records(whole)]


def _interrupted_then_resumed_patched(argv: list[str], out: Path, at: int, patch) -> None:
    """As _interrupted_then_resumed, inside a patch context that is already open."""
    from rnnkit.training import loop

    handler = loop.StopOnInterrupt
    patch.setattr(loop, "StopOnInterrupt", InterruptAfter(at))
    assert main([*argv, "--out", str(out)]) == 130  # as after Ctrl-C
    patch.setattr(loop, "StopOnInterrupt", handler)
    assert json.loads((out / "state" / "trainer.json").read_text())["trainer"]["step"] == at
    assert main(["train", "--out", str(out), "--resume"]) == 0


def test_epochs_max_time_and_bf16(kind, tmp_path) -> None:
    _, data, flags = kind
    out = tmp_path / "epochs"
    assert main(["train", str(data), "--out", str(out), *flags, "--epochs", "2"]) == 0
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["epoch"] == 2 and trainer["chunk"] == 0
    out = tmp_path / "timed"
    args = [
        "train",
        str(data),
        "--out",
        str(out),
        *flags,
        "--max-time",
        "0.5",
        "--precision",
        "bf16",
    ]
    assert main(args) == 0
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["elapsed"] >= 0.5 and trainer["step"] >= 1
    assert rnnkit.load(out) is not None


def test_nan_loss_stops_and_keeps_the_last_good_model(kind, trained, tmp_path, capsys) -> None:
    out = tmp_path / "victim"
    shutil.copytree(trained, out)
    best = (out / "model.safetensors").read_bytes()
    args = ["train", "--out", str(out), "--resume", "--max-steps", "60", "--lr", "1e30"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"rnnkit train: error: loss .* at step 2\d", err), err
    assert (out / "model.safetensors").read_bytes() == best


def test_a_failed_run_damages_nothing(kind, trained, tmp_path, capsys) -> None:
    _, data, flags = kind
    out = tmp_path / "victim"
    shutil.copytree(trained, out)
    before = _digest(out)
    bad = tmp_path / ("bad.npz" if data.suffix == ".npz" else "bad.txt")
    bad.write_bytes(b"label without a tab\n" if data.suffix != ".npz" else b"not a zip")
    assert main(["train", str(bad), "--out", str(out), "--force", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad." in err[0]
    assert _digest(out) == before


def _start(data: Path, flags: list[str], out: Path) -> subprocess.Popen:
    args = [str(RNNKIT), "train", str(data), "--out", str(out), *flags, "--eval-every", "1"]
    return subprocess.Popen(
        [*args, "--max-steps", "100000", "--epochs", "10000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def test_kill_9_then_ctrl_c(kind, tmp_path) -> None:
    """kill -9 leaves a folder that loads, predicts and resumes; Ctrl-C saves and exits 130."""
    _name, data, flags = kind
    out = tmp_path / "killed"
    process = _start(data, flags, out)
    _wait_for(out / "model.safetensors", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert rnnkit.load(out) is not None
    assert main(["eval", str(out), str(data), "--json"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "1"]) == 0

    out = tmp_path / "interrupted"
    process = _start(data, flags, out)
    _wait_for(out / "model.safetensors", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["step"] >= 1 and "interrupted at step" in err.decode()


# --- bad input: one line, exit 2, nothing written --------------------------------------------


def _bad(argv: list[str], capsys, *expected: str) -> None:
    capsys.readouterr()  # what earlier commands printed
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rnnkit {argv[0]}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


def test_outside_bias_at_eval_and_predict(kind, trained, tmp_path, capsys) -> None:
    """A larger --outside-bias tags fewer words O; models without BIO text tags refuse it."""
    name, data, _ = kind
    argv = ["eval", str(trained), str(data), "--json"]
    if name != "tag-text":
        why = "tag models" if name.startswith("classify") else ".npz labels have none"
        _bad([*argv, "--outside-bias", "1"], capsys, "--outside-bias", why)
        _bad(["predict", str(trained), str(data), "--outside-bias", "1"], capsys, why)
        return
    assert json.loads((trained / "config.json").read_text())["model"]["outside_bias"] == 1.0
    source = tmp_path / "in.txt"
    source.write_text("Ann Smith saw Rome\nBob went to Oslo and Paris\n", encoding="utf-8")
    outside, recall, accuracy = [], [], []
    for bias in ("-5", "1", "30"):
        capsys.readouterr()
        assert main([*argv, "--outside-bias", bias]) == 0
        metrics = json.loads(capsys.readouterr().out)
        recall.append(metrics["recall"])
        accuracy.append(metrics["accuracy"])
        assert main(["predict", str(trained), str(source), "--outside-bias", bias]) == 0
        outside.append(capsys.readouterr().out.count("\tO\n"))
    assert outside[0] >= outside[1] >= outside[2] == 0  # at 30, every word gets an entity tag
    assert outside[0] > 0  # at -5, some are O
    assert recall[0] <= recall[1] <= recall[2]
    assert accuracy[2] < accuracy[0]  # at 30 the O words are all wrong
    assert main([*argv[:3], "--json"]) == 0  # no flag: the model's own 1.0
    assert json.loads(capsys.readouterr().out)["recall"] == recall[1]


def test_bad_text_data(tmp_path, capsys) -> None:
    out = tmp_path / "never"
    train = ["train", "--out", str(out), "--task"]
    tsv = tmp_path / "a.tsv"
    tsv.write_text("pos\tgood film\nneg bad film\n", encoding="utf-8")
    _bad([*train, "classify", str(tsv)], capsys, "a.tsv:2", "TAB")
    tsv.write_text("pos\tgood film\nneg\t \n", encoding="utf-8")
    _bad([*train, "classify", str(tsv)], capsys, "a.tsv:2", "empty")
    tsv.write_text("", encoding="utf-8")
    _bad([*train, "classify", str(tsv)], capsys, "a.tsv", "empty")
    tsv.write_text("pos\tgood film\npos\tfine film\n", encoding="utf-8")
    _bad([*train, "classify", str(tsv)], capsys, "a.tsv", "'pos'", "at least two labels")
    conll = tmp_path / "b.conll"
    conll.write_text("Ann\tX\tB-per\nsaw\tO\n", encoding="utf-8")
    _bad([*train, "tag", str(conll)], capsys, "b.conll:2", "column")
    conll.write_text("Ann\tB-per\nsaw\tO\nSmith\tI-per\n", encoding="utf-8")
    _bad([*train, "tag", str(conll)], capsys, "b.conll:3", "I-per")
    tsv.write_text("pos\tgood film here\nneg\tbad film there\n", encoding="utf-8")
    _bad([*train, "tag", str(tsv)], capsys, "a.tsv", "--task classify")
    tsv.write_text("pos\tgood\nneg\tbad\n", encoding="utf-8")  # one-word texts
    _bad([*train, "tag", str(tsv)], capsys, "a.tsv:1", "'good' is not BIO", "--task classify")
    conll.write_text("Ann\tB-per\nsaw\tO\n\nBob\tB-per\nran\tO\n", encoding="utf-8")
    _bad([*train, "classify", str(conll)], capsys, "b.conll", "--task tag")
    assert not out.exists()


def test_bad_arrays_and_mismatches(kind, trained, tmp_path, capsys) -> None:
    _name, data, flags = kind
    if data.suffix != ".npz":
        pytest.skip("arrays only")
    task = flags[1]
    out = tmp_path / "never"
    np.savez(tmp_path / "nox.npz", y=np.zeros(3, dtype=np.int64))
    _bad(["train", str(tmp_path / "nox.npz"), "--out", str(out), *flags], capsys, "nox.npz", "x")
    arrays = dict(np.load(data))
    np.savez(tmp_path / "short.npz", **(arrays | {"y": arrays["y"][:5]}))
    _bad(
        ["train", str(tmp_path / "short.npz"), "--out", str(out), *flags],
        capsys,
        "short.npz",
        "y",
    )
    wider = arrays | {"x": np.concatenate([arrays["x"], arrays["x"][..., :1]], axis=-1)}
    np.savez(tmp_path / "wider.npz", **wider)
    _bad(["eval", str(trained), str(tmp_path / "wider.npz")], capsys, "wider.npz", "features")
    _bad(["predict", str(trained), str(tmp_path / "wider.npz")], capsys, "wider.npz", "features")
    if task == "classify":  # per-sequence labels given to a tagger, and the reverse
        _bad(["train", str(data), "--out", str(out), *flags[:1], "tag"], capsys, data.name)
        np.savez(tmp_path / "one.npz", **(arrays | {"y": np.ones_like(arrays["y"])}))
        _bad(
            ["train", str(tmp_path / "one.npz"), "--out", str(out), *flags],
            capsys,
            "one.npz",
            "'1'",
            "at least two labels",
        )
    assert not out.exists()


def test_unknown_labels_at_eval(tmp_path, capsys) -> None:
    data = _classify_text(tmp_path)
    out = tmp_path / "m"
    assert (
        main(
            ["train", str(data), "--out", str(out), "--task", "classify", *TINY, "--max-steps", "3"]
        )
        == 0
    )
    held = tmp_path / "held.tsv"
    held.write_text("pos\tgood film\nweird\tso so\n", encoding="utf-8")
    _bad(["eval", str(out), str(held)], capsys, "held.tsv", "'weird'", "--count-unknown-labels")
    capsys.readouterr()
    assert main(["eval", str(out), str(held), "--json", "--count-unknown-labels"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["labels"][-1] == "weird" and metrics["examples"] == 2
    assert metrics["per_class"]["weird"]["recall"] == 0.0


def test_embeddings_are_loaded_frozen_and_ragged_ones_refused(tmp_path, capsys) -> None:
    data = _classify_text(tmp_path)
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("good 1 2 3 4 5 6 7 8\nFILM 8 7 6 5 4 3 2 1\nzzz 0 0 0 0 0 0 0 0\n")
    out = tmp_path / "m"
    argv = ["train", str(data), "--out", str(out), "--task", "classify", *TINY, "--max-steps", "3"]
    assert main([*argv, "--embeddings", str(vectors), "--freeze-embeddings"]) == 0
    model = rnnkit.load(out)
    weight = model.encoder.embedding.weight
    assert weight[model.vocab.index["good"]].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert weight[model.vocab.index["film"]].tolist() == [8, 7, 6, 5, 4, 3, 2, 1]  # any case
    vectors.write_text("good 1 2 3 4 5 6 7 8\nfilm 1 2 3\n")
    _bad([*argv, "--embeddings", str(vectors), "--force"], capsys, "vectors.txt:2", "3 values")
    vectors.write_text("good 1 2 3\n")
    _bad([*argv, "--embeddings", str(vectors), "--force"], capsys, "--embedding-size 3")


def test_lowercase_looks_words_up_in_lower_case(tmp_path, capsys) -> None:
    """tag's text preset looks words up in lower case (its characters keep the case);
    --no-lowercase and classify's default keep the case."""
    data = _tag_text(tmp_path)
    out = tmp_path / "tag"
    argv = ["train", str(data), "--task", "tag", *TINY, "--max-steps", "3"]
    assert main([*argv, "--out", str(out), "--char-features"]) == 0
    assert json.loads((out / "config.json").read_text())["data"]["lowercase"] is True
    meta = json.loads((out / "vocab.json").read_text())
    assert "paris" in meta["vocab"]["tokens"] and "Paris" not in meta["vocab"]["tokens"]
    assert {"A", "P"} <= set(meta["chars"])  # the character encoder sees the case
    model = rnnkit.load(out)
    paris = model.vocab.index["paris"]
    assert model.encode_sentences([["PARIS", "Paris"]]).ids == [[paris, paris]]
    assert model.char_ids(["Paris"]) != model.char_ids(["paris"])
    words_only = tmp_path / "words"  # no characters: no character encoder, no word votes
    assert main([*argv, "--out", str(words_only), "--word-votes", "0"]) == 0
    source = tmp_path / "in.txt"
    source.write_text("Ann saw paris\nANN SAW PARIS\n", encoding="utf-8")
    assert main(["predict", str(words_only), str(source), "--json"]) == 0
    first, second = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert (first["tags"], first["probabilities"]) == (second["tags"], second["probabilities"])
    cased = tmp_path / "cased"
    assert main([*argv, "--out", str(cased), "--no-lowercase", "--char-features"]) == 0
    model = rnnkit.load(cased)
    assert model.word_ids(["Paris", "PARIS"]) == [model.vocab.index["Paris"], model.vocab.unk_id]
    config = json.loads((cased / "config.json").read_text())
    del config["data"]["lowercase"]  # a folder written before the option existed
    (cased / "config.json").write_text(json.dumps(config))
    assert rnnkit.load(cased).word_ids(["Paris"]) == [model.vocab.index["Paris"]]

    data = tmp_path / "items.tsv"
    data.write_text("pos\tGood film\nneg\tbad FILM\n" * 10, encoding="utf-8")
    argv = ["train", str(data), "--task", "classify", *TINY, "--level", "word", "--max-steps", "3"]
    assert main([*argv, "--out", str(tmp_path / "cls"), "--lowercase"]) == 0
    model = rnnkit.load(tmp_path / "cls")
    assert {w for w in model.vocab.index if not w.startswith("<")} == {"bad", "film", "good"}
    probs = model.predict_proba(["GOOD Film", "good film", "bad film"])
    assert torch.equal(probs[0], probs[1]) and not torch.equal(probs[1], probs[2])
    assert main([*argv, "--out", str(tmp_path / "kept")]) == 0
    assert "Good" in rnnkit.load(tmp_path / "kept").vocab.index
    _bad(["train", str(data), "--out", str(tmp_path / "lm"), "--lowercase"], capsys, "classify")


def test_task_options_belong_to_their_task(tmp_path, capsys) -> None:
    data = _classify_text(tmp_path)
    out = tmp_path / "m"
    _bad(
        ["train", str(data), "--out", str(out), "--task", "classify", "--crf"],
        capsys,
        "--crf",
        "tag",
    )
    _bad(["train", str(data), "--out", str(out), "--pooling", "mean"], capsys, "--pooling", "lm")
    smoothed = ["train", str(data), "--out", str(out), "--label-smoothing", "0.1"]
    _bad([*smoothed, "--task", "tag", "--crf"], capsys, "--label-smoothing", "--crf")
    _bad(smoothed, capsys, "--label-smoothing", "classify / tag")
    focal = ["train", str(data), "--out", str(out), "--focal-gamma", "1"]
    _bad([*focal, "--task", "tag"], capsys, "--focal-gamma", "classify")
    _bad([*focal, "--task", "classify", "--label-smoothing", "0.1"], capsys, "--focal-gamma")
    _bad([*focal[:-1], "-1", "--task", "classify"], capsys, "focal", "0 or more")
    assert not out.exists()


def test_class_weights_balance_a_skewed_training_set(tmp_path) -> None:
    data = tmp_path / "skewed.tsv"
    data.write_text("".join(["a\tx y\n"] * 30 + ["b\tz w\n"] * 10), encoding="utf-8")
    out = tmp_path / "m"
    argv = ["train", str(data), "--out", str(out), "--task", "classify", *TINY, "--max-steps", "2"]
    assert main([*argv, "--class-weights", "balanced", "--val-frac", "0.25"]) == 0
    weights = rnnkit.load(out).class_weight.tolist()
    # the stratified split keeps 22 of the 30 'a' and 7 of the 10 'b' (halves round up into
    # validation): N / (C · count) over the 29 training items
    assert weights == pytest.approx([29 / (2 * 22), 29 / (2 * 7)])


def test_focal_gamma_trains_classify_on_a_lower_loss_and_is_kept(tmp_path) -> None:
    """--focal-gamma: the same first step logs a lower loss than cross-entropy (every item's
    (1 - p)^gamma is under 1), and the model folder records it."""
    data = _classify_text(tmp_path)
    argv = ["train", str(data), "--task", "classify", *TINY, "--max-steps", "2", "--seed", "3"]
    first = {}
    for gamma in ("0", "2"):
        out = tmp_path / f"g{gamma}"
        assert main([*argv, "--out", str(out), "--log-every", "1", "--focal-gamma", gamma]) == 0
        first[gamma] = next(r["loss"] for r in _records(out) if "lr" in r)
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        assert config["model"]["focal_gamma"] == float(gamma)
    assert 0 < first["2"] < 0.9 * first["0"]


@pytest.mark.parametrize("task", ["classify", "tag", "tag on threads"])
def test_an_ensemble_trains_resumes_exactly_and_predicts(task, tmp_path, monkeypatch, capsys):
    """--ensemble 2: one folder with both members, resumed exactly after an interruption; eval
    and predict read the ensemble (classify: its mean probability; tag: its CRF decoding).
    With --member-threads the members train on two threads, their dropout drawn apart."""
    if task == "classify":
        data, flags = _classify_text(tmp_path), ["--level", "word"]
    else:
        data, flags = _tag_text(tmp_path), ["--crf", "--char-features"]
    threaded: list[int] = []  # the steps whose members ran on threads
    if task == "tag on threads":
        flags += ["--member-threads", "--threads", "2", "--word-dropout", "0.2"]
        task, real = "tag", tag_module.mean_member_loss
        spy = lambda *args: threaded.append(1) or real(*args)  # noqa: E731
        monkeypatch.setattr(tag_module, "mean_member_loss", spy)
    argv = ["train", str(data), "--task", task, *TINY, *flags, "--ensemble", "2"]
    argv += ["--dropout", "0.3", "--max-steps", "16"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*argv, "--out", str(whole)]) == 0
    _interrupted_then_resumed(argv, split, 9, monkeypatch)
    _same_run(whole, split)
    assert len(threaded) == (32 if "--member-threads" in flags else 0)  # 16 + 9 + 7 steps
    weights = load_file(whole / "model.safetensors")
    assert any(k.startswith("others.0.encoder.") for k in weights)
    assert not any(k.startswith("others.1.") for k in weights)
    model = rnnkit.load(whole).eval()
    assert len(model.members()) == 2
    assert main(["eval", str(whole), str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    source = tmp_path / "in.txt"
    if task == "classify":
        source.write_text("a great film\nawful dull plot\n", encoding="utf-8")
        assert main(["predict", str(whole), str(source), "--json"]) == 0
        records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        with torch.no_grad():
            probs = torch.stack(
                [m._logits(*_encoded(m, ["a great film"])).softmax(-1) for m in model.members()]
            ).mean(0)[0]  # the members' mean probability
        assert records[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert records[0]["label"] == model.labels[int(probs.argmax())]
        assert 0 <= metrics["accuracy"] <= 1
    else:
        source.write_text("Ann Smith saw Paris\n", encoding="utf-8")
        assert main(["predict", str(whole), str(source)]) == 0
        tags = [row.split("\t")[1] for row in capsys.readouterr().out.split("\n") if row]
        assert [tags] == model.tag_sentences([["Ann", "Smith", "saw", "Paris"]])
        assert {"f1", "precision", "recall"} <= set(metrics)


def _encoded(model, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A classifier's (inputs (B, T), lengths (B,)) of raw texts, unpadded (one text)."""
    (ids,) = model.encode_texts(texts).ids
    return torch.tensor([ids]), torch.tensor([len(ids)])


# --- no validation data (--val-frac 0) ---------------------------------------------------------


def _same(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_no_validation_trains_on_everything_and_keeps_the_final_weights(
    kind, tmp_path, caplog, capsys
) -> None:
    _, data, flags = kind
    out = tmp_path / "all"
    with caplog.at_level("INFO", logger="rnnkit"):
        args = ["train", str(data), "--out", str(out), *flags, "--val-frac", "0"]
        assert main([*args, "--max-steps", "12"]) == 0
    assert re.search(r"\d+ train / 0 val", caplog.text)
    assert "no validation data, so" in caplog.text and "weights of step 12" in caplog.text
    assert not any(k.startswith("val_") for r in _records(out) for k in r)
    assert _same(out / "model.safetensors", out / "state" / "weights.safetensors")
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["best_step"] == 12 and trainer["best_val_loss"] is None
    # a NaN keeps the last checkpoint's weights (step 10: --eval-every 5)
    shutil.copytree(out, tmp_path / "copy")
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "13"]) == 0
    assert not _same(out / "model.safetensors", tmp_path / "copy" / "model.safetensors")
    kept = (out / "model.safetensors").read_bytes()
    args = ["train", "--out", str(out), "--resume", "--max-steps", "40", "--lr", "1e30"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.safetensors keeps the model of step 13" in err, err
    assert (out / "model.safetensors").read_bytes() == kept


def test_no_validation_with_an_average_keeps_the_averaged_weights(tmp_path) -> None:
    data = _classify_npz(tmp_path)
    out = tmp_path / "avg"
    args = ["train", str(data), "--out", str(out), "--task", "classify", *TINY, "--val-frac", "0"]
    assert main([*args, "--average", "ema", "--average-start", "0", "--max-steps", "10"]) == 0
    kept = load_file(out / "model.safetensors")
    raw = load_file(out / "state" / "weights.safetensors")
    average = load_file(out / "state" / "average.safetensors")
    assert any(not torch.equal(kept[k], raw[k]) for k in kept)
    averaged = [k for k in kept if f"average.{k}" in average]
    assert len(averaged) >= 6  # the recurrent layer's and the head's parameters
    assert all(torch.equal(kept[k], average[f"average.{k}"]) for k in averaged)


def test_the_features_preset_of_tag_trains_150_passes_without_validation(tmp_path) -> None:
    """--task tag on .npz: every sequence trains, the run stops after 150 passes even under a
    longer --max-time, and the final weights are kept."""
    data, out = _tag_npz(tmp_path), tmp_path / "frames"
    small = ["--hidden-size", "8", "--log-every", "50", "--eval-every", "100"]
    assert (
        main(["train", str(data), "--out", str(out), "--task", "tag", *small, "--max-time", "600"])
        == 0
    )
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert (trainer["epoch"], trainer["chunk"], trainer["step"]) == (150, 0, 150 * 3)  # 40 / 16
    assert trainer["best_step"] == 450 and trainer["best_val_loss"] is None
    assert not any(k.startswith("val_") for r in _records(out) for k in r)
    assert _same(out / "model.safetensors", out / "state" / "weights.safetensors")


def test_word_votes_keep_the_characters_and_count_in_the_run_time(
    tmp_path, capsys, monkeypatch
) -> None:
    """--word-votes reads each word's spelling, so the folder keeps the characters even
    without --char-features; the votes' prior is the training tags' frequency; the seconds of
    training them count in the run's time (--max-time); .npz and bad weights are refused."""
    data = _tag_text(tmp_path)
    out = tmp_path / "votes"
    argv = ["train", str(data), "--val", str(data), "--task", "tag", "--crf", *TINY]
    argv += ["--max-steps", "4"]
    trained = tag_module.train_word_votes

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return trained(*args, **kwargs)

    monkeypatch.setattr(tag_module, "train_word_votes", slow)
    assert main([*argv, "--out", str(out), "--no-char-features", "--word-votes", "2"]) == 0
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    assert trainer["elapsed"] >= 1.0  # the votes' second counts
    assert json.loads((out / "vocab.json").read_text())["chars"]
    model = rnnkit.load(out)
    assert model.encoder.chars is None and model.word_vote is not None
    tags = [line.split("\t")[-1] for line in data.read_text().splitlines() if line]
    counts = np.array([tags.count(t) for t in model.tags]) + 1.0
    expected = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)
    torch.testing.assert_close(model.word_vote.log_prior, expected)
    assert main(["eval", str(out), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sentences"] == 60
    monkeypatch.undo()
    plain = tmp_path / "plain"  # --word-votes 0: no votes, no characters without --char-features
    assert main([*argv, "--out", str(plain), "--no-char-features", "--word-votes", "0"]) == 0
    assert json.loads((plain / "vocab.json").read_text())["chars"] is None
    assert rnnkit.load(plain).word_vote is None
    assert main(["eval", str(plain), str(data), "--word-votes", "0"]) == 0
    why = "it has none (trained with --word-votes 0"
    _bad(["eval", str(plain), str(data), "--word-votes", "1"], capsys, why)
    _bad(["predict", str(plain), str(data), "--word-votes", "1"], capsys, why)
    big = []  # predict's --word-votes weighs the model's votes
    for weight in ("0.5", "1000"):
        assert main(["predict", str(out), str(data), "--word-votes", weight]) == 0
        big.append([line.split("\t")[-1] for line in capsys.readouterr().out.splitlines()])
    assert big[0] != big[1]
    _bad([*argv, "--out", str(tmp_path / "f"), "--word-votes", "-1"], capsys, "--word-votes")
    frames = _tag_npz(tmp_path)
    _bad(
        ["train", str(frames), "--task", "tag", "--out", str(tmp_path / "f"), "--word-votes", "1"],
        capsys,
        "--word-votes reads the words of text",
    )
    assert not (tmp_path / "f").exists()


def test_word_shape_keeps_the_characters_and_reads_them_again(tmp_path, capsys) -> None:
    """--word-shape reads each word's characters, so the folder keeps them without
    --char-features or --word-votes; the loaded model rebuilds each character's class from
    them (not kept among the weights) and tags as the model trained; refused on .npz."""
    data = _tag_text(tmp_path)
    out = tmp_path / "shape"
    argv = ["train", str(data), "--val", str(data), "--task", "tag", "--crf", *TINY]
    argv += ["--max-steps", "6", "--no-char-features", "--word-votes", "0"]
    assert main([*argv, "--out", str(out), "--word-shape"]) == 0
    chars = json.loads((out / "vocab.json").read_text())["chars"]
    model = rnnkit.load(out)
    assert model.encoder.chars is None and model.encoder.shapes is not None
    expected = [0, 1] + [word_shape_module.char_class(c) for c in chars]
    assert model.encoder.shapes.char_classes.tolist() == expected
    sentences = [["Alice", "met", "BOB", "in", "2013", "!"], ["paris"]]
    capsys.readouterr()
    assert main(["eval", str(out), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sentences"] == 60
    tagged = model.tag_sentences(sentences)
    reloaded = rnnkit.load(out).tag_sentences(sentences)
    assert tagged == reloaded
    plain = tmp_path / "plain"  # without it: no characters, no classes
    assert main([*argv, "--out", str(plain), "--no-word-shape"]) == 0
    assert json.loads((plain / "vocab.json").read_text())["chars"] is None
    assert rnnkit.load(plain).encoder.shapes is None
    frames = _tag_npz(tmp_path)
    _bad(
        ["train", str(frames), "--task", "tag", "--out", str(tmp_path / "f"), "--word-shape"],
        capsys,
        "--word-shape reads the characters of words",
    )
    assert not (tmp_path / "f").exists()


# --- classify's n-gram counts (--naive-bayes) --------------------------------------------------

ENDINGS = {"ru": ["ov", "in", "ev"], "en": ["son", "ley", "ton"], "es": ["ez", "os"]}


def _surnames(folder: Path) -> Path:
    """Single-word items, read as characters, where the preset counts n-grams; "es" rarer."""
    rng = random.Random(1)
    lines = []
    for i in range(100):
        label = ["ru", "ru", "en", "en", "es"][i % 5]
        stem = "".join(rng.choices("bcdklmnprstaeiou", k=rng.randint(2, 4))).capitalize()
        lines.append(f"{label}\t{stem}{rng.choice(ENDINGS[label])}")
    path = folder / "names.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_naive_bayes_is_kept_resumed_and_weighed_at_eval_and_predict(
    tmp_path, monkeypatch, capsys
) -> None:
    """The character preset's --naive-bayes 0.1: the counts are taken from the training
    items, saved with the weights, the same after an interrupted and resumed run; predict's
    probability is the normalised product p_net · p_NB^W at the model's W or the one given."""
    data = _surnames(tmp_path)
    argv = ["train", str(data), "--task", "classify", *TINY, "--max-steps", "16"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*argv, "--out", str(whole)]) == 0
    _interrupted_then_resumed(argv, split, 9, monkeypatch)
    _same_run(whole, split)
    assert json.loads((whole / "config.json").read_text())["model"]["naive_bayes"] == 0.1
    weights = load_file(whole / "model.safetensors")
    grams = json.loads((whole / "vocab.json").read_text())["bayes_grams"]
    assert weights["bayes.keys"].shape == (grams,) and grams > 50
    assert weights["bayes.log_likelihood"].shape == (grams + 1, 3)
    model = rnnkit.load(whole)
    source = tmp_path / "in.txt"
    source.write_text("Kapov\nMilez\n", encoding="utf-8")
    for weight in (None, 0.0, 3.0):
        flag = [] if weight is None else ["--naive-bayes", str(weight)]
        capsys.readouterr()
        assert main(["predict", str(whole), str(source), "--json", *flag]) == 0
        records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        with torch.no_grad():
            inputs = _encoded(model, ["Milez"])
            product = model._logits(*inputs).softmax(-1) * model.bayes(*inputs).exp() ** (
                0.1 if weight is None else weight
            )
        probs = (product / product.sum())[0]
        assert records[1]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert records[1]["label"] == model.labels[int(probs.argmax())]
    losses = []
    for weight in ("0", "0.1", "3"):
        assert main(["eval", str(whole), str(data), "--json", "--naive-bayes", weight]) == 0
        losses.append(json.loads(capsys.readouterr().out)["loss"])
    assert len(set(losses)) == 3  # the weight changes the probabilities eval scores

    plain = tmp_path / "plain"  # --naive-bayes 0: no counts kept, and none to weigh later
    assert main([*argv, "--out", str(plain), "--naive-bayes", "0"]) == 0
    assert "bayes_grams" not in json.loads((plain / "vocab.json").read_text())
    assert not any(k.startswith("bayes.") for k in load_file(plain / "model.safetensors"))
    why = "it has none (trained with --naive-bayes 0"
    _bad(["eval", str(plain), str(data), "--naive-bayes", "1"], capsys, why)
    _bad(["predict", str(plain), str(source), "--naive-bayes", "1"], capsys, why)
    assert main(["eval", str(plain), str(data), "--naive-bayes", "0"]) == 0
    _bad([*argv, "--out", str(tmp_path / "n"), "--naive-bayes", "-1"], capsys, "--naive-bayes")
    frames = _classify_npz(tmp_path)
    npz = ["train", str(frames), "--task", "classify", "--out", str(tmp_path / "f")]
    _bad([*npz, "--naive-bayes", "1"], capsys, "--naive-bayes counts the tokens of text")
    tagger = ["train", str(_tag_text(tmp_path)), "--task", "tag", "--out", str(tmp_path / "t")]
    _bad([*tagger, "--naive-bayes", "1"], capsys, "--naive-bayes", "classify")
    assert not any((tmp_path / name).exists() for name in ("n", "f", "t"))


def test_a_folder_whose_count_table_does_not_fit_is_refused(tmp_path) -> None:
    """vocab.json's bayes_grams sizes the tables that model.safetensors must fill."""
    data = _surnames(tmp_path)
    out = tmp_path / "m"
    argv = ["train", str(data), "--task", "classify", *TINY, "--max-steps", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    meta = json.loads((out / "vocab.json").read_text())
    (out / "vocab.json").write_text(json.dumps(meta | {"bayes_grams": meta["bayes_grams"] + 1}))
    with pytest.raises(rnnkit.CheckpointError, match="does not fit"):
        rnnkit.load(out)
    (out / "vocab.json").write_text(json.dumps(meta | {"bayes_grams": "many"}))
    with pytest.raises(rnnkit.CheckpointError, match="bayes_grams"):
        rnnkit.load(out)
