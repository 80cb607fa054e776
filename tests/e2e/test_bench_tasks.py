"""bench/tasks.py and bench/seq2seq.py's speed: a quick run writes a complete report, and what is
compared takes turns round by round. Figures are timings, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


def test_quick_run_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "tasks.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "tasks.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [row["case"] for row in report["training"]] == [
        "classify names (char)",
        "classify sst2 (word)",
        "tag wnut17",
    ]
    for row in report["training"]:
        assert row["rnnkit_examples_per_s"] > 0 and row["plain_examples_per_s"] > 0
    assert report["predict_names_per_s"] > 0 and report["train_peak_rss_mib"] > 0
    training = report["seq2seq"]["training"]
    assert training["ratio"] == pytest.approx(
        training["pairs_per_s"] / training["plain_pairs_per_s"]
    )
    assert [row["batch_size"] for row in report["seq2seq"]["decoding"]] == [1, 64]
    for row in report["seq2seq"]["decoding"]:
        assert min(row["greedy"], row["beam5"], row["plain_greedy"]) > 0


def test_timed_takes_turns_and_gives_each_its_own_median(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import seq2seq

    calls: list[str] = []
    timed = seq2seq._timed(
        {name: (lambda name=name: calls.append(name)) for name in "abc"}, repeats=3, min_seconds=0
    )
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, rounds
    assert set(timed) == {"a", "b", "c"} and all(s >= 0 for s in timed.values())


def test_prepare_without_the_shared_data_names_the_missing_file(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import seq2seq

    monkeypatch.setattr(seq2seq, "DATA", tmp_path / "data")
    with pytest.raises(SystemExit, match=r"error: .*data/eng-fra/eng-fra\.txt is absent"):
        seq2seq.prepare(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
