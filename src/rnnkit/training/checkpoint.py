"""The model folder: what ``rnnkit train`` writes and everything else reads.

    DIR/config.json        asdict(RunConfig) + rnnkit_version
    DIR/vocab.json         Vocab.to_dict()
    DIR/model.safetensors  weights of the best model by validation loss
    DIR/metrics.jsonl      one JSON object per log line or evaluation
    DIR/state/             everything for an exact resume:
        trainer.json           counters, data position, optimizer hyper-parameters, schedule
        weights.safetensors    the current (not the best) weights
        optimizer.safetensors  the optimizer's per-parameter tensors
        loop.safetensors       torch RNG states (CPU and CUDA: dropout's) and the carried state
        average.safetensors    with --average: the averaged weights and their step count
      or, for ``--engine numpy`` (see :mod:`rnnkit.training.numpy_engine`):
        trainer.json           counters and the NumPy Trainer's meta
        trainer.safetensors    the Trainer's float64 arrays

Nothing is pickled. Every file is written under a temporary name and renamed over the old one
(``os.replace``), and ``state/`` is written as ``state.tmp/`` and then swapped in, so a process
killed at any moment leaves the previous complete version of every file. Every file is checked
field by field where it is read (:mod:`rnnkit.training.folder_check`): a damaged folder gives
a one-line CheckpointError, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

import rnnkit
from rnnkit.config import RunConfig, run_from_dict, run_to_dict
from rnnkit.data.fields import integer, is_number, number, obj, shown
from rnnkit.data.vocab import Vocab
from rnnkit.errors import CheckpointError, ConfigError, one_line, read_folder_json
from rnnkit.files import atomic_write
from rnnkit.tasks import get_task
from rnnkit.training import folder_check
from rnnkit.training.averaging import WeightAverage
from rnnkit.training.best_weights import BestWeights

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
STATE_DIR = "state"
AVERAGE_FILE = "average.safetensors"
_OWN_NAMES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, METRICS_FILE, STATE_DIR)


# --- atomic writes (rnnkit.files.atomic_write) ----------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON, atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_weights(model: nn.Module, path: Path) -> None:
    """Write the model's parameters and buffers as safetensors (tied weights once), atomically."""
    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


# --- reading a model folder ------------------------------------------------------------------


def read_run_config(folder: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved in ``folder/config.json``, whose ``out`` is ``folder``: the
    folder where the run now lives, which may have been moved or copied since it was saved
    (resuming it writes there, never to the path it was first written to)."""
    _check_folder(Path(folder))
    path = Path(folder) / CONFIG_FILE
    values = read_folder_json(path)
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} is corrupted: expected a JSON object")
    try:
        return dataclasses.replace(run_from_dict(values, str(path)), out=str(folder))
    except ConfigError as err:
        raise CheckpointError(
            f"{path} is not a valid rnnkit configuration: {one_line(err)}"
        ) from None


def read_vocab(folder: str | Path) -> Vocab:
    """The vocabulary saved in ``folder/vocab.json``."""
    return Vocab.load(Path(folder) / VOCAB_FILE)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; missing, mismatched (names, shapes, dtypes) or
    not finite: CheckpointError."""
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} has no {path.name}; was it written by `rnnkit train`?"
        )
    try:
        load_model(model, str(path), strict=True)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
    except RuntimeError as err:
        raise CheckpointError(
            f"{path} does not fit the model of {CONFIG_FILE} and {VOCAB_FILE}: {one_line(err)}"
        ) from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: {name} holds values that are not finite (NaN, inf)")


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise CheckpointError(f"model folder {folder} {what}")


def read_meta(folder: str | Path, run: RunConfig) -> dict[str, Any]:
    """The JSON object of ``folder/vocab.json``: the vocabularies and labels of ``run.task``,
    checked field by field (:meth:`rnnkit.tasks.base.Task.check_meta`)."""
    path = Path(folder) / VOCAB_FILE
    values = read_folder_json(path)
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} is corrupted: expected a JSON object")
    try:
        get_task(run.task).check_meta(run, values)
    except ValueError as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
    return values


def load(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a model folder, in eval mode, with its vocabulary attached.

    The folder's config.json names the task; the result is that task's model object
    (``rnnkit.tasks.lm.LanguageModel`` for ``lm``, ``rnnkit.tasks.classify.Classifier``, ...).

    Example::

        lm = rnnkit.load("runs/shakespeare")
        print(lm.generate(prime="ROMEO:", length=300, temperature=0.8, seed=1))

    Raises:
        CheckpointError: the folder or one of its files is missing, corrupted or inconsistent.
    """
    folder = Path(path)
    _check_folder(folder)
    run = read_run_config(folder)
    meta = read_meta(folder, run)
    try:
        model = folder_check.build_model(get_task(run.task), run, meta, folder)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / VOCAB_FILE} is corrupted: {one_line(err)}") from None
    load_weights(model, folder / WEIGHTS_FILE)
    return model.to(device).eval()


# --- starting, resuming and replacing a run's folder -----------------------------------------


def check_new_folder(out: Path, *, force: bool) -> None:
    """Refuse to start a run in a folder that holds a model, unless ``force``.

    Raises:
        ConfigError: ``out`` is a file, or holds rnnkit files and ``force`` is False.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    present = [name for name in _OWN_NAMES if (out / name).exists()]
    if present and not force:
        raise ConfigError(
            f"--out {out} already holds a model ({', '.join(present)}); continue it with "
            f"--resume, or replace it with --force"
        )


def start_folder(out: Path, run: RunConfig, vocab: Vocab | dict[str, Any]) -> None:
    """Remove any previous run's files from ``out``, then write config.json and vocab.json
    (a :class:`Vocab`, or a task's JSON object of vocabularies and labels)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, METRICS_FILE, CONFIG_FILE, VOCAB_FILE):
        (out / name).unlink(missing_ok=True)
    for name in (STATE_DIR, f"{STATE_DIR}.tmp", f"{STATE_DIR}.old"):
        shutil.rmtree(out / name, ignore_errors=True)
    write_config(out, run)
    write_json(out / VOCAB_FILE, vocab.to_dict() if isinstance(vocab, Vocab) else vocab)


def write_config(out: Path, run: RunConfig) -> None:
    """Write config.json: the run configuration and the rnnkit version."""
    write_json(out / CONFIG_FILE, {"rnnkit_version": rnnkit.__version__, **run_to_dict(run)})


def read_metrics(out: Path, up_to_step: int) -> list[dict[str, Any]]:
    """The metrics records of ``out`` with ``step <= up_to_step`` (a resumed run rewrites the
    rest); none when there is no metrics.jsonl.

    Raises:
        CheckpointError: a line that is not a record (``metrics.jsonl:3: ...``).
    """
    path = out / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
    return [r for r in folder_check.parse_metrics(text, path) if r["step"] <= up_to_step]


def write_metrics(out: Path, records: list[dict[str, Any]]) -> None:
    """Write metrics.jsonl, one JSON object per line, atomically."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(out / METRICS_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --- trainer state ---------------------------------------------------------------------------


@dataclass
class TrainerState:
    """The loop's counters: with the tensors in ``state/`` they make a resume exact.

    Attributes:
        step: optimizer steps taken since the run started.
        epoch: completed passes over the training streams.
        chunk: index of the next chunk within the epoch (the data position).
        elapsed: seconds of training so far, across resumes (and setting up the model).
        tokens: training tokens seen so far.
        first_loss: the loss of step 1, the yardstick for divergence.
        loss_sum: sum of the training losses since the last log line ...
        loss_count: ... and how many there are.
        best_val_loss: lowest validation loss so far (the one in model.safetensors).
        best_step: the step of that evaluation.
        last_eval_step: the step of the last evaluation.
        best_metrics: every validation metric of that evaluation (the task's, e.g. accuracy).
        loss_ema: moving average of the training loss (weight 0.1 on each new step).
        evals_since_best: evaluations in a row, up to the last, that found no better model
            (``--patience``); absent from the trainer.json of older runs, where it is 0.
        averaged: with ``--average-best``, the mean of the K best evaluations' weights as the
            run ended: ``{"steps": [...], "metrics": {...}, "kept": bool}`` (kept: it is
            model.safetensors, as it scored no lower than all K); None before the run ends,
            or without the option.
    """

    step: int = 0
    epoch: int = 0
    chunk: int = 0
    elapsed: float = 0.0
    tokens: int = 0
    first_loss: float | None = None
    loss_sum: float = 0.0
    loss_count: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    best_metrics: dict[str, Any] | None = None
    loss_ema: float | None = None
    evals_since_best: int = 0
    averaged: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: Any, name: str) -> TrainerState:
        """The counters of trainer.json's object ``name``, each checked: counts are integers of
        0 or more, losses finite numbers (or null where unset), ``best_metrics`` numbers
        with the ``loss``.

        Raises:
            ValueError: a missing, unknown or malformed field (one line that names it).
        """
        newer = ("evals_since_best", "averaged")  # fields that older runs' trainer.json lacks
        fields = tuple(f.name for f in dataclasses.fields(cls) if f.name not in newer)
        obj(values, name, fields, optional=newer)
        for field in ("step", "epoch", "chunk", "tokens", "loss_count"):
            integer(values[field], f"{name}.{field}")
        integer(values.get("evals_since_best", 0), f"{name}.evals_since_best")
        number(values["elapsed"], f"{name}.elapsed", low=0)
        number(values["loss_sum"], f"{name}.loss_sum")
        for field in ("first_loss", "best_val_loss", "loss_ema"):
            if values[field] is not None:
                number(values[field], f"{name}.{field}")
        for field in ("best_step", "last_eval_step"):
            if values[field] is not None:
                integer(values[field], f"{name}.{field}")
        best = values["best_metrics"]
        good = isinstance(best, dict) and "loss" in best and all(map(is_number, best.values()))
        if best is not None and not good:
            raise ValueError(
                f"{name}.best_metrics must be null or an object of numbers with the "
                f"loss, got {shown(best)}"
            )
        _check_averaged(values.get("averaged"), f"{name}.averaged")
        return cls(**values)

    def count_evaluation(self, better: bool) -> None:
        """Account for an evaluation that found a ``better`` model than the kept one, or not."""
        self.evals_since_best = 0 if better else self.evals_since_best + 1

    def smoothed_loss(self, loss: float) -> float:
        """The moving average of the training loss once ``loss`` is counted."""
        return loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss

    def count_loss(self, loss: float, tokens: int, elapsed: float) -> None:
        """Account for one training step's ``loss`` over ``tokens`` tokens, ``elapsed`` seconds
        into the run (the step and data position are the engine's to advance)."""
        self.tokens += tokens
        self.first_loss = self.first_loss if self.first_loss is not None else loss
        self.loss_sum += loss
        self.loss_count += 1
        self.loss_ema = self.smoothed_loss(loss)
        self.elapsed = elapsed


def _check_averaged(value: Any, name: str) -> None:
    """``TrainerState.averaged``: null, or its steps (integers), metrics (numbers with the
    loss) and whether it was kept.

    Raises:
        ValueError: one line naming what is wrong.
    """
    if value is None:
        return
    obj(value, name, ("steps", "metrics", "kept"))
    steps, metrics = value["steps"], value["metrics"]
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{name}.steps must be a list of steps, got {shown(steps)}")
    for i, step in enumerate(steps):
        integer(step, f"{name}.steps[{i}]")
    if not (
        isinstance(metrics, dict) and "loss" in metrics and all(map(is_number, metrics.values()))
    ):
        raise ValueError(
            f"{name}.metrics must be an object of numbers with the loss, got {shown(metrics)}"
        )
    if not isinstance(value["kept"], bool):
        raise ValueError(f"{name}.kept must be true or false, got {shown(value['kept'])}")


def _flatten_state(state: Any, prefix: str) -> dict[str, Tensor]:
    if isinstance(state, Tensor):
        return {prefix: state.detach().cpu().contiguous()}
    flat: dict[str, Tensor] = {}
    for i, part in enumerate(state):
        flat |= _flatten_state(part, f"{prefix}.{i}")
    return flat


def _unflatten_state(flat: dict[str, Tensor], prefix: str, device: torch.device) -> Any:
    if prefix in flat:
        return flat[prefix].to(device)
    parts = []
    while any(
        k == f"{prefix}.{len(parts)}" or k.startswith(f"{prefix}.{len(parts)}.") for k in flat
    ):
        parts.append(_unflatten_state(flat, f"{prefix}.{len(parts)}", device))
    return tuple(parts)


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-ready rest."""
    saved = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in saved["state"].items():
        for name, value in entries.items():
            key = f"{index}.{name}"
            if isinstance(value, Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": saved["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict[str, Tensor], rest: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def write_state_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Replace ``out/state/`` atomically: ``write(folder)`` fills a new folder, which is then
    synced and swapped in (a crash leaves the previous state, as ``state/`` or ``state.old/``)."""
    tmp, final, old = out / f"{STATE_DIR}.tmp", out / STATE_DIR, out / f"{STATE_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    for path in tmp.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def read_state_folder(out: Path) -> tuple[Path, dict[str, Any]]:
    """The folder of the state saved by :func:`write_state_folder` and its trainer.json: an
    object of the loop's counters (``trainer``, checked) and the engine's state.

    Raises:
        CheckpointError: there is no saved state, or its trainer.json is corrupted.
    """
    folder = out / STATE_DIR
    if not folder.is_dir() and (out / f"{STATE_DIR}.old").is_dir():
        folder = out / f"{STATE_DIR}.old"  # killed between the two renames of write_state_folder
    path = folder / "trainer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{out} has no saved trainer state ({STATE_DIR}/trainer.json) to resume from"
        )
    saved = read_folder_json(path)
    try:
        engine = (
            "numpy_trainer" if isinstance(saved, dict) and "numpy_trainer" in saved else "optimizer"
        )
        obj(saved, "", ("trainer", engine))
        TrainerState.from_dict(saved["trainer"], "trainer")
    except ValueError as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None
    return folder, saved


def save_state(
    out: Path,
    trainer: TrainerState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    hidden: Any,
    extra: dict[str, Tensor] | None = None,
    average: WeightAverage | None = None,
    best: BestWeights | None = None,
) -> None:
    """Write ``out/state/`` for an exact resume: a complete new folder, then swapped in.

    ``extra`` tensors go into loop.safetensors too (each rank's random states of a
    data-parallel run, see :mod:`rnnkit.training.distributed`). An enabled ``average`` goes
    into average.safetensors; an enabled ``best`` (``--average-best``) puts its kept
    evaluations' files there (:meth:`BestWeights.write`).
    """
    optimizer_tensors, optimizer_rest = _optimizer_parts(optimizer)
    loop_tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            loop_tensors[f"rng.cuda.{i}"] = rng
    if hidden is not None:
        loop_tensors |= _flatten_state(hidden, "hidden")
    loop_tensors |= extra or {}
    trainer_json = {"trainer": dataclasses.asdict(trainer), "optimizer": optimizer_rest}

    def write(folder: Path) -> None:
        save_model(model, str(folder / "weights.safetensors"))
        save_file(optimizer_tensors, str(folder / "optimizer.safetensors"))
        save_file(loop_tensors, str(folder / "loop.safetensors"))
        if average is not None and average.enabled:
            save_file(average.state_dict(), str(folder / AVERAGE_FILE))
        if best is not None and best.enabled:
            previous = next(
                (f for f in (out / STATE_DIR, out / f"{STATE_DIR}.old") if f.is_dir()), None
            )
            best.write(folder, previous)
        (folder / "trainer.json").write_text(json.dumps(trainer_json, indent=2), encoding="utf-8")

    write_state_folder(out, write)


def load_state(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    carried: Any = None,
    world_size: int = 1,
    average: WeightAverage | None = None,
    best: BestWeights | None = None,
) -> tuple[TrainerState, Any]:
    """Restore the current weights, the optimizer and the RNG states saved by :func:`save_state`.

    Args:
        carried: for a task that carries its state from batch to batch, the state that one
            batch leaves: the saved one must have its structure and shapes, and takes its
            dtypes. None for a task that does not.
        world_size: the processes of the run, each of which saved its random states.
        average: an enabled weight average (new, of the model) continues the saved one.
        best: an enabled ``--average-best`` (new, of the model) takes the saved evaluations.

    Returns:
        The trainer's counters and the carried hidden state (None at an epoch start).

    Raises:
        CheckpointError: a file of ``state/`` is missing, corrupted, or does not fit the model.
    """
    folder, saved = read_state_folder(out)
    trainer = TrainerState(**saved["trainer"])
    load_weights(model, folder / "weights.safetensors")
    optimizer_tensors = _read_tensors(folder / "optimizer.safetensors")
    folder_check.check_optimizer_state(optimizer, optimizer_tensors, saved["optimizer"], folder)
    optimizer.load_state_dict(_optimizer_state_dict(optimizer_tensors, saved["optimizer"]))
    loop = _read_tensors(folder / "loop.safetensors")
    expected = {} if carried is None else _flatten_state(carried, "hidden")
    folder_check.check_loop_tensors(loop, expected, world_size, folder)
    torch.set_rng_state(loop["rng.cpu"])
    cuda_states = [loop[f"rng.cuda.{i}"] for i in range(len(loop)) if f"rng.cuda.{i}" in loop]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    if average is not None and average.enabled:
        if not (folder / AVERAGE_FILE).is_file():
            raise CheckpointError(
                f"{folder} lacks {AVERAGE_FILE}, which a run with --average {average.kind} saves"
            )
        tensors = _read_tensors(folder / AVERAGE_FILE)
        folder_check.check_average_tensors(tensors, average.state_dict(), folder / AVERAGE_FILE)
        average.load_state_dict(tensors)
    if best is not None and best.enabled:
        best.read(folder)
    hidden = {k: v.to(expected[k].dtype) for k, v in loop.items() if k in expected}
    return trainer, _unflatten_state(hidden, "hidden", device) if hidden else None


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file of ``state/``; missing or unreadable: CheckpointError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is corrupted: {one_line(err)}") from None


def read_loop_tensors(out: Path) -> dict[str, Tensor]:
    """The tensors of the saved state's loop.safetensors (random states, carried state)."""
    folder, _ = read_state_folder(out)
    return _read_tensors(folder / "loop.safetensors")
