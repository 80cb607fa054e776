"""Speed of MinGRU / MinLSTM (parallel scan) against torch.nn.GRU, forward + backward.

    python bench/scan.py            # B=16, D=H=512, T = 512 and 2048 (a few minutes on 2 cores)
    python bench/scan.py --quick    # tiny sizes, one repeat: a smoke test

For each T it times one forward + backward pass (loss = output.sum(), gradients for the input and
every parameter) of MinGRU and MinLSTM with ``impl="scan"``, MinGRU with ``impl="loop"``, and
``torch.nn.GRU`` of the same size: warm-up runs, then the median of the repeats. A second table
times the bare scan, :func:`rnnkit.scan.linear_scan`, for several chunk sizes (how
``DEFAULT_CHUNK_SIZE`` was chosen). Prints both tables and writes them to
bench/results/scan.json (``--quick``: scan.quick.json).
"""

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rnnkit.benchmark import provenance
from rnnkit.layers.minimal import MinGRU, MinLSTM
from rnnkit.scan import DEFAULT_CHUNK_SIZE, linear_scan

RESULTS = Path(__file__).parent / "results"
FULL = {"batch": 16, "hidden": 512, "steps": [512, 2048], "chunks": [8, 16, 32, 64, 128, 256]}
QUICK = {"batch": 2, "hidden": 8, "steps": [16, 40], "chunks": [4, 8]}


def median_ms(run: Callable[[], None], warmup: int, repeats: int) -> float:
    """Median wall time of ``run()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def layer_step(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of ``layer`` on x (B, T, D), gradients for x and all parameters."""

    def run() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        output, _ = layer(x)  # (B, T, H)
        output.sum().backward()

    return run


def scan_step(a: torch.Tensor, b: torch.Tensor, **scan_args: object) -> Callable[[], None]:
    """One forward + backward of the bare scan over a, b (B, T, H)."""

    def run() -> None:
        a.grad = b.grad = None
        linear_scan(a, b, **scan_args).sum().backward()

    return run


def bench_layers(batch: int, hidden: int, steps: int, warmup: int, repeats: int) -> list[dict]:
    """Rows of the layer table for one T, each with its speed-up over torch.nn.GRU."""
    size = hidden  # D = H
    x = torch.randn(batch, steps, size, requires_grad=True)  # (B, T, D)
    layers = {
        "torch.nn.GRU": nn.GRU(size, hidden, batch_first=True),
        "MinGRU scan": MinGRU(size, hidden, batch_first=True, impl="scan"),
        "MinLSTM scan": MinLSTM(size, hidden, batch_first=True, impl="scan"),
        "MinGRU loop": MinGRU(size, hidden, batch_first=True, impl="loop"),
    }
    rows = []
    for name, layer in layers.items():
        ms = median_ms(layer_step(layer, x), warmup, repeats)
        rows.append({"T": steps, "layer": name, "ms": ms, "tokens_per_s": batch * steps / ms * 1e3})
    baseline = rows[0]["ms"]
    for row in rows:
        row["speedup_vs_nn_gru"] = baseline / row["ms"]
    return rows


def bench_chunks(
    batch: int, hidden: int, steps: int, chunks: list[int], warmup: int, repeats: int
) -> list[dict]:
    """Rows of the chunk-size table for one T: the bare scan, forward + backward."""
    a = torch.rand(batch, steps, hidden, requires_grad=True)  # (B, T, H)
    b = torch.randn(batch, steps, hidden, requires_grad=True)  # (B, T, H)
    settings = [("loop", {"impl": "loop"})]
    settings += [(f"scan C={c}", {"impl": "scan", "chunk_size": c}) for c in chunks]
    return [
        {"T": steps, "scan": name, "ms": median_ms(scan_step(a, b, **args), warmup, repeats)}
        for name, args in settings
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    warmup, repeats = 1, 1 if args.quick else args.repeats
    torch.manual_seed(0)

    layer_rows, chunk_rows = [], []
    for steps in sizes["steps"]:
        layer_rows += bench_layers(sizes["batch"], sizes["hidden"], steps, warmup, repeats)
        chunk_rows += bench_chunks(
            sizes["batch"], sizes["hidden"], steps, sizes["chunks"], warmup, repeats
        )

    print(
        f"forward + backward, B={sizes['batch']}, D=H={sizes['hidden']}, "
        f"{torch.get_num_threads()} threads, median of {repeats}"
    )
    print(f"{'T':>6}  {'layer':<14}{'ms':>10}{'tokens/s':>12}{'vs nn.GRU':>11}")
    for row in layer_rows:
        print(
            f"{row['T']:>6}  {row['layer']:<14}{row['ms']:>10.1f}{row['tokens_per_s']:>12,.0f}"
            f"{row['speedup_vs_nn_gru']:>10.2f}x"
        )
    print(f"\nbare linear_scan, forward + backward (DEFAULT_CHUNK_SIZE = {DEFAULT_CHUNK_SIZE})")
    print(f"{'T':>6}  {'scan':<14}{'ms':>10}")
    for row in chunk_rows:
        print(f"{row['T']:>6}  {row['scan']:<14}{row['ms']:>10.1f}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("scan.quick.json" if args.quick else "scan.json")
    report = {
        "benchmark": "scan",
        "quick": args.quick,
        "provenance": provenance(Path(__file__).resolve().parents[1]),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        },
        "batch": sizes["batch"],
        "input_size": sizes["hidden"],
        "hidden_size": sizes["hidden"],
        "warmup": warmup,
        "repeats": repeats,
        "default_chunk_size": DEFAULT_CHUNK_SIZE,
        "layers": layer_rows,
        "chunk_sizes": chunk_rows,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
