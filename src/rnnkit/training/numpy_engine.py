"""``rnnkit train --engine numpy``: the training loop around :class:`rnnkit.reference.Trainer`.

The NumPy engine trains min-char-rnn's model (one layer of rnn, gru or lstm on one-hot
characters, a linear head) and writes the same model folder as the torch engine, through the
same functions of :mod:`rnnkit.training.checkpoint`: config.json, vocab.json, metrics.jsonl,
and model.safetensors under the torch language model's names in float32, so ``rnnkit sample``,
``rnnkit eval`` and ``rnnkit.load`` read it unchanged. Its ``state/`` holds the Trainer's
float64 arrays (``trainer.safetensors``: parameters, Adagrad memory, carried state) and
``trainer.json`` (the loop's counters and the Trainer's meta), for an exact resume.

Read top to bottom: check the options -> data -> trainer (new or resumed) -> loop {step, log
every N, evaluate + checkpoint every M} -> final evaluation and checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from inspect import signature
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from rnnkit.config import RunConfig
from rnnkit.data.fields import integer, number, obj, shown
from rnnkit.data.text import load_lm_data
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.reference import CharRNN, Trainer, text_loss, torch_weights
from rnnkit.reference.cells import CELLS
from rnnkit.reference.model import PARAM_NAMES
from rnnkit.training import checkpoint, folder_check
from rnnkit.training.control import (
    StopOnInterrupt,
    StopReason,
    TrainResult,
    check_loss,
    check_resumable,
    finish_run,
    format_line,
    stop_reason,
    train_log_record,
)

logger = logging.getLogger(__name__)

ARRAYS_FILE = "trainer.safetensors"
"""In ``state/``: :meth:`Trainer.state_dict`'s arrays."""


def check_numpy_run(run: RunConfig) -> None:
    """Refuse the options the NumPy engine does not have, naming the first one found.

    It trains one layer of rnn, gru or lstm on one-hot characters, in float64 on the CPU, with
    Adagrad or SGD at a constant learning rate and element-wise clipping.

    Raises:
        ConfigError: e.g. ``--engine numpy trains one layer; got --num-layers 2``.
    """
    model, data, train = run.model, run.data, run.train
    checks = [
        ("cell", model.cell in ("rnn", "gru", "lstm"), "rnn, gru or lstm", model.cell),
        ("num_layers", model.num_layers == 1, "1 (one layer)", model.num_layers),
        ("embedding_size", model.embedding_size == 0, "0 (one-hot input)", model.embedding_size),
        ("dropout", model.dropout == 0, "0", model.dropout),
        ("embedding_dropout", model.embedding_dropout == 0, "0", model.embedding_dropout),
        ("input_dropout", model.input_dropout == 0, "0", model.input_dropout),
        ("locked_dropout", not model.locked_dropout, "off", model.locked_dropout),
        ("weight_drop", model.weight_drop == 0, "0", model.weight_drop),
        ("bidirectional", not model.bidirectional, "off", model.bidirectional),
        ("tie_weights", not model.tie_weights, "off", model.tie_weights),
        ("level", data.level == "char", "char", data.level),
        ("optimizer", train.optimizer in ("adagrad", "sgd"), "adagrad or sgd", train.optimizer),
        ("grad_clip", train.grad_clip == 0, "0 (use --grad-clip-value)", train.grad_clip),
        ("weight_decay", train.effective_weight_decay == 0, "0", train.weight_decay),
        ("schedule", train.schedule == "constant", "constant", train.schedule),
        ("warmup_steps", train.warmup_steps == 0, "0", train.warmup_steps),
        ("precision", train.precision != "bf16", "fp32 (it computes in float64)", train.precision),
        ("device", train.device != "cuda", "cpu or auto (it runs on the CPU)", train.device),
        ("seed", train.seed >= 0, "0 or more", train.seed),
        ("average", train.average == "none", "none", train.average),
        ("average_best", train.average_best <= 1, "0", train.average_best),
    ]
    for name, ok, expected, value in checks:
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"--engine numpy needs {flag} {expected}; got {flag} {value!r}")


def _save_weights(model: CharRNN, out: Path) -> None:
    """model.safetensors under the torch language model's names, float32, atomically."""
    weights = torch_weights(model)
    path = out / checkpoint.WEIGHTS_FILE
    checkpoint.atomic_write(path, lambda tmp: save_file(weights, str(tmp), {"format": "pt"}))


def _save_state(out: Path, st: checkpoint.TrainerState, trainer: Trainer) -> None:
    """``out/state/``: the Trainer's arrays and meta, and the loop's counters."""
    arrays, meta = trainer.state_dict()
    trainer_json = {"trainer": dataclasses.asdict(st), "numpy_trainer": meta}

    def write(folder: Path) -> None:
        save_file(arrays, str(folder / ARRAYS_FILE))
        checkpoint.write_json(folder / "trainer.json", trainer_json)

    checkpoint.write_state_folder(out, write)


def check_numpy_size(run: RunConfig, vocab_size: int, folder: Path | None) -> None:
    """Refuse a model whose float64 parameters and Adagrad memory would not fit in this
    machine's memory (before NumPy is asked for them).

    Raises:
        CheckpointError (``folder``'s config.json) or ConfigError (a new run).
    """
    memory = folder_check.physical_memory()
    H, V, G = run.model.hidden_size, vocab_size, CELLS[run.model.cell].num_gates
    need = 2 * 8 * (G * H * (V + H + 2) + V * (H + 1))  # parameters and their memory, float64
    if memory is not None and need > memory:
        where = f"{folder / 'config.json'}: " if folder is not None else ""
        message = (
            f"{where}the NumPy engine's model would need {need / 2**30:,.1f} GiB of memory; "
            f"this machine has {memory / 2**30:,.1f} GiB"
        )
        raise CheckpointError(message) if folder is not None else ConfigError(message)


def _check_numpy_state(
    arrays: dict[str, np.ndarray], meta: Any, run: RunConfig, vocab_size: int
) -> None:
    """Check the saved Trainer against the run: its configuration, counters, random state and
    the names and shapes of its arrays (raises ValueError naming the field)."""
    obj(meta, "numpy_trainer", ("config", "text_length", "step", "position", "smooth_loss", "rng"))
    config = obj(meta["config"], "numpy_trainer.config", tuple(signature(Trainer).parameters)[1:])
    same = {
        "vocab_size": vocab_size,
        "cell": run.model.cell,
        "hidden_size": run.model.hidden_size,
        "seq_len": run.train.seq_len,
        "batch_size": run.train.batch_size,
        "optimizer": run.train.optimizer,
    }
    for name, value in same.items():
        if config[name] != value or type(config[name]) is not type(value):
            raise ValueError(
                f"numpy_trainer.config.{name} must be {value!r} as in config.json, "
                f"got {shown(config[name])}"
            )
    integer(config["seed"], "numpy_trainer.config.seed")
    for name in ("text_length", "step", "position"):
        integer(meta[name], f"numpy_trainer.{name}")
    number(meta["smooth_loss"], "numpy_trainer.smooth_loss")
    try:
        np.random.default_rng().bit_generator.state = meta["rng"]
    except (TypeError, ValueError, KeyError, OverflowError):
        raise ValueError(f"numpy_trainer.rng is not a PCG64 state: {shown(meta['rng'])}") from None
    B, H = run.train.batch_size, run.model.hidden_size
    states = ("h", "c") if CELLS[run.model.cell].state_len == 2 else ("h",)
    known = {f"params.{p}" for p in PARAM_NAMES} | {f"state.{s}" for s in states}
    missing = sorted(known - set(arrays))
    if missing:
        raise ValueError(f"{ARRAYS_FILE} lacks {', '.join(missing)}")
    for name, array in arrays.items():
        if name.startswith("state.") and name in known and array.shape != (B, H):
            raise ValueError(f"{name} must have shape {(B, H)}, got {array.shape}")
        if name not in known and not name.startswith("optimizer."):
            raise ValueError(f"unknown array {name!r} in {ARRAYS_FILE}")


def _load_state(
    out: Path, run: RunConfig, text: Any, vocab_size: int
) -> tuple[checkpoint.TrainerState, Trainer]:
    """The loop's counters and the Trainer saved by :func:`_save_state`, on the same text.

    The learning rate and the clip are the run's (they may change on resume).
    """
    folder, saved = checkpoint.read_state_folder(out)
    st = checkpoint.TrainerState(**saved["trainer"])
    try:
        arrays = load_file(str(folder / ARRAYS_FILE))
        meta = saved["numpy_trainer"]
        _check_numpy_state(arrays, meta, run, vocab_size)
        meta["config"] |= {"lr": run.train.lr, "clip": _clip(run)}
        trainer = Trainer.from_state_dict(text, arrays, meta)
    except (KeyError, TypeError, ValueError, SafetensorError, OSError) as err:
        raise CheckpointError(f"{folder} is not a NumPy engine state: {err}") from None
    return st, trainer


def _clip(run: RunConfig) -> float:
    """The element-wise clip; 0 (off) becomes an infinite bound."""
    return run.train.grad_clip_value or math.inf


def train_numpy(run: RunConfig, *, resume: bool = False, force: bool = False) -> TrainResult:
    """Train ``run`` (``run.train.engine == "numpy"``) with the NumPy engine into ``run.out``.

    Arguments and errors as :func:`rnnkit.training.loop.train`. The loss of each step is the
    mean over the B × T tokens of its window (nats/token); the validation loss is measured as
    ``rnnkit eval`` does, with ``--batch-size`` streams and ``--seq-len`` chunks.
    """
    check_numpy_run(run)
    cfg = run.train
    out = Path(run.out)
    if resume:
        check_resumable(checkpoint.read_run_config(out), run)
    else:
        checkpoint.check_new_folder(out, force=force)

    if resume:
        logger.info("resuming %s on %s", out, run.data.path or "the Python standard library")
    data = load_lm_data(run.data, checkpoint.read_vocab(out) if resume else None)
    text, val = data.train.numpy(), data.val.numpy()  # (N,), (M,)
    check_numpy_size(run, len(data.vocab), out if resume else None)
    if resume:
        st, trainer = _load_state(out, run, text, len(data.vocab))
        checkpoint.write_config(out, run)
        records = checkpoint.read_metrics(out, st.step)
        checkpoint.write_metrics(out, records)
        logger.info("resuming %s at step %d", out, st.step)
    else:
        trainer = Trainer(
            text,
            len(data.vocab),
            cell=run.model.cell,
            hidden_size=run.model.hidden_size,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            clip=_clip(run),
            optimizer=cfg.optimizer,
            seed=cfg.seed,
        )
        checkpoint.start_folder(out, run, data.vocab)
        st, records = checkpoint.TrainerState(), []
    steps_per_epoch = (trainer.streams.shape[1] - 1) // cfg.seq_len
    logger.info(
        "training on %s with the NumPy engine: %d train / %d val char tokens, vocabulary %d, "
        "%d parameters",
        data.source,
        text.size,
        val.size,
        len(data.vocab),
        sum(p.size for p in trainer.model.params.values()),
    )

    def save_checkpoint() -> dict[str, Any]:
        """Evaluate, keep the best weights, save the trainer state."""
        val_loss = text_loss(trainer.model, val, cfg.batch_size, cfg.seq_len)
        st.last_eval_step = st.step
        better = math.isfinite(val_loss) and (
            st.best_val_loss is None or val_loss < st.best_val_loss
        )
        st.count_evaluation(better)
        if better:
            st.best_val_loss, st.best_step = val_loss, st.step
            _save_weights(trainer.model, out)
        _save_state(out, st, trainer)
        return {"step": st.step, "time": round(st.elapsed, 3), "val_loss": val_loss}

    start = time.monotonic() - st.elapsed
    last_log = (time.monotonic(), st.step, st.tokens)
    stopped_by: StopReason | None = None
    with StopOnInterrupt() as interrupt:
        while (stopped_by := stop_reason(run, st)) is None:
            loss_value = trainer.step()
            check_loss(loss_value, st, out)
            st.step = trainer.step_count
            st.epoch, st.chunk = divmod(st.step, steps_per_epoch)
            st.count_loss(loss_value, cfg.batch_size * cfg.seq_len, time.monotonic() - start)

            record: dict[str, Any] = {}
            if st.step % cfg.log_every == 0:
                record, last_log = train_log_record(st, last_log, cfg.lr)
            if st.step % cfg.eval_every == 0:
                record |= save_checkpoint()
            if record:
                records.append(record)
                checkpoint.write_metrics(out, records)
                logger.info(format_line(record))
            if interrupt.requested:
                stopped_by = "interrupt"
                logger.warning("interrupted at step %d: saving %s", st.step, out)
                _save_state(out, st, trainer)
                break

        # The final evaluation; after Ctrl-C only when no model has been saved yet.
        needs_model = stopped_by != "interrupt" or st.best_step is None
        if st.last_eval_step != st.step and st.step > 0 and needs_model:
            records.append(save_checkpoint())
            checkpoint.write_metrics(out, records)
            logger.info(format_line(records[-1]))
    return finish_run(out, st, stopped_by)
