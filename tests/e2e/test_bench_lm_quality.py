"""bench/lm.py --quality --quick: rnnkit's defaults beside the plain PyTorch script of
bench/plain_lm.py, per corpus and budget, on a small corpus made here (speed and loss values
are never asserted, only that both sides ran on the same split and reported consistently)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnkit.training.budget import LM_BUDGET_ROWS

pytestmark = pytest.mark.usefixtures("single_thread")
BENCH = Path(__file__).parents[2] / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"test_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_quality_run_reports_both_sides(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    (data / "tinyshakespeare").mkdir(parents=True)
    lines = [f"{'ROMEO' if i % 3 else 'JULIET'}: line {i % 17} of the play\r\n" for i in range(300)]
    text = "".join(lines)  # CRLF on disk: each line end reads as one "\n"
    (data / "tinyshakespeare" / "input.txt").write_bytes(text.encode("utf-8"))
    chars = len(text.replace("\r\n", "\n"))
    out = tmp_path / "quality.json"
    argv = ["--quality", "0.01", "--quick", "--eval-seconds", "0.2", "--data-dir", str(data)]
    _module("lm").main([*argv, "--out", str(out)])

    report = json.loads(out.read_text())
    assert (
        report["provenance"]["git_commit"] is None or len(report["provenance"]["git_commit"]) == 40
    )
    assert report["quick"] is True and report["minutes"] == [0.01]
    corpora = report["corpora"]
    assert corpora["warpeace"] == {"skipped": f"{data / 'warpeace' / 'input.txt'} is absent"}
    ts = corpora["tinyshakespeare"]
    assert ts["val_tokens"] == int(chars * 0.1) and ts["train_tokens"] == chars - ts["val_tokens"]
    assert ts["vocab"] == len(set(text.replace("\r\n", "\n"))) + 4  # + the special tokens

    pair = ts["budgets"]["0.01 min"]
    ours, plain = pair["rnnkit"], pair["plain"]
    assert ours["row"] in {row.name for row in LM_BUDGET_ROWS}
    assert ours["budget_line"].startswith("budget: max_time 0.6 s x ~")
    assert f'row "{ours["row"]}"' in ours["budget_line"]
    assert ours["settings"]["hidden_size"] == plain["settings"]["hidden_size"] == 32
    for side in (ours, plain):
        assert side["steps"] >= 1 and side["tokens_per_s"] > 0
        vals = [val for _, _, val in side["curve"]]
        assert vals and all(math.isfinite(v) and v > 0 for v in vals)
        assert side["best_val_loss"] == pytest.approx(min(vals))
        assert side["curve"][-1][1] <= side["steps"]
    assert ours["precision"] == plain["precision"]  # the same rule on both sides

    table = capsys.readouterr().out
    assert "warpeace         skipped:" in table and f"{ours['row']}" in table


def test_plain_evaluation_reads_every_prediction_once() -> None:
    """With B streams the held-out loss is each stream's loss from a zero state, the last stream
    padded, summed over the N - 1 predictions and divided by N - 1."""
    plain = _module("plain_lm")
    torch.manual_seed(0)
    cfg = plain.PlainConfig(hidden_size=6, embedding_size=5, num_layers=2, batch_size=3, seq_len=2)
    model = plain.CharLSTM(7, cfg)
    ids = torch.randint(0, 7, (11,))  # 10 predictions: streams of 4, 4 and 2
    autocast = torch.autocast("cpu", enabled=False)
    got = plain.evaluate(model, ids, cfg, autocast)
    assert model.training  # evaluate puts the model back in training mode
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start, stop in ((0, 4), (4, 8), (8, 10)):
            logits, _ = model(ids[start:stop].unsqueeze(0))  # (1, t, V)
            total += F.cross_entropy(logits[0], ids[start + 1 : stop + 1], reduction="sum").item()
    assert got == pytest.approx(total / 10, rel=1e-6)


def test_corpora_built_from_pythons_own_sources(tmp_path, monkeypatch) -> None:
    lm = _module("lm")
    monkeypatch.setattr(lm, "PYSOURCES_CHARS", 300_000)
    text = lm.generated_corpus("pysources")
    assert 50_000 < len(text) <= 300_000 and "def " in text
    assert lm.generated_corpus("pysources") == text  # the same files in the same order
    out = tmp_path / "quality.json"
    argv = ["--quality", "0.01", "--quick", "--eval-seconds", "0.2", "--corpora", "stdlib"]
    lm.main([*argv, "--out", str(out)])
    stdlib = json.loads(out.read_text())["corpora"]["stdlib"]
    assert stdlib["data"].startswith("the stdlib corpus of `make demo`")
    assert stdlib["train_tokens"] + stdlib["val_tokens"] == lm.QUICK_CHARS
    assert stdlib["budgets"]["0.01 min"]["plain"]["steps"] >= 1
