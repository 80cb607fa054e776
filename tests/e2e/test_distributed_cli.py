"""End to end: data-parallel `rnnkit train` under torchrun and with `--nproc`, on 2 CPU processes.

Tiny models (H 16, one layer, global batch 4, T 8) on a few hundred characters. Each test starts
one or two runs of two processes (a few seconds each on an idle 2-core machine, mostly Python
and torch starting); bad input is checked in-process, before any process starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.cli import _without_nproc, main
from rnnkit.training.distributed import cpu_cores

LINES = ["the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog ran to the hat."]
TEXT = "\n".join(LINES[i % 3] for i in range(30)) + "\n"  # ~700 characters
TINY = [
    *("--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8", "--dropout", "0.1"),
    *("--batch-size", "4", "--seq-len", "8", "--log-every", "2", "--eval-every", "4"),
    *("--precision", "fp32", "--device", "cpu"),
]
TORCHRUN = Path(sys.executable).with_name("torchrun")
WAIT = 240.0  # seconds: generous, the machine may be shared

pytestmark = pytest.mark.skipif(cpu_cores() < 2, reason="needs 2 CPU cores for 2 processes")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    """This process's environment with this tree's rnnkit first on the path."""
    src = str(Path(rnnkit.__file__).resolve().parents[1])
    return os.environ | {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _rnnkit(*args: str) -> subprocess.Popen:
    """``python -m rnnkit ARGS`` in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(ready, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not ready():
        if process.poll() is not None:
            pytest.fail(
                f"the run ended (exit {process.returncode}) before {what}:\n{process.stderr.read()}"
            )
        assert time.monotonic() < deadline, f"no {what} after {WAIT} s"
        time.sleep(0.1)


def _rank_pids(launcher: int) -> dict[int, int]:
    """RANK -> pid of the training processes that ``launcher`` started (read from /proc)."""
    ranks = {}
    for children in Path(f"/proc/{launcher}/task").glob("*/children"):
        for pid in map(int, children.read_text().split()):
            with contextlib.suppress(OSError):
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                rank = [v.split(b"=", 1)[1] for v in env if v.startswith(b"RANK=")]
                if rank:
                    ranks[int(rank[0])] = pid
    return ranks


def _trainer_step(out: Path) -> int:
    try:
        return json.loads((out / "state" / "trainer.json").read_text())["trainer"]["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _running(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`rnnkit train --nproc 2` that runs until it is stopped."""
    return _rnnkit(
        "train", str(corpus), "--out", str(out), *TINY, "--nproc", "2",
        *("--max-steps", "100000", "--eval-every", "2"), *extra,
    )  # fmt: skip


# --- the happy path ------------------------------------------------------------------------------


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_torchrun_writes_one_folder_that_sample_reads(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            *(str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "rnnkit", "train"),
            *(str(corpus), "--out", str(out), *TINY, "--max-steps", "8"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "metrics.jsonl", "model.safetensors", "state", "vocab.json",
    ]  # fmt: skip
    assert json.loads((out / "config.json").read_text())["train"]["world_size"] == 2
    records = _records(out)
    assert [(r["step"], "val_loss" in r) for r in records] == [
        (2, False), (4, True), (6, False), (8, True),
    ]  # fmt: skip
    lines = result.stderr.splitlines()
    assert sum(line.startswith("step 8 |") for line in lines) == 1  # rank 0 logs, alone
    assert f"rank 0 of 2 (gloo, cpu, {cpu_cores() // 2} threads)" in lines
    assert main(["sample", str(out), "--length", "20", "--prime", "the"]) == 0
    assert len(capsys.readouterr().out.rstrip("\n")) == 23


# --- Ctrl-C and resume ---------------------------------------------------------------------------


def test_ctrl_c_on_a_rank_or_the_launcher_stops_every_rank_and_resume_continues(
    corpus, tmp_path, capsys
) -> None:
    out = tmp_path / "interrupted"
    run = _running(corpus, out)
    _wait_until(lambda: _trainer_step(out) >= 2, run, "checkpoint")
    ranks = _rank_pids(run.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGINT)  # a Ctrl-C that only rank 1 sees
    _, err = run.communicate(timeout=WAIT)
    assert run.returncode == 130, err
    assert err.count("rnnkit train: interrupted at step") == 1  # rank 0 reports for the run
    assert "rank 1" not in err
    stopped = _trainer_step(out)
    assert stopped >= 2
    assert rnnkit.load(out).generate(length=3)

    resumed = _running(corpus, out, "--resume")
    _wait_until(lambda: _trainer_step(out) >= stopped + 2, resumed, "a later checkpoint")
    resumed.send_signal(signal.SIGINT)  # a Ctrl-C in the terminal reaches the launcher
    _, err = resumed.communicate(timeout=WAIT)
    assert resumed.returncode == 130, err
    assert f"resuming {out} at step {stopped}" in err
    steps = [r["step"] for r in _records(out) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] > stopped

    assert main(["train", "--out", str(out), "--resume", "--max-steps", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"rnnkit train: error: --resume of {out} needs 2 process(es), as it was trained "
        "(config.json world_size); got 1"
    ]


# --- a rank that dies -------------------------------------------------------------------------


def test_a_rank_killed_with_9_ends_the_run_with_an_error(corpus, tmp_path) -> None:
    out = tmp_path / "killed"
    run = _running(corpus, out)
    _wait_until(lambda: (out / "model.safetensors").exists(), run, "model.safetensors")
    ranks = _rank_pids(run.pid)
    killed = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    _, err = run.communicate(timeout=60)
    assert time.monotonic() - killed < 60
    assert run.returncode == 1
    assert f"rnnkit train: error: rank 1 (pid {ranks[1]}) was killed by SIGKILL" in err
    assert rnnkit.load(out).generate(length=3)  # the folder rank 0 wrote is whole


# --- bad input: one line, exit 2, nothing started -----------------------------------------------


def _bad(argv: list[str], capsys, expected: str) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_nproc_must_be_a_positive_integer(value, corpus, tmp_path, capsys) -> None:
    argv = ["train", str(corpus), "--out", str(tmp_path / "x"), "--nproc", value]
    _bad(argv, capsys, f"argument --nproc: must be a positive integer, got '{value}'")
    assert not (tmp_path / "x").exists()


def test_nproc_above_the_cores_is_refused(corpus, tmp_path, capsys) -> None:
    n = cpu_cores() + 1
    argv = ["train", str(corpus), "--out", str(tmp_path / "x"), "--nproc", str(n)]
    _bad(argv, capsys, f"--nproc {n} is more processes than this machine's {cpu_cores()} cores")


def test_a_global_batch_the_processes_cannot_share_is_refused(corpus, tmp_path, capsys) -> None:
    argv = ["train", str(corpus), "--out", str(tmp_path / "x"), "--nproc", "2"]
    _bad(
        [*argv, "--batch-size", "5"],
        capsys,
        "--batch-size 5 (the global batch) must divide by the 2 processes; use a multiple of 2",
    )


def test_what_every_rank_would_report_is_reported_once(corpus, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.txt"
    _bad(["train", str(missing), "--nproc", "2"], capsys, f"{missing} does not exist")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"")
    argv = ["train", str(corpus), "--out", str(out), "--nproc", "2"]
    _bad(argv, capsys, f"--out {out} already holds a model (model.safetensors)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("nproc", ["1", "2"])
def test_nccl_without_cuda_is_refused(nproc, corpus, tmp_path, capsys) -> None:
    argv = ["train", str(corpus), "--out", str(tmp_path / "x"), "--nproc", nproc]
    _bad(
        [*argv, "--backend", "nccl", "--max-steps", "1"],
        capsys,
        "--backend nccl needs CUDA devices, but this machine has no CUDA device",
    )


def test_the_workers_command_line_is_the_users_without_nproc() -> None:
    argv = ["train", "a.txt", "--nproc", "2", "--out", "r", "--npr=3", "--lr", "1e-3"]
    assert _without_nproc(argv) == ["train", "a.txt", "--out", "r", "--lr", "1e-3"]
    assert _without_nproc(["train", "--num-layers", "2"]) == ["train", "--num-layers", "2"]


def test_nproc_1_trains_in_this_process_and_2_cannot_resume_it(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "one"
    quiet = io.StringIO()
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "2"]
    with contextlib.redirect_stderr(quiet):
        assert main([*argv, "--nproc", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["world_size"] == 1
    before = (out / "state" / "trainer.json").read_bytes()
    _bad(
        [*argv[:-1], "4", "--resume", "--nproc", "2"],
        capsys,
        f"--resume of {out} needs 1 process(es), as it was trained (config.json world_size); got 2",
    )
    assert (out / "state" / "trainer.json").read_bytes() == before  # refused before starting
