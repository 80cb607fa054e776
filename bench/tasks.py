"""Training speed of the sequence tasks beside a plain PyTorch loop, prediction speed, memory.

(a) Training examples/s (forward + backward + AdamW step) of ``classify`` on names/ (char) and
    SST-2 (word) and of ``tag`` on WNUT-17, each with one network of rnnkit's preset (SST-2's
    preset, ``--ensemble 8``, trains eight such networks per step), beside a plain PyTorch
    model of the same shape (nn.Embedding -> nn.LSTM over packed sequences -> the same head)
    trained on the very same batches in the same process, rounds interleaved; the ratio
    rnnkit / plain is the figure (issue goal: at least 1.0x). The tag preset's ``--lm-weight``
    (a second task in training: predicting the neighbouring words) is left out, since the plain
    model trains on the tags alone; it costs about a quarter more time per step (README).
(b) ``predict`` / evaluation names/s of the names classifier at batch 64 (goal: 2,000/s).
(c) Peak resident memory of `rnnkit train` on SST-2 with its preset (eight networks; goal:
    under 2 GB), in a subprocess.
(d) ``seq2seq``: training pairs/s beside a plain PyTorch encoder-decoder with the same attention
    (goal: at least 1.0x), and decoding sentences/s, greedy and beam 5, at batch 1 and 64
    (``speed`` of bench/seq2seq.py, which says how).

    python bench/tasks.py            # reads ../shared/data; skips what is absent
    python bench/tasks.py --quick    # tiny generated data, one round: a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from seq2seq import print_speed
from seq2seq import speed as seq2seq_speed
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.benchmark import provenance
from rnnkit.config import RunConfig, merge
from rnnkit.tasks import get_task

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
CASES = {
    "classify names (char)": ("classify", DATA / "names", {"level": "char"}),
    "classify sst2 (word)": ("classify", DATA / "sst2" / "train.tsv", {"level": "word"}),
    "tag wnut17": ("tag", DATA / "wnut17" / "train.txt", {}),
}


class PlainModel(nn.Module):
    """What a user writes: embedding -> nn.LSTM on packed sequences -> max-pool or per-step
    head (no CRF, no character features)."""

    def __init__(self, vocab: int, classes: int, cfg, per_step: bool) -> None:
        super().__init__()
        self.per_step = per_step
        self.embedding = nn.Embedding(vocab, cfg.embedding_size, padding_idx=0)
        self.lstm = nn.LSTM(
            cfg.embedding_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            bidirectional=cfg.bidirectional,
            batch_first=True,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size * (2 if cfg.bidirectional else 1), classes)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.dropout(self.embedding(batch["inputs"]))  # (B, T, E)
        packed = pack_padded_sequence(x, batch["lengths"], batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # (B, T, dirs·H)
        if self.per_step:
            logits = self.head(self.dropout(out))  # (B, T, C)
            return nn.functional.cross_entropy(logits.transpose(1, 2), batch["targets"])
        mask = torch.arange(out.shape[1])[None, :] < batch["lengths"][:, None]  # (B, T)
        pooled = out.masked_fill(~mask[..., None], float("-inf")).amax(1)  # (B, dirs·H)
        return nn.functional.cross_entropy(self.head(self.dropout(pooled)), batch["targets"])


def _step(model: nn.Module, loss_of, optimizer) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss_of().backward()
    optimizer.step()
    return time.perf_counter() - start


def training_speed(name: str, task_name: str, path: Path, data_cfg: dict, rounds: int, steps: int):
    """Examples/s of rnnkit's task model and of the plain model on the same batches."""
    task = get_task(task_name)
    run = merge(RunConfig(task=task_name), task.preset())
    model_cfg = dataclasses.replace(run.model, lm_weight=0.0)  # the plain loop has no such task
    run = dataclasses.replace(
        run,
        model=model_cfg,
        data=dataclasses.replace(run.data, path=str(path), **data_cfg),
        out="unused",
    )
    data = task.load_data(run, None)
    ours = task.build_model(run, data.meta)
    task.init_model(ours, data)
    vocab_size = len(data.meta["vocab"]["tokens"])
    classes = len(data.meta.get("labels") or data.meta["tags"])
    plain = PlainModel(vocab_size, classes, run.model, per_step=task_name == "tag")
    batches = task.batches(run, data)
    cpu = torch.device("cpu")
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-3, fused=True)
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3, fused=True)
    ours.train()
    plain.train()
    times: dict[str, list[float]] = {"rnnkit": [], "plain": []}
    examples = 0
    for r in range(rounds + 1):  # round 0 warms up
        picked = [batches.get(0, (r * steps + i) % len(batches)) for i in range(steps)]
        n = sum(len(b["lengths"]) for b in picked)
        order = ["rnnkit", "plain"] if r % 2 == 0 else ["plain", "rnnkit"]
        for who in order:
            seconds = 0.0
            for b in picked:
                if who == "rnnkit":
                    seconds += _step(ours, lambda b=b: task.loss(ours, b, None, cpu).loss, opt_ours)
                else:
                    seconds += _step(plain, lambda b=b: plain.loss(b), opt_plain)
            if r:
                times[who].append(n / seconds)
        examples += n if r else 0
    ours_speed, plain_speed = (statistics.median(times[k]) for k in ("rnnkit", "plain"))
    return {
        "case": name,
        "rnnkit_examples_per_s": ours_speed,
        "plain_examples_per_s": plain_speed,
        "ratio": ours_speed / plain_speed,
        "model": dataclasses.asdict(run.model),
        "batch_size": run.train.batch_size,
    }, (ours, data)


def predict_speed(model, data, repeats: int) -> float:
    """Names/s of ``predict_proba`` over the validation names (raw text in, labels out)."""
    from rnnkit.tasks.classify import probabilities

    model.eval()
    examples = data.val
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        probabilities(model, examples, 64)
        best = max(best, len(examples) / (time.perf_counter() - start))
    return best


def training_memory(path: Path, steps: int) -> float:
    """Peak resident MiB of `rnnkit train --task classify` on ``path`` for ``steps`` steps."""
    with tempfile.TemporaryDirectory() as out:
        code = (
            "import resource, sys; from rnnkit.cli import main; "
            f"rc = main(['train', {str(path)!r}, '--task', 'classify', '--level', 'word', "
            f"'--out', {out!r}, '--max-steps', '{steps}', '--eval-every', '{steps}']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    return int(result.stdout.split()[-1]) / 1024


def _quick_data(folder: Path) -> dict[str, tuple[str, Path, dict]]:
    names = folder / "names"
    names.mkdir()
    for label, stems in {"A": ["ab", "abc", "abba"], "B": ["xy", "xyz", "yxx"]}.items():
        (names / f"{label}.txt").write_text("\n".join(stems * 20) + "\n")
    tsv = folder / "items.tsv"
    tsv.write_text("".join(f"{'pos' if i % 2 else 'neg'}\tw{i % 7} x y z\n" for i in range(80)))
    conll = folder / "ner.txt"
    conll.write_text("\n\n".join("Ann\tB-per\nsaw\tO\nRome\tB-loc" for _ in range(40)) + "\n")
    return {
        "classify names (char)": ("classify", names, {"level": "char"}),
        "classify sst2 (word)": ("classify", tsv, {"level": "word"}),
        "tag wnut17": ("tag", conll, {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny generated data, one round")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tasks.json")
    args = parser.parse_args()
    rounds, steps = (1, 2) if args.quick else (5, 10)
    with tempfile.TemporaryDirectory() as tmp:
        cases = _quick_data(Path(tmp)) if args.quick else CASES
        rows, names_model = [], None
        print(f"{'case':<24} {'rnnkit ex/s':>12} {'plain ex/s':>12} {'ratio':>7}")
        for name, (task, path, data_cfg) in cases.items():
            if not path.exists():
                print(f"{name:<24} skipped: {path} is absent")
                continue
            row, (model, data) = training_speed(name, task, path, data_cfg, rounds, steps)
            rows.append(row)
            print(
                f"{name:<24} {row['rnnkit_examples_per_s']:12.1f} "
                f"{row['plain_examples_per_s']:12.1f} {row['ratio']:6.2f}x",
                flush=True,
            )
            if name.startswith("classify names"):
                names_model = (model, data)
        report = {"provenance": provenance(HERE.parent), "quick": args.quick, "training": rows}
        if names_model is not None:
            report["predict_names_per_s"] = predict_speed(*names_model, 1 if args.quick else 3)
            print(f"predict, names at batch 64: {report['predict_names_per_s']:.0f} names/s")
        sst2 = cases["classify sst2 (word)"][1]
        if sst2.exists():
            report["train_peak_rss_mib"] = training_memory(sst2, 5 if args.quick else 50)
            peak = report["train_peak_rss_mib"]
            print(f"peak resident memory training on {sst2.name}: {peak:.0f} MiB")
        report["seq2seq"] = seq2seq_speed(args.quick)
        print_speed(report["seq2seq"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
