"""Run every benchmark in bench/ in turn: `make bench` (or `python bench/run_all.py --quick`).

Each script prints its own table (rnnkit beside plain PyTorch, as ratios) and writes JSON to
bench/results/, each file with its ``provenance``: the machine, the git commit (and whether the
tree differed from it) and the date. Run on an otherwise idle machine: other processes distort
every figure.
Part (d) of bench/lm.py, bf16 against fp32 training at the same number of steps, runs too
(``--bf16-check STEPS``, default 300: about 10 of the run's minutes on 2 CPU cores; 0 skips it).
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "layers.py",
    "scan.py",
    "sampling.py",
    "numpy_engine.py",
    "lm.py",
    "tasks.py",
    "distributed.py",
    "inspect_speed.py",
    "gpu.py",  # issue 16's CUDA rows; says so and measures nothing without CUDA
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--only", nargs="*", default=SCRIPTS, help="scripts to run")
    parser.add_argument(
        "--bf16-check",
        type=int,
        default=300,
        metavar="STEPS",
        help="lm.py (d): bf16 against fp32 after STEPS steps each (default 300, ~10 min; 0: skip)",
    )
    args = parser.parse_args()
    if args.bf16_check < 0:
        parser.error(f"--bf16-check needs 0 (skip) or more steps, got {args.bf16_check}")
    failed = []
    for script in args.only:
        print(f"\n=== bench/{script} ===", flush=True)
        cmd = [sys.executable, str(HERE / script), *(["--quick"] if args.quick else [])]
        if script == "lm.py" and args.bf16_check:
            cmd += ["--bf16-check", str(args.bf16_check)]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
