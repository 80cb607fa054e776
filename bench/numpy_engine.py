"""Training speed of the NumPy engine against the torch engine, for the same model.

    python bench/numpy_engine.py [--quick] [--out bench/results/numpy_engine.json]

For each cell (rnn, gru, lstm) and batch size (1, 32): one-hot input → cell of hidden size 100 →
linear → softmax, sequence length 25, cross-entropy summed over steps and batch, Adagrad with
lr 0.1 after clipping every gradient element to ±5, state carried between windows. One "step"
is forward + backward + clip + optimiser update on one window of B × T characters.

The NumPy engine (``rnnkit.reference.Trainer``, what ``rnnkit train --engine numpy`` runs)
computes in float64; the torch engine is the same model as ``rnnkit train --engine torch`` builds
it, rnnkit's own ``LanguageModel`` (one-hot input, one layer, the same H), in float32 with
``torch.optim.Adagrad`` and element-wise clipping. After a
warm-up, each repeat times a run of steps; the figure is the median of the repeats, in training
characters per second. The table's ratio is numpy / torch (below 1: NumPy is slower).

Both run on RNNKIT_BENCH_THREADS threads (default 1) for BLAS and OpenMP. The pools are sized
when NumPy and torch are imported, hence the environment variable rather than a flag; on a
shared machine, pools of 2 or more threads that spin while waiting for a core made these
small-matrix timings 10-100x slower and erratic.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = os.environ.get("RNNKIT_BENCH_THREADS", "1")
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
os.environ["MKL_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]

import numpy as np
import torch

from rnnkit.benchmark import provenance
from rnnkit.config import ModelConfig
from rnnkit.reference import Trainer
from rnnkit.tasks.lm import LanguageModel, lm_loss

THREADS = int(os.environ["OMP_NUM_THREADS"])
CELLS = ("rnn", "gru", "lstm")
BATCH_SIZES = (1, 32)
VOCAB_SIZE = 65  # tinyshakespeare's character count
HIDDEN_SIZE = 100
SEQ_LEN = 25
LR = 0.1
CLIP = 5.0


def median_chars_per_s(step, chars_per_step: int, warmup: int, steps: int, repeats: int) -> float:
    """Run ``step`` ``warmup`` times, then time ``repeats`` runs of ``steps`` calls; median."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * chars_per_step / (time.perf_counter() - start))
    return statistics.median(rates)


def numpy_step_fn(cell: str, batch_size: int, text: np.ndarray):
    """One training step of the NumPy engine on ``text`` (N,), as a closure."""
    trainer = Trainer(text, vocab_size=VOCAB_SIZE, cell=cell, hidden_size=HIDDEN_SIZE,
                      seq_len=SEQ_LEN, batch_size=batch_size, lr=LR, clip=CLIP)  # fmt: skip
    return trainer.step


def torch_step_fn(cell: str, batch_size: int, text: np.ndarray):
    """One training step of the torch engine's model on ``text`` (N,), as a closure."""
    torch.manual_seed(0)
    config = ModelConfig(
        cell=cell, num_layers=1, hidden_size=HIDDEN_SIZE, embedding_size=0, dropout=0.0
    )
    model = LanguageModel(config, VOCAB_SIZE)
    params = list(model.parameters())
    optimizer = torch.optim.Adagrad(params, lr=LR)
    stream_len = text.size // batch_size
    streams = torch.from_numpy(text[: batch_size * stream_len].reshape(batch_size, stream_len))
    position, state = 0, None

    def step() -> None:
        nonlocal position, state
        if position + SEQ_LEN + 1 > stream_len:
            position, state = 0, None
        inputs = streams[:, position : position + SEQ_LEN]  # (B, T)
        targets = streams[:, position + 1 : position + SEQ_LEN + 1]  # (B, T)
        logits, state = model(inputs, state)  # (B, T, V), one-hot input inside
        loss = lm_loss(logits, targets, reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, CLIP)
        optimizer.step()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        position += SEQ_LEN

    return step


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "numpy_engine.json"
    )
    args = parser.parse_args(argv)
    warmup, steps, repeats = (1, 2, 2) if args.quick else (5, 20, 5)
    torch.set_num_threads(THREADS)

    rng = np.random.default_rng(0)
    text = rng.integers(0, VOCAB_SIZE, 200_000)  # (N,) speed does not depend on the content
    results = []
    print(
        f"{'cell':<5} {'batch':>5} {'numpy chars/s':>14} {'torch chars/s':>14} {'numpy/torch':>12}"
    )
    for cell in CELLS:
        for batch_size in BATCH_SIZES:
            chars = batch_size * SEQ_LEN
            ours = median_chars_per_s(
                numpy_step_fn(cell, batch_size, text), chars, warmup, steps, repeats
            )
            theirs = median_chars_per_s(
                torch_step_fn(cell, batch_size, text), chars, warmup, steps, repeats
            )
            results.append({
                "cell": cell,
                "batch_size": batch_size,
                "numpy_chars_per_s": ours,
                "torch_chars_per_s": theirs,
                "ratio_numpy_over_torch": ours / theirs,
            })  # fmt: skip
            print(
                f"{cell:<5} {batch_size:>5} {ours:>14,.0f} {theirs:>14,.0f} {ours / theirs:>12.2f}"
            )

    report = {
        "benchmark": "numpy_engine",
        "unit": "training characters per second (forward + backward + clip + Adagrad step)",
        "config": {
            "vocab_size": VOCAB_SIZE,
            "hidden_size": HIDDEN_SIZE,
            "seq_len": SEQ_LEN,
            "lr": LR,
            "clip": CLIP,
            "numpy_dtype": "float64",
            "torch_dtype": "float32",
            "warmup_steps": warmup,
            "steps_per_repeat": steps,
            "repeats": repeats,
            "quick": args.quick,
        },
        "provenance": provenance(Path(__file__).resolve().parents[1]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "threads": THREADS,
            "cpu_count": os.cpu_count(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
