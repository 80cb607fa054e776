"""Run every benchmark in bench/ in turn: `make bench` (or `python bench/run_all.py --quick`).

Each script prints its own table (rnnkit beside plain PyTorch, as ratios) and writes JSON to
bench/results/. Run on an otherwise idle machine: other processes distort every figure.
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
    args = parser.parse_args()
    failed = []
    for script in args.only:
        print(f"\n=== bench/{script} ===", flush=True)
        cmd = [sys.executable, str(HERE / script), *(["--quick"] if args.quick else [])]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
