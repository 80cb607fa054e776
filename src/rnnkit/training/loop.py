"""The training loop: one explicit loop for every task, no callbacks.

Read top to bottom: seed -> data -> model -> optimizer, weight average -> (resume) -> loop
{batch, forward, loss, backward, clip, step, average, detach state, log every N, evaluate +
checkpoint every M} -> final evaluation and checkpoint. With ``--average`` the evaluations (and
so the kept model) use the averaged weights (:mod:`rnnkit.training.averaging`); with
``--patience`` the run stops after that many evaluations without a better model. Without
validation data (``--val-frac 0``) every checkpoint keeps the weights of its step, so the run
ends with its final weights. What differs
between sequence shapes (data, model, batches, loss, metrics) comes from the task object
(:mod:`rnnkit.tasks.base`), looked up by the name in the run's config; this module imports no
task.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rnnkit.config import RunConfig
from rnnkit.errors import CheckpointError
from rnnkit.tasks import get_task
from rnnkit.tasks.base import Batches, Task
from rnnkit.training import checkpoint, distributed, folder_check
from rnnkit.training.averaging import WeightAverage
from rnnkit.training.best_weights import BestWeights
from rnnkit.training.control import (
    StopOnInterrupt,
    StopReason,
    TrainResult,
    check_loss,
    check_resumable,
    finish_run,
    format_line,
    pick_device,
    pick_precision,
    stop_reason,
    train_log_record,
)
from rnnkit.training.memory import keep_freed_memory
from rnnkit.training.optim import learning_rate, make_optimizer, progress, set_learning_rate

__all__ = ["TrainResult", "pick_device", "pick_precision", "train"]

logger = logging.getLogger(__name__)


def train(
    run: RunConfig,
    *,
    resume: bool = False,
    force: bool = False,
    show_progress: bool = False,
    note: str | None = None,
) -> TrainResult:
    """Train the model of ``run`` with the torch engine and write its model folder ``run.out``.

    Args:
        run: the complete configuration; ``run.task`` names the task.
        resume: continue the run saved in ``run.out`` exactly where it stopped (``max_steps``
            counts from the run's start).
        force: replace a model already in ``run.out`` (only once the data have been read).
        show_progress: draw a tqdm progress bar on stderr.
        note: a line to log as the run starts, once the folder and the data have been read
            (``rnnkit train`` gives the budget preset's choice).

    Raises:
        ConfigError, DataError, CheckpointError: bad options, data or folder; nothing has been
            written then.
        TrainingError: the loss became NaN or diverged; model.safetensors keeps the last good
            model.

    Under torchrun with several processes, each runs this function on its share of every
    batch (see :mod:`rnnkit.training.distributed`); only rank 0 writes ``run.out``.
    """
    with distributed.World.start(run.train) as world:
        return _train(world.record(run), world, resume, force, show_progress, note)


def _train(
    run: RunConfig,
    world: distributed.World,
    resume: bool,
    force: bool,
    show_progress: bool,
    note: str | None,
) -> TrainResult:
    """:func:`train` in the process ``world``."""
    cfg = run.train
    task = get_task(run.task)
    out = Path(run.out)
    if resume:
        saved = checkpoint.read_run_config(out)
        check_resumable(saved, run)
        distributed.check_resume(saved, world.world_size, run.out)
        logger.info("resuming %s on %s", out, run.data.path or "the Python standard library")
    else:
        checkpoint.check_new_folder(out, force=force)
    world.barrier()  # every rank has read the folder before rank 0 writes to it
    device = world.device
    if device.type == "cpu":
        keep_freed_memory()  # reuse freed buffers instead of faulting them in every step

    torch.manual_seed(cfg.seed)
    data = task.load_data(run, checkpoint.read_meta(out, run) if resume else None)
    batches = task.batches(run, data)
    model = folder_check.build_model(task, run, data.meta, out if resume else None)
    prepared = 0.0  # seconds of setting up a new model (e.g. word votes), in --max-time
    if not resume:
        began = time.monotonic()
        task.init_model(model, data)
        prepared = time.monotonic() - began
    model = model.to(device)
    world.seed_dropout(cfg.seed)
    step_loss = world.wrap(task, model)  # the task's loss; DDP-wrapped with several processes
    metric, higher = task.selection(run)
    optimizer = make_optimizer((p for p in model.parameters() if p.requires_grad), cfg)
    average = WeightAverage(model, cfg)  # does nothing with --average none
    best = BestWeights(model, cfg.average_best, higher)  # does nothing below --average-best 2
    precision = pick_precision(cfg.precision, device, cpu_bf16=task.cpu_bf16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    if resume:
        carried = _carried_like(task, model, batches, device, autocast)
        st, state = checkpoint.load_state(
            out,
            model,
            optimizer,
            device,
            carried=carried,
            world_size=world.world_size,
            average=average,
            best=best,
        )
        if st.chunk >= len(batches):
            raise CheckpointError(
                f"{out / checkpoint.STATE_DIR / 'trainer.json'} is corrupted: trainer.chunk "
                f"{st.chunk} is past the {len(batches)} batches of an epoch"
            )
        world.restore_rng(out)
        state = world.shard_state(state)
        records = checkpoint.read_metrics(out, st.step)
        world.barrier()  # every rank has read the saved run before rank 0 rewrites it
        if world.is_main:
            checkpoint.write_config(out, run)
            checkpoint.write_metrics(out, records)
        logger.info("resuming %s at step %d", out, st.step)
    else:
        if world.is_main:
            checkpoint.start_folder(out, run, data.meta)
        st, state, records = checkpoint.TrainerState(elapsed=prepared), None, []
    if note is not None:
        logger.info(note)
    logger.info(
        "training %s on %s: %s, %d parameters, %s, %s",
        task.name,
        data.source,
        data.summary,
        sum(p.numel() for p in model.parameters()),
        device,
        precision,
    )
    if not run.data.validates:
        logger.info(
            "no validation data (--val-frac 0): every example trains, and each checkpoint "
            "keeps the weights of its step"
        )
        if best.enabled:
            logger.warning("--average-best ranks evaluations: without validation data it is off")

    def save_checkpoint(*, with_eval: bool) -> dict[str, Any]:
        """Evaluate (if asked) the averaged weights, or the raw ones before averaging begins;
        keep the best; save the trainer state.

        With several processes, rank 0 evaluates and writes alone; the others wait for it.
        """
        record: dict[str, Any] = {}
        hidden, rng_states = world.gather_state(state), world.gather_rng()
        if with_eval and world.is_main and not run.data.validates:  # --val-frac 0: the latest
            with average.applied():
                checkpoint.write_weights(model, out / checkpoint.WEIGHTS_FILE)
            model.train()
            st.last_eval_step = st.best_step = st.step
        elif with_eval and world.is_main:
            with average.applied():  # the averaged weights, once averaging has begun
                with autocast, world.evaluation():
                    metrics = task.evaluate(model, data.val, run, device)
                better = task.is_better(metrics, st.best_metrics, run)
                if better:
                    checkpoint.write_weights(model, out / checkpoint.WEIGHTS_FILE)
                best.offer(st.step, metrics[metric])
            model.train()
            st.last_eval_step = st.step
            record = {"step": st.step, "time": round(st.elapsed, 3), "val_loss": metrics["loss"]}
            if metric != "loss":
                record[f"val_{metric}"] = metrics[metric]
            st.count_evaluation(better)
            if better:
                st.best_val_loss, st.best_step = metrics["loss"], st.step
                st.best_metrics = _json_numbers(metrics)
                st.averaged = None  # model.safetensors holds this evaluation's weights now
        if world.is_main:
            checkpoint.save_state(out, st, model, optimizer, hidden, rng_states, average, best)
        world.share_best(st)
        return record

    def keep_best_mean() -> None:
        """``--average-best K``: evaluate the mean of the K best evaluations' weights and keep
        it as the model unless it scores below all of them (rank 0 alone)."""
        if len(best.kept) < 2:
            return
        held_mean = st.averaged is not None and st.averaged["kept"]  # an earlier end's mean
        with best.applied():
            with autocast, world.evaluation():
                metrics = task.evaluate(model, data.val, run, device)
            kept = best.holds_up(metrics[metric])
            if kept:
                checkpoint.write_weights(model, out / checkpoint.WEIGHTS_FILE)
        if not kept and held_mean and st.best_step in best.steps:
            with best.applied([st.best_step]):  # the best alone again, in the earlier mean's place
                checkpoint.write_weights(model, out / checkpoint.WEIGHTS_FILE)
        model.train()
        st.averaged = {"steps": best.steps, "metrics": _json_numbers(metrics), "kept": kept}

    model.train()
    start = time.monotonic() - st.elapsed
    last_log = (time.monotonic(), st.step, st.tokens)
    bar = tqdm(
        total=1000,
        bar_format="{percentage:3.0f}%|{bar:20}| {desc}",
        disable=not (show_progress and world.is_main),
        leave=False,
    )
    bar_info: dict[str, str] = {}
    stopped_by: StopReason | None = None
    with StopOnInterrupt() as interrupt, contextlib.closing(bar):
        while (stopped_by := stop_reason(run, st)) is None:
            if st.chunk == 0 or not task.carries_state:
                state = None  # each epoch starts every stream from a zero state
            piece = world.shard(batches.get(st.epoch, st.chunk))
            run_progress = progress(cfg, st.step, len(batches), st.elapsed)
            lr = learning_rate(cfg, st.step, run_progress)
            set_learning_rate(optimizer, lr)

            with autocast:
                result = step_loss(piece.batch, state)
            step = world.reduce(
                result, piece, stop=interrupt.requested, elapsed=time.monotonic() - start
            )
            check_loss(step.loss, st, out)
            optimizer.zero_grad(set_to_none=True)
            (result.loss * step.scale).backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if cfg.grad_clip_value > 0:
                torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip_value)
            optimizer.step()
            state = _detach(result.state) if task.carries_state else None

            st.step += 1
            st.chunk += 1
            if st.chunk == len(batches):
                st.chunk, st.epoch = 0, st.epoch + 1
            st.count_loss(step.loss, step.count, step.elapsed)
            average.update(progress(cfg, st.step, len(batches), st.elapsed))

            record: dict[str, Any] = {}
            if st.step % cfg.log_every == 0:
                record, last_log = train_log_record(st, last_log, lr)
            if st.step % cfg.eval_every == 0:
                record |= save_checkpoint(with_eval=True)
            if record and world.is_main:
                records.append(record)
                checkpoint.write_metrics(out, records)
                logger.info(format_line(record))
                bar.set_description_str(
                    _bar_text(bar_info, record, st, run_progress), refresh=False
                )
            bar.n = int(1000 * progress(cfg, st.step, len(batches), st.elapsed))
            bar.refresh()
            if step.stop:  # a Ctrl-C on any rank: every rank stops after this step
                stopped_by = "interrupt"
                logger.warning("interrupted at step %d: saving %s", st.step, out)
                save_checkpoint(with_eval=False)
                break

        # The final evaluation; after Ctrl-C only when no model has been saved yet.
        needs_model = stopped_by != "interrupt" or st.best_step is None
        if st.last_eval_step != st.step and st.step > 0 and needs_model:
            record = save_checkpoint(with_eval=True)
            if record and world.is_main:
                records.append(record)
                checkpoint.write_metrics(out, records)
                logger.info(format_line(record))
        # --average-best: the mean of the best evaluations, once the run has ended (a run
        # stopped by Ctrl-C keeps the best alone; its resume averages when it ends).
        if best.enabled and run.data.validates and stopped_by != "interrupt" and st.step > 0:
            if world.is_main:
                keep_best_mean()
            save_checkpoint(with_eval=False)  # trainer.json records the mean's result
    return finish_run(out, st, stopped_by, metric)


@torch.no_grad()
def _carried_like(
    task: Task, model: torch.nn.Module, batches: Batches, device: torch.device, autocast: Any
) -> Any:
    """For a task that carries its state, the state that the first batch leaves from zeros
    (what a saved state must look like), computed in eval mode so that dropout draws nothing;
    else None."""
    if not task.carries_state:
        return None
    model.eval()
    with autocast:
        state = task.loss(model, batches.get(0, 0), None, device).state
    model.train()
    return state


def _json_numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a metrics dict (what trainer.json keeps of the best model)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _detach(state: Any) -> Any:
    """A carried state without its graph, so that the next batch does not backprop into this
    one: a tensor, or nested tuples of them."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(part) for part in state)


def _bar_text(
    info: dict[str, str], record: dict[str, Any], st: checkpoint.TrainerState, run_progress: float
) -> str:
    """Update ``info`` from a record; the progress bar's text: loss, val, tokens/s, time left."""
    if "loss" in record:
        info["loss"] = f"{record['loss']:.3f}"
        info["tok/s"] = f"{record['tokens_per_s']:.0f}"
    if "val_loss" in record:
        info["val"] = f"{record['val_loss']:.3f}"
    for key, value in record.items():
        if key.startswith("val_") and key != "val_loss":
            info[key.removeprefix("val_")] = f"{value:.3f}"
    if run_progress > 0:
        left = int(st.elapsed * (1 - run_progress) / run_progress)  # seconds
        info["ETA"] = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
    return ", ".join(f"{k} {v}" for k, v in info.items())
