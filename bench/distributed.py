"""Data-parallel training speed: `python bench/distributed.py [--quick] [--procs 1 2] [--rounds R]`.

Tokens/s of `rnnkit train` on the 2x512 LM preset (global batch 32 x 100, the preset's
precision) in 1 process and in N processes on this machine (`rnnkit train --nproc N`: torchrun's
agent, gloo on CPU, nccl on CUDA), each run a fresh command as a user would start it. The
processes share the machine: on CPU the 1-process run gets every core's thread, each of N
processes cores / N (`--threads`), so the row for N processes shows what splitting the same
cores between processes gains or costs; on CUDA each process has its own GPU.

Tokens/s come from the run's own metrics.jsonl (the whole global batch per step: forward,
backward, gradient all-reduce, clipping, AdamW step), the first log interval left out, median of
the rest. The settings alternate for R rounds; each keeps its best round. Data: Tiny Shakespeare
from ../shared/data when present, else the Python standard library corpus.

Evaluation (`--eval`, on by default): rank 0 evaluates alone with every core's threads (what
`rnnkit train --nproc N` does), against the evaluation sharded N ways (each process 1/N of the
validation streams with cores / N threads, all at once, from a common start; a sum all-reduce
would follow). Both read Tiny Shakespeare's validation size (111,540 characters) with the 2x512
LM preset as 32 streams of 100 steps, the loop's own `evaluate`; best of R rounds.

Results are printed and written to bench/results/distributed.json (distributed.quick.json with
--quick: a tiny model for a few steps, a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from rnnkit.benchmark import provenance
from rnnkit.config import ModelConfig, TrainConfig
from rnnkit.training.distributed import cpu_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

QUICK = ["--hidden-size", "64", "--embedding-size", "16", "--batch-size", "8", "--seq-len", "16"]


def _tokens_per_s(nproc: int, threads: int, steps: int, log_every: int, quick: bool) -> float:
    """One run of ``rnnkit train`` in ``nproc`` processes: median tokens/s of its log lines
    after the first."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        data = [str(SHAKESPEARE)] if SHAKESPEARE.exists() else []
        command = [
            *(sys.executable, "-m", "rnnkit", "train", *data, "--out", str(out)),
            *("--max-steps", str(steps), "--log-every", str(log_every)),
            *("--eval-every", str(10**9), "--threads", str(threads), "--nproc", str(nproc)),
            *(QUICK if quick else []),
        ]
        src = str(ROOT / "src")
        env = os.environ | {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
    return statistics.median(rates)


EVAL_TOKENS = 111_540
"""Tiny Shakespeare's validation split (the last 10%), in characters."""
EVAL_WORKER = r"""
import sys, time
from pathlib import Path
import torch
from rnnkit.config import ModelConfig
from rnnkit.tasks.lm import LanguageModel, evaluate
part, threads, parts, tokens, batch, ready = *map(int, sys.argv[1:6]), Path(sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = LanguageModel(ModelConfig(), 65)
ids = torch.randint(65, (tokens,))
share = ids[part * tokens // parts : (part + 1) * tokens // parts]
evaluate(model, share[:2000], batch // parts, 100)  # warm-up
(ready / str(part)).touch()
while len(list(ready.iterdir())) < parts:
    time.sleep(0.005)
start = time.perf_counter()
evaluate(model, share, batch // parts, 100)
print(time.perf_counter() - start)
"""


def _evaluation_seconds(parts: int, threads: int, tokens: int, batch: int) -> float:
    """Wall seconds of one LM validation pass cut into ``parts`` processes run at once (the
    slowest one's), each with ``threads`` threads."""
    with tempfile.TemporaryDirectory() as ready:
        env = os.environ | {"OMP_NUM_THREADS": str(threads)}
        sizes = [str(threads), str(parts), str(tokens), str(batch), ready]
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", EVAL_WORKER, str(part), *sizes],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for part in range(parts)
        ]
        seconds = []
        for worker in workers:
            out, _ = worker.communicate()
            if worker.returncode != 0:
                raise RuntimeError(f"evaluation worker failed with exit code {worker.returncode}")
            seconds.append(float(out.strip().splitlines()[-1]))
    return max(seconds)


def evaluation(quick: bool, procs: list[int], rounds: int) -> list[dict[str, Any]]:
    """Rank 0 alone with every core against the pass sharded over N processes."""
    cores = cpu_cores()
    tokens, batch = (4_000, 8) if quick else (EVAL_TOKENS, TrainConfig().batch_size)
    rows = []
    for n in procs:
        if n == 1 or batch % n:
            continue
        alone = min(_evaluation_seconds(1, cores, tokens, batch) for _ in range(rounds))
        sharded = min(
            _evaluation_seconds(n, max(1, cores // n), tokens, batch) for _ in range(rounds)
        )
        rows.append(
            {
                "processes": n,
                "tokens": tokens,
                "rank0_alone_s": round(alone, 3),
                "sharded_s": round(sharded, 3),
                "sharded_speedup": round(alone / sharded, 3),
            }
        )
    return rows


def run(quick: bool, procs: list[int], rounds: int) -> dict[str, Any]:
    """Every process count for ``rounds`` rounds, alternating; the best round of each."""
    cuda = torch.cuda.is_available()
    steps, log_every = (8, 2) if quick else (60, 10)
    cores = cpu_cores()
    rates: dict[int, list[float]] = {n: [] for n in procs}
    for _ in range(rounds):
        for n in procs:
            threads = max(1, cores // n)
            rates[n].append(_tokens_per_s(n, threads, steps, log_every, quick))
    best = {n: max(values) for n, values in rates.items()}
    base = best[procs[0]]
    model, train = ModelConfig(), TrainConfig()
    return {
        "provenance": provenance(ROOT),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cores": cores,
            "cuda": torch.cuda.get_device_name() if cuda else None,
            "gpus": torch.cuda.device_count() if cuda else 0,
        },
        "model": "quick" if quick else f"{model.num_layers}x{model.hidden_size} {model.cell}",
        "batch_size": 8 if quick else train.batch_size,
        "seq_len": 16 if quick else train.seq_len,
        "steps": steps,
        "data": str(SHAKESPEARE) if SHAKESPEARE.exists() else "the Python standard library",
        "rows": [
            {
                "processes": n,
                "threads_per_process": max(1, cores // n),
                "tokens_per_s_rounds": [round(x, 1) for x in rates[n]],
                "tokens_per_s": round(best[n], 1),
                "ratio_to_first": round(best[n] / base, 3),
            }
            for n in procs
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps (smoke test)")
    parser.add_argument(
        "--procs", nargs="+", type=int, default=[1, 2], help="process counts (default: 1 2)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per setting (default 2; 1 with --quick)")
    parser.add_argument(
        "--no-eval", action="store_true", help="skip rank 0 alone vs sharded evaluation"
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    if rounds < 1 or min(args.procs) < 1:
        parser.error("--rounds and --procs need positive numbers")
    results = run(args.quick, args.procs, rounds)
    if not args.no_eval:
        results["evaluation"] = evaluation(args.quick, args.procs, rounds)
    m = results["machine"]
    where = f"{m['gpus']} x {m['cuda']}" if m["cuda"] else f"{m['cores']} CPU cores"
    print(
        f"data-parallel training, {results['model']} LM, global batch {results['batch_size']} x "
        f"{results['seq_len']}, {results['steps']} steps, {where}"
    )
    print(f"  {'processes':>9} {'threads/proc':>12} {'tokens/s':>10} {'x first':>8}")
    for row in results["rows"]:
        print(
            f"  {row['processes']:>9} {row['threads_per_process']:>12} "
            f"{row['tokens_per_s']:>10.0f} {row['ratio_to_first']:>8.2f}"
        )
    for row in results.get("evaluation", []):
        print(
            f"  evaluation of {row['tokens']:,} tokens: rank 0 alone {row['rank0_alone_s']:.2f} s,"
            f" sharded over {row['processes']} {row['sharded_s']:.2f} s"
            f" ({row['sharded_speedup']:.2f}x)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("distributed.quick.json" if args.quick else "distributed.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
