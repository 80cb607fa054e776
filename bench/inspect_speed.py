"""How long `rnnkit inspect cells` and `rnnkit viz` take on 100,000 characters of a 2x512 LSTM.

The goal (issue "Seeing inside", §9) is under 30 s each on 2 cores. Beside them, in the same run,
plain PyTorch: `torch.nn.LSTM` (same size, eval, no grad) reading the same characters as the same
side-by-side segments once, with the head's logits: the least work any tool that reads the
text must do. The ratio is plain seconds / rnnkit seconds (1.0 would be "no slower than one
bare read"; `inspect cells` also reads the text again for the ablations).

The model is a 2x512 char LSTM trained for one step on the standard library's source (speed does
not depend on the weights); the text is 100,000 characters of stdlib modules the corpus leaves
out. The commands run as a user runs them (a new process each, start-up included).

    python bench/inspect_speed.py            # writes bench/results/inspect.json
    python bench/inspect_speed.py --quick    # 5,000 characters, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from rnnkit.benchmark import provenance
from rnnkit.data.stdlib_corpus import stdlib_files, stdlib_text

HERE = Path(__file__).resolve().parent
GOAL_S = 30.0
SEGMENT, WARM_UP, MAX_STREAMS = 1500, 500, 64
"""How `inspect` lays a long text out (rnnkit.inspect.activations): the anchor does the same."""


def held_out_text(chars: int) -> str:
    """``chars`` characters of standard-library modules that the default corpus leaves out."""
    corpus = stdlib_text()
    pieces, total = [], 0
    for path in reversed(stdlib_files()):  # the corpus takes files from the front
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text in corpus:
            continue
        pieces.append(text)
        total += len(text)
        if total >= chars:
            break
    return "".join(pieces)[:chars]


def _rnnkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "rnnkit", *args]


def timed(command: list[str]) -> float:
    """Wall-clock seconds of one command, which must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def plain_read_seconds(vocab_size: int, chars: int, hidden: int, repeats: int) -> float:
    """Best of ``repeats``: torch.nn.LSTM (2 layers, eval, no grad) and a head over ``chars``
    tokens laid out as inspect lays them out (segments side by side, each after its warm-up)."""
    streams = max(1, min(MAX_STREAMS, chars // SEGMENT))
    steps = -(-chars // streams) + (WARM_UP if streams > 1 else 0)
    embed = nn.Embedding(vocab_size, hidden)
    lstm = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True).eval()
    head = nn.Linear(hidden, vocab_size)
    tokens = torch.randint(vocab_size, (streams, steps))  # (S, T)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            out, _ = lstm(embed(tokens))  # (S, T, H)
            head(out)  # (S, T, V)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 characters, a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    chars = 5_000 if args.quick else 100_000
    out = args.out or HERE / "results" / ("inspect.quick.json" if args.quick else "inspect.json")
    threads = str(torch.get_num_threads())
    env_threads = os.environ.setdefault("OMP_NUM_THREADS", threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder, text = Path(tmp) / "lstm2x512", Path(tmp) / "held-out.py"
        text.write_text(held_out_text(chars), encoding="utf-8")
        train = ["train", "--out", str(folder), "--cell", "lstm", "--num-layers", "2"]
        train += ["--hidden-size", "512", "--max-steps", "1", "--val-frac", "0.005"]
        subprocess.run(_rnnkit(*train), check=True, stdout=subprocess.DEVNULL)
        vocab_size = len(json.loads((folder / "vocab.json").read_text())["tokens"])
        cells_s = timed(_rnnkit("inspect", "cells", str(folder), str(text), "--json"))
        viz_s = timed(_rnnkit("viz", str(folder), str(text), "--out", f"{tmp}/page.html"))
    plain_s = plain_read_seconds(vocab_size, chars, 512, 1 if args.quick else 3)
    rows = [
        {"command": "inspect cells", "seconds": cells_s, "plain_read_s": plain_s},
        {"command": "viz", "seconds": viz_s, "plain_read_s": plain_s},
    ]
    print(f"{chars:,} characters, 2x512 LSTM, {env_threads} threads; goal < {GOAL_S:.0f} s")
    print(f"{'command':<16} {'rnnkit s':>9} {'plain read s':>13} {'ratio':>7}")
    for row in rows:
        row["ratio"] = plain_s / row["seconds"]
        row["meets_goal"] = row["seconds"] < GOAL_S
        print(f"{row['command']:<16} {row['seconds']:9.1f} {plain_s:13.2f} {row['ratio']:6.2f}x")
    report = {
        "provenance": provenance(HERE.parent),
        "quick": args.quick,
        "characters": chars,
        "goal_s": GOAL_S,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
