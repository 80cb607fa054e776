"""The reference runs of the sequence tasks: rnnkit's defaults on the shared datasets, timed.

Each row trains with `rnnkit train` under the issue's time budget (2 CPU cores) and evaluates
the kept model on the held-out test split with `rnnkit eval --json`:

    names/           classify, char level, stratified random 75/10/15 (seed 0), 120 s
    sst2/            classify, word level, Kim's train / dev / test, 240 s
    wnut17/          tag, --crf --char-features, train / dev / test, 300 s
    japanese_vowels/ classify, the official 270 / 370 (10% of train for validation), 60 s
    frames           tag, causal (--no-bidirectional): japanese_vowels' speaker at every frame,
                     judged frame by frame from the frames so far, 90 s
    eng-fra          seq2seq French -> English, the PyTorch tutorial's subset and its random
                     90/10 split (bench/seq2seq.py prepare), 300 s; BLEU greedy and beam 5
    digits           condgen, 8x8 images -> the digit's name, stratified 80/20, 60 s

Every kept model is chosen on a validation split that is not the test split: the given dev
split, or (vowels, digits) --val-frac 0.1 of the training split; eng-fra and frames take their
presets' --val-frac 0 (every training example trains and the final weights are kept, as the
issues' anchors do; frames stops after the preset's 150 passes). The test split is read once,
by `rnnkit eval`, after training.

    python bench/reference_tasks.py [--only names sst2 ...] [--scale 0.1 (shorter budgets)]
        [--seed S (rnnkit train --seed S: another draw of the same runs)]

Writes bench/results/reference_tasks.json (with --seed S: reference_tasks_seed<S>.json), each
row with its own provenance; rows of runs not named by --only are kept from the file as they
were. Needs ../shared/data; run on an idle
machine.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from seq2seq import prepare

from rnnkit.benchmark import provenance

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
RNNKIT = [sys.executable, "-m", "rnnkit"]
RUNS = ("names", "sst2", "wnut17", "vowels", "frames", "eng-fra", "digits")


def names_split(folder: Path) -> tuple[Path, Path, Path]:
    """names/ as TSV files, stratified random 75/10/15 per language (seed 0)."""
    rng = random.Random(0)
    parts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for path in sorted((DATA / "names").glob("*.txt")):
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        items = [f"{path.stem}\t{name}" for name in items if name]
        rng.shuffle(items)
        n_dev, n_test = round(0.10 * len(items)), round(0.15 * len(items))
        parts["dev"] += items[:n_dev]
        parts["test"] += items[n_dev : n_dev + n_test]
        parts["train"] += items[n_dev + n_test :]
    out = []
    for name, lines in parts.items():
        path = folder / f"names_{name}.tsv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.append(path)
    return tuple(out)


def frames(folder: Path) -> tuple[Path, Path]:
    """japanese_vowels with the speaker as the label of every real frame."""
    out = []
    for split in ("train", "test"):
        arrays = np.load(DATA / "japanese_vowels" / f"{split}.npz")
        x, lengths, y = arrays["x"], arrays["lengths"], arrays["y"]
        steps = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, T)
        per_frame = np.where(steps, y[:, None], 0).astype(np.int64)  # (N, T)
        path = folder / f"frames_{split}.npz"
        np.savez(path, x=x, lengths=lengths, y=per_frame)
        out.append(path)
    return tuple(out)


def _evaluate(out: Path, test: Path, *flags: str) -> dict:
    """The numbers of `rnnkit eval OUT TEST --json FLAGS`."""
    command = [*RNNKIT, "eval", str(out), str(test), "--json", *flags]
    metrics = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def run(
    name: str,
    train: list[str],
    test: Path,
    seconds: float,
    folder: Path,
    beam: int = 1,
    seed: int | None = None,
) -> dict:
    """Train for ``seconds`` (with ``--seed seed`` where given), evaluate the kept model on
    ``test`` (and with ``--beam-size beam`` too where beam > 1, as ``test_beam``)."""
    out = folder / name
    command = [*RNNKIT, "train", *train, "--out", str(out), "--max-time", f"{seconds:g}"]
    if seed is not None:
        command += ["--seed", str(seed)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    keep = _evaluate(out, test)
    trainer = json.loads((out / "state" / "trainer.json").read_text())["trainer"]
    row = {"name": name, "seconds": seconds, "command": command[2:], "test": keep}
    if beam > 1:
        row["test_beam"] = {"beam_size": beam, **_evaluate(out, test, "--beam-size", str(beam))}
    row |= {"steps": trainer["step"], "best_step": trainer["best_step"]}
    row["val"] = trainer.get("best_metrics")
    if trainer.get("averaged"):  # --average-best: the mean's steps, val metrics, and if kept
        row["val_averaged"] = trainer["averaged"]
    print(
        f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in keep.items() if isinstance(v, float))
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(RUNS), choices=RUNS)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget")
    parser.add_argument("--seed", type=int, help="rnnkit train --seed (default: its own, 0)")
    parser.add_argument("--out", type=Path, help="default: results/reference_tasks.json")
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.seed is None else f"_seed{args.seed}"
        args.out = HERE / "results" / f"reference_tasks{suffix}.json"
    if not DATA.is_dir():
        sys.exit(f"skipped: {DATA} is absent")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.only:
            if name == "names":
                train, dev, test = names_split(folder)
                flags = [str(train), "--task", "classify", "--val", str(dev)]
                rows.append(run(name, flags, test, 120 * args.scale, folder, seed=args.seed))
            elif name == "sst2":
                sst = DATA / "sst2"
                flags = [
                    str(sst / "train.tsv"),
                    "--task",
                    "classify",
                    "--val",
                    str(sst / "dev.tsv"),
                ]
                rows.append(
                    run(name, flags, sst / "test.tsv", 240 * args.scale, folder, seed=args.seed)
                )
            elif name == "wnut17":
                w = DATA / "wnut17"
                flags = [str(w / "train.txt"), "--task", "tag", "--val", str(w / "dev.txt")]
                flags += ["--crf", "--char-features"]
                rows.append(
                    run(name, flags, w / "test.txt", 300 * args.scale, folder, seed=args.seed)
                )
            elif name == "vowels":
                jv = DATA / "japanese_vowels"
                flags = [str(jv / "train.npz"), "--task", "classify"]
                rows.append(
                    run(name, flags, jv / "test.npz", 60 * args.scale, folder, seed=args.seed)
                )
            elif name == "frames":
                train, test = frames(folder)
                flags = [str(train), "--task", "tag", "--no-bidirectional"]
                rows.append(run(name, flags, test, 90 * args.scale, folder, seed=args.seed))
            elif name == "eng-fra":
                _prepared(folder)
                flags = [str(folder / "eng-fra-train.tsv"), "--task", "seq2seq", "--reverse"]
                test = folder / "eng-fra-val.tsv"
                rows.append(
                    run(name, flags, test, 300 * args.scale, folder, beam=5, seed=args.seed)
                )
            else:  # digits
                _prepared(folder)
                flags = [str(folder / "digits-train.npz"), "--val-frac", "0.1"]
                flags += ["--task", "condgen"]
                rows.append(
                    run(
                        name,
                        flags,
                        folder / "digits-val.npz",
                        60 * args.scale,
                        folder,
                        seed=args.seed,
                    )
                )
    write_rows(args.out, rows, provenance(HERE.parent))
    print(f"wrote {args.out}")


def _prepared(folder: Path) -> None:
    """bench/seq2seq.py's data files (eng-fra, digits, names) in ``folder``, written once."""
    if not (folder / "eng-fra-train.tsv").exists():
        prepare(folder)


def write_rows(path: Path, rows: list[dict], run_provenance: dict) -> None:
    """Write ``rows`` (each stamped with ``run_provenance``) to ``path``, keeping the file's rows
    of other runs (stamped with the file's provenance where they have none), in RUNS order."""
    kept: dict[str, dict] = {}
    if path.exists():
        old = json.loads(path.read_text())
        for row in old.get("runs", []):
            kept[row["name"]] = {"provenance": old.get("provenance"), **row}
    for row in rows:
        kept[row["name"]] = {**row, "provenance": run_provenance}
    order = [name for name in RUNS if name in kept] + [n for n in kept if n not in RUNS]
    report = {"provenance": run_provenance, "runs": [kept[name] for name in order]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
