"""Data-parallel training (rnnkit.training.distributed): sharding, seeds, checks, and two gloo
processes that train the same model as one process.

The multi-process tests start two ranks with the environment torchrun would give them (RANK,
WORLD_SIZE, MASTER_ADDR, ...), each running this file as a script (see ``_worker``) on tiny
generated data; they compare the two-process run with a one-process run of the same global
batch. They are parametrised over every task: ``toy`` (defined here: padded per-step batches
whose loss is a mean over real tokens, with a short last batch that leaves rank 1 empty), ``lm``,
``classify``, ``tag``, ``seq2seq`` (teacher forcing 1) and ``condgen`` from labels and from
vectors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

import rnnkit
import rnnkit.config
import rnnkit.tasks
from rnnkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig, merge, run_to_dict
from rnnkit.data.sequences import BucketBatches, pad_batch
from rnnkit.errors import ConfigError
from rnnkit.layers import GRU
from rnnkit.tasks import get_task
from rnnkit.tasks.base import StepLoss, Task, TaskData
from rnnkit.training import distributed, train
from rnnkit.training.distributed import World, batch_size, shard

# --- a toy task: padded batches as dicts, the loss a mean over real tokens --------------------

TOY_VOCAB, TOY_TRAIN, TOY_VAL = 7, 9, 3


class _ToyModel(nn.Module):
    """Embedding -> GRU -> per-step logits."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(TOY_VOCAB, 5)
        self.rnn = GRU(5, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, TOY_VOCAB)

    def forward(self, inputs: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(inputs))  # (B, T, H)
        return self.head(out)  # (B, T, V)


class _ToyBatches:
    """Length-bucketed batches of the toy sequences, as dicts (the other tasks' form)."""

    def __init__(self, sequences: list[Tensor], batch_size: int, seed: int) -> None:
        self.sequences = sequences
        self.buckets = BucketBatches([len(s) for s in sequences], batch_size, seed)

    def __len__(self) -> int:
        return len(self.buckets)

    def get(self, epoch: int, index: int) -> dict[str, Any]:
        ids = self.buckets.batch(epoch, index).tolist()
        inputs, lengths = pad_batch([self.sequences[i].tolist() for i in ids])  # (B, T), (B,)
        targets, _ = pad_batch([((self.sequences[i] * 3 + 1) % TOY_VOCAB).tolist() for i in ids])
        targets[torch.arange(targets.shape[1]) >= lengths[:, None]] = -100  # (B, T)
        return {"inputs": inputs, "lengths": lengths, "targets": targets, "ids": ids}


def _toy_loss(model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, int]:
    logits = model(batch["inputs"].to(device))  # (B, T, V)
    targets = batch["targets"].to(device)  # (B, T)
    loss = F.cross_entropy(logits.reshape(-1, TOY_VOCAB), targets.reshape(-1), ignore_index=-100)
    return loss, int((targets != -100).sum())


class ToyTask(Task):
    """Per-step labels of short random sequences; the loss is a mean over the real steps, so
    the shares of two ranks weigh by their token counts, not their examples."""

    name = "toy"

    def load_data(self, run: RunConfig, meta: dict[str, Any] | None) -> TaskData:
        generator = torch.Generator().manual_seed(7)
        lengths = torch.randint(2, 9, (TOY_TRAIN + TOY_VAL,), generator=generator)
        sequences = [torch.randint(0, TOY_VOCAB, (int(n),), generator=generator) for n in lengths]
        meta = {"vocab": TOY_VOCAB}
        return TaskData(meta, sequences[:TOY_TRAIN], sequences[TOY_TRAIN:], "toy", "toy data")

    def build_model(self, run: RunConfig, meta: dict[str, Any]) -> nn.Module:
        return _ToyModel(run.model.hidden_size)

    def batches(self, run: RunConfig, data: TaskData) -> _ToyBatches:
        return _ToyBatches(data.train, run.train.batch_size, run.train.seed)

    def loss(self, model: nn.Module, batch: Any, state: Any, device: torch.device) -> StepLoss:
        loss, tokens = _toy_loss(model, batch, device)
        return StepLoss(loss, tokens, None, units=tokens)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, val: Any, run: RunConfig, device: torch.device
    ) -> dict[str, Any]:
        batch = _ToyBatches(val, len(val), 0).get(0, 0)
        return {"loss": _toy_loss(model, batch, device)[0].item()}

    def evaluate_file(self, model, path, cfg, device):
        raise NotImplementedError


TASK = ToyTask()


def _register_toy() -> None:
    """Make ``--task toy`` known to rnnkit in this process (the module is this file)."""
    rnnkit.tasks.TASK_MODULES["toy"] = __name__
    rnnkit.config.TASK_OPTIONS["toy"] = ()


# --- data of every task, tiny ------------------------------------------------------------------

LINES = ["the cat sat on the mat.", "a dog ran to the log.", "the bird sang."]


def _write_data(task: str, folder: Path) -> Path | None:
    """A tiny data file of ``task`` (None for the toy task, which makes its own)."""
    if task == "lm":
        path = folder / "tiny.txt"
        path.write_text("\n".join(LINES[i % 3] for i in range(40)) + "\n", encoding="utf-8")
    elif task == "classify":
        path = folder / "tiny.tsv"
        rows = [f"{'pos' if i % 3 else 'neg'}\t{LINES[i % 3]} {i}" for i in range(30)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    elif task == "tag":
        path = folder / "tiny.conll"
        sentences = [
            "\n".join(
                f"{w}\t{'B-X' if w in ('cat', 'dog', 'bird') else 'O'}"
                for w in LINES[i % 3].split()
            )
            for i in range(30)
        ]
        path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    elif task == "seq2seq":
        path = folder / "tiny.pairs.tsv"
        backwards = [" ".join(reversed(line.split())) for line in LINES]
        rows = [f"{LINES[i % 3]} {i}\t{backwards[i % 3]}" for i in range(30)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    elif task == "condgen":
        path = folder / "tiny.tsv"
        rows = [f"{('cat', 'dog', 'bird')[i % 3]}\t{LINES[i % 3][: 8 + i % 9]}" for i in range(30)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    elif task == "condgen-vector":
        path = folder / "tiny.npz"
        x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)  # (N, D)
        np.savez(path, x=x, text=np.array([LINES[i % 3][: 5 + i % 7] for i in range(30)]))
    else:
        return None
    return path


TASKS = ["toy", "lm", "classify", "tag", "seq2seq", "condgen", "condgen-vector"]
"""What the two-rank test runs: a task's name, or ``condgen-vector`` (condgen from vectors)."""


EXTRA = {
    "classify": {"train": {"class_weights": "balanced"}},
    "tag": {"model": {"crf": True}},
    # Teacher forcing 1 (the default, said here): below 1, each rank draws which steps read
    # the model's own tokens from its own random stream, as it draws its dropout masks; so
    # does --char-features (the preset's), which frequent words it reads from their spelling.
    # The runs of RESUMED keep both. The preset holds out no validation pairs; rank 0's
    # evaluation is part of what is checked, so 10% are held out here.
    "seq2seq": {
        "model": {"attention": "general", "bidirectional": True, "char_features": False},
        "data": {"val_frac": 0.1},
        "train": {"teacher_forcing": 1.0},
    },
    "condgen": {"model": {"condition_mode": "both"}},
    "condgen-vector": {"model": {"condition_mode": "both"}},
}
"""Options that make a task's loss weigh its examples unevenly (class weights, per token), or
use more of its model (attention over a padded bidirectional encoder, a condition's h_0)."""


def _run(task: str, data: Path | None, out: Path, **train: Any) -> RunConfig:
    """A tiny run of ``task`` (its preset, then EXTRA): global batch 4, no dropout (each rank
    draws its own masks; the classify preset's embedding dropout too), fp32, one thread, a log
    every step."""
    settings = {
        "batch_size": 4,
        "seq_len": 8,
        "lr": 1e-2,
        "warmup_steps": 0,
        "max_steps": 6,
        "log_every": 1,
        "eval_every": 3,
        "precision": "fp32",
        "device": "cpu",
        "threads": 1,
        "dist_timeout": 120.0,
    }
    name = task.removesuffix("-vector")
    run = merge(RunConfig(task=name), get_task(name).preset())
    run = merge(
        run,
        {
            "run": {"out": str(out)},
            "model": {
                "hidden_size": 12,
                "num_layers": 1,
                "embedding_size": 6,
                "dropout": 0.0,
                "embedding_dropout": 0.0,
            },
            "data": {"path": None if data is None else str(data)},
            "train": settings | train,
        },
    )
    return merge(run, EXTRA.get(task, {}))


# --- two ranks, started as torchrun would ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world_size: int) -> dict[str, str]:
    src = str(Path(rnnkit.__file__).resolve().parents[1])
    return os.environ | {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }


def _start_ranks(jobs: list[tuple[RunConfig, bool]], folder: Path) -> list[subprocess.Popen]:
    """Two processes, each running ``train(run, resume=...)`` for every job in turn, each job
    with a port of its own (rank 0 serves the process group's store there)."""
    spec = folder / "jobs.json"
    spec.write_text(json.dumps([[run_to_dict(run), resume, _free_port()] for run, resume in jobs]))
    return [
        subprocess.Popen(
            [sys.executable, __file__, str(spec)],
            env=_rank_env(rank, 2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]


def _two_ranks(jobs: list[tuple[RunConfig, bool]], folder: Path) -> None:
    processes = _start_ranks(jobs, folder)
    try:
        for rank, process in enumerate(processes):
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, f"rank {rank}:\n{err}"
    finally:
        for process in processes:
            process.kill()


def _worker(spec: str) -> None:
    """One rank: the jobs of ``spec`` in turn (the runs rebuilt field by field, so that
    ``--task toy`` needs no entry in the config's literal types)."""
    _register_toy()
    for values, resume, port in json.loads(Path(spec).read_text()):
        os.environ["MASTER_PORT"] = str(port)
        run = RunConfig(
            task=values["task"],
            out=values["out"],
            model=ModelConfig(**values["model"]),
            data=DataConfig(**values["data"]),
            train=TrainConfig(**values["train"]),
        )
        train(run, resume=resume)


# --- comparing runs ------------------------------------------------------------------------------


def _weights(out: Path, name: str) -> dict[str, Tensor]:
    return load_file(str(out / name))


def _max_difference(a: Path, b: Path, name: str = "state/weights.safetensors") -> float:
    """The largest difference between the weights ``name`` (default: the last step's) of the
    model folders ``a`` and ``b``."""
    wa, wb = _weights(a, name), _weights(b, name)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path, key: str) -> dict[int, float]:
    """step -> ``key`` of the metrics records that have it (each step once)."""
    records = [r for r in _records(out) if key in r]
    assert len({r["step"] for r in records}) == len(records)
    return {r["step"]: r[key] for r in records}


def _available(task: str) -> bool:
    name = task.removesuffix("-vector")
    return name == "toy" or importlib.util.find_spec(rnnkit.tasks.TASK_MODULES[name]) is not None


def _random_run(task: str, data: Path, out: Path, steps: int) -> RunConfig:
    """A run that draws from each rank's random stream, constant lr (the cosine schedule
    follows --max-steps): the LM with two layers and dropout; seq2seq with dropout and
    teacher forcing 0.5."""
    run = _run(task, data, out, max_steps=steps, schedule="constant")
    if task == "seq2seq":
        return merge(run, {"model": {"dropout": 0.3}, "train": {"teacher_forcing": 0.5}})
    return merge(run, {"model": {"num_layers": 2, "dropout": 0.3}})


RESUMED = ["lm", "seq2seq"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every available task trained by one process, here, and by two ranks; and each task of
    RESUMED with its random draws trained by two ranks for 6 steps, and for 3 then resumed to
    6. All two-rank runs share one start of the two processes (most of their time is Python
    and torch starting)."""
    folder = tmp_path_factory.mktemp("ddp")
    jobs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(rnnkit.tasks.TASK_MODULES, "toy", __name__)
        patch.setitem(rnnkit.config.TASK_OPTIONS, "toy", ())
        for task in filter(_available, TASKS):
            (folder / task).mkdir()
            data = _write_data(task, folder / task)
            train(_run(task, data, folder / task / "one"))
            jobs.append((_run(task, data, folder / task / "two"), False))
    for task in RESUMED:
        data = _write_data(task, folder / task)
        jobs += [
            (_random_run(task, data, folder / task / "straight", 6), False),
            (_random_run(task, data, folder / task / "resumed", 3), False),
            (_random_run(task, data, folder / task / "resumed", 6), True),
        ]
    _two_ranks(jobs, folder)
    return folder


@pytest.mark.parametrize("task", TASKS)
def test_two_ranks_train_the_model_of_one_process(task, runs) -> None:
    """k steps of 2 gloo ranks with global batch 4 land on the weights and the logged losses
    of 1 process with batch 4 (the toy task's last batch holds one example: rank 1 has none)."""
    if not _available(task):
        pytest.skip(f"rnnkit.tasks.{task} is not in this tree yet")
    one, two = runs / task / "one", runs / task / "two"
    assert _max_difference(one, two) < 1e-5
    assert _losses(two, "loss") == pytest.approx(_losses(one, "loss"), abs=1e-6)
    assert list(_losses(two, "loss")) == [1, 2, 3, 4, 5, 6]  # once each: rank 0 logs
    evaluations = sorted({k for r in _records(one) for k in r if k.startswith("val_")})
    assert "val_loss" in evaluations  # and the metric that picks the model, if another
    for key in evaluations:  # rank 0 evaluates alone: BLEU and exact match of its decoding
        assert _losses(two, key) == pytest.approx(_losses(one, key), abs=1e-5), key
    assert _max_difference(one, two, "model.safetensors") < 1e-5  # the kept model
    config = json.loads((two / "config.json").read_text())
    assert config["train"]["world_size"] == 2
    assert json.loads((one / "config.json").read_text())["train"]["world_size"] == 1
    leftovers = [p.name for p in two.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
    assert leftovers == []


@pytest.mark.parametrize("task", RESUMED)
def test_two_ranks_resume_exactly_with_their_random_draws(task, runs) -> None:
    """3 steps, then --resume to 6, equals 6 steps in one go: each rank's random stream
    (dropout masks, seq2seq's teacher-forcing draws) and its share of the carried LM state
    come back from the folder rank 0 wrote."""
    straight, resumed = runs / task / "straight", runs / task / "resumed"
    assert _max_difference(straight, resumed) == 0.0
    assert _losses(resumed, "loss") == pytest.approx(_losses(straight, "loss"), abs=1e-6)
    loop = load_file(str(resumed / "state" / "loop.safetensors"))
    assert not torch.equal(loop["rank0.rng.cpu"], loop["rank1.rng.cpu"])
    if task == "lm":
        assert loop["hidden.0"].shape == (2, 4, 12)  # (L, B, H): every rank's streams


@pytest.mark.slow
def test_a_rank_killed_makes_the_other_fail_soon(tmp_path) -> None:
    """Without torchrun's agent, the surviving rank fails in its next collective (gloo sees
    the closed connection) instead of waiting for the timeout."""
    data = _write_data("lm", tmp_path)
    run = _run("lm", data, tmp_path / "killed", max_steps=10**6, eval_every=5)
    processes = _start_ranks([(run, False)], tmp_path)
    state = tmp_path / "killed" / "state" / "trainer.json"
    deadline = 240.0
    while not state.exists():
        assert all(p.poll() is None for p in processes), processes[0].stderr.read()
        deadline -= 0.1
        assert deadline > 0, "no checkpoint"
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGKILL)
    try:
        processes[0].wait(timeout=60)
    finally:
        processes[0].kill()
    assert processes[0].returncode != 0
    processes[1].wait()
    assert rnnkit.load(tmp_path / "killed").generate(length=3)  # rank 0's writes are whole


# --- pieces, in one process ------------------------------------------------------------------


def _world(rank: int, world_size: int = 2) -> World:
    return World(rank, world_size, rank, world_size, torch.device("cpu"), "gloo", 1)


def test_shard_takes_contiguous_shares_of_every_container() -> None:
    batch = {
        "inputs": torch.arange(10).view(5, 2),  # (B, T)
        "lengths": torch.arange(5),
        "ids": [10, 11, 12, 13, 14],
        "order": np.arange(5),
        "pair": (torch.arange(5), torch.arange(5) * 2),
        "max_length": 2,
    }
    assert batch_size(batch) == 5
    part = shard(batch, 1, 3)
    assert part["inputs"].tolist() == [[2, 3], [4, 5]]
    assert part["lengths"].tolist() == [1, 2] and part["ids"] == [11, 12]
    assert part["order"].tolist() == [1, 2] and part["pair"][1].tolist() == [2, 4]
    assert part["max_length"] == 2


@pytest.mark.parametrize("n", [1, 3, 4, 7, 8])
def test_ranks_shares_cover_the_batch_once_in_order(n: int) -> None:
    inputs, targets = torch.arange(n * 3).view(n, 3), torch.arange(n * 3).view(n, 3) + 1
    shares = [_world(r, 3).shard((inputs, targets)) for r in range(3)]
    real = [s for s in shares if s.size]
    assert sum(s.size for s in shares) == n
    assert max(s.size for s in shares) - min(s.size for s in shares) <= 1
    assert torch.equal(torch.cat([s.batch[0] for s in real]), inputs)
    assert torch.equal(torch.cat([s.batch[1] for s in real]), targets)
    for empty in (s for s in shares if not s.size):  # a stand-in: the first example
        assert torch.equal(empty.batch[0], inputs[:1])


def test_one_process_world_changes_nothing() -> None:
    world = _world(0, 1)
    batch = (torch.zeros(3, 2), torch.ones(3, 2))
    assert world.shard(batch).batch is batch and world.shard(batch).size == 3
    state = (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    assert world.shard_state(state) is state and world.gather_state(state) is state
    assert world.gather_rng() == {}
    result = StepLoss(torch.tensor(2.5), 24)
    stats = world.reduce(result, world.shard(batch), stop=True, elapsed=1.5)
    assert (stats.loss, stats.count, stats.stop, stats.elapsed, stats.scale) == (
        2.5,
        24,
        True,
        1.5,
        1.0,
    )


def test_carried_state_is_sharded_on_the_batch_dimension() -> None:
    h = torch.arange(2 * 4 * 3).view(2, 4, 3)  # (L, B, H)
    share = _world(1).shard_state((h, h + 100))
    assert torch.equal(share[0], h[:, 2:]) and torch.equal(share[1], h[:, 2:] + 100)


def test_dropout_streams_differ_by_rank_and_are_fixed_by_the_seed() -> None:
    def draw(rank: int, seed: int) -> Tensor:
        torch.manual_seed(seed)
        _world(rank).seed_dropout(seed)
        return torch.rand(6)

    torch.manual_seed(3)
    alone = torch.rand(6)
    assert torch.equal(draw(0, 3), alone)  # rank 0 keeps the one-process stream
    assert not torch.equal(draw(1, 3), alone)
    assert torch.equal(draw(1, 3), draw(1, 3))
    assert not torch.equal(draw(1, 3), draw(1, 4))


def test_checks_refuse_what_the_processes_cannot_share() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"--batch-size 6 \(the global batch\) must divide by"):
        distributed.check_world(TrainConfig(batch_size=6), 4, cpu)
    distributed.check_world(TrainConfig(batch_size=8), 4, cpu)
    with pytest.raises(ConfigError, match="--backend nccl needs CUDA devices"):
        distributed.check_world(TrainConfig(backend="nccl"), 1, cpu)
    saved = RunConfig(train=TrainConfig(world_size=2))
    with pytest.raises(ConfigError, match=r"needs 2 process.*; got 3"):
        distributed.check_resume(saved, 3, "runs/x")
    distributed.check_resume(saved, 2, "runs/x")


def _failures(**codes: int) -> dict[int, Any]:
    return {
        int(rank[1:]): types.SimpleNamespace(exitcode=code, pid=100 + i, timestamp=0)
        for i, (rank, code) in enumerate(codes.items())
    }


def test_launch_result_names_the_rank_that_failed_first() -> None:
    assert distributed._failure(_failures(r0=2, r1=2)).exit_code == 2
    assert distributed._failure(_failures(r0=-signal.SIGTERM, r1=130)).exit_code == 130
    result = distributed._failure(_failures(r0=1, r1=-signal.SIGKILL))
    assert result.exit_code == 1
    assert result.message == "rank 1 (pid 101) was killed by SIGKILL; the other ranks were stopped"


if __name__ == "__main__":
    _worker(sys.argv[1])
