"""The ``rnnkit`` command: argparse subcommands, the only module that prints or exits.

Flags are generated from the config dataclasses (one per field, help from the field's
metadata), so they cannot drift from the defaults. Each command parses, builds its config,
calls one library function and reports. Exit codes: 0 success, 2 a usage, configuration, data
or model-folder error (one line ``rnnkit <cmd>: error: ...`` on stderr, also for a NaN loss),
130 interrupted by Ctrl-C (the run's state is saved first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from tqdm import tqdm

from rnnkit.benchmark import BenchResult, run_benchmark
from rnnkit.config import (
    SECTIONS,
    BenchConfig,
    EvalConfig,
    PredictConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    bench_config,
    engine_preset,
    field_types,
    merge,
    read_toml,
    to_toml,
)
from rnnkit.errors import ConfigError, RnnkitError
from rnnkit.reference import generate, load_model
from rnnkit.tasks import get_task
from rnnkit.training import distributed, evaluate_folder, load, predict_folder, train
from rnnkit.training.checkpoint import read_run_config
from rnnkit.training.control import pick_device

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130

_TRAIN_EXAMPLES = """examples:
  rnnkit train --out runs/stdlib --max-time 180          # the Python standard library
  rnnkit train examples/tiny.txt --out runs/tiny --hidden-size 128 --max-time 60
  rnnkit train examples/tiny.txt --out runs/tiny --resume --max-steps 2000
  rnnkit train examples/tiny.txt --config examples/run.toml --print-config
  rnnkit train examples/tiny.txt --out runs/minchar --engine numpy --cell rnn --max-steps 2000
  rnnkit train examples/tiny.txt --out runs/ddp --nproc 2 --batch-size 32 --max-steps 200
  torchrun --nproc-per-node 2 -m rnnkit train examples/tiny.txt --out runs/ddp --force
"""
_SAMPLE_EXAMPLES = """examples:
  rnnkit sample runs/tiny --prime "ROMEO:" --length 300 --temperature 0.8
  rnnkit sample runs/names --condition Irish --num-samples 5   # condgen: one item per line
  rnnkit sample runs/stdlib --prime "def " --temperature 0 --length 200
  rnnkit sample runs/tiny --weights int8 --num-samples 4
  rnnkit sample runs/minchar --engine numpy --prime "ROMEO:" --length 200
"""
_EVAL_EXAMPLES = """examples:
  rnnkit eval runs/tiny examples/tiny.txt --json
  rnnkit eval runs/sentiment examples/sentiment.tsv --json --plot confusion.png
  rnnkit eval runs/ner examples/ner.conll --json
"""
_PREDICT_EXAMPLES = """examples:
  rnnkit predict runs/sentiment examples/sentiment.tsv --top-k 2
  echo "a wonderful little film" | rnnkit predict runs/sentiment - --json
  rnnkit predict runs/ner examples/ner.conll
  echo "je suis content ." | rnnkit predict runs/fra-eng - --beam-size 5
  rnnkit predict runs/fra-eng sentences.txt --plot-attention attention.png
  rnnkit predict runs/digits vectors.npz --json   # condgen: one text per vector
"""
_BENCH_EXAMPLES = """examples:
  rnnkit bench                                 # L=2, H=256, B=32, T=100
  rnnkit bench --num-layers 1 --hidden-size 512 --threads 1
  rnnkit bench --quick --json                  # tiny sizes, one round: a smoke run
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``rnnkit <cmd>: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _TqdmHandler(logging.Handler):
    """Log records on stderr through tqdm, so that they do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str, title: str) -> None:
    """One flag per field of the dataclass ``cls``; the value lands in ``prefix.field``.

    Defaults are not set on the parser (``SUPPRESS``), so that only the flags given on the
    command line override the config file and the saved run.
    """
    group = parser.add_argument_group(title)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or not f.metadata.get("cli", True):  # sections, DATA
            continue
        kind = field_types(cls)[f.name]
        args = typing.get_args(kind)
        if type(None) in args:
            kind = next(a for a in args if a is not type(None))
        default = getattr(defaults, f.name)
        options: dict[str, Any] = {
            "dest": f"{prefix}.{f.name}",
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata['help']} (default: {'not set' if default is None else default})",
        }
        if typing.get_origin(kind) is Literal:
            options |= {
                "choices": typing.get_args(kind),
                "metavar": "{" + ",".join(typing.get_args(kind)) + "}",
            }
        elif kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options |= {"type": kind, "metavar": f.name.upper()}
        group.add_argument("--" + f.name.replace("_", "-"), **options)


def _given(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The fields given on the command line for the dataclass behind ``prefix``."""
    return {
        key.split(".", 1)[1]: value
        for key, value in vars(args).items()
        if key.startswith(prefix + ".")
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnkit`` parser with its ``train``, ``sample``, ``eval`` and ``bench`` subcommands."""
    parser = _Parser(prog="rnnkit", description="Recurrent neural networks on PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a model on text and write its model folder",
        description="Train a model on DATA and write the model folder --out: a language model "
        "(--task lm, the default) on a text file or folder (default: the Python standard "
        "library's own source), a classifier (--task classify) or a tagger (--task tag).",
        epilog=_TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="lm: text file or folder; classify: TSV label<TAB>text, folder of <label>.txt, "
        ".npz; tag: CoNLL/BIO file, .npz",
    )
    train.add_argument("--config", metavar="FILE", help="TOML run file, read before the flags")
    train.add_argument("--print-config", action="store_true", help="show the config and exit")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument(
        "--force", action="store_true", help="replace a model already in --out (else refused)"
    )
    train.add_argument(
        "--nproc",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train data-parallel in N processes on this machine, as torchrun "
        "--nproc-per-node N would start them; --batch-size is their global batch (default: 1)",
    )
    _add_flags(train, RunConfig, "run", "run")
    for name, cls in SECTIONS.items():
        _add_flags(train, cls, name, name)
    train.set_defaults(func=_train)

    sample = commands.add_parser(
        "sample",
        help="generate text from a trained model",
        description="Generate text from the model in MODEL_DIR; one sample streams to stdout.",
        epilog=_SAMPLE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by rnnkit train")
    _add_flags(sample, SampleConfig, "sample", "sampling")
    sample.set_defaults(func=_sample)

    evaluate = commands.add_parser(
        "eval",
        help="loss, bits per character and perplexity on held-out text",
        description="Evaluate the model in MODEL_DIR on the text DATA, every token, with the "
        "state carried.",
        epilog=_EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by rnnkit train")
    evaluate.add_argument("data", metavar="DATA", help="held-out data, as for train")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--plot", metavar="PNG", help="classify: draw the confusion matrix")
    _add_flags(evaluate, EvalConfig, "eval", "evaluation")
    evaluate.set_defaults(func=_eval)

    predict = commands.add_parser(
        "predict",
        help="labels or tags of new inputs from a classify or tag model",
        description="Run the model in MODEL_DIR on INPUT (a file, or - for standard input): "
        "classify gives label<TAB>probability per input line, tag gives CoNLL token<TAB>tag.",
        epilog=_PREDICT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by rnnkit train")
    predict.add_argument("input", nargs="?", default="-", metavar="INPUT", help="file, or -")
    predict.add_argument("--json", action="store_true", help="one JSON object per result")
    _add_flags(predict, PredictConfig, "predict", "prediction")
    predict.set_defaults(func=_predict)

    bench = commands.add_parser(
        "bench",
        help="speed table of this machine: matmul peak, training and sampling beside torch.nn",
        description="Measure this machine's fp32 and bf16 matrix-multiply peak, the training\n"
        "tokens/s (forward + backward + AdamW step) and model-FLOP utilisation of RNN, GRU\n"
        "and LSTM beside torch.nn, and LSTM sampling chars/s at batch 1 beside the\n"
        "bare-matmul limit; print a table.",
        epilog=_BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke run)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    _add_flags(bench, BenchConfig, "bench", "sizes")
    bench.set_defaults(func=_bench)
    return parser


def _run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults and the engine's preset (or the saved run with --resume) <- the --config file
    <- the flags."""
    flags = {name: _given(args, name) for name in ("run", *SECTIONS)}
    if args.data is not None:
        flags["data"]["path"] = args.data
    toml = read_toml(args.config) if args.config else {}
    out = flags["run"].get("out", toml.get("run", {}).get("out", RunConfig().out))
    if args.resume:
        base = read_run_config(out)
    else:
        toml_engine = toml.get("train", {}).get("engine", TrainConfig().engine)
        engine = flags["train"].get("engine", toml_engine)
        task = flags["run"].get("task", toml.get("run", {}).get("task", RunConfig().task))
        base = merge(merge(RunConfig(task=task), get_task(task).preset()), engine_preset(engine))
    return merge(merge(base, toml), flags)


def _positive_int(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line without its ``--nproc N`` (or ``--nproc=N``, or an abbreviation)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) > 3 and "--nproc".startswith(name):
            skip = "=" not in arg
        else:
            kept.append(arg)
    return kept


def _train_nproc(args: argparse.Namespace, run: RunConfig) -> int:
    """``rnnkit train --nproc N``: the same command in N processes under torchrun's agent."""
    distributed.check_launch(run, args.nproc, resume=args.resume, force=args.force)
    result = distributed.launch(_without_nproc(args.argv), args.nproc, run.train.threads)
    if result.message:
        print(f"rnnkit train: error: {result.message}", file=sys.stderr)
    return result.exit_code


def _train(args: argparse.Namespace) -> int:
    run = _run_config(args)
    if args.print_config:
        print(to_toml(run), end="")
        return EXIT_OK
    if args.nproc > 1:
        return _train_nproc(args, run)
    result = train(run, resume=args.resume, force=args.force, show_progress=sys.stderr.isatty())
    if distributed.env_rank() > 0:
        return EXIT_INTERRUPTED if result.stopped_by == "interrupt" else EXIT_OK  # rank 0 reports
    if result.stopped_by == "interrupt":
        print(
            f"rnnkit train: interrupted at step {result.steps}; saved {result.out}", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _sample_numpy(model_dir: str, cfg: SampleConfig) -> int:
    if cfg.top_k is not None or cfg.top_p is not None:
        raise ConfigError("--engine numpy samples with --temperature only, not --top-k / --top-p")
    if cfg.weights != "fp32":
        raise ConfigError("--engine numpy samples with its float64 weights, not --weights")
    model, tokens = load_model(model_dir)
    texts = generate(
        model,
        tokens,
        cfg.prime,
        cfg.length,
        temperature=cfg.temperature,
        seed=cfg.seed,
        num_samples=cfg.num_samples,
    )
    for i, text in enumerate(texts):
        if cfg.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def _sample_items(model_dir: str, cfg: SampleConfig) -> int:
    """``rnnkit sample`` of a condgen model: one item per line."""
    model = load(model_dir, device=pick_device(cfg.device))
    items = model.sample(
        cfg.condition,
        num_samples=cfg.num_samples,
        length=cfg.length,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        prime=cfg.prime,
        seed=cfg.seed,
        weights=cfg.weights,
    )
    for item in items:
        print(item)
    return EXIT_OK


def _sample(args: argparse.Namespace) -> int:
    cfg = SampleConfig(**_given(args, "sample"))
    if cfg.engine == "numpy":
        return _sample_numpy(args.model_dir, cfg)
    task = read_run_config(args.model_dir).task
    if task == "condgen":
        return _sample_items(args.model_dir, cfg)
    if cfg.condition is not None:
        raise ConfigError(f"--condition is for condgen models; {args.model_dir} is a {task} model")
    if task != "lm":
        raise ConfigError(
            f"rnnkit sample generates text from lm and condgen models; {args.model_dir} is a "
            f"{task} model (use rnnkit predict)"
        )
    model = load(args.model_dir, device=pick_device(cfg.device))
    pieces = model.generate_pieces(
        cfg.prime,
        cfg.length,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        seed=cfg.seed,
        num_samples=cfg.num_samples,
        weights=cfg.weights,
    )
    if cfg.num_samples == 1:
        text = cfg.prime
        sys.stdout.write(cfg.prime)
        for (piece,) in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            text += piece
        if not text.endswith("\n"):
            sys.stdout.write("\n")
        return EXIT_OK
    texts = [cfg.prime] * cfg.num_samples
    for step in pieces:
        texts = [text + piece for text, piece in zip(texts, step, strict=True)]
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---")
        print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    task = get_task(read_run_config(args.model_dir).task)
    if args.plot and not args.plot.lower().endswith(".png"):
        raise ConfigError(f"--plot writes a PNG file; got {args.plot!r}")
    metrics = evaluate_folder(args.model_dir, args.data, EvalConfig(**_given(args, "eval")))
    if args.plot:
        task.plot(metrics, args.plot)
    print(json.dumps(metrics) if args.json else task.summary(metrics))
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    results = predict_folder(args.model_dir, args.input, PredictConfig(**_given(args, "predict")))
    for text, record in results:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n" if args.json else text)
    sys.stdout.flush()
    return EXIT_OK


def _bench_table(result: BenchResult) -> str:
    """The readable table of ``rnnkit bench``."""
    cfg, peak, sampling = result.config, result.matmul, result.sampling
    size = f"L={cfg.num_layers}, H={cfg.hidden_size}"
    lines = [
        f"rnnkit bench: {result.machine}, torch {result.torch}, "
        f"{result.threads} thread{'s' if result.threads != 1 else ''}",
        "",
        f"matrix multiply {peak.n}x{peak.n}",
        f"  fp32 {peak.fp32_gflops:9.1f} GFLOP/s",
        f"  bf16 {peak.bf16_gflops:9.1f} GFLOP/s",
        "",
        f"training, forward + backward + AdamW step, fp32, {size}, "
        f"B={cfg.batch_size}, T={cfg.seq_len}",
        f"  {'cell':<5} {'impl':<6} {'tokens/s':>10} {'torch.nn':>10} {'ratio':>6} "
        f"{'MFU':>6} {'torch.nn MFU':>12}",
    ]
    for row in result.training:
        lines.append(
            f"  {row.cell:<5} {row.impl:<6} {row.tokens_per_s:10.0f} "
            f"{row.torch_nn_tokens_per_s:10.0f} {row.ratio_to_torch_nn:5.2f}x "
            f"{row.mfu:6.1%} {row.torch_nn_mfu:12.1%}"
        )
    limit = sampling.limit_chars_per_s
    lines += [
        "",
        f"sampling, LSTM at batch 1, {size}; limit: the step's products alone, per dtype",
        f"  {'loop':<28} {'chars/s':>10} {'x limit':>8}",
        f"  {'rnnkit LSTM.step':<28} {sampling.chars_per_s:10.0f} {sampling.ratio_to_limit:8.2f}",
        f"  {'rnnkit, bf16 weights':<28} {sampling.bf16_chars_per_s:10.0f} "
        f"{sampling.bf16_ratio_to_limit:8.2f}",
        f"  {'rnnkit, int8 weights':<28} {sampling.int8_chars_per_s:10.0f} "
        f"{sampling.int8_ratio_to_limit:8.2f}",
        f"  {'torch.nn.LSTM, one step':<28} {sampling.torch_nn_chars_per_s:10.0f} "
        f"{sampling.torch_nn_chars_per_s / limit:8.2f}",
        f"  {'reference loop (fp32 addmm)':<28} {sampling.reference_loop_chars_per_s:10.0f} "
        f"{sampling.reference_loop_chars_per_s / limit:8.2f}",
        f"  {'limit':<6} {'products/s':>10} {'KiB/step':>9} {'GB/s':>6} {'bandwidth/s':>11}"
        "  kernel",
    ]
    for dtype, step in sampling.limits.items():
        lines.append(
            f"  {dtype:<6} {step.products_chars_per_s:10.0f} "
            f"{step.weight_bytes_per_step / 1024:9.1f} {step.bandwidth_gb_s:6.1f} "
            f"{step.bandwidth_chars_per_s:11.0f}  {step.kernel}"
        )
    lines.append(f"  main memory read bandwidth {sampling.memory_gb_s:.1f} GB/s")
    return "\n".join(lines)


def _bench(args: argparse.Namespace) -> int:
    result = run_benchmark(bench_config(args.quick, **_given(args, "bench")))
    print(json.dumps(result.to_dict()) if args.json else _bench_table(result))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rnnkit`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("rnnkit")
    package_logger.addHandler(handler)
    rank = distributed.env_rank()  # under torchrun, rank 0 logs for the run
    package_logger.setLevel(logging.INFO if rank == 0 else logging.ERROR)
    prog = f"rnnkit {args.command}"
    if rank > 0:
        prog += f" (rank {rank})"
    try:
        return args.func(args)
    except RnnkitError as err:
        message = " ".join(str(err).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `rnnkit sample ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        package_logger.removeHandler(handler)
