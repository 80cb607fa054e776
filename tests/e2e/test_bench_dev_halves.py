"""bench/dev_halves.py: the dev file's items alternate between the halves, each run keeps its
model on devA and reports rnnkit eval's numbers on devB."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture
def dev_halves(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import dev_halves

    return dev_halves


def test_sentences_alternate_and_none_is_lost(dev_halves) -> None:
    conll = "a\tO\nb\tB-x\n\nc\tO\n \t\nd\tO\ne\tO\n\t\n\nf\tB-x\n"  # whitespace-only lines too
    first, second = dev_halves.split_halves(conll, blocks=True)
    assert first == "a\tO\nb\tB-x\n\nd\tO\ne\tO\n"  # sentences 1 and 3
    assert second == "c\tO\n\nf\tB-x\n"  # sentences 2 and 4


def test_lines_alternate_and_blank_lines_are_dropped(dev_halves) -> None:
    first, second = dev_halves.split_halves("p\tone\nn\ttwo\n\np\tthree\n", blocks=False)
    assert (first, second) == ("p\tone\np\tthree\n", "n\ttwo\n")


def test_one_item_cannot_be_halved(dev_halves) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        dev_halves.split_halves("a\tO\n\n", blocks=True)


def test_each_arm_is_scored_on_the_half_no_run_kept_its_model_on(tmp_path: Path) -> None:
    pos = ["a fine film", "good and fine", "a good one", "fine fine film"]
    neg = ["a bad film", "bad and dull", "a dull one", "bad bad film"]
    pairs = zip(pos, neg, strict=True)
    lines = [f"{label}\t{text}" for p, n in pairs for label, text in (("p", p), ("n", n))]
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("\n".join(lines * 4) + "\n")
    dev.write_text("\n".join(lines) + "\n")
    out = tmp_path / "halves"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "dev_halves.py"),
            str(train),
            str(dev),
            "--task",
            "classify",
            "--arm",
            "",
            "--arm=--hidden-size 8",
            "--seeds",
            "0",
            "1",
            "--max-steps",
            "3",
            "--flags",
            "--level word --hidden-size 16 --ensemble 1",
            "--threads",
            "2",
            "--parallel",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "dev_halves.json").read_text())
    assert [arm["flags"] for arm in report["arms"]] == ["", "--hidden-size 8"]
    assert (out / "devA.tsv").read_text() == "\n".join(lines[0::2]) + "\n"  # all positive
    assert (out / "devB.tsv").read_text() == "\n".join(lines[1::2]) + "\n"  # all negative
    for i, arm in enumerate(report["arms"]):
        assert [run["seed"] for run in arm["runs"]] == [0, 1]
        for run in arm["runs"]:
            folder = out / f"arm{i}_seed{run['seed']}"
            config = json.loads((folder / "config.json").read_text())
            assert config["model"]["hidden_size"] == (16 if i == 0 else 8)  # the arm's last
            assert config["train"]["seed"] == run["seed"] and run["steps"] == 3
            assert config["data"]["val"] == str(out / "devA.tsv")
            assert config["train"]["threads"] == 2  # --threads reaches every run
            assert run["devB"]["examples"] == 4  # scored on devB's four lines
        values = [run["devB"]["accuracy"] for run in arm["runs"]]
        assert arm["mean"] == pytest.approx(sum(values) / 2)
    assert "mean" in done.stdout and report["metric"] == "accuracy"
    assert (report["threads"], report["parallel"]) == (2, 1)
    folder, half = str(out / "arm1_seed1"), str(out / "devB.tsv")
    direct = subprocess.run(
        [sys.executable, "-m", "rnnkit", "eval", folder, half, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert report["arms"][1]["runs"][1]["devB"]["loss"] == json.loads(direct.stdout)["loss"]


def test_a_failed_run_names_its_log_and_the_other_arms_still_report(tmp_path: Path) -> None:
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("p\ta b\nn\tc d\n")
    dev.write_text("p\ta b\nn\tc d\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH / "dev_halves.py"), str(train), str(dev)),
            *("--task", "classify", "--arm", "", "--arm=--hidden-size -1", "--max-steps", "1"),
            *("--flags", "--level word --hidden-size 8 --ensemble 1", "--threads", "2"),
            *("--parallel", "1", "--seeds", "0", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "arm1_seed0.log" in done.stderr.strip().splitlines()[-1]
    assert "arm0_seed0" not in done.stderr  # only the failed run is named
    report = json.loads((out / "dev_halves.json").read_text())
    first, second = report["arms"]
    assert first["runs"][0]["steps"] == 1 and "mean" in first  # the good arm kept its result
    assert second["flags"] == "--hidden-size -1" and "arm1_seed0.log" in second["failed"][0]
    assert "mean" not in second
    assert "(no flags): devB accuracy" in done.stdout and "failed (1 of 1 runs)" in done.stdout
