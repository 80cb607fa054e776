"""Data-parallel training: several processes, one model, PyTorch's own distributed engine.

``torchrun --nproc-per-node N -m rnnkit train ...`` (or ``rnnkit train --nproc N``, which
starts torchrun's agent on this machine, see :func:`launch`) runs the one training loop of
:mod:`rnnkit.training.loop` in N processes. Each reads its place from torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``PORT``) and
joins the process group: gloo on CPU, nccl on CUDA, where rank r uses ``cuda:LOCAL_RANK``. The
task's loss of the model (:class:`TaskStep`) is wrapped in ``DistributedDataParallel``, which
averages the gradients in backward, so every task trains this way unchanged. What each process
does differently is here, so the loop reads the same with 1 or N processes:

- ``--batch-size`` is the global batch. Every rank draws the same global batch from the task
  (a batch depends only on seed, epoch and index) and keeps its contiguous share of the first
  dimension (:meth:`World.shard`): the LM's B streams (with their carried states), or the
  examples of a padded batch, so that the ranks together see what one process would.
- The loss is the global batch's mean: each rank weighs its own mean by its share of the
  counted units (``StepLoss.units``: tokens, examples or class weights; the examples of its
  share by default), so the averaged gradient and the logged loss are those of one process
  (:meth:`World.reduce`). That one all-reduce also carries the token count, a Ctrl-C on any
  rank (all stop after the same step) and rank 0's clock (``--max-time`` and the schedule).
- Dropout masks differ between ranks: rank r > 0 reseeds its generator from (seed, r) once the
  model is built (the weights start equal; DDP also copies rank 0's). So do seq2seq's
  teacher-forcing draws below ``--teacher-forcing 1``, which come from the same generator.
- Only rank 0 writes the model folder, logs, ``metrics.jsonl`` and the progress bar. It alone
  evaluates, with the node's threads, while the others wait: every task's metrics (F1, CRF
  decoding, confusion, BLEU and exact match of greedy decoding) need all predictions, the
  numbers are those of one process, and on one CPU machine the idle ranks lend their cores.
  Measured against sharding (``bench/distributed.py``, 2x512 LM, Tiny Shakespeare's validation
  size, 2 cores): rank 0 alone 6.71 s, two shards at once 6.54 s, the same within noise, so
  rank 0 evaluates alone. Across machines the other nodes idle meanwhile; not measured.
- Checkpoints hold the whole run: the carried state is gathered from every rank, and each
  rank's random state is saved (``rank{r}.rng.*``), so ``--resume`` with the same number of
  processes is exact. Another number of processes is refused (``config.json`` records
  ``world_size``): the dropout streams would not continue.
- Failures: a rank that dies closes its connections, and the others fail in their next
  collective (torchrun's agent also stops them at once); a rank that hangs makes the others
  fail after ``--dist-timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rnnkit.config import RunConfig, TrainConfig, merge
from rnnkit.errors import ConfigError, DataError
from rnnkit.tasks.base import StepLoss, Task
from rnnkit.training.checkpoint import (
    TrainerState,
    check_new_folder,
    read_loop_tensors,
    read_run_config,
)
from rnnkit.training.control import pick_device

__all__ = [
    "LaunchResult",
    "Shard",
    "StepStats",
    "TaskStep",
    "World",
    "batch_size",
    "check_launch",
    "check_resume",
    "check_world",
    "cpu_cores",
    "env_rank",
    "env_world_size",
    "launch",
    "shard",
]

logger = logging.getLogger(__name__)

_RNG_PREFIX = "rank{}.rng."
"""Key prefix of rank r's random states in state/loop.safetensors."""


# --- the environment torchrun gives each process --------------------------------------------


def env_world_size() -> int:
    """``WORLD_SIZE`` from torchrun's environment; 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` from torchrun's environment; 0 outside torchrun."""
    return int(os.environ.get("RANK", "0"))


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_world(cfg: TrainConfig, world_size: int, device: torch.device) -> None:
    """Refuse a global batch that the processes cannot share, and nccl without CUDA.

    Raises:
        ConfigError: one line naming the option.
    """
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} (the global batch) must divide by the {world_size} "
            f"processes; use a multiple of {world_size}"
        )
    if cfg.backend == "nccl" and device.type != "cuda":
        where = "this machine has no CUDA device" if device.type == "cpu" else f"--device {device}"
        raise ConfigError(f"--backend nccl needs CUDA devices, but {where}; use --backend gloo")


def check_resume(saved: RunConfig, world_size: int, out: str) -> None:
    """Refuse to resume a run with another number of processes than it was trained with."""
    if saved.train.world_size != world_size:
        raise ConfigError(
            f"--resume of {out} needs {saved.train.world_size} process(es), as it was trained "
            f"(config.json world_size); got {world_size}"
        )


# --- one process of a run --------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One rank's share of a global batch.

    Attributes:
        batch: the share, in the batch's own form; a stand-in of the global batch's first
            example when the share is empty (a short last batch), whose loss then weighs 0.
        size: examples in the share (0 for the stand-in).
    """

    batch: Any
    size: int


@dataclass(frozen=True)
class StepStats:
    """One training step of the whole run, the same on every rank.

    Attributes:
        loss: mean loss over the global batch's counted units.
        count: tokens in the global batch.
        stop: some rank asked to stop (Ctrl-C).
        elapsed: rank 0's seconds of training.
        scale: multiply this rank's loss by it before backward, so that DDP's average of the
            gradients is the gradient of ``loss``.
    """

    loss: float
    count: int
    stop: bool
    elapsed: float
    scale: float


class World:
    """This process's place in the run: rank, device, process group (see the module docstring).

    With one process (no torchrun, or ``WORLD_SIZE`` 1) every method is the identity or
    does nothing, and no process group exists.

    Use :meth:`start` as a context manager: it joins the group; leaving it normally waits for
    every rank and leaves the group.
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        local_rank: int,
        local_world_size: int,
        device: torch.device,
        backend: str | None,
        threads: int,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.local_world_size = local_world_size
        self.device = device
        self.backend = backend
        self.threads = threads

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes and logs."""
        return self.rank == 0

    @classmethod
    @contextlib.contextmanager
    def start(cls, cfg: TrainConfig) -> Iterator[World]:
        """Join the run described by torchrun's environment (or run alone without it).

        Sets the CPU threads (``--threads``; with several processes, cores / processes on this
        machine by default) and, with CUDA, the device ``cuda:LOCAL_RANK``.

        Raises:
            ConfigError: the global batch does not divide by the processes, nccl without CUDA,
                or more processes on this machine than CUDA devices.
        """
        world_size = env_world_size()
        device = pick_device(cfg.device)
        check_world(cfg, world_size, device)
        threads_before = torch.get_num_threads()
        try:
            if world_size == 1:
                if cfg.threads is not None:
                    torch.set_num_threads(cfg.threads)
                yield cls(0, 1, 0, 1, device, None, torch.get_num_threads())
            else:
                world = cls._join(cfg, world_size, device)
                yield world
                dist.barrier()  # no rank leaves while another still writes or reports
                dist.destroy_process_group()
        finally:
            torch.set_num_threads(threads_before)

    @classmethod
    def _join(cls, cfg: TrainConfig, world_size: int, device: torch.device) -> World:
        """Set this process's device and threads, and join the process group."""
        rank, local_rank = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"process {local_rank} of this machine has no CUDA device: there are "
                    f"{torch.cuda.device_count()}; start at most that many processes per machine"
                )
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        backend = cfg.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        threads = cfg.threads or max(1, cpu_cores() // local_world_size)
        torch.set_num_threads(threads)
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=cfg.dist_timeout),
            device_id=device if backend == "nccl" else None,
        )
        logger.info(
            "rank %d of %d (%s, %s, %d threads)", rank, world_size, backend, device, threads
        )
        return cls(rank, world_size, local_rank, local_world_size, device, backend, threads)

    def record(self, run: RunConfig) -> RunConfig:
        """``run`` with the number of processes in ``train.world_size`` (config.json)."""
        return merge(run, {"train": {"world_size": self.world_size}})

    def wrap(self, task: Task, model: nn.Module) -> nn.Module:
        """The training step's forward, ``step(batch, state) -> StepLoss``: the task's loss of
        ``model`` as a :class:`TaskStep`, in ``DistributedDataParallel`` with several processes.

        Evaluate and save ``model`` itself. Buffers are copied from rank 0 once, not at every
        forward: no task's buffers change in training.
        """
        step = TaskStep(task, model, self.device)
        if not self.distributed:
            return step
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(step, device_ids=device_ids, forward_sync_buffers=False)

    def seed_dropout(self, seed: int) -> None:
        """Give rank r > 0 its own random stream (dropout masks), fixed by (seed, r).

        Rank 0 keeps the stream of a single-process run.
        """
        if self.rank > 0:
            torch.manual_seed(
                int(np.random.SeedSequence([seed % 2**64, self.rank]).generate_state(1)[0])
            )

    # --- batches, losses, states ------------------------------------------------------------

    def shard(self, batch: Any) -> Shard:
        """This rank's contiguous share of a global batch (see :func:`shard`).

        Rank r of N takes examples ``[r·n // N, (r+1)·n // N)`` of the n in the batch, so
        shares differ by at most one example (only a short last batch is not divisible).
        """
        if not self.distributed:
            return Shard(batch, batch_size(batch))
        n = batch_size(batch)
        start, stop = self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size
        if start == stop:
            return Shard(shard(batch, 0, 1), 0)
        return Shard(shard(batch, start, stop), stop - start)

    def reduce(self, result: StepLoss, piece: Shard, *, stop: bool, elapsed: float) -> StepStats:
        """The step's global loss, tokens and stop request, and this rank's loss scale.

        Rank r's loss is the mean over its ``u_r`` counted units (``result.units``, else the
        examples of its share); the global mean is ``Σ u_r·loss_r / Σ u_r``. DDP averages the
        gradients over the N ranks, so rank r's loss is scaled by ``N·u_r / Σ u_r``.
        """
        if not self.distributed:
            return StepStats(result.loss.item(), result.count, stop, elapsed, 1.0)
        units = (
            0.0 if piece.size == 0 else float(piece.size if result.units is None else result.units)
        )
        count = 0 if piece.size == 0 else result.count
        weighted = (
            result.loss.detach().double() * units if units else torch.zeros((), dtype=torch.float64)
        )
        stats = torch.stack(
            [
                weighted.to(self.device),
                *torch.tensor(
                    [units, count, float(stop), elapsed if self.is_main else 0.0],
                    dtype=torch.float64,
                    device=self.device,
                ),
            ]
        )  # (5,)
        dist.all_reduce(stats)
        total_loss, total_units, total_count, stops, main_elapsed = stats.tolist()
        return StepStats(
            loss=total_loss / total_units,
            count=round(total_count),
            stop=stops > 0,
            elapsed=main_elapsed,
            scale=self.world_size * units / total_units,
        )

    def shard_state(self, state: Any) -> Any:
        """This rank's share of a carried state in torch's layout, batch on dim 1:
        (L, B, H) -> (L, B/N, H), or a tuple of them."""
        if state is None or not self.distributed:
            return state
        if isinstance(state, Tensor):
            share = state.shape[1] // self.world_size
            return state[:, self.rank * share : (self.rank + 1) * share].contiguous()  # (L, B/N, H)
        return type(state)(self.shard_state(part) for part in state)

    def gather_state(self, state: Any) -> Any:
        """The whole carried state from every rank's share (batch on dim 1), on every rank."""
        if state is None or not self.distributed:
            return state
        if isinstance(state, Tensor):
            parts = [torch.empty_like(state) for _ in range(self.world_size)]
            dist.all_gather(parts, state.contiguous())
            return torch.cat(parts, dim=1)  # (L, B, H)
        return type(state)(self.gather_state(part) for part in state)

    def gather_rng(self) -> dict[str, Tensor]:
        """Every rank's random states, keyed ``rank{r}.rng.cpu`` / ``rank{r}.rng.cuda``
        (for state/loop.safetensors); empty with one process."""
        if not self.distributed:
            return {}
        own = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = {}
        for name, tensor in own.items():
            parts = [torch.empty_like(tensor, device=self.device) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor.to(self.device))
            for r, part in enumerate(parts):
                gathered[_RNG_PREFIX.format(r) + name] = part.cpu()
        return gathered

    def restore_rng(self, out: Path) -> None:
        """Set this rank's random states from those :meth:`gather_rng` gave the state saved
        in the model folder ``out``."""
        if not self.distributed:
            return
        saved = read_loop_tensors(out)
        prefix = _RNG_PREFIX.format(self.rank)
        torch.set_rng_state(saved[prefix + "cpu"])
        if self.device.type == "cuda" and prefix + "cuda" in saved:
            torch.cuda.set_rng_state(saved[prefix + "cuda"], self.device)

    def share_best(self, st: TrainerState) -> None:
        """Give every rank rank 0's evaluation results (the kept model, the last evaluation):
        the loop's decisions that depend on them stay the same on every rank."""
        if not self.distributed:
            return
        names = ("best_val_loss", "best_step", "last_eval_step", "best_metrics", "evals_since_best")
        fields = [getattr(st, name) for name in names]
        dist.broadcast_object_list(fields, src=0, device=self.device)
        for name, value in zip(names, fields, strict=True):
            setattr(st, name, value)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """While rank 0 evaluates alone, it uses the threads of this machine's waiting ranks."""
        if not self.distributed or self.device.type != "cpu":
            yield
            return
        torch.set_num_threads(min(cpu_cores(), self.threads * self.local_world_size))
        try:
            yield
        finally:
            torch.set_num_threads(self.threads)


class TaskStep(nn.Module):
    """A task's loss as a module: ``forward(batch, state)`` is ``task.loss(model, batch, state,
    device)``.

    DistributedDataParallel prepares the all-reduce of the gradients when its own forward runs,
    once per step. Wrapping the whole loss rather than the model lets every task compute its
    loss as it likes (with the model's other methods and attributes, a CRF's likelihood, class
    weights) and still have its gradients averaged.
    """

    def __init__(self, task: Task, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.task = task
        self.model = model
        self.device = device

    def forward(self, batch: Any, state: Any) -> StepLoss:
        return self.task.loss(self.model, batch, state, self.device)


def batch_size(batch: Any) -> int:
    """Examples in a batch: the first dimension of its first tensor, array or list."""
    if isinstance(batch, (Tensor, np.ndarray, list)):
        return len(batch)
    parts = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, tuple) else ()
    for part in parts:
        if isinstance(part, (Tensor, np.ndarray, list, tuple, dict)):
            return batch_size(part)
    raise TypeError(f"cannot find the examples of a batch of type {type(batch).__name__}")


def shard(batch: Any, start: int, stop: int) -> Any:
    """Examples ``[start, stop)`` of a batch.

    Tensors, arrays and lists hold one entry per example and are sliced on their first
    dimension; tuples and dicts are containers, sliced entry by entry (the LM's
    ``(inputs, targets)``, a padded batch's ``{"inputs": ..., "lengths": ...}``); anything
    else (an int, a string) is kept whole.
    """
    if isinstance(batch, (Tensor, np.ndarray, list)):
        return batch[start:stop]
    if isinstance(batch, tuple):
        return type(batch)(shard(part, start, stop) for part in batch)
    if isinstance(batch, dict):
        return {key: shard(part, start, stop) for key, part in batch.items()}
    return batch


# --- rnnkit train --nproc N: torchrun's agent on this machine --------------------------------


def check_launch(run: RunConfig, nproc: int, *, resume: bool, force: bool) -> None:
    """Refuse ``rnnkit train --nproc N`` before any process starts: more processes than cores
    (or CUDA devices), a batch they cannot share, nccl without CUDA, a resume with another
    number of processes, an engine that runs alone; and the mistakes every process would
    report alike: missing data, a model already in ``--out``.

    Raises:
        ConfigError, DataError, CheckpointError: one line naming the option or the file.
    """
    if env_world_size() > 1:
        raise ConfigError(
            "--nproc starts its own processes; under torchrun leave it out "
            "(torchrun's --nproc-per-node sets them)"
        )
    if run.train.engine != "torch":
        raise ConfigError(f"--nproc needs --engine torch; --engine {run.train.engine} runs alone")
    device = pick_device(run.train.device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {nproc} is more processes than this machine's "
            f"{torch.cuda.device_count()} CUDA devices"
        )
    if device.type == "cpu" and nproc > cpu_cores():
        raise ConfigError(
            f"--nproc {nproc} is more processes than this machine's {cpu_cores()} cores"
        )
    check_world(run.train, nproc, device)
    if run.data.path is not None and not Path(run.data.path).exists():
        raise DataError(f"{run.data.path} does not exist")
    if resume:
        check_resume(read_run_config(run.out), nproc, run.out)
    else:
        check_new_folder(Path(run.out), force=force)


@dataclass(frozen=True)
class LaunchResult:
    """How the processes of ``rnnkit train --nproc`` ended.

    Attributes:
        exit_code: 0, 2 (a user error, which rank 0 has reported), 130 (interrupted), or 1
            (a process failed or was killed).
        message: one line for a failure that no rank reported itself, or None.
    """

    exit_code: int
    message: str | None = None


def launch(args: Sequence[str], nproc: int, threads: int | None) -> LaunchResult:
    """Run ``python -m rnnkit ARGS`` in ``nproc`` processes under torchrun's agent, as
    ``torchrun --standalone --nproc-per-node NPROC -m rnnkit ARGS`` would.

    Each process gets ``threads`` CPU threads (default: cores / nproc). A Ctrl-C reaches the
    agent, which passes it on to the processes: they stop after the same step and save.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    torchrun_args = ["--standalone", "--nproc-per-node", str(nproc), "-m", "rnnkit", *args]
    handled = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]
    handlers = {sig: signal.getsignal(sig) for sig in handled}  # the agent replaces them
    # The agent's own log lines (signals passed on, exit codes) repeat what rank 0 and the
    # LaunchResult report, as warnings and errors of a logger per module: quiet them.
    agent_loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(
            ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")
        )
    ]
    levels = [agent_logger.level for agent_logger in agent_loggers]
    for agent_logger in agent_loggers:
        agent_logger.setLevel(logging.CRITICAL)
    omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads or max(1, cpu_cores() // nproc))
    try:
        torchrun(parse_args(torchrun_args))
    except SignalException:
        return LaunchResult(130)
    except ChildFailedError as err:
        return _failure(err.failures)
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        for agent_logger, level in zip(agent_loggers, levels, strict=True):
            agent_logger.setLevel(level)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return LaunchResult(0)


def _failure(failures: dict[int, Any]) -> LaunchResult:
    """The result of processes that failed: a reported user error (2) or Ctrl-C (130) when
    that is how they ended, else 1 and which rank failed first and how."""
    codes = {failure.exitcode for failure in failures.values()}
    if codes <= {2, -signal.SIGTERM}:
        return LaunchResult(2)
    if codes <= {130, -signal.SIGTERM}:
        return LaunchResult(130)
    rank, failure = min(
        failures.items(),
        key=lambda item: (item[1].exitcode in (1, -signal.SIGTERM), item[1].timestamp, item[0]),
    )
    how = (
        f"was killed by {signal.Signals(-failure.exitcode).name}"
        if failure.exitcode < 0 and -failure.exitcode in signal.valid_signals()
        else f"exited with code {failure.exitcode}"
    )
    return LaunchResult(1, f"rank {rank} (pid {failure.pid}) {how}; the other ranks were stopped")
