"""End to end: `rnnkit train --engine numpy`, and model folders read across the two engines.

Tiny models (H 16, T 8) on a few hundred characters written to tmp_path.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import rnnkit
import rnnkit.reference as ref
from rnnkit.cli import main
from rnnkit.config import EvalConfig
from tests.e2e.support import corpus_text

TEXT = corpus_text(24)  # ~720 characters
NUMPY_TINY = ["--engine", "numpy", "--hidden-size", "16", "--seq-len", "8"]
TORCH_KEYS = {
    "rnn.weight_ih_l0",
    "rnn.weight_hh_l0",
    "rnn.bias_ih_l0",
    "rnn.bias_hh_l0",
    "head.weight",
    "head.bias",
}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _train(corpus: Path, out: Path, *extra: str) -> None:
    args = ["train", str(corpus), "--out", str(out), "--log-every", "10", "--eval-every", "30"]
    assert main([*args, *extra]) == 0


def _eval_json(folder: Path, data: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["eval", str(folder), str(data), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _numpy_loss(folder: Path, text: str) -> float:
    """The NumPy engine's loss of ``text``, read as `rnnkit eval` reads it by default."""
    model, tokens = ref.load_model(folder)
    ids = np.array([tokens.index(ch) for ch in text])  # (N,)
    cfg = EvalConfig()
    return ref.text_loss(model, ids, cfg.batch_size, cfg.seq_len)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_train_sample_eval(cell, corpus, tmp_path, capsys) -> None:
    out = tmp_path / cell
    _train(corpus, out, *NUMPY_TINY, "--cell", cell, "--max-steps", "90")

    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "lm"
    assert config["model"]["cell"] == cell
    assert {k: config["model"][k] for k in ("hidden_size", "num_layers", "embedding_size")} == {
        "hidden_size": 16,
        "num_layers": 1,
        "embedding_size": 0,
    }
    assert config["model"]["dropout"] == 0
    train = config["train"]
    assert train["engine"] == "numpy"
    assert (train["batch_size"], train["lr"], train["optimizer"]) == (1, 0.1, "adagrad")
    assert (train["grad_clip_value"], train["grad_clip"]) == (5.0, 0.0)

    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == TORCH_KEYS
    assert all(w.dtype == np.float32 for w in weights.values())
    vocab_size = len(json.loads((out / "vocab.json").read_text())["tokens"])
    assert weights["rnn.weight_ih_l0"].shape == (GATES[cell] * 16, vocab_size)
    assert sorted(p.name for p in (out / "state").iterdir()) == [
        "trainer.json",
        "trainer.safetensors",
    ]

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert [r["step"] for r in records if "loss" in r] == list(range(10, 91, 10))
    assert [r["step"] for r in records if "val_loss" in r] == [30, 60, 90]
    assert set(records[0]) == {"step", "time", "loss", "tokens_per_s", "lr", "ms_per_step"}
    assert losses[-1] < 0.7 * losses[0]

    capsys.readouterr()
    for engine in ("torch", "numpy"):
        argv = ["sample", str(out), "--prime", "the ", "--length", "50", "--engine", engine]
        assert main(argv) == 0
        sample = capsys.readouterr().out
        assert sample.startswith("the ") and len(sample.rstrip("\n")) == 54

    # eval reads the folder through the torch model; its loss is the NumPy engine's own
    metrics = _eval_json(out, corpus, capsys)
    assert metrics["tokens"] == len(TEXT) - 1
    assert metrics["loss"] == pytest.approx(_numpy_loss(out, TEXT), rel=1e-5)
    assert rnnkit.load(out).generate(prime="the", length=20, seed=3).startswith("the")


def test_validation_loss_is_evals_loss_on_the_split(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    _train(corpus, out, *NUMPY_TINY, "--cell", "gru", "--max-steps", "30", "--batch-size", "4")
    val_text = TEXT[len(TEXT) - int(len(TEXT) * 0.1) :]
    (tmp_path / "val.txt").write_text(val_text, encoding="utf-8")
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    model, tokens = ref.load_model(out)
    ids = np.array([tokens.index(ch) for ch in val_text])  # (M,)
    assert record["val_loss"] == pytest.approx(ref.text_loss(model, ids, 4, 8), rel=1e-5)


def test_resume_is_exact(corpus, tmp_path) -> None:
    common = [*NUMPY_TINY, "--cell", "lstm", "--batch-size", "2", "--eval-every", "5"]
    _train(corpus, tmp_path / "straight", *common, "--max-steps", "20")
    _train(corpus, tmp_path / "resumed", *common, "--max-steps", "10")
    _train(corpus, tmp_path / "resumed", *common, "--max-steps", "20", "--resume")

    straight = load_file(str(tmp_path / "straight" / "state" / "trainer.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state" / "trainer.safetensors"))
    assert set(straight) == set(resumed)
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    for folder in ("straight", "resumed"):
        meta = json.loads((tmp_path / folder / "state" / "trainer.json").read_text())
        assert meta["numpy_trainer"]["step"] == 20
    val = [
        [json.loads(line).get("val_loss") for line in (tmp_path / f / "metrics.jsonl").open()]
        for f in ("straight", "resumed")
    ]
    assert val[0] == val[1]


def test_torch_folder_read_by_the_numpy_engine(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "torch"
    one_hot = ["--num-layers", "1", "--embedding-size", "0", "--dropout", "0"]
    tiny = ["--hidden-size", "16", "--batch-size", "4", "--seq-len", "8", "--lr", "1e-2"]
    _train(corpus, out, "--cell", "lstm", *one_hot, *tiny, "--max-steps", "30")

    assert _eval_json(out, corpus, capsys)["loss"] == pytest.approx(
        _numpy_loss(out, TEXT), rel=1e-5
    )
    capsys.readouterr()
    assert main(["sample", str(out), "--engine", "numpy", "--prime", "a ", "--length", "30"]) == 0
    assert len(capsys.readouterr().out.rstrip("\n")) == 32

    model, tokens = ref.load_model(out)
    state = rnnkit.load(out).state_dict()
    np.testing.assert_array_equal(model.params["weight_hh"], state["rnn.weight_hh_l0"].numpy())
    texts = ref.generate(model, tokens, "the", 10, temperature=1.0, seed=5, num_samples=2)
    assert texts == ref.generate(model, tokens, "the", 10, temperature=1.0, seed=5, num_samples=2)
    assert all(t.startswith("the") and len(t) == 13 for t in texts)


def test_numpy_engine_reads_folders_without_torch(corpus, tmp_path) -> None:
    out = tmp_path / "run"
    _train(corpus, out, *NUMPY_TINY, "--cell", "rnn", "--max-steps", "10")
    script = textwrap.dedent(
        f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is forbidden here")
                return None

        sys.meta_path.insert(0, NoTorch())
        import rnnkit.reference as ref

        model, tokens = ref.load_model({str(out)!r})
        ids = [tokens.index(ch) for ch in {TEXT!r}]
        print(ref.text_loss(model, ids, 16, 100))
        print(ref.generate(model, tokens, "the", 5, temperature=0, seed=1)[0])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loss, sample = done.stdout.splitlines()
    assert float(loss) == pytest.approx(_numpy_loss(out, TEXT), rel=1e-12)
    assert sample.startswith("the") and len(sample) == 8


def test_defaults_are_min_char_rnns_where_not_set(capsys) -> None:
    capsys.readouterr()
    assert main(["train", "--engine", "numpy", "--print-config", "--hidden-size", "32"]) == 0
    toml = capsys.readouterr().out
    for line in (
        "hidden_size = 32",
        "num_layers = 1",
        "embedding_size = 0",
        "seq_len = 25",
        "batch_size = 1",
        "lr = 0.1",
        'optimizer = "adagrad"',
        "grad_clip_value = 5.0",
        'engine = "numpy"',
    ):
        assert f"\n{line}\n" in toml, line
    assert main(["train", "--print-config", "--device", "cpu"]) == 0  # not the GPU preset
    assert "\nhidden_size = 512\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--num-layers", "2"], "--num-layers"),
        (["--embedding-size", "8"], "--embedding-size"),
        (["--cell", "minlstm"], "--cell"),
        (["--cell", "mingru"], "--cell"),
        (["--level", "word"], "--level"),
        (["--bidirectional"], "--bidirectional"),
        (["--precision", "bf16"], "--precision"),
        (["--device", "cuda"], "--device"),
        (["--grad-clip", "1"], "--grad-clip"),
    ],
)
def test_bad_combinations(extra, expected, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "bad"
    capsys.readouterr()
    assert main(["train", str(corpus), "--out", str(out), *NUMPY_TINY, *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnkit train: error: "), lines
    assert expected in lines[0]
    assert not out.exists()


def test_numpy_sampling_refuses_models_it_cannot_run(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "embedded"
    tiny = ["--hidden-size", "8", "--num-layers", "1", "--batch-size", "2", "--seq-len", "4"]
    _train(corpus, out, *tiny, "--embedding-size", "4", "--max-steps", "2")
    capsys.readouterr()
    assert main(["sample", str(out), "--engine", "numpy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit sample: error: ") and "--embedding-size 0" in err
    with pytest.raises(rnnkit.CheckpointError, match="embedding-size"):
        ref.load_model(out)
