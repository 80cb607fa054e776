"""Run every benchmark in bench/ in turn: `make bench` (or `python bench/run_all.py --quick`).

Each script prints its own table (rnnkit beside plain PyTorch, as ratios) and writes JSON to
bench/results/. Run on an otherwise idle machine: other processes distort every figure.
``--bf16-check [STEPS]`` also runs bench/lm.py's part (d), bf16 against fp32 training at the same
number of steps (about 10 more minutes at the default 300 steps on 2 CPU cores); ``make bench``
leaves it out.
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["layers.py", "scan.py", "sampling.py", "numpy_engine.py", "lm.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--only", nargs="*", default=SCRIPTS, help="scripts to run")
    parser.add_argument(
        "--bf16-check",
        nargs="?",
        type=int,
        const=300,
        metavar="STEPS",
        help="lm.py (d): bf16 against fp32 after STEPS steps each (default 300; ~10 min)",
    )
    args = parser.parse_args()
    if args.bf16_check is not None and args.bf16_check < 1:
        parser.error(f"--bf16-check needs at least 1 step, got {args.bf16_check}")
    failed = []
    for script in args.only:
        print(f"\n=== bench/{script} ===", flush=True)
        cmd = [sys.executable, str(HERE / script), *(["--quick"] if args.quick else [])]
        if script == "lm.py" and args.bf16_check is not None:
            cmd += ["--bf16-check", str(args.bf16_check)]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
