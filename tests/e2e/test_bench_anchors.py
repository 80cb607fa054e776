"""bench/anchors.py: the plain PyTorch anchors measured on this machine. The captioner's greedy
decoding is checked against its own teacher-forced scores; the runs themselves (slow) read
../shared/data and are checked for a complete report, never for their figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[2] / "bench"
DATA = Path(__file__).parents[3] / "shared" / "data"

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def anchors(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import anchors

    return anchors


def test_greedy_captions_follow_the_teacher_forced_argmax(anchors) -> None:
    """Each greedy token is the argmax of the scores the model gives, read with the tokens
    before it (the state carried from step to step, not restarted)."""
    torch.manual_seed(0)
    model = anchors.PlainCaptioner(size=5, vocab=7, hidden=16).eval()
    v = torch.randn(4, 5)  # (B, D)
    out = model.greedy(v, steps=6, bos=2)  # (B, 6)
    inputs = torch.cat([torch.full((4, 1), 2), out[:, :-1]], 1)  # (B, 6) bos, then the tokens
    scores, _ = model(v, inputs)  # (B, 6, V)
    assert torch.equal(scores.argmax(-1), out)


def test_the_tagger_anchor_reads_every_word_as_written(anchors, tmp_path) -> None:
    """The plain tagger's words are not those of rnnkit's preset (lower case, --min-freq 3)."""
    conll = tmp_path / "ner.conll"
    conll.write_text("Paris\tB-loc\nrain\tO\n\nparis\tB-loc\nsun\tO\n", encoding="utf-8")
    _, data, run = anchors._data(conll, conll)
    tokens = data.meta["vocab"]["tokens"]
    assert {"Paris", "paris", "rain", "sun"} <= set(tokens)
    assert (run.data.min_freq, run.data.lowercase) == (1, False)


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
def test_the_anchors_report_each_run(tmp_path) -> None:
    out = tmp_path / "anchors.json"
    runs = ["frames", "digits", "wnut17", "names", "sst2"]
    command = [sys.executable, str(BENCH / "anchors.py"), *runs]
    subprocess.run([*command, "--seconds", "1", "--out", str(out)], check=True, cwd=BENCH)
    report = json.loads(out.read_text())
    assert set(report) == set(runs)
    assert 0 <= report["frames"]["test_frame_accuracy"] <= 1
    assert 0 <= report["digits"]["test_exact_match"] <= 1
    assert set(report["wnut17"]["test"]) == {"precision", "recall", "f1"}
    for name in ("names", "sst2"):
        assert 0 <= report[name]["test"]["accuracy"] <= 1 and "macro_f1" in report[name]["dev"]
    for row in report.values():
        assert row["steps"] > 0 and row["lr"] == 1e-3 and row["provenance"]["git_commit"]
