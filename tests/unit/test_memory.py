"""rnnkit.training.memory: freed buffers stay in the process instead of being faulted in again."""

import platform
import resource
from pathlib import Path

import pytest
import torch

from rnnkit.training import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _faults_of_a_fresh_buffer(megabytes: int) -> int:
    """Minor page faults while a (megabytes MiB) float32 tensor is allocated, written and freed."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(megabytes * 2**18).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_freed_large_buffer_is_reused_without_page_faults() -> None:
    assert memory.keep_freed_memory()
    for _ in range(2):  # the first ones may grow the heap (twice, seen on an AMD EPYC VM)
        _faults_of_a_fresh_buffer(64)
    pages = 64 * 2**20 // resource.getpagesize()
    assert _faults_of_a_fresh_buffer(64) < pages // 20  # glibc's default: every page, each time


def test_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNKIT_MALLOC", "default")
    assert memory.keep_freed_memory.__wrapped__() is False


def test_train_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rnnkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from rnnkit.training import loop

    calls = []
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(1) or True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefgh" * 200)
    run = RunConfig(
        out=str(tmp_path / "model"),
        model=ModelConfig(hidden_size=8, embedding_size=4, num_layers=1),
        data=DataConfig(path=str(corpus)),
        train=TrainConfig(batch_size=2, seq_len=8, max_steps=1, eval_every=1, device="cpu"),
    )
    loop.train(run)
    assert calls == [1]
