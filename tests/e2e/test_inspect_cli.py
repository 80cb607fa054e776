"""End to end: `rnnkit inspect {cells,saturation,gradients,errors}` and `rnnkit viz` on a tiny
trained model folder, and their one-line errors for bad input."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from rnnkit.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

LINES = [
    'print("the cat sat", (1, 2))',
    '    if dog["log"] > 3:',
    "        return [cat, (mat)]",
    'say("a bird (sang)") # on the mat',
]
TEXT = "\n".join(LINES[i % 4] for i in range(40)) + "\n"  # ~1,200 characters
TINY = [
    *("--hidden-size", "12", "--num-layers", "2", "--embedding-size", "6", "--dropout", "0"),
    *("--batch-size", "4", "--seq-len", "16", "--log-every", "20", "--eval-every", "20"),
    *("--max-steps", "20", "--warmup-steps", "0"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.py"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lstm"
    assert main(["train", str(corpus), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("held") / "held.py"
    path.write_text("\n".join(reversed(LINES)) * 3 + "\n", encoding="utf-8")
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cells_json_ranks_each_feature_best_first(model_dir, held_out, capsys) -> None:
    code, out, err = run(
        capsys, "inspect", "cells", model_dir, held_out, "--json", "--top", "4", "--ablate", "2",
        "--feature", "in_quotes", "--feature", "column", "--feature", "comment=#.*",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert {s["feature"] for s in result["cells"]} == {"in_quotes", "column", "comment"}
    for feature in ("in_quotes", "column", "comment"):
        scores = [s for s in result["cells"] if s["feature"] == feature]
        assert len(scores) == 4
        assert [abs(s["corr"]) for s in scores] == sorted(
            (abs(s["corr"]) for s in scores), reverse=True
        )
        assert all(s["ablation_delta_loss"] is not None for s in scores[:2])
        for s in scores:
            assert set(s) == {"feature", "layer", "kind", "cell", "corr", "probe_accuracy",
                              "ablation_delta_loss"}  # fmt: skip
            assert 0 <= s["layer"] < 2 and 0 <= s["cell"] < 12 and s["kind"] in ("h", "c")
            assert 0.5 <= s["probe_accuracy"] <= 1.0
    assert result["tokens"] == len(held_out.read_text())


def test_cells_text_table(model_dir, held_out, capsys) -> None:
    code, out, _ = run(capsys, "inspect", "cells", model_dir, held_out, "--top", "2")
    assert code == 0
    for feature in ("in_quotes", "in_parens", "bracket_depth", "column", "indent", "word_start"):
        assert re.search(rf"^{feature} \(probe baseline \d+\.\d%\)$", out, re.M), feature
    assert re.search(r"^\s+[12] tanh\(c\)\s+\d+\s+[+-]0\.\d{3}\s+\d+\.\d%", out, re.M)


def test_saturation_json_and_plot(model_dir, held_out, tmp_path, capsys) -> None:
    plot = tmp_path / "sat.png"
    code, out, err = run(
        capsys, "inspect", "saturation", model_dir, held_out, "--json", "--plot", plot
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["cell"] == "lstm" and [layer["layer"] for layer in result["layers"]] == [0, 1]
    assert set(result["layers"][0]["gates"]) == {"i", "f", "o"}
    assert len(result["layers"][1]["gates"]["f"]["right"]) == 12
    with Image.open(plot) as image:
        assert image.size[0] > 600 and image.size[1] > 300


def test_gradients_json_plot_and_comparison(model_dir, held_out, tmp_path, capsys) -> None:
    plot = tmp_path / "compare.png"
    code, out, err = run(
        capsys, "inspect", "gradients", model_dir, held_out, "--json", "--distance", "20",
        "--windows", "4", "--compare", "rnn,lstm", "--compare-steps", "3", "--plot", plot,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["model"]["distances"] == list(range(21)) and result["model"]["windows"] == 4
    assert set(result["compare"]) == {"untrained", "trained 3 steps"}
    assert set(result["compare"]["untrained"]) == {"rnn", "lstm"}
    assert result["compare"]["trained 3 steps"]["rnn"]["cell"] == "rnn"
    with Image.open(plot) as image:
        assert image.size[0] > 900  # two panels side by side


def test_errors_against_the_ngram_of_the_training_text(model_dir, held_out, corpus, capsys):
    code, out, err = run(capsys, "inspect", "errors", model_dir, held_out, "--json", "--order", "8")
    assert code == 0, err
    result = json.loads(out)
    assert result["order"] == 8 and result["total"]["count"] == len(held_out.read_text()) - 1
    assert sum(k["count"] for k in result["kinds"]) == result["total"]["count"]
    # held_out is the training text's lines: an 8-gram of it errs far less than 20 steps of LSTM
    assert result["total"]["ngram_errors"] < result["total"]["rnn_errors"]
    code, out, _ = run(capsys, "inspect", "errors", model_dir, held_out, "--order", "3")
    assert code == 0 and "after_space" in out and "3-gram" in out


def test_errors_when_the_training_text_is_gone(model_dir, held_out, corpus, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["data"]["path"] = str(tmp_path / "nowhere.txt")
    (moved / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "inspect", "errors", moved, held_out)
    assert code == 2
    assert err.count("\n") == 1 and "nowhere.txt" in err and "--train-text" in err
    code, out, _ = run(capsys, "inspect", "errors", moved, held_out, "--train-text", corpus)
    assert code == 0 and "total" in out


def test_viz_writes_a_self_contained_page(model_dir, held_out, tmp_path, capsys) -> None:
    page = tmp_path / "cells.html"
    code, _, err = run(capsys, "viz", model_dir, held_out, "--out", page, "--feature", "c=cat")
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "rnnkit-data" in html
    assert "http://" not in html and "https://" not in html
    assert '"feature":"c"' in html and html.count("data:image/png;base64,") == 2
    assert "wrote" in err


def test_numpy_engine_folders_are_inspected_too(corpus, held_out, tmp_path, capsys) -> None:
    out = tmp_path / "numpy-gru"
    args = ["train", corpus, "--engine", "numpy", "--cell", "gru", "--out", out]
    assert main([str(a) for a in [*args, "--hidden-size", "8", "--max-steps", "3"]]) == 0
    capsys.readouterr()
    code, result, err = run(capsys, "inspect", "saturation", out, held_out, "--json")
    assert code == 0, err
    assert set(json.loads(result)["layers"][0]["gates"]) == {"r", "z"}


# --- bad input: one line, exit 2 ------------------------------------------------------------


def one_line_error(capsys, *args) -> str:
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def test_a_folder_of_another_task_is_refused(model_dir, held_out, tmp_path, capsys) -> None:
    other = tmp_path / "classifier"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"task": "classify"}))
    err = one_line_error(capsys, "inspect", "cells", other, held_out)
    assert err.startswith("rnnkit inspect: error: inspect cells works on lm models")
    assert err.rstrip().endswith("this folder is a classify model")
    err = one_line_error(capsys, "viz", other, held_out, "--out", tmp_path / "p.html")
    assert err.startswith("rnnkit viz: error: viz works on lm models")


def test_bad_texts(model_dir, tmp_path, capsys) -> None:
    empty, binary, short = tmp_path / "empty.txt", tmp_path / "bin.dat", tmp_path / "one.txt"
    empty.write_text("")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    short.write_text("a")
    assert "is empty" in one_line_error(capsys, "inspect", "cells", model_dir, empty)
    err = one_line_error(capsys, "inspect", "saturation", model_dir, binary)
    assert "bin.dat" in err and ("binary" in err or "not valid" in err)
    assert "at least 2" in one_line_error(capsys, "inspect", "errors", model_dir, short)
    missing = one_line_error(capsys, "inspect", "cells", model_dir, tmp_path / "none.txt")
    assert "none.txt does not exist" in missing


def test_characters_outside_the_vocabulary_are_counted_or_refused(model_dir, tmp_path, capsys):
    text = tmp_path / "accents.txt"
    text.write_text("print(cat) é ü é\n" * 3)
    code, out, err = run(capsys, "inspect", "cells", model_dir, text, "--json", "--ablate", "0")
    assert code == 0 and json.loads(out)["cells"]
    assert "has 9 characters the model never saw (2 distinct: 'é', 'ü')" in err
    err = one_line_error(capsys, "inspect", "cells", model_dir, text, "--refuse-unknown")
    assert "9 characters the model never saw" in err


def test_bad_features_and_options(model_dir, held_out, tmp_path, capsys) -> None:
    err = one_line_error(capsys, "inspect", "cells", model_dir, held_out, "--feature", "q=(ab")
    assert "bad regular expression '(ab'" in err and "missing )" in err
    err = one_line_error(capsys, "inspect", "cells", model_dir, held_out, "--feature", "quotes")
    assert "unknown feature 'quotes'; built in: in_quotes" in err
    err = one_line_error(capsys, "inspect", "gradients", model_dir, held_out, "--compare", "rnn,x")
    assert "--compare takes cells among rnn, gru, lstm" in err
    assert "--windows" in one_line_error(
        capsys, "inspect", "gradients", model_dir, held_out, "--windows", "0"
    )


def test_saturation_of_a_vanilla_rnn_says_it_has_no_gates(corpus, held_out, tmp_path, capsys):
    out = tmp_path / "rnn"
    assert main([str(a) for a in ["train", corpus, "--out", out, "--cell", "rnn", *TINY]]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, "inspect", "saturation", out, held_out)
    assert "needs gates, and the rnn cell has none" in err


def test_the_command_runs_as_a_program(model_dir, held_out) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rnnkit", "inspect", "gradients", str(model_dir), str(held_out),
         "--distance", "5", "--windows", "2"],
        capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "layer 2 of the lstm" in done.stdout
