"""Training throughput of rnnkit's layers beside torch.nn and a naive per-step loop, fp32 and bf16.

    python bench/layers.py [--quick] [--device cpu|cuda] [--out bench/results/layers.json]

For each cell type and (num_layers, hidden_size), measures training tokens/s of
``torch.nn``'s module, ``impl="fused"`` (PyTorch's kernels), ``impl="loop"`` (the whole-sequence
Functions with hand-written BPTT of ``rnnkit.layers.bptt``) and a naive loop (our cells stepped
with ``x[t]``, nothing hoisted), in float32; then torch.nn, fused and loop again under
``torch.autocast(dtype=torch.bfloat16)``. Every ratio is to float32 torch.nn of the same size in
the same run (for the variants torch lacks, torch.nn's module of the base cell, timed in the same
round). Every module compared starts from one state dict: torch.nn's (for the variants, the
loop's, of which torch.nn's base cell takes the tensors its names and shapes share), and the
input requires its gradient (as an embedding's output does), so that every backward computes
the input's gradient too. The modules of one cell are timed in turn, round after round (7
rounds, each starting one module later, so that every module runs once in every position), and
each figure is the median of its rounds, so a burst of load from elsewhere touches all of them
alike. A row whose module raises here (torch's oneDNN LSTM under bf16 autocast on a CPU without
AVX-512) is reported as skipped, with the error. A second table times ``step()`` at batch 1, as
sampling uses it, beside the matrix products of one step alone. ``--quick`` uses tiny sizes and
one round (a smoke run for the tests). The JSON records the machine, the git commit and the date
(``rnnkit.benchmark.provenance``).

One timed training step is the same for every row, torch.nn's included: ``zero_grad(set_to_none=
True)``, the forward pass (under autocast for bf16), ``backward()`` of the outputs' sum, and
``AdamW.step()`` over the module's parameters (fp32 weights, outside autocast; a tiny learning
rate, as AdamW's cost does not depend on it), then ``cuda.synchronize()`` on a GPU.
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
from rnnkit.benchmark import provenance
from rnnkit.training.control import pick_precision

ROOT = Path(__file__).resolve().parents[1]

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
# (row label, precision) in table order; "torch.nn" of the base cell is always timed.
ROWS = [
    ("torch.nn", "fp32"),
    ("fused", "fp32"),
    ("loop", "fp32"),
    ("naive", "fp32"),
    ("torch.nn", "bf16"),
    ("fused", "bf16"),
    ("loop", "bf16"),
]


class NaiveStack(nn.Module):
    """The textbook loop: every layer steps its cell on ``x[t]``, input product inside the loop."""

    def __init__(self, base: str, input_size: int, hidden_size: int, num_layers: int, **options):
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(OUR_CELLS[base](d, hidden_size, **options) for d in sizes)

    def load_layer_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take a layer's ``{name}_l{layer}`` tensors as ``cells.{layer}.{name}``."""
        renamed = {}
        for key, value in state.items():
            name, layer = key.rsplit("_l", 1)
            renamed[f"cells.{layer}.{name}"] = value
        self.load_state_dict(renamed)

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


# AdamW's cost does not depend on its learning rate; one this small keeps the weights, and so the
# work of each timed step, nearly the same over the whole run.
OPTIMIZER_LR = 1e-6


def training_step(module: nn.Module, x: torch.Tensor, precision: str) -> Callable[[], float]:
    """A closure that runs one training step and returns its seconds.

    The step is forward + backward + ``AdamW.step()`` over ``module.parameters()``; each
    closure has its own optimizer, built here, so that every row pays the same.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=OPTIMIZER_LR)

    def run() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"):
            out = module(x)[0]  # (T, B, H)
        out.float().sum().backward()
        optimizer.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def runs_here(module: nn.Module, x: torch.Tensor, precision: str) -> bool:
    """Whether the module's forward runs at this precision on this machine: torch.nn.LSTM
    under CPU bf16 autocast raises on CPUs without AVX-512 (oneDNN has no bf16 LSTM there);
    such rows are left out of the table, with a note."""
    try:
        with (
            torch.no_grad(),
            torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"),
        ):
            module(x[:1])
    except (RuntimeError, ValueError) as err:
        print(f"# {type(module).__name__} {precision}: left out, it fails here: {str(err)[:70]}")
        return False
    return True


def interleaved_tokens_per_s(
    runs: dict[tuple[str, str], Callable[[], float]], tokens: int, warmup: int, repeats: int
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], str]]:
    """Tokens/s of each run: warm-ups, then ``repeats`` rounds timing every run once; medians.
    Also the runs whose warm-up raised a RuntimeError, with its first line; they are not timed.

    Each round starts one run later than the one before, so no run always follows the same
    one: what a run leaves behind (glibc's heap, trimmed or not; the caches) moves the next
    run's time by up to 30% on a 2-core VM.
    """
    failed = {}
    for key, run in runs.items():
        try:
            for _ in range(max(warmup, 1)):
                run()
        except RuntimeError as error:
            failed[key] = str(error).splitlines()[0]
    runs = {key: run for key, run in runs.items() if key not in failed}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    keys = list(runs)
    for round_ in range(repeats):
        start = round_ % len(keys)
        for key in keys[start:] + keys[:start]:
            times[key].append(runs[key]())
    return {key: tokens / statistics.median(seconds) for key, seconds in times.items()}, failed


def modules_to_time(name: str, num_layers: int, hidden: int, device: str) -> dict[str, nn.Module]:
    """torch.nn's base layer, our fused (where it exists) and loop layers, and the naive loop,
    all with the weights of one state dict (:func:`share_weights`)."""
    layer_cls, base, options = CELLS[name]
    shape = (hidden, hidden, num_layers)
    modules = {"torch.nn": TORCH_LAYERS[base](*shape)}
    for impl in ("fused", "loop"):
        try:
            modules[impl] = layer_cls(*shape, **options, impl=impl)
        except ValueError:  # impl="fused" for an option torch's kernels lack
            continue
    modules["naive"] = NaiveStack(base, *shape, **options)
    share_weights(modules, source="loop" if options else "torch.nn")
    return {label: module.to(device) for label, module in modules.items()}


def share_weights(modules: dict[str, nn.Module], source: str) -> None:
    """Load ``modules[source]``'s state dict into every module: each takes the tensors whose
    names and shapes it has (all of them, but for torch.nn's base cell beside a variant)."""
    state = modules[source].state_dict()
    for module in modules.values():
        if isinstance(module, NaiveStack):
            module.load_layer_state(state)
            continue
        own = module.state_dict()
        shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        module.load_state_dict(shared, strict=False)


def step_microseconds(num_layers: int, hidden: int, device: str, warmup: int, repeats: int):
    """µs per call at batch 1: LSTM.step(), forward on one step, and its matrix products alone
    (per layer ``W_ih x`` and ``W_hh h``, fp32 addmm)."""
    lstm = layers.LSTM(hidden, hidden, num_layers).to(device).eval()
    x = torch.randn(1, hidden, device=device)
    state = lstm.step(x)[1]
    weights = [
        (getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}"))
        for k in range(num_layers)
    ]
    calls = 200

    def products_alone() -> None:
        for w_ih, w_hh in weights:
            torch.addmm(x @ w_ih.t(), x, w_hh.t())

    timed = {
        "step": lambda: lstm.step(x, state),
        "forward_one_step": lambda: lstm(x.unsqueeze(0), state),
        "products_alone": products_alone,
    }
    result = {}
    with torch.no_grad():
        for label, call in timed.items():
            seconds = median_seconds(lambda c=call: [c() for _ in range(calls)], warmup, repeats)
            result[label] = 1e6 * seconds / calls
    return result


def layers_auto_choice(name: str, num_layers: int, hidden: int) -> str:
    """What ``impl="auto"`` runs for this cell and size: "fused" or "loop"."""
    layer_cls, _, options = CELLS[name]
    return layer_cls(hidden, hidden, num_layers, **options).resolved_impl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/layers.json")
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="bf16 rows: auto times them where the device computes bf16 natively",
    )
    args = parser.parse_args()
    native_bf16 = pick_precision("auto", torch.device(args.device)) == "bf16"
    with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and (native_bf16 or args.quick))
    if not with_bf16:
        print("# bf16 rows left out: this device has no native bf16 (AVX512-BF16/AMX or CUDA),")
        print("# where autocast emulates it at a few percent of fp32's speed (--bf16 on times it)")
    if args.quick:
        shapes, batch, steps, warmup, repeats = [(1, 8)], 4, 6, 1, 1
    else:
        shapes, batch, steps, warmup, repeats = [(1, 128), (2, 512)], 64, 100, 1, 7

    rows, skipped = [], []
    header = f"{'cell':<17} {'L':>2} {'H':>4} {'impl':<9} {'precision':<9} {'tokens/s':>10}"
    print(f"{header} {'vs torch.nn fp32':>16}")
    for num_layers, hidden in shapes:
        x = torch.randn(steps, batch, hidden, device=args.device).requires_grad_()  # (T, B, D)
        for name in CELLS:
            modules = modules_to_time(name, num_layers, hidden, args.device)
            chosen = layers_auto_choice(name, num_layers, hidden)
            runs = {
                (label, precision): training_step(modules[label], x, precision)
                for label, precision in ROWS
                if label in modules
                and (with_bf16 or precision == "fp32")
                and (label != "naive" or precision == "fp32")
                and runs_here(modules[label], x, precision)
            }
            speeds, failed = interleaved_tokens_per_s(runs, steps * batch, warmup, repeats)
            for (label, precision), reason in failed.items():
                if label == "torch.nn" and CELLS[name][2]:  # the variants' reference row
                    continue
                skipped.append(
                    {"cell": name, "num_layers": num_layers, "hidden_size": hidden}
                    | {"impl": label, "precision": precision, "error": reason}
                )
                print(
                    f"{name:<17} {num_layers:>2} {hidden:>4} {label:<9} {precision:<9} "
                    f"skipped: {reason}",
                    flush=True,
                )
            reference = speeds["torch.nn", "fp32"]
            for (label, precision), speed in speeds.items():
                if label == "torch.nn" and CELLS[name][2]:  # the variants' reference row
                    continue
                row = {
                    "cell": name if label != "torch.nn" else CELLS[name][1],
                    "num_layers": num_layers,
                    "hidden_size": hidden,
                    "impl": label,
                    "precision": precision,
                    "tokens_per_s": speed,
                    "ratio_to_torch_nn_fp32": speed / reference,
                    "auto_chose": chosen,
                }
                rows.append(row)
                print(
                    f"{row['cell']:<17} {num_layers:>2} {hidden:>4} {label:<9} {precision:<9} "
                    f"{speed:>10.0f} {speed / reference:>15.2f}x",
                    flush=True,
                )
    print("\nimpl='auto' chose:")
    for row in rows:
        if row["impl"] == "loop" and row["precision"] == "fp32":
            where = f"L={row['num_layers']} H={row['hidden_size']}"
            print(f"  {row['cell']:<17} {where}: {row['auto_chose']}")

    num_layers, hidden = shapes[-1]
    sampling = step_microseconds(num_layers, hidden, args.device, warmup, repeats)
    print(f"\nLSTM({num_layers} layers, H={hidden}) at batch 1, µs per call:")
    for label, micros in sampling.items():
        print(f"  {label:<17} {micros:8.1f}")

    report = {
        "device": args.device,
        "provenance": provenance(ROOT),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "steps": steps,
        "quick": args.quick,
        "bf16_rows": with_bf16,
        "results": rows,
        "skipped": skipped,
        "lstm_step_batch1_us": {"num_layers": num_layers, "hidden_size": hidden, **sampling},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
