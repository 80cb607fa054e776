"""Names by language: `--task condgen` given a label (the second reference row of the seq2seq
and condgen issue), judged by a `--task classify` model trained on the same names.

    python bench/names_condgen.py [--seconds 120] [--samples 50] [--out FILE]

On the split of `bench/seq2seq.py prepare` (names-train.tsv / names-val.tsv, 10% of each
language held out, seed 0), three runs of rnnkit's presets, each `--seconds` on 2 idle cores:

    condgen   given the language           held-out loss per character (nats)
    condgen   the same names, one label    the unconditioned character model's
    classify  the language of a name       the judge

Then `rnnkit sample MODEL --condition L --num-samples N --seed 1` for each language, and the
share of those samples that the judge gives the language they were sampled for: with the
languages weighted equally (N samples each), and weighted as the languages occur in the
training names (the mix of languages a user of the data would ask for). The same two shares for
the real held-out names show what the judge can tell apart at all. Writes
bench/results/names_condgen.json. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from seq2seq import DATA, prepare

from rnnkit.benchmark import provenance

HERE = Path(__file__).resolve().parent
RNNKIT = [sys.executable, "-m", "rnnkit"]


def rnnkit(*args: str) -> str:
    """The stdout of ``rnnkit ARGS`` (its log goes to this script's stderr)."""
    print("$ rnnkit", " ".join(args), flush=True)
    return subprocess.run([*RNNKIT, *args], check=True, stdout=subprocess.PIPE, text=True).stdout


def recall_by_label(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Per true label, the share of its (true, predicted) pairs predicted right."""
    total, right = Counter(t for t, _ in pairs), Counter(t for t, p in pairs if t == p)
    return {label: right[label] / total[label] for label in sorted(total)}


def shares(recall: dict[str, float], weights: Counter) -> tuple[float, float]:
    """(languages weighted equally, weighted by ``weights``) of per-language recalls."""
    equal = sum(recall.values()) / len(recall)
    as_in_data = sum(r * weights[k] for k, r in recall.items()) / sum(weights[k] for k in recall)
    return equal, as_in_data


def judged(judge: Path, items: list[tuple[str, str]], folder: Path) -> list[tuple[str, str]]:
    """(label, the judge's label) of each (label, name)."""
    path = folder / "judged.txt"
    path.write_text("".join(f"{name}\n" for _, name in items), encoding="utf-8")
    lines = rnnkit("predict", str(judge), str(path)).splitlines()
    return [(label, line.split("\t")[0]) for (label, _), line in zip(items, lines, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="per training run")
    parser.add_argument("--samples", type=int, default=50, help="samples per language")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "names_condgen.json")
    args = parser.parse_args()
    if not (DATA / "names").is_dir():
        sys.exit(f"skipped: {DATA / 'names'} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder)
        train, val = folder / "names-train.tsv", folder / "names-val.tsv"
        runs = {
            "given the language": (train, val, "condgen"),
            "one label": (folder / "names-any-train.tsv", folder / "names-any-val.tsv", "condgen"),
            "judge": (train, val, "classify"),
        }
        outs = {}
        commands = []
        for name, (data, held_out, task) in runs.items():
            out = folder / name.replace(" ", "-")
            flags = ["--task", task, "--val", str(held_out), "--out", str(out)]
            command = ["train", str(data), *flags, "--max-time", f"{args.seconds:g}"]
            commands.append(" ".join(["rnnkit", *command]))
            rnnkit(*command)
            outs[name] = out
        loss = {
            name: json.loads(rnnkit("eval", str(outs[name]), str(runs[name][1]), "--json"))["loss"]
            for name in ("given the language", "one label")
        }
        rows = [line.split("\t", 1) for line in train.read_text(encoding="utf-8").splitlines()]
        frequency = Counter(label for label, _ in rows)
        samples = []
        for language in sorted(frequency):
            command = ["sample", str(outs["given the language"]), "--condition", language]
            command += ["--num-samples", str(args.samples), "--seed", "1"]
            names = [n for n in rnnkit(*command).splitlines() if n.strip()]
            samples += [(language, n) for n in names]
        real = [tuple(line.split("\t", 1)) for line in val.read_text(encoding="utf-8").splitlines()]
        sample_recall = recall_by_label(judged(outs["judge"], samples, folder))
        real_recall = recall_by_label(judged(outs["judge"], real, folder))  # type: ignore[arg-type]
    sample_equal, sample_data = shares(sample_recall, frequency)
    real_equal, real_data = shares(real_recall, frequency)
    report = {
        "provenance": provenance(HERE.parent),
        "commands": [
            "python bench/seq2seq.py prepare DIR",
            *commands,
            f"rnnkit sample MODEL --condition L --num-samples {args.samples} --seed 1 "
            "(each language)",
            "rnnkit predict JUDGE samples.txt; rnnkit predict JUDGE names-val.tsv's names",
        ],
        "samples": len(samples),
        "heldout_loss_given_language": loss["given the language"],
        "heldout_loss_unconditioned": loss["one label"],
        "samples_recognised_languages_equal": sample_equal,
        "samples_recognised_as_in_data": sample_data,
        "real_names_recognised_languages_equal": real_equal,
        "real_names_recognised_as_in_data": real_data,
        "samples_recall_per_language": sample_recall,
        "real_names_recall_per_language": real_recall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"held-out loss {loss['given the language']:.3f} given the language, "
        f"{loss['one label']:.3f} under one label; samples recognised {sample_equal:.3f} "
        f"(languages equal) / {sample_data:.3f} (as in the data); real held-out names "
        f"{real_equal:.3f} / {real_data:.3f}"
    )


if __name__ == "__main__":
    main()
