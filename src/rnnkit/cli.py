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
import textwrap
import typing
from collections.abc import Sequence
from pathlib import Path
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
    device_preset,
    engine_preset,
    field_types,
    merge,
    read_toml,
    to_toml,
)
from rnnkit.errors import ConfigError, RnnkitError
from rnnkit.files import atomic_write
from rnnkit.reference import generate, load_model
from rnnkit.tasks import get_task
from rnnkit.tasks.metrics import check_png_path, save_png
from rnnkit.training import budget, distributed, evaluate_folder, load, predict_folder, train
from rnnkit.training.checkpoint import read_run_config
from rnnkit.training.control import pick_device, resolves_to_cuda

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130

_TRAIN_EXAMPLES = """examples:
  rnnkit train --out runs/stdlib --max-time 180          # the Python standard library
  rnnkit train examples/tiny.txt --out runs/tiny --hidden-size 128 --max-time 60
  rnnkit train examples/tiny.txt --out runs/tiny --resume --max-steps 2000
  rnnkit train examples/tiny.txt --config examples/run.toml --print-config
  rnnkit train examples/tiny.txt --out runs/minchar --engine numpy --cell rnn --max-steps 2000
  rnnkit train examples/tiny.txt --out runs/ddp --nproc 2 --batch-size 32 --max-steps 200
  torchrun --nproc-per-node 2 -m rnnkit train examples/tiny.txt --out runs/ddp --force
  rnnkit train ../shared/data/sst2/train.tsv --task classify --out runs/sentiment
  rnnkit train ../shared/data/wnut17/train.txt --task tag --crf --char-features --out runs/ner
  rnnkit train ../shared/data/japanese_vowels/train.npz --task classify --print-config
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
  rnnkit eval runs/sentiment ../shared/data/sst2/test.tsv --json --plot confusion.png
  rnnkit eval runs/ner ../shared/data/wnut17/test.txt --json
"""
_PREDICT_EXAMPLES = """examples:
  rnnkit predict runs/sentiment ../shared/data/sst2/test.tsv --top-k 2
  echo "a wonderful little film" | rnnkit predict runs/sentiment - --json
  rnnkit predict runs/ner ../shared/data/wnut17/test.txt
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
        default = f.metadata.get("shown", getattr(defaults, f.name))
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
        help="train a model of any task on DATA and write its model folder",
        description=textwrap.fill(
            "Train a model on DATA and write the model folder --out: a language model "
            "(--task lm, the default) on a text file or folder (default: the Python standard "
            "library's own source), a classifier (--task classify), a tagger (--task tag), a "
            "translator (--task seq2seq) or a generator from a label or a vector (--task condgen). "
            "The defaults shown below are those of --task lm; every task has its own preset, and "
            "--print-config shows what a run would use."
        ),
        epilog=_TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="lm: text file or folder; classify: TSV label<TAB>text, folder of <label>.txt, "
        ".npz (x, lengths, y); tag: CoNLL/BIO file, .npz (per-step y); seq2seq: TSV "
        "source<TAB>target; condgen: as classify, or .npz (x (N, D), text)",
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
        help="metrics of a trained model on held-out data (--json: one object)",
        description=textwrap.fill(
            "Evaluate the model in MODEL_DIR on the held-out DATA (in its training "
            "data's format): lm: loss, bits per character and perplexity, every token with the "
            "state carried; classify: accuracy, macro F1, per class, confusion; tag: entity "
            "precision / recall / F1 (per-step accuracy for .npz); seq2seq: BLEU; condgen: loss "
            "and perplexity (and exact match and BLEU for vector conditions)."
        ),
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
        help="outputs of a classify, tag, seq2seq or condgen model on new inputs",
        description=textwrap.fill(
            "Run the model in MODEL_DIR on INPUT (a file, or - for standard input): "
            "classify gives label<TAB>probability per input line, tag gives CoNLL token<TAB>tag, "
            "seq2seq one output sentence per input line, condgen one text per vector of an .npz."
        ),
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
    _add_inspect_parsers(commands)
    return parser


def _run_config(args: argparse.Namespace) -> tuple[RunConfig, budget.BudgetChoice | None]:
    """Defaults, the task's, the device's, the engine's and the budget's presets (or the saved
    run with --resume) <- the --config file <- the flags; and the budget's choice, if any."""
    flags = {name: _given(args, name) for name in ("run", *SECTIONS)}
    if args.data is not None:
        flags["data"]["path"] = args.data
    toml = read_toml(args.config) if args.config else {}
    task = flags["run"].get("task", toml.get("run", {}).get("task", RunConfig().task))
    out = flags["run"].get("out", toml.get("run", {}).get("out", f"runs/{task}"))
    if args.resume:  # the saved run's choices stand: nothing is decided again
        return merge(merge(read_run_config(out), toml), flags), None
    toml_engine = toml.get("train", {}).get("engine", TrainConfig().engine)
    engine = flags["train"].get("engine", toml_engine)
    toml_device = toml.get("train", {}).get("device", TrainConfig().device)
    device = flags["train"].get("device", toml_device)
    path = flags["data"].get("path", toml.get("data", {}).get("path"))
    base = merge(RunConfig(task=task, out=out), get_task(task).preset(path))
    base = merge(base, device_preset(task, engine, resolves_to_cuda(device)))
    base = merge(base, engine_preset(engine))
    processes = max(args.nproc, distributed.env_world_size())
    return budget.adapt(base, toml, flags, world_size=processes)


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
    run, choice = _run_config(args)
    if args.print_config:
        print(("" if choice is None else f"# {choice.line}\n") + to_toml(run), end="")
        return EXIT_OK
    if args.nproc > 1:
        return _train_nproc(args, run)
    note = None if choice is None or choice.row is None else choice.line  # what was adapted
    result = train(
        run,
        resume=args.resume,
        force=args.force,
        show_progress=sys.stderr.isatty(),
        note=note,
    )
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
    if cfg.beam_size is not None:
        text = model.beam_generate(cfg.prime, cfg.length, cfg.beam_size)
        print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
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
    if args.plot:
        if not task.plots:
            raise ConfigError(f"rnnkit eval --plot has no picture for {task.name} models")
        check_png_path(args.plot)
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
        args, extras = parser.parse_known_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    if extras:  # named by the subcommand that was given them, as its other usage errors are
        command = " ".join(["rnnkit", args.command, *([args.what] if "what" in args else [])])
        print(
            f"{command}: error: unrecognized arguments: {' '.join(extras)} (see {command} --help)",
            file=sys.stderr,
        )
        return EXIT_ERROR
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


# --- inspect and viz ---------------------------------------------------------------------------
# rnnkit.inspect (and with it matplotlib) is imported inside these handlers, so that the other
# commands start without paying for it.

_INSPECT_EXAMPLES = """examples:
  rnnkit inspect cells runs/stdlib held-out.py
  rnnkit inspect cells runs/warpeace chapter.txt --feature in_quotes --feature "name=Pierre|Natasha"
  rnnkit inspect saturation runs/stdlib held-out.py --plot saturation.png
  rnnkit inspect gradients runs/stdlib held-out.py --plot gradients.png
  rnnkit inspect gradients runs/tiny examples/tiny.txt --compare rnn,gru,lstm --plot compare.png
  rnnkit inspect errors runs/stdlib held-out.py --json
"""
_VIZ_EXAMPLES = """examples:
  rnnkit viz runs/stdlib held-out.py --out cells.html
  rnnkit viz runs/warpeace chapter.txt --out cells.html --feature 'speech="[^"]*"'
"""
_COMPARE_CELLS = ("rnn", "gru", "lstm", "mingru", "minlstm")
_KIND_NAMES = {"h": "h", "c": "tanh(c)"}


def _count(text: str) -> int:
    """An argparse type: an integer of 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _add_inspect_common(parser: argparse.ArgumentParser) -> None:
    """MODEL_DIR TEXT and the options that every inspect command and viz share."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by rnnkit train")
    parser.add_argument("text", metavar="TEXT", help="text file (or folder of them) to read")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of TEXT")
    parser.add_argument(
        "--refuse-unknown",
        action="store_true",
        help="refuse a TEXT with tokens outside the vocabulary (default: read them as <unk>)",
    )
    parser.add_argument(
        "--streams",
        type=_positive_int,
        metavar="S",
        help="read TEXT as S segments side by side, each after 500 tokens of warm-up (default: "
        "one per 1500 tokens, at most 64); 1 carries the state exactly through all of TEXT",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="cpu",
        help="where to run (default: cpu; auto: cuda when available)",
    )


def _add_feature_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME[=REGEX]",
        help="a built-in feature (default: all of them: in_quotes, in_parens, bracket_depth, "
        "column, indent, word_start, after_newline) or your own, the characters inside the "
        "regular expression's matches; repeat for more",
    )


def _add_inspect_parsers(commands: argparse._SubParsersAction) -> None:
    """``rnnkit inspect {cells,saturation,gradients,errors}`` and ``rnnkit viz``."""
    inspect = commands.add_parser(
        "inspect",
        help="what a language model's hidden cells do: cells, saturation, gradients, errors",
        description="Open up a trained language model (task lm) on a text.",
        epilog=_INSPECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = inspect.add_subparsers(dest="what", required=True, parser_class=_Parser)

    cells = kinds.add_parser(
        "cells",
        help="rank hidden cells by how well each tracks a text feature",
        description="Correlate every cell (h, and tanh(c) of an LSTM) with text features, probe "
        "each with one threshold, and ablate the best (hold it at its mean).",
    )
    _add_inspect_common(cells)
    _add_feature_option(cells)
    cells.add_argument("--json", action="store_true", help="print one JSON object")
    cells.add_argument("--top", type=_positive_int, default=10, help="cells listed per feature")
    cells.add_argument(
        "--ablate", type=_count, default=3, help="ablate this many best cells per feature (0: none)"
    )
    cells.add_argument(
        "--ablation-tokens", type=_positive_int, default=2000, help="tokens read when ablating"
    )
    cells.set_defaults(func=_inspect_cells)

    saturation = kinds.add_parser(
        "saturation",
        help="how often each gate is below 0.1 or above 0.9",
        description="Per layer, gate and unit, the fraction of steps left-saturated (< 0.1) and "
        "right-saturated (> 0.9); --plot draws the scatter of Karpathy et al. (2015).",
    )
    _add_inspect_common(saturation)
    saturation.add_argument("--json", action="store_true", help="print one JSON object")
    saturation.add_argument("--plot", metavar="PNG", help="draw the scatter into PNG")
    saturation.set_defaults(func=_inspect_saturation)

    gradients = kinds.add_parser(
        "gradients",
        help="how far back the loss reaches: ||d loss_T / d h_t|| against T - t",
        description="The mean norm of the gradient of the loss at step T with respect to each "
        "layer's h_t, against the distance T - t. --compare trains models of the given cells "
        "(MODEL_DIR's architecture and training settings) briefly on TEXT and compares them, "
        "untrained and trained.",
    )
    _add_inspect_common(gradients)
    gradients.add_argument("--json", action="store_true", help="print one JSON object")
    gradients.add_argument("--plot", metavar="PNG", help="draw the curves into PNG")
    gradients.add_argument("--distance", type=_positive_int, default=100, help="largest T - t")
    gradients.add_argument(
        "--windows", type=_positive_int, default=32, help="positions T averaged over"
    )
    gradients.add_argument("--compare", metavar="CELLS", help="comma-separated, e.g. rnn,gru,lstm")
    gradients.add_argument(
        "--compare-steps", type=_positive_int, default=200, help="training steps per compared cell"
    )
    gradients.set_defaults(func=_inspect_gradients)

    errors = kinds.add_parser(
        "errors",
        help="the model's mistakes by kind, beside an n-gram model's",
        description="A token is an error when the model gave it probability < 0.5. The errors "
        "by kind, beside those of a Witten-Bell n-gram model of the model's own training text.",
    )
    _add_inspect_common(errors)
    errors.add_argument("--json", action="store_true", help="print one JSON object")
    errors.add_argument("--order", type=_positive_int, default=20, help="n of the n-gram model")
    errors.add_argument(
        "--train-text",
        metavar="FILE",
        help="the model's training text, when it is no longer where config.json says",
    )
    errors.set_defaults(func=_inspect_errors)

    viz = commands.add_parser(
        "viz",
        help="write an HTML page that colours TEXT by the hidden cells",
        description="Write one self-contained HTML page (no network, no server): TEXT coloured "
        "by a chosen cell, the best cells per feature, the next-token predictions on hover, "
        "and the gate saturation and gradient flow plots.",
        epilog=_VIZ_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_inspect_common(viz)
    _add_feature_option(viz)
    viz.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write")
    viz.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=100_000,
        help="show at most the first this many tokens of TEXT",
    )
    viz.add_argument(
        "--max-values",
        type=_positive_int,
        default=8_000_000,
        help="cell values the page holds at most (a byte each): long texts get fewer cells",
    )
    viz.set_defaults(func=_viz)


def _inspect_model(folder: str, command: str, device: str) -> Any:
    """The language model of ``folder``; a folder of another task is refused in one line."""
    from pathlib import Path

    from rnnkit.errors import read_folder_json

    config = Path(folder) / "config.json"
    if config.is_file():  # anything else, load() explains
        values = read_folder_json(config)
        task = values.get("task", "lm") if isinstance(values, dict) else "lm"
        if task != "lm":
            raise ConfigError(
                f"{command} works on lm models (tasks that read text token by token); "
                f"this folder is a {task} model"
            )
    return load(folder, device=pick_device(device))


def _inspect_text(args: argparse.Namespace, model: Any) -> Any:
    """TEXT as the model's tokens (an EncodedText); tokens outside the vocabulary are counted
    on stderr, or refused with --refuse-unknown."""
    from rnnkit.data.text import read_text
    from rnnkit.errors import DataError
    from rnnkit.inspect.text import encode_text

    text = encode_text(read_text(args.text, args.encoding), model.vocab, model.level)
    if len(text) < 2:
        raise DataError(f"{args.text} has {len(text)} {model.level} token(s); at least 2 needed")
    if text.unknown:
        kind = "characters" if model.level == "char" else "words"
        listed = ", ".join(repr(t) for t, _ in text.unknown.most_common(8))
        more = ", ..." if len(text.unknown) > 8 else ""
        message = (
            f"{args.text} has {text.unknown.total()} {kind} the model never saw "
            f"({len(text.unknown)} distinct: {listed}{more})"
        )
        if args.refuse_unknown:
            raise DataError(message)
        print(f"rnnkit {args.command}: note: {message}; read as <unk>", file=sys.stderr)
    return text


def _save_figure(figure: Any, path: str) -> None:
    save_png(figure, path, dpi=120, facecolor="white")


def _inspect_cells(args: argparse.Namespace) -> int:
    from rnnkit.inspect.features import choose_features
    from rnnkit.inspect.search import find_cells

    features = choose_features(args.feature)
    model = _inspect_model(args.model_dir, "inspect cells", args.device)
    text = _inspect_text(args, model)
    result = find_cells(
        model,
        text,
        features,
        top=args.top,
        ablate=args.ablate,
        ablation_tokens=args.ablation_tokens,
        streams=args.streams,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
        return EXIT_OK
    print(f"cells ranked by |correlation| over {result.tokens} tokens of {args.text}")
    for feature in [f.name for f in features if f.name not in result.skipped]:
        print(f"\n{feature} (probe baseline {result.probe_baselines[feature]:.1%})")
        print(f"  {'layer':>5} {'kind':<7} {'cell':>5} {'corr':>7} {'probe':>7} {'ablation':>9}")
        for s in (s for s in result.cells if s.feature == feature):
            delta = "" if s.ablation_delta_loss is None else f"{s.ablation_delta_loss:+.4f}"
            print(
                f"  {s.layer + 1:>5} {_KIND_NAMES[s.kind]:<7} {s.cell:>5} {s.corr:+7.3f} "
                f"{s.probe_accuracy:7.1%} {delta:>9}"
            )
        best = next(s for s in result.cells_by_probe if s.feature == feature)
        print(
            f"  best probe: layer {best.layer + 1} {_KIND_NAMES[best.kind]} cell {best.cell}, "
            f"{best.probe_accuracy:.1%} (corr {best.corr:+.3f})"
        )
    print("\nablation: loss change in nats/token with the cell held at its mean")
    if result.skipped:
        print(f"constant on this text, not ranked: {', '.join(result.skipped)}")
    return EXIT_OK


def _inspect_saturation(args: argparse.Namespace) -> int:
    from rnnkit.inspect.saturation import gate_saturation, plot_saturation

    if args.plot:
        check_png_path(args.plot)
    model = _inspect_model(args.model_dir, "inspect saturation", args.device)
    text = _inspect_text(args, model)
    result = gate_saturation(model, text.ids, streams=args.streams)
    if args.plot:
        _save_figure(plot_saturation(result), args.plot)
    values = result.to_dict()
    if args.json:
        print(json.dumps(values))
        return EXIT_OK
    print(f"gate saturation of the {result.cell} over {result.steps} steps of {args.text}")
    print(f"  {'layer':>5} {'gate':>4} {'< 0.1':>7} {'> 0.9':>7}   units mostly < 0.1 / > 0.9")
    for layer in values["layers"]:
        for name, gate in layer["gates"].items():
            print(
                f"  {layer['layer'] + 1:>5} {name:>4} {gate['left_mean']:7.1%} "
                f"{gate['right_mean']:7.1%}   {gate['units_mostly_left']} / "
                f"{gate['units_mostly_right']} of {len(gate['left'])}"
            )
    return EXIT_OK


def _compare_flows(args: argparse.Namespace, cells: list[str]) -> dict[str, dict[str, Any]]:
    """Per panel (untrained, trained) and cell, the gradient flow of a model of MODEL_DIR's
    architecture and training settings with that cell, trained --compare-steps on TEXT."""
    import tempfile

    import torch

    from rnnkit.data.text import read_text
    from rnnkit.inspect.gradients import gradient_flow
    from rnnkit.inspect.text import encode_text
    from rnnkit.tasks.lm import LanguageModel

    saved = read_run_config(args.model_dir)
    text = read_text(args.text, args.encoding)
    panels: dict[str, dict[str, Any]] = {"untrained": {}, f"trained {args.compare_steps} steps": {}}
    with tempfile.TemporaryDirectory(prefix="rnnkit-compare-") as tmp:
        for cell in cells:
            run = dataclasses.replace(
                saved,
                out=os.path.join(tmp, cell),
                model=dataclasses.replace(saved.model, cell=cell, impl="auto"),
                data=dataclasses.replace(saved.data, path=args.text, val=None),
                train=dataclasses.replace(
                    saved.train,
                    engine="torch",
                    max_steps=args.compare_steps,
                    max_time=None,
                    epochs=None,
                    eval_every=args.compare_steps,
                    log_every=args.compare_steps,
                    device=args.device,
                ),
            )
            trained = load(train(run).out, device=pick_device(args.device))
            torch.manual_seed(run.train.seed)  # the initial weights of the trained one
            untrained = LanguageModel(run.model, trained.vocab_size).to(trained.head.weight.device)
            ids = encode_text(text, trained.vocab, trained.level).ids
            for panel, lm in zip(panels.values(), (untrained, trained), strict=True):
                panel[cell] = gradient_flow(lm, ids, distance=args.distance, windows=args.windows)
    return panels


def _inspect_gradients(args: argparse.Namespace) -> int:
    from rnnkit.inspect.gradients import gradient_flow, plot_gradient_comparison, plot_gradient_flow

    cells = [c.strip() for c in (args.compare or "").split(",") if c.strip()]
    if args.compare is not None and (not cells or any(c not in _COMPARE_CELLS for c in cells)):
        raise ConfigError(
            f"--compare takes cells among {', '.join(_COMPARE_CELLS)}; got {args.compare!r}"
        )
    if args.plot:
        check_png_path(args.plot)
    model = _inspect_model(args.model_dir, "inspect gradients", args.device)
    text = _inspect_text(args, model)
    flow = gradient_flow(model, text.ids, distance=args.distance, windows=args.windows)
    panels = _compare_flows(args, cells) if cells else {}
    if args.plot:
        _save_figure(
            plot_gradient_comparison(panels) if panels else plot_gradient_flow(flow), args.plot
        )
    if args.json:
        result: dict[str, Any] = {"model": flow.to_dict()}
        if panels:
            result["compare"] = {
                title: {cell: f.to_dict() for cell, f in flows.items()}
                for title, flows in panels.items()
            }
        print(json.dumps(result))
        return EXIT_OK
    shown = [d for d in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500) if d <= flow.distances[-1]]
    print(f"mean ||d loss_T / d h_t|| over {flow.windows} positions T, by distance T - t")
    print(f"  {'':<28}" + "".join(f"{d:>10}" for d in shown))
    rows = [(f"layer {i + 1} of the {flow.cell}", row) for i, row in enumerate(flow.norms)]
    for title, flows in panels.items():
        rows += [(f"{cell}, {title}", f.norms[-1]) for cell, f in flows.items()]
    for name, row in rows:
        print(f"  {name:<28}" + "".join(f"{row[d]:10.2e}" for d in shown))
    return EXIT_OK


def _inspect_training(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    """The model's training text as ids (M,) and its word counts: config.json's data.path
    (or --train-text), split as training did."""
    from pathlib import Path

    import torch

    from rnnkit.data.stdlib_corpus import stdlib_text
    from rnnkit.data.text import load_lm_data, read_text, tokenize
    from rnnkit.inspect.error_analysis import word_counts

    data = read_run_config(args.model_dir).data
    if args.train_text is not None:
        data = dataclasses.replace(data, path=args.train_text)
    elif data.path is not None and not Path(data.path).exists():
        raise ConfigError(
            f"the model's training text {data.path} (data.path in config.json) is gone; "
            "give it with --train-text FILE"
        )
    if data.val is not None:  # validation had its own file: training read all of the corpus
        corpus = stdlib_text() if data.path is None else read_text(data.path, data.encoding)
        tokens = tokenize(corpus, data.level)
        ids = torch.tensor(model.vocab.encode(tokens), dtype=torch.long)  # (M,)
    else:
        ids = load_lm_data(data, model.vocab).train  # (M,)
        tokens = model.vocab.decode(ids.tolist())
    return ids, word_counts(tokens, model.level)


def _inspect_errors(args: argparse.Namespace) -> int:
    from rnnkit.inspect.error_analysis import error_analysis

    model = _inspect_model(args.model_dir, "inspect errors", args.device)
    text = _inspect_text(args, model)
    train_ids, counts = _inspect_training(args, model)
    result = error_analysis(model, text, train_ids, counts, order=args.order, streams=args.streams)
    if args.json:
        print(json.dumps(result.to_dict()))
        return EXIT_OK
    print(
        f"errors (probability < 0.5 for the next token) on {args.text}: rnn and {result.order}-gram"
    )
    print(
        f"  {'kind':<14} {'tokens':>7} {'rnn errors':>13} {'n-gram errors':>14} {'both':>6} "
        f"{'only rnn':>9} {'only n-gram':>12}"
    )
    for k in [*result.kinds, result.total]:
        rnn = f"{k.rnn_errors} ({k.rnn_errors / k.count:.0%})"
        ngram = f"{k.ngram_errors} ({k.ngram_errors / k.count:.0%})"
        print(
            f"  {k.kind:<14} {k.count:>7} {rnn:>13} {ngram:>14} {k.both:>6} {k.rnn_only:>9} "
            f"{k.ngram_only:>12}"
        )
    unknown = f"; {result.unknown_targets} <unk> targets left out" if result.unknown_targets else ""
    print(
        f"loss: rnn {result.rnn_loss:.4f}, {result.order}-gram {result.ngram_loss:.4f} "
        f"nats/token{unknown}"
    )
    return EXIT_OK


def _viz(args: argparse.Namespace) -> int:
    from rnnkit.inspect.features import choose_features
    from rnnkit.inspect.text import EncodedText
    from rnnkit.inspect.viz import build_report

    features = choose_features(args.feature)
    model = _inspect_model(args.model_dir, "viz", args.device)
    text = _inspect_text(args, model)
    if len(text) > args.max_tokens:
        print(
            f"rnnkit viz: note: showing the first {args.max_tokens} of {len(text)} tokens "
            "(--max-tokens)",
            file=sys.stderr,
        )
        cut = args.max_tokens
        text = EncodedText(text.ids[:cut], text.pieces[:cut], text.unknown, text.level)
    page = build_report(
        model,
        text,
        features,
        title=f"Hidden cells of {args.model_dir}",
        max_values=args.max_values,
        streams=args.streams,
    )
    try:
        atomic_write(Path(args.out), lambda tmp: tmp.write_text(page, encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot write {args.out}: {err.strerror or err}") from None
    print(f"rnnkit viz: wrote {args.out} ({len(page) / 1e6:.1f} MB)", file=sys.stderr)
    return EXIT_OK
