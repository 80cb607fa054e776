"""Training throughput of rnnkit's layers beside torch.nn and a naive per-step loop.

    python bench/layers.py [--quick] [--device cpu|cuda] [--out bench/results/layers.json]

For each cell type and (num_layers, hidden_size), measures forward + backward tokens/s of
``impl="fused" | "loop" | "auto"``, of ``torch.nn``'s module and of a naive loop (our cells
stepped with ``x[t]``, nothing hoisted): warm-up runs, then the median of several. The ratio
column compares with torch.nn's module of the same (or, for the variants, the base) cell.
A second table times ``step()`` at batch 1, as sampling uses it, beside the bare matrix
products of one step. ``--quick`` uses tiny sizes and one repeat (a smoke run for the tests).
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rnnkit import cells, layers

# name -> (our layer, base cell for torch.nn / naive, extra keywords)
CELLS = {
    "rnn": (layers.RNN, "rnn", {}),
    "gru": (layers.GRU, "gru", {}),
    "lstm": (layers.LSTM, "lstm", {}),
    "lstm_peephole": (layers.LSTM, "lstm", {"peephole": True}),
    "gru_reset_before": (layers.GRU, "gru", {"reset_after": False}),
    "gru_one_gate": (layers.GRU, "gru", {"reset_gate": False}),
}
TORCH_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
OUR_CELLS = {"rnn": cells.RNNCell, "gru": cells.GRUCell, "lstm": cells.LSTMCell}


class NaiveStack(nn.Module):
    """The textbook loop: every layer steps its cell on ``x[t]``, input product inside the loop."""

    def __init__(self, base: str, input_size: int, hidden_size: int, num_layers: int, **options):
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(OUR_CELLS[base](d, hidden_size, **options) for d in sizes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """x (T, B, D) -> (T, B, H)."""
        for cell in self.cells:
            state, outputs = None, []
            for t in range(x.shape[0]):
                state = cell(x[t], state)
                outputs.append(state[0] if isinstance(state, tuple) else state)
            x = torch.stack(outputs)  # (T, B, H)
        return x, None


def median_seconds(run: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_tokens_per_s(module: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    def forward_backward() -> None:
        module.zero_grad(set_to_none=True)
        module(x)[0].sum().backward()

    return x.shape[0] * x.shape[1] / median_seconds(forward_backward, warmup, repeats)


def modules_to_time(name: str, num_layers: int, hidden: int, device: str) -> dict[str, nn.Module]:
    layer_cls, base, options = CELLS[name]
    shape = (hidden, hidden, num_layers)
    modules = {"torch.nn": TORCH_LAYERS[base](*shape)} if not options else {}
    for impl in ("fused", "loop", "auto"):
        try:
            modules[impl] = layer_cls(*shape, **options, impl=impl)
        except ValueError:  # impl="fused" for an option torch's kernels lack
            continue
    modules["naive"] = NaiveStack(base, *shape, **options)
    return {impl: module.to(device) for impl, module in modules.items()}


def step_microseconds(num_layers: int, hidden: int, device: str, warmup: int, repeats: int):
    """µs per call at batch 1: LSTM.step(), forward on one step, and the bare matrix products."""
    lstm = layers.LSTM(hidden, hidden, num_layers).to(device).eval()
    x = torch.randn(1, hidden, device=device)
    state = lstm.step(x)[1]
    weights = [
        (getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}"))
        for k in range(num_layers)
    ]
    calls = 200

    def bare() -> None:
        for w_ih, w_hh in weights:
            torch.addmm(x @ w_ih.t(), x, w_hh.t())

    timed = {
        "step": lambda: lstm.step(x, state),
        "forward_one_step": lambda: lstm(x.unsqueeze(0), state),
        "bare_matmuls": bare,
    }
    result = {}
    with torch.no_grad():
        for label, call in timed.items():
            seconds = median_seconds(lambda c=call: [c() for _ in range(calls)], warmup, repeats)
            result[label] = 1e6 * seconds / calls
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/layers.json")
    args = parser.parse_args()
    if args.quick:
        shapes, batch, steps, warmup, repeats = [(1, 8)], 4, 6, 1, 1
    else:
        shapes, batch, steps, warmup, repeats = [(1, 128), (2, 512)], 64, 100, 1, 3

    rows = []
    print(f"{'cell':<17} {'L':>2} {'H':>4} {'impl':<9} {'tokens/s':>10} {'vs torch.nn':>11}")
    for num_layers, hidden in shapes:
        x = torch.randn(steps, batch, hidden, device=args.device)
        for name in CELLS:
            modules = modules_to_time(name, num_layers, hidden, args.device)
            chosen = modules["auto"].resolved_impl
            speeds = {
                impl: training_tokens_per_s(m, x, warmup, repeats) for impl, m in modules.items()
            }
            if "torch.nn" in speeds:
                reference = speeds["torch.nn"]
            else:  # the variants are compared with torch.nn's base cell, timed just before
                reference = next(
                    r["tokens_per_s"] for r in reversed(rows) if r["cell"] == CELLS[name][1]
                )
            for impl, speed in speeds.items():
                row = {
                    "cell": name,
                    "num_layers": num_layers,
                    "hidden_size": hidden,
                    "impl": impl,
                    "tokens_per_s": speed,
                    "ratio_to_torch_nn": speed / reference,
                    "auto_chose": chosen,
                }
                rows.append(row)
                print(
                    f"{name:<17} {num_layers:>2} {hidden:>4} {impl:<9} {speed:>10.0f} "
                    f"{speed / reference:>10.2f}x"
                )
    print("\nimpl='auto' chose:")
    for row in rows:
        if row["impl"] == "auto":
            where = f"L={row['num_layers']} H={row['hidden_size']}"
            print(f"  {row['cell']:<17} {where}: {row['auto_chose']}")

    num_layers, hidden = shapes[-1]
    sampling = step_microseconds(num_layers, hidden, args.device, warmup, repeats)
    print(f"\nLSTM({num_layers} layers, H={hidden}) at batch 1, µs per call:")
    for label, micros in sampling.items():
        print(f"  {label:<17} {micros:8.1f}")

    report = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "steps": steps,
        "quick": args.quick,
        "results": rows,
        "lstm_step_batch1_us": {"num_layers": num_layers, "hidden_size": hidden, **sampling},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
