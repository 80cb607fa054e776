"""The rows of issue 16's table on one NVIDIA GPU, in one run: `python bench/gpu.py [--quick]`.

Prepared for a session that is lent a GPU: it measures everything the issue's table asks for in
one call of well under 8 minutes (rows still waiting when ``BUDGET_S`` has passed are skipped and
named in the JSON) and writes bench/results/gpu.json. Without CUDA it says so and exits with 0,
having measured and written nothing (``make bench`` runs it everywhere).

Sections, each a list of rows in the JSON and a table on stdout:

  layers      training tokens/s (forward + backward of the outputs' sum + fused AdamW step, the
              input requiring its gradient as an embedding's output does) at (L, H, B, T) =
              (2, 512, 64, 100) and (2, 1024, 256, 100), fp32 and bf16 autocast: torch.nn's LSTM
              and GRU (cuDNN), rnnkit's LSTM and GRU with impl="auto" (cuDNN behind our
              interface), and the loop path: impl="loop" LSTM and GRU, peephole LSTM, GRU with
              reset_after=False and with reset_gate=False; the loop LSTMs each with Triton's
              step kernels (rnnkit.layers.lstm_triton) where Triton is installed, and with
              torch's ops. Each ratio is to torch.nn's cell of the
              same kind, size and precision (the issue's goal: >= 0.8 for the loop path). Each
              row also counts cuDNN's "not part of single contiguous chunk of memory" warnings
              (0 expected since the flat weights, rnnkit.layers.flat_weights).
  minimal     MinGRU and MinLSTM (impl="auto", the scan) against nn.GRU at B=16, H=512,
              T=512 and 2048, one layer, training as above (the goal: >= 10x at T=2048); each
              with Triton's kernels (rnnkit.scan_triton) where Triton is installed, and with
              the chunked scan of rnnkit.scan ("kernels": "triton" or "torch").
  sampling    characters/s at batch 1 of a char LM (V=65, E=64, LSTM 2x512, random weights):
              torch.nn.LSTM stepped on one-step sequences with a softmax and a multinomial draw
              (the bare cuDNN step loop), and rnnkit's LanguageModel through
              ``rnnkit.sampling.generate_tokens``, with its plain ``step()`` and inside
              ``packed_step("fp32")`` as ``LanguageModel.generate`` runs it.
  lm_training ms per training step of rnnkit's LanguageModel (cross-entropy on random tokens,
              AdamW) at the CPU preset (ModelConfig's defaults, B=32, T=100) and at the GPU
              preset (config.GPU_LM_PRESET), bf16 where the GPU has it: what the timed preset
              runs of the issue's item 4 will start from.

Every figure is the median of timed repeats after warm-up steps, with ``cuda.synchronize()``
before each clock reading. ``--quick`` runs tiny sizes and few repeats (a smoke run);
``--device cpu`` (only with ``--quick``) runs that smoke run on the CPU, for the tests. The JSON
records the GPU, the machine, the git commit and the date (``rnnkit.benchmark.provenance``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import layers, scan
from rnnkit.benchmark import provenance
from rnnkit.config import GPU_LM_PRESET, ModelConfig, TrainConfig
from rnnkit.layers import bptt
from rnnkit.sampling import generate_tokens
from rnnkit.tasks.lm import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 420.0  # rows not started after this many seconds are skipped: the run ends < 8 minutes
COMPACTION = "not part of single contiguous chunk"

CUDNN = {"lstm": nn.LSTM, "gru": nn.GRU}
# (row name, torch.nn cell it is compared with, rnnkit layer, keywords)
RNNKIT_LAYERS = [
    ("LSTM auto", "lstm", layers.LSTM, {}),
    ("GRU auto", "gru", layers.GRU, {}),
    ("LSTM loop", "lstm", layers.LSTM, {"impl": "loop"}),
    ("LSTM peephole", "lstm", layers.LSTM, {"peephole": True}),
    ("GRU loop", "gru", layers.GRU, {"impl": "loop"}),
    ("GRU reset_after=False", "gru", layers.GRU, {"reset_after": False}),
    ("GRU reset_gate=False", "gru", layers.GRU, {"reset_gate": False}),
]
TRITON_LAYERS = ("LSTM loop", "LSTM peephole")  # the rows whose steps Triton's kernels can run
MINIMAL = {"MinGRU": layers.MinGRU, "MinLSTM": layers.MinLSTM}
VOCAB, EMBEDDING = 65, 64  # the sampling model's, as bench/sampling.py's


class Run:
    """The sizes of a full or quick run, its device, its clock and the rows skipped so far."""

    def __init__(self, quick: bool, device: str) -> None:
        self.quick = quick
        self.device = torch.device(device)
        self.start = time.monotonic()
        self.skipped: list[dict[str, Any]] = []
        if quick:
            self.layer_sizes = [(1, 16, 4, 8)]  # (L, H, B, T)
            self.minimal_sizes = [(4, 16, 32)]  # (B, H, T)
            self.sampling_model, self.sampling_length = (1, 16), 8  # (L, H), chars per call
            self.lm_model_scale = 16  # every size of the two presets divided by this
            self.warmup, self.repeats, self.min_seconds = 1, 2, 0.0
        else:
            self.layer_sizes = [(2, 512, 64, 100), (2, 1024, 256, 100)]
            self.minimal_sizes = [(16, 512, 512), (16, 512, 2048)]
            self.sampling_model, self.sampling_length = (2, 512), 200
            self.lm_model_scale = 1
            self.warmup, self.repeats, self.min_seconds = 3, 30, 1.0

    @property
    def precisions(self) -> list[str]:
        cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        return ["fp32", "bf16"] if cuda_bf16 or self.device.type == "cpu" else ["fp32"]

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def out_of_time(self, row: dict[str, Any]) -> bool:
        """Whether the budget is spent; if so ``row`` is recorded as skipped."""
        if self.elapsed() < BUDGET_S:
            return False
        self.skipped.append(row | {"error": f"not started: {BUDGET_S:.0f} s budget spent"})
        return True

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, step: Callable[[], object]) -> float:
        """Median seconds of ``step`` after warm-up: at least 5 repeats (quick: as set), then
        more until ``min_seconds`` have passed or ``repeats`` are done."""
        for _ in range(self.warmup):
            step()
        self.synchronize()
        times: list[float] = []
        least = min(5, self.repeats)
        while len(times) < least or (len(times) < self.repeats and sum(times) < self.min_seconds):
            start = time.perf_counter()
            step()
            self.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def measure(
        self, row: dict[str, Any], step: Callable[[], Callable[[], object]]
    ) -> float | None:
        """Seconds per call of the step that ``step()`` builds, or None (recorded as skipped
        with its error) where building or running it raises, e.g. a CPU without bf16 LSTM."""
        try:
            return self.seconds(step())
        except (RuntimeError, ValueError) as error:
            self.skipped.append(row | {"error": str(error).splitlines()[0][:200]})
            return None


def autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def adamw(module: nn.Module) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel; a tiny rate keeps the work of every step the same."""
    return torch.optim.AdamW(module.parameters(), lr=1e-6, fused=True)


def layer_training_step(module: nn.Module, x: Tensor, precision: str) -> Callable[[], None]:
    """One training step of a recurrent layer: x (T, B, D) -> forward, backward, AdamW."""
    optimizer = adamw(module)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        with autocast(x.device, precision):
            out = module(x)[0]  # (T, B, H)
        out.float().sum().backward()
        optimizer.step()

    return step


def timed_layer(run: Run, row: dict[str, Any], make: Callable[[], nn.Module], x: Tensor):
    """(tokens/s or None, compaction warnings, impl chosen) of one layer's training step."""
    tokens = x.shape[0] * x.shape[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = make().to(run.device)
        seconds = run.measure(row, lambda: layer_training_step(module, x, row["precision"]))
    compactions = sum(COMPACTION in str(w.message) for w in caught)
    chosen = getattr(module, "resolved_impl", None)  # grad enabled, on the device: training's
    return (None if seconds is None else tokens / seconds), compactions, chosen


def bench_layers(run: Run) -> list[dict[str, Any]]:
    rows = []
    for num_layers, hidden, batch, steps in run.layer_sizes:
        size = {"num_layers": num_layers, "hidden_size": hidden, "batch": batch, "steps": steps}
        for precision in run.precisions:
            x = torch.randn(steps, batch, hidden, device=run.device, requires_grad=True)
            reference = {}
            for cell, cls in CUDNN.items():
                row = {"layer": f"torch.nn.{cls.__name__}", "precision": precision} | size
                if run.out_of_time(row):
                    continue
                speed, compactions, _ = timed_layer(
                    run, row, partial(cls, hidden, hidden, num_layers), x
                )
                if speed is not None:
                    reference[cell] = speed
                    rows.append(row | {"tokens_per_s": speed, "compaction_warnings": compactions})
            for (name, cell, cls, keywords), kernels in itertools.product(
                RNNKIT_LAYERS, kernel_choices(run)
            ):
                if kernels == "triton" and name not in TRITON_LAYERS:
                    continue
                row = {"layer": f"rnnkit {name}", "kernels": kernels, "precision": precision}
                row |= size
                if run.out_of_time(row):
                    continue
                with kernels_set(kernels):
                    speed, compactions, chosen = timed_layer(
                        run, row, partial(cls, hidden, hidden, num_layers, **keywords), x
                    )
                if speed is None:
                    continue
                ratio = speed / reference[cell] if cell in reference else None
                rows.append(
                    row
                    | {"tokens_per_s": speed, "ratio_to_torch_nn": ratio}
                    | {"compared_with": f"torch.nn.{CUDNN[cell].__name__}", "impl_ran": chosen}
                    | {"compaction_warnings": compactions}
                )
    return rows


def bench_minimal(run: Run) -> list[dict[str, Any]]:
    rows = []
    for batch, hidden, steps in run.minimal_sizes:
        size = {"num_layers": 1, "hidden_size": hidden, "batch": batch, "steps": steps}
        for precision in run.precisions:
            x = torch.randn(steps, batch, hidden, device=run.device, requires_grad=True)
            row = {"layer": "torch.nn.GRU", "precision": precision} | size
            if run.out_of_time(row):
                continue
            reference, _, _ = timed_layer(run, row, partial(nn.GRU, hidden, hidden), x)
            if reference is not None:
                rows.append(row | {"tokens_per_s": reference})
            for (name, cls), kernels in itertools.product(MINIMAL.items(), kernel_choices(run)):
                row = {"layer": f"rnnkit {name}", "kernels": kernels, "precision": precision}
                row |= size
                if run.out_of_time(row):
                    continue
                with kernels_set(kernels):
                    speed, _, _ = timed_layer(run, row, partial(cls, hidden, hidden), x)
                if speed is not None:
                    ratio = None if reference is None else speed / reference
                    rows.append(row | {"tokens_per_s": speed, "ratio_to_torch_nn_gru": ratio})
    return rows


def kernel_choices(run: Run) -> list[str]:
    """What the loop LSTM's steps and the MinGRU / MinLSTM scans can run here: "triton"
    (rnnkit.layers.lstm_triton, rnnkit.scan_triton) on CUDA where Triton is installed, and
    always "torch" (torch's ops; the chunked scan of rnnkit.scan)."""
    probe = torch.empty(1, device=run.device)
    return ["triton", "torch"] if scan._triton_kernels(probe) is not None else ["torch"]


@contextlib.contextmanager
def kernels_set(kernels: str) -> Iterator[None]:
    """Within the block rnnkit runs ``kernels``: "torch" hides Triton's from it."""
    if kernels == "triton":
        yield
        return
    choosers = scan._triton_kernels, bptt._fused_lstm_step
    scan._triton_kernels = bptt._fused_lstm_step = lambda x: None
    try:
        yield
    finally:
        scan._triton_kernels, bptt._fused_lstm_step = choosers


class TorchLM(nn.Module):
    """Embedding -> torch.nn.LSTM -> head, stepped on one-step sequences (cuDNN's step loop)."""

    def __init__(self, num_layers: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBEDDING)
        self.rnn = nn.LSTM(EMBEDDING, hidden, num_layers, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    @torch.no_grad()
    def sample(self, length: int, generator: torch.Generator) -> Tensor:
        """``length`` tokens drawn one at a time from token 0, at batch 1: (length,)."""
        token, state, drawn = (
            torch.zeros(1, 1, dtype=torch.long, device=self.head.weight.device),
            None,
            [],
        )
        for _ in range(length):
            out, state = self.rnn(self.embedding(token), state)  # (1, 1, H)
            probs = self.head(out[:, 0]).softmax(-1)  # (1, V)
            token = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
            drawn.append(token)
        return torch.cat(drawn).flatten()  # (length,)


def bench_sampling(run: Run) -> list[dict[str, Any]]:
    num_layers, hidden = run.sampling_model
    length = run.sampling_length
    size = {"num_layers": num_layers, "hidden_size": hidden, "embedding": EMBEDDING, "vocab": VOCAB}
    reference = TorchLM(num_layers, hidden).to(run.device).eval()
    config = ModelConfig(num_layers=num_layers, hidden_size=hidden, embedding_size=EMBEDDING)
    model = LanguageModel(config, VOCAB).to(run.device).eval()
    generator = torch.Generator(device=run.device).manual_seed(0)

    def rnnkit_sample(packed: bool) -> Callable[[], None]:
        def sample() -> None:
            tokens = generate_tokens(model, [0], length, generator=generator)
            if packed:
                with model.rnn.packed_step("fp32"):
                    torch.stack(list(tokens))
            else:
                torch.stack(list(tokens))

        return sample

    cases = {
        "torch.nn.LSTM step loop": lambda: lambda: reference.sample(length, generator),
        "rnnkit LanguageModel step": lambda: rnnkit_sample(packed=False),
        "rnnkit LanguageModel packed_step fp32": lambda: rnnkit_sample(packed=True),
    }
    rows, base = [], None
    for name, make in cases.items():
        row = {"model": name} | size
        if run.out_of_time(row):
            continue
        seconds = run.measure(row, make)
        if seconds is None:
            continue
        speed = length / seconds
        base = speed if base is None else base
        rows.append(row | {"chars_per_s": speed, "ratio_to_torch_nn": speed / base})
    return rows


def bench_lm_training(run: Run) -> list[dict[str, Any]]:
    precision = "bf16" if "bf16" in run.precisions and run.device.type == "cuda" else "fp32"
    scale = run.lm_model_scale
    presets = {
        "cpu": ({}, {}),
        "gpu": (GPU_LM_PRESET["model"], GPU_LM_PRESET["train"]),
    }
    rows = []
    for name, (model_values, train_values) in presets.items():
        config = ModelConfig(**model_values)
        train = TrainConfig(**train_values)
        hidden, embedding = config.hidden_size // scale, config.embedding_size // scale
        batch, steps = train.batch_size // scale or 1, train.seq_len // scale or 1
        row = {"preset": name, "precision": precision, "hidden_size": hidden}
        row |= {"num_layers": config.num_layers, "batch": batch, "steps": steps}
        if run.out_of_time(row):
            continue
        small = ModelConfig(**(model_values | {"hidden_size": hidden, "embedding_size": embedding}))
        model = LanguageModel(small, VOCAB).to(run.device).train()
        tokens = torch.randint(VOCAB, (batch, steps + 1), device=run.device)  # (B, T + 1)
        optimizer = adamw(model)

        def step(model: LanguageModel = model, optimizer=optimizer, tokens=tokens) -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(run.device, precision):
                logits, _ = model(tokens[:, :-1])  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
            loss.backward()
            optimizer.step()

        seconds = run.measure(row, lambda s=step: s)
        if seconds is not None:
            rows.append(
                row | {"ms_per_step": 1e3 * seconds, "tokens_per_s": batch * steps / seconds}
            )
    return rows


def _print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain table: the first column 38 wide (the row's name), the others 12."""
    widths = [38] + [12] * (len(columns) - 1)
    print(f"\n{title}")
    print(" ".join(f"{c[:w]:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = []
        for column, width in zip(columns, widths, strict=True):
            value = row.get(column)
            text = f"{value:.3g}" if isinstance(value, float) else ("-" if value is None else value)
            cells.append(f"{str(text)[:width]:>{width}}")
        print(" ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke run)")
    parser.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu: only with --quick (tests)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.device == "cpu" and not args.quick:
        parser.error("--device cpu is the smoke run of the tests: it needs --quick")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); it measures "
            "on an NVIDIA GPU only. Nothing was measured or written.",
            file=sys.stderr,
        )
        return 0
    run = Run(args.quick, args.device)
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # cuDNN's RNN picks its own algorithm
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu",
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if run.device.type == "cuda" else None,
        "provenance": provenance(ROOT),
        "quick": args.quick,
        "budget_s": BUDGET_S,
        "kernel_choices": kernel_choices(run),
    }
    for section, bench in (
        ("layers", bench_layers),
        ("minimal", bench_minimal),
        ("sampling", bench_sampling),
        ("lm_training", bench_lm_training),
    ):
        report[section] = bench(run)
        print(f"# {section} done at {run.elapsed():.0f} s", flush=True)
    report["skipped"] = run.skipped
    report["wall_s"] = run.elapsed()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    size = ["layer", "precision", "hidden_size", "batch"]
    _print_table(
        "layers: training tokens/s",
        report["layers"],
        [*size, "kernels", "tokens_per_s", "ratio_to_torch_nn", "compaction_warnings"],
    )
    _print_table(
        "minimal: training tokens/s",
        report["minimal"],
        [*size, "steps", "kernels", "tokens_per_s", "ratio_to_torch_nn_gru"],
    )
    _print_table(
        "sampling at batch 1", report["sampling"], ["model", "chars_per_s", "ratio_to_torch_nn"]
    )
    _print_table(
        "LM training step",
        report["lm_training"],
        ["preset", "precision", "ms_per_step", "tokens_per_s"],
    )
    for row in run.skipped:
        print(f"skipped: {row}")
    print(f"\nwrote {args.out} after {run.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
