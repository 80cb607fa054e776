"""Run control that both engines share: devices, limits, Ctrl-C, divergence, log records.

The torch loop (:mod:`rnnkit.training.loop`) and the NumPy engine
(:mod:`rnnkit.training.numpy_engine`) both import from here and never from each other.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rnnkit.config import RunConfig
from rnnkit.errors import ConfigError, TrainingError
from rnnkit.training import checkpoint

DIVERGENCE_FACTOR = 4.0
"""The run stops when the training loss exceeds this multiple of its first value."""

StopReason = Literal["max_steps", "epochs", "max_time", "patience", "interrupt"]


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or interrupted) run did.

    Attributes:
        out: the model folder.
        steps: optimizer steps since the run started.
        best_val_loss: the validation loss of model.safetensors (nats/token).
        stopped_by: the limit that ended the run, ``"patience"`` (``--patience`` evaluations
            without a better model), or ``"interrupt"`` (Ctrl-C).
        best_metrics: every validation metric of the kept model (e.g. ``accuracy``).
    """

    out: Path
    steps: int
    best_val_loss: float | None
    stopped_by: StopReason
    best_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


def resolves_to_cuda(name: str) -> bool:
    """Whether ``--device name`` trains on CUDA: ``cuda``, or ``auto`` where CUDA is available.
    Never raises: :func:`pick_device` refuses an absent ``cuda`` when the run starts."""
    return name == "cuda" or (name == "auto" and torch.cuda.is_available())


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for an absent cuda is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but this machine has no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_precision(name: str, device: torch.device, *, cpu_bf16: bool = True) -> str:
    """``auto`` -> ``bf16`` where the device computes bf16 natively, else ``fp32``.

    Natively means CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX-BF16 instructions
    (read from /proc/cpuinfo; elsewhere, e.g. macOS, auto keeps fp32). On such CPUs bf16
    autocast trains the default language model 1.4-2.3x faster at the same validation loss;
    the other tasks' presets train as fast or up to 2.7x faster in fp32 (measured on an Intel
    Xeon with AMX), so a task passes ``cpu_bf16=False`` (:attr:`Task.cpu_bf16`) to keep fp32
    on a CPU under ``auto``.
    """
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_bf16 and native_cpu_bf16() else "fp32"


def native_cpu_bf16() -> bool:
    """Whether /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (False where it cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def check_resumable(saved: RunConfig, run: RunConfig) -> None:
    """Refuse a resume whose task, model, data, batching or weight averaging differ from the
    saved run's."""
    if saved.task != run.task:
        raise ConfigError(
            f"--resume cannot change the task of {run.out}: --task {saved.task!r} -> {run.task!r}"
        )
    changed = [
        f"--{name.replace('_', '-')} {getattr(getattr(saved, section), name)!r} -> "
        f"{getattr(getattr(run, section), name)!r}"
        for section, names in (
            ("model", [f.name for f in dataclasses.fields(saved.model)]),
            ("data", [f.name for f in dataclasses.fields(saved.data)]),
            ("train", ["batch_size", "seq_len", "optimizer", "average", "average_best"]),
        )
        for name in names
        if getattr(getattr(saved, section), name) != getattr(getattr(run, section), name)
    ]
    if changed:
        raise ConfigError(
            f"--resume cannot change the model, the data, the batching or the averaging of "
            f"{run.out}: "
            f"{'; '.join(changed)}"
        )


class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) asks the loop to stop after the current step;
    a second one raises KeyboardInterrupt at once. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True  # no logging here: a signal handler must not take locks


LogMark = tuple[float, int, int]
"""(monotonic time, step, tokens) at the last log line."""


def train_log_record(
    st: checkpoint.TrainerState, last_log: LogMark, lr: float
) -> tuple[dict[str, Any], LogMark]:
    """The metrics record of a log step, and the new mark; resets the running training loss.

    The record has ``step``, ``time`` (s), ``loss`` (mean nats/token since the last log),
    ``tokens_per_s`` and ``ms_per_step`` over that interval, and ``lr``.
    """
    now = time.monotonic()
    seconds = max(now - last_log[0], 1e-9)
    record = {
        "step": st.step,
        "time": round(st.elapsed, 3),
        "loss": st.loss_sum / st.loss_count,
        "tokens_per_s": round((st.tokens - last_log[2]) / seconds, 1),
        "lr": lr,
        "ms_per_step": round(1000 * seconds / max(st.step - last_log[1], 1), 2),
    }
    st.loss_sum, st.loss_count = 0.0, 0
    return record, (now, st.step, st.tokens)


def finish_run(
    out: Path, st: checkpoint.TrainerState, stopped_by: StopReason, metric: str = "loss"
) -> TrainResult:
    """Log why and where the run stopped and what it kept (its validation loss, and the metric
    that chose it where that is not the loss; or, without validation data, its step); the
    result of ``train``."""
    import logging

    reason = stopped_by
    if stopped_by == "patience":
        reason = f"patience ({st.evals_since_best} evaluations without a better model)"
    loss = "n/a" if st.best_val_loss is None else f"{st.best_val_loss:.4f}"
    value = (st.best_metrics or {}).get(metric)
    kept, where = f"loss {loss}", f"step {st.best_step}"
    if metric != "loss" and isinstance(value, int | float):  # named by what chose it
        kept, where = f"{metric} {value:.4g}", f"{where}; val loss there {loss}"
    log = logging.getLogger("rnnkit.training")
    if st.best_val_loss is None and st.best_step is not None:  # --val-frac 0
        log.info(
            "stopped by %s at step %d; no validation data, so %s keeps the weights of step %s",
            reason,
            st.step,
            out / checkpoint.WEIGHTS_FILE,
            st.best_step,
        )
    else:
        log.info(
            "stopped by %s at step %d; best val %s (%s) in %s",
            reason,
            st.step,
            kept,
            where,
            out / checkpoint.WEIGHTS_FILE,
        )
    best_metrics = dict(st.best_metrics or {})
    if st.averaged is not None:  # --average-best
        mean = st.averaged["metrics"]
        steps = ", ".join(map(str, st.averaged["steps"]))
        shown = f"loss {mean['loss']:.4f}"
        if metric != "loss" and metric in mean:
            shown = f"{metric} {mean[metric]:.4g}"
        if st.averaged["kept"]:
            best_metrics = dict(mean)
        log.info(
            "the mean of the weights of steps %s: val %s, %s",
            steps,
            shown,
            f"kept in {out / checkpoint.WEIGHTS_FILE}"
            if st.averaged["kept"]
            else "below every evaluation it averages, so the best alone stays",
        )
    return TrainResult(
        out=out,
        steps=st.step,
        best_val_loss=best_metrics.get("loss", st.best_val_loss),
        stopped_by=stopped_by,
        best_metrics=best_metrics,
    )


def stop_reason(run: RunConfig, st: checkpoint.TrainerState) -> StopReason | None:
    """The limit that the run has reached, or None to go on."""
    cfg = run.train
    if cfg.max_steps is not None and st.step >= cfg.max_steps:
        return "max_steps"
    if cfg.epoch_limit is not None and st.epoch >= cfg.epoch_limit:
        return "epochs"
    if cfg.max_time is not None and st.elapsed >= cfg.max_time:
        return "max_time"
    if cfg.patience is not None and st.evals_since_best >= cfg.patience:
        return "patience"
    return None


def format_line(record: dict[str, Any]) -> str:
    """``step 200 | loss 1.834 | val 1.901 | lr 2.0e-03 | 12.3 ms/step`` (present parts only).

    Validation metrics other than the loss (``val_accuracy``, ``val_f1``) follow ``val``.
    """
    parts = [f"step {record['step']}"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.3f}")
    if "val_loss" in record:
        parts.append(f"val {record['val_loss']:.3f}")
    for key, value in record.items():
        if key.startswith("val_") and key != "val_loss":
            parts.append(f"{key.removeprefix('val_')} {value:.4f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.1e}")
    if "ms_per_step" in record:
        parts.append(f"{record['ms_per_step']:.1f} ms/step")
    return " | ".join(parts)


def check_loss(value: float, st: checkpoint.TrainerState, out: Path) -> None:
    """Stop the run on a NaN/inf loss, or when the moving average of the loss (see
    :meth:`TrainerState.smoothed_loss`) passes DIVERGENCE_FACTOR × the first loss: one hard
    batch of a classifier may score far above the first loss without the run diverging."""
    kept = (
        f"{out / checkpoint.WEIGHTS_FILE} keeps the model of step {st.best_step}"
        if st.best_step is not None
        else "no model was saved yet"
    )
    step = st.step + 1
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} at step {step}; {kept}; try a lower --lr or --grad-clip"
        )
    smoothed = st.smoothed_loss(value)
    if st.first_loss is not None and smoothed > DIVERGENCE_FACTOR * st.first_loss:
        raise TrainingError(
            f"loss {smoothed:.3f} (moving average) at step {step} is over "
            f"{DIVERGENCE_FACTOR:g}× the first loss "
            f"{st.first_loss:.3f}: training diverged; {kept}; try a lower --lr"
        )
