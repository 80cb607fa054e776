"""Compare training options on a dev file split in two halves, one to keep each run's model
and the other, which no choice saw, to score it.

A dev curve that swings between evaluations (WNUT-17's by +-0.04) makes its best point partly
luck: an option that reads better on the dev file that picked the kept model may only have had
a luckier peak. Here the dev file's items alternate between devA and devB (the sentences of a
CoNLL file for `--task tag`, else the lines of a TSV); each run keeps its model on devA
(`--val`) and is scored on devB. This is how the tag preset's `--lm-weight` was chosen (the
numbers are in src/rnnkit/config.py):

    python bench/dev_halves.py ../shared/data/wnut17/train.txt ../shared/data/wnut17/dev.txt \\
        --task tag --arm "--lm-weight 0" --arm "" --seeds 0 1 2 --max-time 300 \\
        --flags "--crf --char-features" --out /tmp/halves

Each run is `rnnkit train TRAIN --task TASK --val devA --threads T --seed S FLAGS ARM` and then
`rnnkit eval --json` on devB, `--parallel` runs side by side (2 by default at `--threads 1`, one
per core: run it on an idle machine, as every arm of a seed runs beside the others). A time
budget reaches fewer steps at 1 thread than the reference runs do at 2, and a choice can hold
at one length and not at the other (names/' batches of 16: README); `--threads 2 --parallel 1`
runs each arm as bench/reference_tasks.py does, at twice the wall time. An arm of one flag is
written `--arm=--no-lowercase`, so that it is not read as an option. It prints each arm's devB
metric per seed and their mean, and writes OUT/dev_halves.json; OUT also keeps devA, devB,
each run's folder and its log. A run that fails (a flag an arm's task refuses) marks its arm
failed; the other arms still report, and the script exits 1 naming each failed run's log.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rnnkit.benchmark import provenance

HERE = Path(__file__).resolve().parent
RNNKIT = [sys.executable, "-m", "rnnkit"]
METRICS = {"tag": "f1", "classify": "accuracy"}
"""The devB metric read by default: the one each task keeps its model on (text data)."""


def split_halves(text: str, *, blocks: bool) -> tuple[str, str]:
    """The items of ``text`` alternating between two halves (the 1st, 3rd, ... item in the
    first): blank-line separated blocks (CoNLL sentences; a whitespace-only line separates
    too, as in WNUT-17) if ``blocks``, else non-empty lines."""
    if blocks:
        items, current = [], []
        for line in text.splitlines():
            if line.strip():
                current.append(line + "\n")
            elif current:
                items.append("".join(current))
                current = []
        if current:
            items.append("".join(current))
        separator = "\n"
    else:
        items = [line + "\n" for line in text.splitlines() if line.strip()]
        separator = ""
    if len(items) < 2:
        raise ValueError(f"{len(items)} item(s): two halves need at least 2")
    return separator.join(items[0::2]), separator.join(items[1::2])


def one_run(
    train: Path,
    halves: tuple[Path, Path],
    task: str,
    flags: list[str],
    seed: int,
    out: Path,
    threads: int = 1,
) -> dict:
    """Train on ``train`` at ``threads`` threads keeping the model on devA, then the ``rnnkit
    eval --json`` numbers on devB with the run's steps and its devA best."""
    dev_a, dev_b = halves
    train_cmd = [*RNNKIT, "train", str(train), "--task", task, "--val", str(dev_a)]
    train_cmd += ["--threads", str(threads), "--seed", str(seed), *flags]
    train_cmd += ["--out", str(out), "--force"]
    log = out.with_suffix(".log")
    with log.open("w") as stream:
        done = subprocess.run(train_cmd, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(train_cmd[2:])} failed (exit {done.returncode}): see {log}")
    evaluated = subprocess.run(
        [*RNNKIT, "eval", str(out), str(dev_b), "--json"], capture_output=True, text=True
    )
    if evaluated.returncode != 0:
        raise RuntimeError(f"rnnkit eval {out} {dev_b} failed: {evaluated.stderr.strip()}")
    metrics = json.loads(evaluated.stdout)
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    return {
        "seed": seed,
        "devB": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "devA_best": trainer.get("best_metrics"),
        "steps": trainer["step"],
        "best_step": trainer["best_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("train", type=Path, help="the training file")
    parser.add_argument("dev", type=Path, help="the dev file, split into devA and devB")
    parser.add_argument("--task", required=True, choices=sorted(METRICS))
    parser.add_argument(
        "--arm",
        action="append",
        required=True,
        help='the flags of one arm, as one string ("" for none); give --arm per arm',
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flags", default="", help="flags for every run, as one string")
    parser.add_argument("--max-time", type=float, help="seconds per run (rnnkit --max-time)")
    parser.add_argument("--max-steps", type=int, help="steps per run (rnnkit --max-steps)")
    parser.add_argument("--parallel", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (rnnkit --threads)")
    parser.add_argument("--metric", help="the devB number compared (default: the task's)")
    parser.add_argument("--out", type=Path, required=True, help="a folder for everything")
    args = parser.parse_args()
    if args.max_time is None and args.max_steps is None:
        parser.error("give --max-time or --max-steps: every arm needs the same budget")
    if args.parallel < 1 or args.threads < 1:
        parser.error("--parallel and --threads must be at least 1")
    metric = args.metric or METRICS[args.task]
    try:
        halves = split_halves(args.dev.read_text(encoding="utf-8"), blocks=args.task == "tag")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        sys.exit(f"dev_halves.py: error: {args.dev}: {e}")

    args.out.mkdir(parents=True, exist_ok=True)
    paths = (args.out / f"devA{args.dev.suffix}", args.out / f"devB{args.dev.suffix}")
    for path, half in zip(paths, halves, strict=True):
        path.write_text(half, encoding="utf-8")
    budget = [] if args.max_time is None else ["--max-time", f"{args.max_time:g}"]
    budget += [] if args.max_steps is None else ["--max-steps", str(args.max_steps)]
    common = [*shlex.split(args.flags), *budget]
    jobs = [(i, seed) for seed in args.seeds for i in range(len(args.arm))]  # seed by seed
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {
            job: pool.submit(
                one_run,
                args.train,
                paths,
                args.task,
                [*common, *shlex.split(args.arm[job[0]])],
                job[1],
                args.out / f"arm{job[0]}_seed{job[1]}",
                args.threads,
            )
            for job in jobs
        }
        results, failures = {}, {}
        for job, future in futures.items():
            try:
                results[job] = future.result()
            except RuntimeError as e:  # the other arms still report
                failures[job] = str(e)

    arms = []
    for i, flags in enumerate(args.arm):
        failed = [failures[(i, seed)] for seed in args.seeds if (i, seed) in failures]
        if failed:
            arms.append({"flags": flags, "failed": failed})
            print(f"{flags or '(no flags)'}: failed ({len(failed)} of {len(args.seeds)} runs)")
            continue
        runs = [results[(i, seed)] for seed in args.seeds]
        values = [run["devB"][metric] for run in runs]
        arms.append({"flags": flags, "runs": runs, "mean": sum(values) / len(values)})
        shown = " / ".join(f"{v:.3f}" for v in values)
        print(f"{flags or '(no flags)'}: devB {metric} {shown} (mean {arms[-1]['mean']:.3f})")
    report = {
        "train": str(args.train),
        "dev": str(args.dev),
        "task": args.task,
        "flags": args.flags,
        "budget": budget,
        "threads": args.threads,
        "parallel": args.parallel,
        "metric": metric,
        "seeds": args.seeds,
        "arms": arms,
        "provenance": provenance(HERE.parent),
    }
    (args.out / "dev_halves.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'dev_halves.json'}")
    if failures:
        for message in failures.values():
            print(f"dev_halves.py: error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
