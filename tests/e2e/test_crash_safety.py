"""Crash safety proven by fault injection: every file operation of a checkpoint is made to fail
in turn (a write leaves half a file behind, a rename or delete does not happen), and after each
failure the folder must load and resume from a complete version.

The run under test resumes a tiny saved language model and checkpoints at every step, so its
writes cover the weights, the trainer state, metrics.jsonl and config.json; a new run's
first writes (config.json, vocab.json) are faulted the same way.
"""

import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch

import rnnkit
from rnnkit.cli import main
from rnnkit.training import checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")
TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 12
TINY = [
    *("--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4", "--dropout", "0"),
    *("--batch-size", "2", "--seq-len", "8", "--log-every", "1", "--eval-every", "1"),
]


class Fault(OSError):
    """The injected failure."""


class FaultAt:
    """Counts the checkpoint's file operations and fails the k-th (1-based).

    A failing write writes its file first and then cuts it to half its size, as a crash in
    the middle of writing would leave it; a failing rename, delete, fsync or mkdir does
    nothing.
    """

    def __init__(self, k: int) -> None:
        self.k, self.count = k, 0

    def _tick(self) -> bool:
        self.count += 1
        return self.count == self.k

    def plain(self, real):
        def op(*args, **kwargs):
            if self._tick():
                raise Fault(f"injected failure of {real.__name__} (operation {self.k})")
            return real(*args, **kwargs)

        return op

    def writer(self, real, path_arg: int):
        def op(*args, **kwargs):
            result = real(*args, **kwargs)
            if self._tick():
                path = Path(args[path_arg])
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                raise Fault(f"injected failure while writing {path.name}")
            return result

        return op

    def install(self, patch: pytest.MonkeyPatch) -> None:
        patch.setattr(checkpoint.os, "replace", self.plain(os.replace))
        patch.setattr(checkpoint.os, "fsync", self.plain(os.fsync))
        patch.setattr(checkpoint.shutil, "rmtree", self.plain(shutil.rmtree))
        patch.setattr(checkpoint, "save_model", self.writer(safetensors.torch.save_model, 1))
        patch.setattr(checkpoint, "save_file", self.writer(safetensors.torch.save_file, 1))
        real_write_text = Path.write_text
        patch.setattr(Path, "write_text", self.writer(real_write_text, 0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("crash")
    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = folder / "run"
    assert main(["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "4"]) == 0
    return corpus, out


def _state_step(out: Path) -> int:
    _, saved = checkpoint.read_state_folder(out)
    return saved["trainer"]["step"]


def _check_complete(out: Path, steps: set[int]) -> None:
    """The folder loads, its state is one of ``steps`` and a resume runs from it."""
    model = rnnkit.load(out)
    assert len(model.generate(prime="the", length=5)) == 8
    step = _state_step(out)
    assert step in steps
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] <= 6
    assert main(["train", "--out", str(out), "--resume", "--max-steps", str(step + 1)]) == 0
    assert _state_step(out) == step + 1


def test_every_checkpoint_operation_of_a_resumed_run_can_fail(saved, tmp_path) -> None:
    """Resume a 4-step run to 6 steps, failing its k-th file operation, for every k."""
    _, source = saved
    k = 0
    while True:
        k += 1
        out = tmp_path / f"k{k}"
        shutil.copytree(source, out)
        fault = FaultAt(k)
        run = checkpoint.read_run_config(out)
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, max_steps=6))
        with pytest.MonkeyPatch.context() as patch:
            fault.install(patch)
            try:
                rnnkit.training.train(run, resume=True)
                failed = False
            except Fault:
                failed = True
        if not failed:
            assert fault.count < k  # every operation has had its turn
            break
        _check_complete(out, {4, 5, 6})
        assert not any(p.name.startswith(".") and ".tmp-" in p.name for p in out.iterdir())
        shutil.rmtree(out)
    assert k > 20  # weights, state files, renames, metrics, config: many operations


def test_a_new_run_that_fails_while_starting_never_leaves_half_a_file(saved, tmp_path) -> None:
    """A new run over an existing folder (--force) failing at each of its first operations:
    every file left is whole (the JSON parses, the weights load), and the folder either loads
    or says in one error what it lacks."""
    corpus, source = saved
    for k in range(1, 12):
        out = tmp_path / f"new{k}"
        shutil.copytree(source, out)
        with pytest.MonkeyPatch.context() as patch:
            FaultAt(k).install(patch)
            argv = ["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "2", "--force"]
            with pytest.raises(Fault):
                main(argv)
        for name in ("config.json", "vocab.json"):
            if (out / name).exists():
                json.loads((out / name).read_text())
        if (out / "model.safetensors").exists():
            safetensors.torch.load_file(out / "model.safetensors")
        try:
            rnnkit.load(out)
        except rnnkit.CheckpointError as err:
            assert "has no" in str(err), err


# Delays (s) after a run has logged a new step, at which it is killed: spread over its steps
# and its checkpoint writes (it checkpoints at every step).
KILL_DELAYS = (0.0, 0.011, 0.023, 0.037, 0.052, 0.079, 0.12, 0.2)


def _wait_for_progress(metrics: Path, size: int, process: subprocess.Popen) -> None:
    """Wait until ``metrics`` grows past ``size`` bytes: the run is in its steps."""
    deadline = time.monotonic() + 120
    while not metrics.exists() or metrics.stat().st_size <= size:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run logged nothing new"
        time.sleep(0.005)


@pytest.mark.slow
def test_kill_9_at_many_moments_leaves_a_folder_that_loads_and_resumes(saved, tmp_path) -> None:
    """A run that checkpoints at every step is killed with SIGKILL again and again, each time
    resumed from what the last kill left, at delays spread over its steps and writes; after
    every kill the folder loads, samples and holds a readable state."""
    _, source = saved
    out = tmp_path / "killed"
    shutil.copytree(source, out)
    command = [sys.executable, "-m", "rnnkit", "train", "--max-steps", "100000", "--out", str(out)]
    steps = []
    for delay in KILL_DELAYS:
        metrics = out / "metrics.jsonl"
        size = metrics.stat().st_size
        process = subprocess.Popen(
            [*command, "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _wait_for_progress(metrics, size, process)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        model = rnnkit.load(out)
        assert len(model.generate(prime="the", length=5)) == 8
        steps.append(_state_step(out))
        checkpoint.read_run_config(out)
    assert steps == sorted(steps) and steps[-1] > steps[0]  # every resume went on from the last
    assert main(["train", "--out", str(out), "--resume", "--max-steps", str(steps[-1] + 1)]) == 0
    assert _state_step(out) == steps[-1] + 1


# A run killed by SIGKILL at the k-th file operation of its checkpoints: a write is done and cut
# to half its size first, as a kill in the middle of writing leaves it; a rename, delete or
# fsync is not done. No Python cleanup runs (no finally, no atexit): a real kill -9.
KILLER = """
import os, signal, sys
from pathlib import Path
import safetensors.torch
from rnnkit.cli import main
from rnnkit.training import checkpoint

target, count = int(sys.argv[1]), 0

def due():
    global count
    count += 1
    return count == target

def plain(real):
    def op(*args, **kwargs):
        if due():
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return op

def writer(real, index):
    def op(*args, **kwargs):
        result = real(*args, **kwargs)
        if due():
            path = Path(args[index])
            data = path.read_bytes()
            with open(path, "wb") as file:
                file.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return op

checkpoint.os.replace = plain(os.replace)
checkpoint.os.fsync = plain(os.fsync)
checkpoint.shutil.rmtree = plain(checkpoint.shutil.rmtree)
checkpoint.save_model = writer(safetensors.torch.save_model, 1)
checkpoint.save_file = writer(safetensors.torch.save_file, 1)
Path.write_text = writer(Path.write_text, 0)
sys.exit(main(sys.argv[2:]))
"""


def _kill_at_each_operation(saved, tmp_path, max_steps: int, every: int = 1) -> None:
    """Resume the 4-step run to ``max_steps``, killed with SIGKILL at its k-th file operation,
    for k = 1, 1 + every, ... to the run's last: after each kill the folder loads, samples and
    resumes."""
    _, source = saved
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER, encoding="utf-8")
    for k in itertools.count(1, every):
        out = tmp_path / f"kill{k}"
        shutil.copytree(source, out)
        argv = ["train", "--out", str(out), "--resume", "--max-steps", str(max_steps)]
        done = subprocess.run(
            [sys.executable, str(killer), str(k), *argv], capture_output=True, text=True
        )
        if done.returncode == 0:  # k is past the run's last operation
            break
        assert done.returncode == -signal.SIGKILL, done.stderr
        _check_complete(out, set(range(4, max_steps + 1)))
        shutil.rmtree(out)
    assert k > 10  # weights, state files, renames, metrics, config


def test_kill_9_during_a_checkpoint_leaves_a_complete_folder(saved, tmp_path):
    """One step more: every other operation of one checkpoint and of the run's end (every
    one in the slow test below; a subprocess per kill costs seconds)."""
    _kill_at_each_operation(saved, tmp_path, max_steps=5, every=2)


@pytest.mark.slow
def test_kill_9_at_every_operation_of_two_checkpoints_leaves_a_complete_folder(saved, tmp_path):
    _kill_at_each_operation(saved, tmp_path, max_steps=6)


def test_resuming_a_copied_folder_writes_to_the_copy_only(saved, tmp_path) -> None:
    """config.json keeps the path the run was first written to; the folder read is the run."""
    _, source = saved
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    copy = tmp_path / "moved"
    shutil.copytree(source, copy)
    run = checkpoint.read_run_config(copy)
    assert run.out == str(copy)
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, max_steps=5))
    rnnkit.training.train(run, resume=True)
    assert _state_step(copy) == 5
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before
