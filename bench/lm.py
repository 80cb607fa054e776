"""Language modelling end to end: `python bench/lm.py [--quick] [--quality MIN ...] [--bf16-check]`.

(a) Training speed: tokens/s of ``rnnkit.training.train`` (the loop behind ``rnnkit train``:
    TBPTT streams, schedule, clipping, logging, metrics.jsonl, checkpoints) beside a bare
    PyTorch loop training the same model (same layer, same batch, same optimizer, same
    clipping, no logging, no checkpoints) in the same process; the difference is the
    overhead of the loop, in %.
(b) Sampling speed: bench/sampling.py's ``run()`` (batch-1 characters/s), when that file is
    there.
(c) Quality (``--quality MIN [MIN ...]``, run alone): for each corpus of ``--corpora`` in
    ../shared/data (relative to the repository root; ``tinyshakespeare``, ``warpeace``; one that
    is absent is skipped with the reason), or built from this Python's own sources (``stdlib``,
    the 2M characters of ``make demo``; ``pysources``, 20M characters of the standard library's
    whole tree, a corpus no budget here reads twice) and each budget in minutes, the best
    validation loss (nats/char) of ``rnnkit train`` with its defaults (the budget-adaptive preset of
    rnnkit/training/budget.py included, its row reported) beside the plain PyTorch script of
    bench/plain_lm.py in the same run, both on the same tokens (universal newlines, LF) and the
    same split (the last 10% held out), with their steps, training tokens/s and validation
    curves; ``--val-tokens N`` validates both on the first N held-out tokens only (nanoGPT's
    eval_iters, for a corpus whose validation text takes minutes to read). Both evaluate about
    every ``--eval-seconds`` (rnnkit every that many seconds' steps
    at the probe's measured speed, unless ``--eval-every`` is given). Written to
    bench/results/lm_quality.json (``--out`` elsewhere). ``--quick``: the first 40,000
    characters of each corpus and small models on both sides, a smoke run of seconds.
(d) bf16 against fp32 at the same number of steps (opt-in: ``--bf16-check [STEPS]``, default
    300 steps, about 10 minutes on 2 idle CPU cores): ``rnnkit.training.train`` trains the same
    char-level LM (2-layer LSTM, H=512, B=64, T=100; the default preset otherwise) on Tiny
    Shakespeare twice from the same seed, with ``precision="fp32"`` and ``precision="bf16"``,
    for STEPS steps each, evaluating only after the last. Reported: both validation losses
    and their relative difference (the goal for ``--precision bf16``: within 1%), both
    training tokens/s (forward + backward + clipping + AdamW step, from metrics.jsonl, the
    first log interval left out), the bf16/fp32 ratio, and the ratio of bf16 rnnkit to the
    same model with its recurrent layer swapped for a plain fp32 ``torch.nn.LSTM`` (same
    weights), trained for up to 20 steps by the bare loop of (a) (the goal: at least 3x). Skipped
    with a message when the file is absent. With ``--quick``: H=128, B=16, T=32.

Results of (a), (b), (d) are printed and written to bench/results/lm.json (lm.quick.json with
--quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rnnkit.benchmark import provenance
from rnnkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnkit.data.stdlib_corpus import join_sources, stdlib_text
from rnnkit.data.text import TokenStreams, load_lm_data, read_text
from rnnkit.tasks.lm import LanguageModel, lm_loss
from rnnkit.training import budget, train
from rnnkit.training.loop import pick_precision
from rnnkit.training.optim import make_optimizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
CORPORA = {"tinyshakespeare": "tinyshakespeare/input.txt", "warpeace": "warpeace/input.txt"}
GENERATED = {
    "stdlib": "the stdlib corpus of `make demo` (rnnkit.data.stdlib_corpus), 2M characters",
    "pysources": f"every .py file of the standard library's tree (packages and tests, not "
    f"site-packages), sorted by path, whole files up to {20_000_000:,} characters",
}
"""Corpora (c) builds from this Python's own sources, beside the files of ../shared/data."""
PYSOURCES_CHARS = 20_000_000
QUICK_CHARS = 40_000  # --quality --quick: the first characters of each corpus


def _speed_config(quick: bool, data: str | None, steps: int, out: str) -> RunConfig:
    """The default preset (or a small model with --quick) for ``steps`` steps, no evaluation."""
    model = ModelConfig(hidden_size=128, embedding_size=32) if quick else ModelConfig()
    train_cfg = TrainConfig(
        batch_size=16 if quick else TrainConfig.batch_size,
        seq_len=32 if quick else TrainConfig.seq_len,
        max_steps=steps,
        eval_every=10**9,  # only the final evaluation, after the last timed step
        log_every=max(1, steps // 4),
        device="auto",
    )
    return RunConfig(out=out, model=model, data=DataConfig(path=data), train=train_cfg)


def _with_torch_nn_lstm(model: LanguageModel) -> LanguageModel:
    """``model`` with its recurrent layer replaced by a ``torch.nn.LSTM`` holding its weights."""
    cfg = model.config
    reference = torch.nn.LSTM(
        model.embedding.embedding_dim if model.embedding is not None else model.vocab_size,
        cfg.hidden_size,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        batch_first=True,
    )
    reference.load_state_dict(model.rnn.state_dict())
    model.rnn = reference
    return model


def _bare_loop_tokens_per_s(run: RunConfig, warmup: int, *, torch_nn_lstm: bool = False) -> float:
    """Tokens/s of a plain loop over the same model, streams, optimizer and clipping.

    With ``torch_nn_lstm`` the model's recurrent layer is a plain ``torch.nn.LSTM`` (run.model
    must be an LSTM).
    """
    cfg = run.train
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_lm_data(run.data)
    streams = TokenStreams(data.train, cfg.batch_size, cfg.seq_len)
    model = LanguageModel(run.model, len(data.vocab))
    if torch_nn_lstm:
        model = _with_torch_nn_lstm(model)
    model = model.to(device).train()
    optimizer = make_optimizer(model.parameters(), cfg)
    precision = pick_precision(cfg.precision, device)  # as rnnkit train runs it
    state = None
    start = 0.0
    for step in range(cfg.max_steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        inputs, targets = (t.to(device) for t in streams.chunk(step % len(streams)))  # (B, T)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, state = model(inputs, state)  # (B, T, V)
            loss = lm_loss(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    if device.type == "cuda":
        torch.cuda.synchronize()
    timed_steps = cfg.max_steps - warmup
    return timed_steps * cfg.batch_size * cfg.seq_len / (time.perf_counter() - start)


def _rnnkit_tokens_per_s(run: RunConfig) -> float:
    """Tokens/s of ``train()`` from its own metrics, leaving out the first log interval."""
    train(run, force=True)
    records = [json.loads(line) for line in (Path(run.out) / "metrics.jsonl").open()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
    return statistics.median(rates)


def speed(quick: bool, data: str | None, rounds: int = 3) -> dict[str, Any]:
    """(a): rnnkit's loop against the bare loop, same model and batch, in this process.

    The two alternate for ``rounds`` rounds; the overhead is the median over rounds of each
    round's own ratio, so that a slow drift or a burst of load from elsewhere, which moves both
    loops of a round alike, does not decide the comparison.
    """
    steps = 12 if quick else 120
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        run = _speed_config(quick, data, steps, str(Path(tmp) / "run"))
        for _ in range(rounds):
            bare.append(_bare_loop_tokens_per_s(run, warmup=steps // 3))
            ours.append(_rnnkit_tokens_per_s(run))
    return {
        "model": dataclasses.asdict(run.model),
        "batch_size": run.train.batch_size,
        "seq_len": run.train.seq_len,
        "steps": steps,
        "data": data or "the Python standard library",
        "bare_tokens_per_s_rounds": [round(x, 1) for x in bare],
        "rnnkit_tokens_per_s_rounds": [round(x, 1) for x in ours],
        "bare_tokens_per_s": round(max(bare), 1),
        "rnnkit_tokens_per_s": round(max(ours), 1),
        "overhead_pct": round(
            100 * (statistics.median(b / o for b, o in zip(bare, ours, strict=True)) - 1), 1
        ),
    }


def sampling(quick: bool) -> dict[str, Any] | None:
    """(b): bench/sampling.py's ``run(quick)``, or None when that file is absent."""
    path = Path(__file__).resolve().parent / "sampling.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_sampling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(quick)


def _plain_lm() -> Any:
    """bench/plain_lm.py as a module (bench/ is not a package)."""
    path = Path(__file__).resolve().parent / "plain_lm.py"
    spec = importlib.util.spec_from_file_location("bench_plain_lm", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _quality_rnnkit(
    text: Path,
    out: Path,
    minutes: float,
    quick: bool,
    eval_seconds: float,
    eval_every: int | None,
    val_tokens: int | None = None,
) -> dict[str, Any]:
    """``rnnkit train`` with its defaults for ``minutes``; what the budget preset chose."""
    user: dict[str, dict[str, Any]] = {
        "run": {"out": str(out)},
        "data": {"path": str(text), "val_frac": 0.1, "newlines": "universal"},
        "train": {"max_time": 60 * minutes},
    }
    if val_tokens is not None:
        user["data"]["val_tokens"] = val_tokens
    if quick:
        user["model"] = {"hidden_size": 32, "embedding_size": 16}
        user["train"] |= {"batch_size": 8, "seq_len": 32}
    run, choice = budget.adapt(RunConfig(), user)
    measured = choice.budget.tokens_per_s if choice.budget is not None else None
    if eval_every is None:
        steps_per_s = measured / (run.train.batch_size * run.train.seq_len) if measured else None
        eval_every = max(1, round(eval_seconds * steps_per_s)) if steps_per_s else 100
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, eval_every=eval_every))
    print(f"    rnnkit: {choice.line}")
    result = train(run, force=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    return {
        "row": choice.row,
        "budget_line": choice.line,
        "probe_tokens_per_s": None if measured is None else round(measured, 1),
        "settings": {
            "hidden_size": run.model.hidden_size,
            "num_layers": run.model.num_layers,
            "dropout": run.model.dropout,
            "lr": run.train.lr,
            "weight_decay": run.train.effective_weight_decay,
            "batch_size": run.train.batch_size,
            "seq_len": run.train.seq_len,
            "eval_every": eval_every,
        },
        "precision": pick_precision(run.train.precision, torch.device("cpu")),
        "steps": result.steps,
        "tokens_per_s": statistics.median(rates[1:] or rates) if rates else None,
        "best_val_loss": result.best_val_loss,
        "curve": [(r["time"], r["step"], r["val_loss"]) for r in records if "val_loss" in r],
    }


def generated_corpus(name: str) -> str:
    """The text of a corpus of :data:`GENERATED`."""
    if name == "stdlib":
        return stdlib_text()
    root = Path(sysconfig.get_paths()["stdlib"])
    files = (f for f in sorted(root.rglob("*.py")) if "site-packages" not in f.parts)
    return join_sources(files, PYSOURCES_CHARS)


def quality(
    minutes: list[float],
    corpora: list[str],
    *,
    quick: bool = False,
    eval_seconds: float = 30.0,
    eval_every: int | None = None,
    data_dir: Path = DATA,
    val_tokens: int | None = None,
) -> dict[str, Any]:
    """(c): rnnkit's defaults against the plain script, per corpus and budget (see the module).
    ``val_tokens``: both sides validate on the first N tokens of the held-out 10% only
    (``--val-tokens``; the same tokens for both), so that a large corpus's evaluations do not
    eat its budget.

    Returns:
        ``{corpus: {"skipped": why}}`` or ``{corpus: {"data", "train_tokens", "val_tokens",
        "budgets": {"3 min": {"rnnkit": {...}, "plain": {...}}}}}``.
    """
    plain_lm = _plain_lm()
    plain_cfg = plain_lm.PlainConfig()
    if quick:
        plain_cfg = plain_lm.PlainConfig(
            hidden_size=32, embedding_size=16, batch_size=8, seq_len=32
        )
    precision = pick_precision("auto", torch.device("cpu"))
    results: dict[str, Any] = {}
    for name in corpora:
        path = data_dir / CORPORA[name] if name in CORPORA else None
        if path is not None and not path.exists():
            results[name] = {"skipped": f"{path} is absent"}
            print(f"(c) {name}: skipped, {path} is absent")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            if path is None:  # built here from this Python's sources
                path = Path(tmp) / f"{name}.txt"
                path.write_text(generated_corpus(name), encoding="utf-8")
            text = path
            if quick:
                text = Path(tmp) / "slice.txt"
                text.write_text(read_text(path)[:QUICK_CHARS], encoding="utf-8")
            data = load_lm_data(
                DataConfig(
                    path=str(text), val_frac=0.1, newlines="universal", val_tokens=val_tokens
                )
            )
            source = GENERATED.get(name, str(path))
            entry: dict[str, Any] = {
                "data": source + (f" (first {QUICK_CHARS:,} characters)" if quick else ""),
                "train_tokens": data.train.numel(),
                "val_tokens": data.val.numel(),
                "vocab": len(data.vocab),
                "budgets": {},
            }
            for budget_min in minutes:
                print(f"(c) {name}, {budget_min:g} min:")
                ours = _quality_rnnkit(
                    text, Path(tmp) / "run", budget_min, quick, eval_seconds, eval_every, val_tokens
                )
                plain = plain_lm.train_plain(
                    data.train,
                    data.val,
                    len(data.vocab),
                    60 * budget_min,
                    cfg=plain_cfg,
                    eval_seconds=eval_seconds,
                    precision=precision,
                )
                entry["budgets"][f"{budget_min:g} min"] = {"rnnkit": ours, "plain": plain}
                for label, r in (("rnnkit", ours), ("plain", plain)):
                    print(
                        f"    {label:<7} best val {r['best_val_loss']:.4f} nats/char, "
                        f"{r['steps']:,} steps, {r['tokens_per_s'] or 0:,.0f} tokens/s"
                    )
            results[name] = entry
    return results


def _print_quality(corpora: dict[str, Any]) -> None:
    """(c)'s table: best val loss of each side per corpus and budget, and rnnkit's row."""
    print(f"\n{'corpus':<16} {'budget':>8} {'rnnkit':>8} {'plain':>8} {'steps':>13}  row")
    for name, entry in corpora.items():
        if "skipped" in entry:
            print(f"{name:<16} skipped: {entry['skipped']}")
            continue
        for budget_name, pair in entry["budgets"].items():
            ours, plain = pair["rnnkit"], pair["plain"]
            steps = f"{ours['steps']}/{plain['steps']}"
            print(
                f"{name:<16} {budget_name:>8} {ours['best_val_loss']:8.4f} "
                f"{plain['best_val_loss']:8.4f} {steps:>13}  {ours['row']}"
            )


def _bf16_check_config(quick: bool, steps: int, precision: str, out: str) -> RunConfig:
    """(d): the 2-layer LSTM char-LM in ``precision`` for ``steps`` steps; see the module."""
    model = ModelConfig(cell="lstm", num_layers=2, hidden_size=128 if quick else 512)
    train_cfg = TrainConfig(
        batch_size=16 if quick else 64,
        seq_len=32 if quick else 100,
        max_steps=steps,
        eval_every=steps,  # one evaluation, after the last step
        log_every=max(1, steps // 10),
        precision=precision,
        device="auto",
    )
    data = DataConfig(path=str(SHAKESPEARE), val_frac=0.1)
    return RunConfig(out=out, model=model, data=data, train=train_cfg)


def bf16_check(quick: bool, steps: int) -> dict[str, Any] | None:
    """(d): val loss and tokens/s of bf16 against fp32 after ``steps`` steps of ``train()``."""
    if not SHAKESPEARE.exists():
        print(f"(d) bf16 check: skipped, {SHAKESPEARE} is absent")
        return None
    if not quick and pick_precision("auto", torch.device("cpu")) != "bf16":
        print("(d) bf16 check: skipped, this CPU has no native bf16 (AVX512-BF16/AMX): autocast")
        print("    emulates it at a few percent of fp32's speed, and auto trains in fp32 here")
        return None
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            run = _bf16_check_config(quick, steps, precision, str(Path(tmp) / precision))
            train(run, force=True)
            records = [json.loads(line) for line in (Path(run.out) / "metrics.jsonl").open()]
            rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
            runs[precision] = {
                "val_loss": [r["val_loss"] for r in records if "val_loss" in r][-1],
                "tokens_per_s": statistics.median(rates[1:] or rates),
            }
        reference_steps = min(steps, 5 if quick else 20)
        reference = _bf16_check_config(quick, reference_steps, "fp32", str(Path(tmp) / "ref"))
        torch_nn = _bare_loop_tokens_per_s(
            reference, warmup=reference_steps // 4, torch_nn_lstm=True
        )
    fp32, bf16 = runs["fp32"], runs["bf16"]
    return {
        "model": dataclasses.asdict(run.model),
        "batch_size": run.train.batch_size,
        "seq_len": run.train.seq_len,
        "steps": steps,
        "data": str(SHAKESPEARE),
        "fp32_val_loss": round(fp32["val_loss"], 4),
        "bf16_val_loss": round(bf16["val_loss"], 4),
        "val_loss_rel_diff_pct": round(100 * (bf16["val_loss"] / fp32["val_loss"] - 1), 2),
        "fp32_tokens_per_s": round(fp32["tokens_per_s"], 1),
        "bf16_tokens_per_s": round(bf16["tokens_per_s"], 1),
        "bf16_to_fp32_speed": round(bf16["tokens_per_s"] / fp32["tokens_per_s"], 2),
        "torch_nn_fp32_steps": reference_steps,
        "torch_nn_fp32_tokens_per_s": round(torch_nn, 1),
        "bf16_to_torch_nn_fp32_speed": round(bf16["tokens_per_s"] / torch_nn, 2),
    }


def _print_bf16_check(d: dict[str, Any]) -> None:
    """(d)'s table: val loss and tokens/s of each run, then the ratios."""
    model = d["model"]
    size = f"B={d['batch_size']} T={d['seq_len']} L={model['num_layers']} H={model['hidden_size']}"
    print(f"\n(d) bf16 against fp32 after {d['steps']} steps, {size}:")
    print(f"    {'':<24} {'val loss':>9} {'tokens/s':>10}")
    for label, key in (("fp32 rnnkit train", "fp32"), ("bf16 rnnkit train", "bf16")):
        print(f"    {label:<24} {d[f'{key}_val_loss']:9.4f} {d[f'{key}_tokens_per_s']:10.0f}")
    print(f"    {'fp32 torch.nn.LSTM loop':<24} {'':>9} {d['torch_nn_fp32_tokens_per_s']:10.0f}")
    diff = d["val_loss_rel_diff_pct"]
    print(f"    val loss, bf16 vs fp32           {diff:+6.2f} %  (target: within ±1 %)")
    print(f"    speed, bf16 / fp32               {d['bf16_to_fp32_speed']:6.2f}x")
    speedup = d["bf16_to_torch_nn_fp32_speed"]
    print(f"    speed, bf16 / fp32 torch.nn.LSTM {speedup:6.2f}x  (target: at least 3x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few steps")
    parser.add_argument(
        "--quality",
        nargs="+",
        type=float,
        metavar="MINUTES",
        help="run (c) alone for these budgets, e.g. 3 10 20",
    )
    parser.add_argument(
        "--corpora",
        nargs="+",
        choices=[*CORPORA, *GENERATED],
        default=list(CORPORA),
        help="(c): corpora of ../shared/data, or built from this Python's sources: stdlib "
        "(make demo's corpus), pysources (20M characters) (default: the two of ../shared/data)",
    )
    parser.add_argument(
        "--eval-seconds",
        type=float,
        help="(c): seconds between evaluations (default 30; 0.5 with --quick)",
    )
    parser.add_argument(
        "--eval-every", type=int, help="(c): rnnkit's steps between evals (default: by speed)"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA, help="(c): where the corpora are")
    parser.add_argument(
        "--val-tokens",
        type=int,
        help="(c): both sides validate on the first N held-out tokens only (default: all)",
    )
    parser.add_argument("--out", type=Path, help="(c): the JSON file to write")
    parser.add_argument("--data", help="(a): text to train on (default: the stdlib corpus)")
    parser.add_argument(
        "--bf16-check",
        nargs="?",
        type=int,
        const=300,
        metavar="STEPS",
        help="run (d), bf16 against fp32 after STEPS steps each (default 300; ~10 min)",
    )
    args = parser.parse_args(argv)
    if args.bf16_check is not None and args.bf16_check < 1:
        parser.error(f"--bf16-check needs at least 1 step, got {args.bf16_check}")
    logging.basicConfig(level=logging.WARNING)

    if args.quality:
        eval_seconds = args.eval_seconds or (0.5 if args.quick else 30.0)
        report = {
            "provenance": provenance(ROOT),
            "quick": args.quick,
            "minutes": args.quality,
            "eval_seconds": eval_seconds,
            "corpora": quality(
                args.quality,
                args.corpora,
                quick=args.quick,
                eval_seconds=eval_seconds,
                eval_every=args.eval_every,
                data_dir=args.data_dir,
                val_tokens=args.val_tokens,
            ),
            "val_tokens": args.val_tokens,
        }
        _print_quality(report["corpora"])
        name = "lm_quality.quick.json" if args.quick else "lm_quality.json"
        path = args.out or RESULTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
        return

    results: dict[str, Any] = {
        "provenance": provenance(ROOT),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    results["speed"] = speed(args.quick, args.data, rounds=2 if args.quick else 5)
    s = results["speed"]
    print(f"(a) training, B={s['batch_size']} T={s['seq_len']} H={s['model']['hidden_size']}:")
    print(f"    bare PyTorch loop {s['bare_tokens_per_s']:>10.0f} tokens/s (best round)")
    print(f"    rnnkit train      {s['rnnkit_tokens_per_s']:>10.0f} tokens/s (best round)")
    print(f"    overhead          {s['overhead_pct']:>10.1f} % (median of the rounds' ratios)")
    print(f"    rounds, bare      {s['bare_tokens_per_s_rounds']}")
    print(f"    rounds, rnnkit    {s['rnnkit_tokens_per_s_rounds']}")
    results["sampling"] = sampling(args.quick)
    if results["sampling"] is None:
        print("(b) sampling: bench/sampling.py is absent; skipped")
    else:
        print(f"(b) sampling: {json.dumps(results['sampling'])[:2000]}")
    check = args.bf16_check
    results["bf16_check"] = bf16_check(args.quick, check) if check is not None else None
    if results["bf16_check"] is not None:
        _print_bf16_check(results["bf16_check"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("lm.quick.json" if args.quick else "lm.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
