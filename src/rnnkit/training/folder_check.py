"""Checks of a model folder against what it is for: the memory its model needs, its optimizer
state, its random and carried states, its metrics log.

A damaged or hand-edited folder must give one line that names the file and the field
(``CheckpointError``, exit 2 in the CLI), never a traceback, whatever command reads it. Every
file is checked where it is read (:mod:`rnnkit.training.checkpoint`):

    config.json                  types and ranges (rnnkit.config); the model's size (here)
    vocab.json                   field by field by the task (``Task.check_meta``)
    model.safetensors            names and shapes against the model, finite values
    state/trainer.json           the counters (``TrainerState.from_dict``), the optimizer's
                                 groups (here)
    state/optimizer.safetensors  the optimizer's tensors (here)
    state/loop.safetensors       random states and the carried state (here)
    state/average.safetensors    the averaged weights of --average and their step count (here)
    metrics.jsonl                one JSON object per line, with an integer step (here)

JSON is read with a limit on nesting (:func:`rnnkit.errors.parse_json`), so no file can
exhaust Python's stack.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.config import RunConfig
from rnnkit.data.fields import integer, is_number, key, obj, shown
from rnnkit.errors import CheckpointError, ConfigError, one_line, parse_json
from rnnkit.tasks.base import Task

LAYER_BYTES = 4096
"""Memory of one recurrent layer beside its weights: its Python objects (measured 4-6 KiB)."""


# --- the size of a model, before it is built --------------------------------------------------


def physical_memory() -> int | None:
    """This machine's memory in bytes; None where the system does not say (Windows)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def build_model(task: Task, run: RunConfig, meta: dict[str, Any], folder: Path | None) -> nn.Module:
    """``task.build_model(run, meta)``, once the model is known to fit in this machine's memory.

    Args:
        folder: the model folder whose config.json describes ``run.model``, or None for a new
            run (whose sizes come from the flags).

    Raises:
        CheckpointError (folder) or ConfigError (new run): the parameters and buffers alone
            would need more than the machine's memory.
    """
    memory = physical_memory()
    if memory is not None:
        need, what = model_bytes(task, run, meta)
        if need > memory:
            where = f"{folder / 'config.json'}: " if folder is not None else ""
            message = (
                f"{where}the model would need {_gib(need)} of memory for {what}; this machine "
                f"has {_gib(memory)}"
            )
            if folder is not None:
                raise CheckpointError(message)
            raise ConfigError(
                f"{message}: choose a smaller --hidden-size, --num-layers or --embedding-size"
            )
    return task.build_model(run, meta)


def model_bytes(task: Task, run: RunConfig, meta: dict[str, Any]) -> tuple[int, str]:
    """The bytes of the model's parameters and buffers, and what they are, counted without
    allocating any: the model is built on the ``meta`` device, which keeps shapes only.

    Two absurd cases are not built: a stack whose layers' Python objects alone pass 1 TiB
    (a billion layers would take hours to build even on ``meta``) counts as those, and sizes
    that overflow the build count as 2^63 bytes.
    """
    cfg = run.model
    layers = cfg.num_layers * (2 if cfg.bidirectional else 1)
    if layers * LAYER_BYTES > 2**40:
        return layers * LAYER_BYTES, f"{layers:,} recurrent layers"
    try:
        with torch.device("meta"):
            model = task.build_model(run, meta)
    except (RuntimeError, TypeError) as err:
        if "overflow" not in str(err).lower():  # torch: "Storage size calculation overflowed"
            raise
        return 2**63, "tensors of more than 2^63 bytes"
    tensors = [*model.parameters(), *model.buffers()]
    count = sum(t.numel() for t in tensors)
    return sum(t.numel() * t.element_size() for t in tensors), f"{count:,} parameters"


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


# --- the optimizer state -------------------------------------------------------------------


def check_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], rest: Any, folder: Path
) -> None:
    """Check the saved optimizer state against ``optimizer`` (new, with the model's parameters):
    ``rest`` is trainer.json's ``optimizer`` object (``param_groups`` and plain ``scalars``),
    ``tensors`` optimizer.safetensors' tensors, each keyed ``<parameter index>.<name>``.

    The groups must have the new optimizer's keys, its parameters and values of the same
    kinds; each parameter's state must have the names, shapes and dtypes that torch gives it
    (learnt from one step of a twin optimizer on a probe parameter), complete or absent (a
    parameter that never had a gradient has none).

    Raises:
        CheckpointError: naming trainer.json or optimizer.safetensors and the field.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    layout = _state_layout(optimizer)
    try:
        obj(rest, "optimizer", ("param_groups", "scalars"))
        _check_groups(rest["param_groups"], optimizer.state_dict()["param_groups"])
        scalars = rest["scalars"]
        if not isinstance(scalars, dict):
            raise ValueError(f"optimizer.scalars must be a JSON object, got {shown(scalars)}")
        names = _state_names(scalars, params, layout, "optimizer.scalars.")
        for name, value in scalars.items():
            like = layout[name.split(".", 1)[1]]
            if isinstance(like, Tensor):
                raise ValueError(f"optimizer.scalars.{name} must be in optimizer.safetensors")
            _check_like(value, like, f"optimizer.scalars.{name}")
    except ValueError as err:
        raise CheckpointError(f"{folder / 'trainer.json'} is corrupted: {err}") from None
    try:
        for index, have in _state_names(tensors, params, layout, "").items():
            names[index] = names.get(index, set()) | have
        for name, tensor in tensors.items():
            index, part = name.split(".", 1)
            like = layout[part]
            if not isinstance(like, Tensor):
                raise ValueError(f"{name} must be in trainer.json, not a tensor")
            shape, dtype = like.shape, like.dtype
            if like.shape == _PROBE_SHAPE:  # a tensor per element of the parameter
                shape, dtype = params[int(index)].shape, params[int(index)].dtype
            if tensor.shape != shape or tensor.dtype != dtype:
                raise ValueError(
                    f"{name} must be {dtype} of shape {tuple(shape)}, got {tensor.dtype} of "
                    f"shape {tuple(tensor.shape)}"
                )
        for index, have in names.items():
            if have != set(layout):
                missing = ", ".join(sorted(f"{index}.{n}" for n in set(layout) - have))
                raise ValueError(f"parameter {index}'s state lacks {missing}")
    except ValueError as err:
        raise CheckpointError(f"{folder / 'optimizer.safetensors'} is corrupted: {err}") from None


_PROBE_SHAPE = torch.Size((2, 3))


def _state_layout(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What torch keeps per parameter for ``optimizer``: its state after one step of a twin
    optimizer (same class and hyper-parameters) on a probe parameter of shape (2, 3)."""
    device = optimizer.param_groups[0]["params"][0].device
    probe = nn.Parameter(torch.zeros(_PROBE_SHAPE, device=device))  # (2, 3)
    twin = type(optimizer)([probe])
    twin.param_groups[0].update(
        {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    )
    probe.grad = torch.zeros_like(probe)  # (2, 3)
    twin.step()
    return dict(twin.state[probe])


def _check_groups(groups: Any, expected: list[dict[str, Any]]) -> None:
    if not isinstance(groups, list) or len(groups) != len(expected):
        raise ValueError(
            f"optimizer.param_groups must be a list of {len(expected)} group(s), "
            f"got {shown(groups)}"
        )
    for i, (group, like) in enumerate(zip(groups, expected, strict=True)):
        name = f"optimizer.param_groups[{i}]"
        obj(group, name, tuple(like))
        if group["params"] != like["params"]:
            raise ValueError(
                f"{name}.params must be {shown(like['params'])}, got {shown(group['params'])}"
            )
        for field, value in like.items():
            _check_like(group[field], value, key(name, field))


def _check_like(value: Any, like: Any, name: str) -> None:
    """``value`` (from JSON) must be of the kind of torch's ``like``: a flag (bool or None), a
    number of 0 or more, or a list of them."""
    if isinstance(like, bool) or like is None:
        ok = isinstance(value, bool) or value is None
        expected = "true, false or null"
    elif is_number(like):
        ok = is_number(value) and 0 <= value < float("inf")
        expected = "a finite number of 0 or more"
    elif isinstance(like, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(like):
            raise ValueError(f"{name} must be a list of {len(like)}, got {shown(value)}")
        for i, (v, w) in enumerate(zip(value, like, strict=True)):
            _check_like(v, w, key(name, i))
        return
    else:
        ok, expected = value == like, repr(like)
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {shown(value)}")


def _state_names(
    saved: dict[str, Any], params: list[nn.Parameter], layout: dict[str, Any], where: str
) -> dict[int, set[str]]:
    """The state names saved per parameter index; every key must be ``<index>.<name>`` with a
    parameter's index and a name of ``layout`` (``where`` prefixes the key in messages)."""
    names: dict[int, set[str]] = {}
    for name in saved:
        index, _, part = name.partition(".")
        if not index.isdecimal() or int(index) >= len(params) or part not in layout:
            raise ValueError(
                f"unknown optimizer state {where}{name}: keys are <parameter 0-"
                f"{len(params) - 1}>.<{'|'.join(layout) or 'none for this optimizer'}>"
            )
        names.setdefault(int(index), set()).add(part)
    return names


# --- random states and the carried state ---------------------------------------------------


def check_loop_tensors(
    loop: dict[str, Tensor], carried: dict[str, Tensor], world_size: int, folder: Path
) -> None:
    """Check loop.safetensors: ``rng.cpu`` (and ``rng.cuda.<i>``, ``rank<r>.rng.*`` of a run of
    several processes) are random states that a generator takes (CUDA ones where CUDA is); the
    ``hidden.*`` tensors, if any, have the names and shapes of ``carried`` (the state that one
    batch leaves, flattened the same way) and a floating-point dtype.

    Raises:
        CheckpointError: naming loop.safetensors and the tensor.
    """
    where = folder / "loop.safetensors"
    cpu_state = torch.get_rng_state()  # (5056,) uint8 for torch's Mersenne twister
    needed = {"rng.cpu"} | {f"rank{r}.rng.cpu" for r in range(world_size if world_size > 1 else 0)}
    missing = sorted(needed - set(loop))
    if missing:
        raise CheckpointError(f"{where} is corrupted: it lacks {', '.join(missing)}")
    hidden = {k for k in loop if k.startswith("hidden.") or k == "hidden"}
    if hidden and hidden != set(carried):
        expected = ", ".join(sorted(carried)) or "absent"
        raise CheckpointError(
            f"{where} is corrupted: the carried state must be {expected}, "
            f"got {', '.join(sorted(hidden))}"
        )
    for name, tensor in loop.items():
        if name in hidden:
            like = carried[name]
            if tensor.shape != like.shape or not tensor.is_floating_point():
                raise CheckpointError(
                    f"{where} is corrupted: {name} must be floating point of shape "
                    f"{tuple(like.shape)}, got {tensor.dtype} of shape {tuple(tensor.shape)}"
                )
            continue  # its dtype may differ: bf16 or not by the machine (--precision auto)
        if name.endswith("rng.cpu") and name in needed:
            like, device = cpu_state, "cpu"
        elif _is_cuda_state(name, world_size):
            like = torch.empty(tensor.numel(), dtype=torch.uint8)  # its size: the device's
            device = "cuda" if torch.cuda.is_available() else None
        else:
            raise CheckpointError(f"{where} is corrupted: unknown tensor {name!r}")
        if tensor.shape != like.shape or tensor.dtype != like.dtype:
            raise CheckpointError(
                f"{where} is corrupted: {name} must be {like.dtype} of shape {tuple(like.shape)}, "
                f"got {tensor.dtype} of shape {tuple(tensor.shape)}"
            )
        try:
            if device is not None:  # a CUDA state is only checked (and used) where CUDA is
                torch.Generator(device=device).set_state(tensor)
        except RuntimeError as err:  # e.g. bytes that are no Mersenne twister state
            raise CheckpointError(f"{where} is corrupted: {name}: {one_line(err)}") from None


def _is_cuda_state(name: str, world_size: int) -> bool:
    """Whether ``name`` is a CUDA random state: ``rng.cuda.<i>``, or ``rank<r>.rng.cuda``."""
    if name.startswith("rng.cuda."):
        return name.removeprefix("rng.cuda.").isdecimal()
    rank, _, rest = name.partition(".")
    return (
        rest == "rng.cuda"
        and rank.removeprefix("rank").isdecimal()
        and int(rank.removeprefix("rank")) < world_size
    )


# --- the weight average -------------------------------------------------------------------


def check_average_tensors(tensors: dict[str, Tensor], like: dict[str, Tensor], path: Path) -> None:
    """Check average.safetensors against ``like`` (:meth:`WeightAverage.state_dict` of the new
    run's model): the same names; ``steps`` an int64 count of 0 or more; each average of its
    parameter's shape and dtype, with finite values.

    Raises:
        CheckpointError: naming average.safetensors and the tensor.
    """
    if set(tensors) != set(like):
        missing, unknown = sorted(set(like) - set(tensors)), sorted(set(tensors) - set(like))
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unknown)}"
        raise CheckpointError(f"{path} is corrupted: it {what}")
    for name, tensor in tensors.items():
        expected = like[name]
        if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
            raise CheckpointError(
                f"{path} is corrupted: {name} must be {expected.dtype} of shape "
                f"{tuple(expected.shape)}, got {tensor.dtype} of shape {tuple(tensor.shape)}"
            )
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(
                    f"{path} is corrupted: {name} holds values that are not finite"
                )
        elif int(tensor) < 0:
            raise CheckpointError(
                f"{path} is corrupted: {name} must be 0 or more, got {int(tensor)}"
            )


# --- metrics.jsonl -------------------------------------------------------------------------


def parse_metrics(text: str, path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl's ``text``: a JSON object per line (blank lines aside)
    with an integer ``step`` of 0 or more and numbers for every other key.

    Raises:
        CheckpointError: ``path:line: what is wrong`` for the first bad line.
    """
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError(f"must be a JSON object with a step, got {shown(record)}")
            integer(record["step"], "step")
            for name, value in record.items():
                if not is_number(value):
                    raise ValueError(f"{name} must be a number, got {shown(value)}")
        except ValueError as err:
            raise CheckpointError(
                f"{path}:{number}: {err}; delete the line to resume without it"
            ) from None
        records.append(record)
    return records
