"""What a new user meets around `eval` and `predict` of the sequence tasks: plots written
safely or refused before any work, standard input decoded like a file, one output line per
input line, exact messages for data that does not fit the model, options refused by the tasks
that do not read them, and the Python API on `.npz` feature models.

Tiny generated data and models (H 8, one layer), trained once per module.
"""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import cli
from rnnkit.cli import main
from tests.e2e.test_tasks import TINY, _classify_npz, _classify_text, _tag_npz, _tag_text

pytestmark = pytest.mark.usefixtures("single_thread")
FLAGS = {
    "classify": ["--task", "classify", "--level", "word"],
    "classify-npz": ["--task", "classify"],
    "tag": ["--task", "tag", "--crf", "--char-features"],
    "tag-npz": ["--task", "tag", "--no-bidirectional"],
}
MAKERS = {
    "classify": _classify_text,
    "classify-npz": _classify_npz,
    "tag": _tag_text,
    "tag-npz": _tag_npz,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (model folder, its training data) for text and features of both tasks."""
    root = tmp_path_factory.mktemp("edges")
    found = {}
    for name, make in MAKERS.items():
        folder = root / "data" / name
        folder.mkdir(parents=True)
        data = make(folder)
        out = root / name
        argv = ["train", str(data), "--out", str(out), *FLAGS[name], *TINY, "--max-steps", "6"]
        assert main(argv) == 0
        found[name] = (out, data)
    return found


def _bad(argv: list[str], capsys, *expected: str) -> str:
    """Run ``argv``: exit 2 and one line ``rnnkit <cmd>: error: ...`` holding ``expected``."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"rnnkit {argv[0]}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


# --- plots -----------------------------------------------------------------------------------


def test_a_bad_plot_path_is_refused_before_the_evaluation(models, tmp_path, capsys, monkeypatch):
    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before the --plot path was checked")

    monkeypatch.setattr(cli, "evaluate_folder", no_evaluation)
    folder, data = models["classify"]
    argv = ["eval", str(folder), str(data), "--plot"]
    _bad([*argv, str(tmp_path / "none" / "c.png")], capsys, "none", "does not exist")
    (tmp_path / "dir.png").mkdir()
    _bad([*argv, str(tmp_path / "dir.png")], capsys, "dir.png", "is a folder")
    _bad([*argv, str(tmp_path / "c.jpg")], capsys, "PNG")
    tagger, conll = models["tag"]
    _bad(["eval", str(tagger), str(conll), "--plot", str(tmp_path / "t.png")], capsys, "tag")


def test_a_failed_plot_leaves_the_old_file_whole(models, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    folder, data = models["classify"]
    png = tmp_path / "confusion.png"
    assert main(["eval", str(folder), str(data), "--plot", str(png)]) == 0
    before = png.read_bytes()
    assert before[:8] == b"\x89PNG\r\n\x1a\n"

    def disk_full(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")  # what a full disk leaves behind
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    _bad(["eval", str(folder), str(data), "--plot", str(png)], capsys, "No space left")
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png"]  # no temporary


# --- input -----------------------------------------------------------------------------------


def test_stdin_is_decoded_as_strictly_as_a_file(models, capsys, monkeypatch):
    folder, _ = models["classify"]
    _stdin(monkeypatch, b"a good film\nthe plot \xff was dull\n")
    _bad(["predict", str(folder), "-"], capsys, "<stdin>:2:", "not valid utf-8", "0xff")
    _stdin(monkeypatch, b"a good film\r\nthe dull plot\r\n")
    assert main(["predict", str(folder), "-", "--json"]) == 0
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert texts == ["a good film", "the dull plot"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("a good film\r\nthe dull plot\n"))  # no bytes
    assert main(["predict", str(folder), "-", "--json"]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == texts


def test_classify_gives_one_output_line_per_input_line(models, capsys, monkeypatch):
    folder, _ = models["classify"]
    _stdin(monkeypatch, b"good film\n\nbad plot\n   \nfine film\n")
    assert main(["predict", str(folder), "-"]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert len(lines) == 5 and lines[1] == lines[3] == ""
    assert all(len(lines[i].split("\t")) == 2 for i in (0, 2, 4))
    _stdin(monkeypatch, b"good film\n\nbad plot\n")
    assert main(["predict", str(folder), "-", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == ["good film", "", "bad plot"]
    assert records[1]["label"] is None and records[2]["label"] in ("pos", "neg", "mid")
    probs = rnnkit.load(folder).predict_proba(["bad plot"])  # the third line, not the second
    assert records[2]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)


# --- data that does not fit the model --------------------------------------------------------


def test_unknown_npz_labels_are_exactly_those_in_the_file(models, tmp_path, capsys):
    folder, data = models["classify-npz"]  # labels 0, 1, 2
    arrays = dict(np.load(data))
    y = arrays["y"].copy()
    y[:4] = 7
    held = tmp_path / "held.npz"
    np.savez(held, **(arrays | {"y": y}))
    message = _bad(["eval", str(folder), str(held)], capsys, "1 label(s)", "'7'")
    assert "'3'" not in message
    assert main(["eval", str(folder), str(held), "--json", "--count-unknown-labels"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["labels"] == ["0", "1", "2", "7"]
    assert metrics["per_class"]["7"]["support"] == 4 and metrics["examples"] == len(y)
    assert [sum(row) for row in metrics["confusion"]] == [int((y == c).sum()) for c in (0, 1, 2, 7)]


def test_validation_labels_unknown_to_training_name_no_eval_flag(models, tmp_path, capsys):
    _, data = models["classify"]
    val = tmp_path / "val.tsv"
    val.write_text("pos\tgood film\nweird\tso so\n", encoding="utf-8")
    out = tmp_path / "m"
    argv = ["train", str(data), "--val", str(val), "--out", str(out), *FLAGS["classify"], *TINY]
    message = _bad(argv, capsys, "'weird'", "validation data")
    assert "--count-unknown-labels" not in message and not out.exists()


def test_text_and_features_are_told_apart_at_eval(models, capsys):
    text_model, text = models["classify"]
    features_model, features = models["classify-npz"]
    _bad(["eval", str(text_model), str(features)], capsys, "this model reads text", ".npz")
    _bad(["eval", str(features_model), str(text)], capsys, "reads .npz feature sequences")
    tagger, conll = models["tag"]
    _bad(["eval", str(tagger), str(models["tag-npz"][1])], capsys, "this model reads text")
    message = _bad(["eval", str(text_model), str(conll)], capsys, "CoNLL", "--task tag")
    assert "did you mean" not in message  # eval has no --task to give


def test_npz_data_for_the_default_lm_task_names_the_tasks(models, tmp_path, capsys):
    _, features = models["classify-npz"]
    out = tmp_path / "lm"
    _bad(["train", str(features), "--out", str(out)], capsys, ".npz", "--task classify")
    assert not out.exists()


def test_embeddings_are_refused_for_feature_sequences(models, tmp_path, capsys):
    _, features = models["tag-npz"]
    out = tmp_path / "m"
    argv = ["train", str(features), "--out", str(out), *FLAGS["tag-npz"], *TINY]
    _bad([*argv, "--embeddings", str(tmp_path / "nowhere.vec")], capsys, "--embeddings")
    assert not out.exists()


# --- options ---------------------------------------------------------------------------------


def test_an_unknown_flag_is_named_by_its_subcommand(models, capsys):
    folder, data = models["classify"]
    message = _bad(["eval", str(folder), str(data), "--bogus"], capsys, "--bogus")
    assert message.startswith("rnnkit eval: error: unrecognized arguments")


@pytest.mark.parametrize(
    ("name", "flag", "tasks"),
    [
        ("tag", ["--top-k", "2"], "classify"),
        ("tag-npz", ["--top-k", "2"], "classify"),
        ("classify", ["--beam-size", "3"], "seq2seq and condgen"),
        ("classify-npz", ["--max-length", "5"], "seq2seq and condgen"),
        ("tag", ["--plot-attention", "a.png"], "seq2seq"),
    ],
)
def test_predict_options_of_other_tasks_are_refused(models, capsys, name, flag, tasks):
    folder, data = models[name]
    _bad(["predict", str(folder), str(data), *flag], capsys, flag[0], f"of {tasks} models")


def test_out_defaults_to_the_tasks_folder(models, tmp_path, capsys, monkeypatch):
    _, data = models["classify"]
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(data), "--task", "classify", "--print-config"]) == 0
    assert 'out = "runs/classify"' in capsys.readouterr().out
    assert main(["train", str(data), "--task", "lm", "--print-config"]) == 0
    assert 'out = "runs/lm"' in capsys.readouterr().out


# --- the Python API on feature sequences ------------------------------------------------------


def test_a_classifier_of_features_predicts_from_arrays(models, capsys):
    folder, data = models["classify-npz"]
    arrays = np.load(data)
    x, lengths = arrays["x"], arrays["lengths"]
    model = rnnkit.load(folder)
    probs = model.predict_proba(x, lengths=lengths)  # (N, C)
    assert main(["predict", str(folder), str(data), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in records] == model.predict(x, lengths=lengths)
    assert [r["probability"] for r in records] == pytest.approx(probs.max(-1).values.tolist())
    one = model.predict_proba(torch.from_numpy(x[3, : lengths[3]]))  # one sequence (T, D)
    assert torch.allclose(one[0], probs[3], atol=1e-6)  # its padding changed nothing
    with pytest.raises(ValueError, match=r"D = 3 features"):
        model.predict_proba(x[..., :2])
    with pytest.raises(ValueError, match="lengths"):
        model.predict_proba(x, lengths=lengths + 100)
    with pytest.raises(ValueError, match="feature sequences"):
        model.predict_proba(["a text"])


def test_a_tagger_of_features_tags_arrays_and_one_of_text_tags_strings(models, capsys):
    folder, data = models["tag-npz"]
    arrays = np.load(data)
    model = rnnkit.load(folder)
    tags = model.tag_features(arrays["x"], lengths=arrays["lengths"])
    assert main(["predict", str(folder), str(data)]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == tags
    assert [len(t) for t in tags] == arrays["lengths"].tolist()
    tagger = rnnkit.load(models["tag"][0])
    assert tagger.tag_sentences(["Ann Smith saw  Rome", ["the", "film"]]) == tagger.tag_sentences(
        [["Ann", "Smith", "saw", "Rome"], ["the", "film"]]
    )
    with pytest.raises(TypeError, match="list of sentences"):
        tagger.tag_sentences("Ann saw Rome")
    with pytest.raises(ValueError, match="tag_sentences"):
        tagger.tag_features(arrays["x"])
