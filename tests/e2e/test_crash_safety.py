"""Crash safety proven by fault injection: every file operation of a checkpoint is made to fail
in turn (a write leaves half a file behind, a rename or delete does not happen), and after each
failure the folder must load and resume from a complete version.

The run under test resumes a tiny saved language model and checkpoints at every step, so its
writes cover the weights, the trainer state, metrics.jsonl and config.json; a new run's
first writes (config.json, vocab.json) are faulted the same way.
"""

import dataclasses
import json
import os
import shutil
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
