"""Plain PyTorch anchors of the classify, tag and captioning goals, measured on this machine in the
reference runs' time: what a user's first script reaches, the bar for rnnkit's defaults.

    python bench/anchors.py frames [--seconds 90]   # causal nn.LSTM 128, a speaker per frame
    python bench/anchors.py wnut17 [--seconds 240]  # word + char-BiLSTM tagger, softmax
    python bench/anchors.py digits [--seconds 60]   # conditional char-GRU 128, captions
    python bench/anchors.py names [--seconds 120]   # char-BiGRU 256 + max-pool, 18 languages
    python bench/anchors.py sst2 [--seconds 240]    # word BiLSTM 256 + max-pool, sentiment

Each reads its data through rnnkit's task (the same words, characters, batches and features
as ``rnnkit train --task tag``, ``condgen`` or ``classify``); the model, loss, optimizer and
loop are plain PyTorch (``nn.Embedding``, ``nn.LSTM`` / ``nn.GRU`` on packed sequences,
``nn.Linear``, Adam 1e-3 or ``--lr``, no schedule), and each runs for ``--seconds``, epoch
after epoch.

frames: japanese_vowels with the speaker as the label of every frame (bench/reference_tasks.py's
    frames files), ``nn.LSTM(12, 128)`` in one direction (each frame judged from the frames so
    far), batch 16, all 270 training utterances, the final weights; frame accuracy on the 370
    test utterances.
wnut17: words (every training word; an unseen word gets the ``<unk>`` vector) 100 features and
    a character BiLSTM (25 + 25) per word -> dropout 0.5 -> BiLSTM 200 -> dropout 0.5 -> tag
    scores, softmax cross-entropy, batch 16; the weights of the best dev entity F1 (seqeval,
    evaluated after every epoch); test entity F1 of those weights, and of the final ones.
digits: 8x8 images -> the digit's English name, character by character (bench/seq2seq.py
    prepare's stratified 80/20 split): the standardised image v sets h_0 = tanh(W v + b) and
    joins every step's input (the captioning pattern), ``nn.GRU`` 128, characters 32, batch 64,
    all 1,438 training images, the final weights; exact match of the greedy captions of the 359
    held-out images.
names, sst2: characters (names, reference_tasks.py's stratified 75/10/15 split) or words
    (SST-2's train / dev / test) embedded in 128 features -> dropout 0.3 -> a bidirectional
    nn.GRU (names) or nn.LSTM (SST-2) of 256 -> max over the real steps -> dropout -> classes,
    batch 32; the weights of the best dev accuracy (after every epoch); test accuracy and
    macro-F1.

Writes bench/results/anchors.json (each run with its provenance; runs not named are kept).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from reference_tasks import DATA, _prepared, frames, names_split
from seq2seq import train_for
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.benchmark import provenance
from rnnkit.config import RunConfig, merge
from rnnkit.data.examples import Examples, sorted_batches
from rnnkit.data.vocab import Vocab
from rnnkit.tasks import get_task
from rnnkit.tasks.metrics import classification_metrics, entity_metrics

HERE = Path(__file__).resolve().parent
LR = 1e-3
"""Adam's learning rate (``--lr``): 1e-3, what a first script takes."""
RUNS = {"frames": 90.0, "wnut17": 240.0, "digits": 60.0, "names": 120.0, "sst2": 240.0}
"""Each anchor and its budget in seconds (the issues' anchors' budgets)."""


def _packed_rnn(rnn: nn.Module, x: Tensor, lengths: Tensor) -> Tensor:
    """An nn.LSTM or nn.GRU over the real steps of x (B, T, D) -> (B, T, dirs·H), zeros at
    padding."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])
    return out


class PlainTagger(nn.Module):
    """Features or words (+ a character BiLSTM per word) -> nn.LSTM -> a score per tag."""

    def __init__(
        self, inputs: int, tags: int, hidden: int, *, words: bool, chars: int | None, drop: float
    ) -> None:
        super().__init__()
        self.words = nn.Embedding(inputs, 100, padding_idx=0) if words else None
        size = 100 if words else inputs
        if chars is not None:
            self.chars = nn.Embedding(chars, 25, padding_idx=0)
            self.char_lstm = nn.LSTM(25, 25, batch_first=True, bidirectional=True)
            size += 50
        self.drop = nn.Dropout(drop)
        self.lstm = nn.LSTM(size, hidden, batch_first=True, bidirectional=words)
        self.head = nn.Linear(hidden * (2 if words else 1), tags)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Tag scores (B, T, C) of a batch of rnnkit's tag task."""
        inputs = batch["inputs"]
        x = self.words(inputs) if self.words is not None else inputs.float()  # (B, T, D)
        if "chars" in batch:
            B, T, W = batch["chars"].shape
            n = batch["word_lengths"].reshape(B * T)  # (B·T,)
            real = (n > 0).nonzero().squeeze(1)  # (N,)
            chars = self.chars(batch["chars"].reshape(B * T, W)[real])  # (N, W, 25)
            packed = pack_padded_sequence(chars, n[real], batch_first=True, enforce_sorted=False)
            _, (h, _) = self.char_lstm(packed)  # (2, N, 25)
            spelled = x.new_zeros(B * T, 50).index_copy(0, real, torch.cat([h[0], h[1]], 1))
            x = torch.cat([x, spelled.reshape(B, T, 50)], -1)  # (B, T, 150)
        out = _packed_rnn(self.lstm, self.drop(x), batch["lengths"])  # (B, T, dirs·H)
        return self.head(self.drop(out))  # (B, T, C)


def _data(path: Path, val: Path, **model: Any) -> tuple[Any, Any, RunConfig]:
    """rnnkit's tag task data of ``path`` (every word kept as written: --min-freq 1,
    --no-lowercase) with ``val`` as the validation split."""
    task = get_task("tag")
    run = merge(RunConfig(task="tag"), task.preset(str(path)))
    run = dataclasses.replace(
        run,
        data=dataclasses.replace(
            run.data, path=str(path), val=str(val), min_freq=1, lowercase=False
        ),
        model=dataclasses.replace(run.model, **model),
    )
    return task, task.load_data(run, None), run


@torch.no_grad()
def _predict(model: PlainTagger, examples: Examples) -> list[list[int]]:
    """Argmax tag ids of every example, in order (eval mode)."""
    model.eval()
    paths: list[list[int]] = [[] for _ in range(len(examples))]
    for index, batch in sorted_batches(examples, 64):
        best = model(batch).argmax(-1)  # (B, T)
        for row, i in enumerate(index.tolist()):
            paths[i] = best[row, : int(batch["lengths"][row])].tolist()
    model.train()
    return paths


def _train(model: PlainTagger, task, data, run, seconds: float, each_epoch=None) -> int:
    """Adam (``LR``) on the task's batches for ``seconds``; ``each_epoch()`` after every epoch."""

    def loss_of(batch: dict[str, Tensor]) -> Tensor:
        scores = model(batch)  # (B, T, C)
        return nn.functional.cross_entropy(scores.transpose(1, 2), batch["targets"])

    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batches = task.batches(run, data)
    return train_for(seconds, model, batches, loss_of, optimizer, each_epoch=each_epoch)


def frames_anchor(seconds: float, folder: Path) -> dict[str, Any]:
    """The causal nn.LSTM 128 on every training utterance; test frame accuracy."""
    train, test = frames(folder)
    # every training utterance; the test split as validation, read at the end only
    task, data, run = _data(train, test, hidden_size=128, bidirectional=False)
    mean, std = (torch.from_numpy(part).float() for part in data.setup["statistics"])
    model = PlainTagger(12, 9, 128, words=False, chars=None, drop=0.0)
    model.forward = _standardised(model.forward, mean, std)  # type: ignore[method-assign]
    steps = _train(model, task, data, run, seconds)
    paths = _predict(model, data.val)
    pairs = zip(data.val.y, paths, strict=True)  # y (T,) padded; a path has the real steps
    right = sum(int(p == t) for y, path in pairs for p, t in zip(path, y, strict=False))
    total = sum(len(path) for path in paths)
    return {"seconds": seconds, "steps": steps, "test_frame_accuracy": right / total}


def wnut17_anchor(seconds: float) -> dict[str, Any]:
    """The word + char-BiLSTM softmax tagger; test F1 of the best-dev and the final weights."""
    w = DATA / "wnut17"
    task, data, run = _data(w / "train.txt", w / "dev.txt", char_features=True, crf=False)
    tags = data.meta["tags"]
    model = PlainTagger(
        len(data.meta["vocab"]["tokens"]),
        len(tags),
        200,
        words=True,
        chars=len(data.meta["chars"]) + 2,
        drop=0.5,
    )
    best: dict[str, Any] = {"f1": -1.0}

    def f1(examples: Examples) -> dict[str, float]:
        paths = _predict(model, examples)
        true = [[tags[t] for t in y] for y in examples.y]
        scores = entity_metrics(true, [[tags[t] for t in p] for p in paths])
        return {k: scores[k] for k in ("precision", "recall", "f1")}

    def keep_best() -> None:
        dev = f1(data.val)
        if dev["f1"] > best["f1"]:
            best.update(dev, weights=copy.deepcopy(model.state_dict()))

    steps = _train(model, task, data, run, seconds, keep_best)
    test = _examples_of(task, run, w / "test.txt")
    final = f1(test)
    model.load_state_dict(best.pop("weights"))
    return {"seconds": seconds, "steps": steps, "dev": best, "test": f1(test), "test_final": final}


class PlainCaptioner(nn.Module):
    """A condition vector v (B, D) -> text: h_0 = tanh(W v + b), v joined to every input."""

    def __init__(self, size: int, vocab: int, hidden: int = 128) -> None:
        super().__init__()
        self.init = nn.Linear(size, hidden)
        self.embedding = nn.Embedding(vocab, 32)
        self.gru = nn.GRU(32 + size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, v: Tensor, inputs: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """v (B, D), inputs (B, T) -> scores (B, T, V), h (1, B, H)."""
        h = torch.tanh(self.init(v))[None] if h is None else h  # (1, B, H)
        steps = v[:, None, :].expand(-1, inputs.shape[1], -1)  # (B, T, D)
        out, h = self.gru(torch.cat([self.embedding(inputs), steps], -1), h)  # (B, T, H)
        return self.head(out), h

    @torch.no_grad()
    def greedy(self, v: Tensor, steps: int, bos: int) -> Tensor:
        """The most likely token at each step: v (B, D) -> (B, steps)."""
        token, h, out = torch.full((v.shape[0], 1), bos), None, []
        for _ in range(steps):
            scores, h = self(v, token, h)  # (B, 1, V)
            token = scores.argmax(-1)  # (B, 1)
            out.append(token)
        return torch.cat(out, 1)  # (B, steps)


def digits_anchor(seconds: float, folder: Path) -> dict[str, Any]:
    """The conditional char-GRU 128 on every training image; exact match of greedy captions."""
    _prepared(folder)
    task = get_task("condgen")
    run = merge(RunConfig(task="condgen"), task.preset())
    files = {"path": str(folder / "digits-train.npz"), "val": str(folder / "digits-val.npz")}
    run = dataclasses.replace(run, data=dataclasses.replace(run.data, **files))
    data = task.load_data(run, None)
    train, test = data.train, data.val
    mean, std = train.conditions.mean(0), train.conditions.std(0).clamp_min(1e-6)  # (D,)
    vocab = Vocab.from_dict(data.meta["vocab"])
    model = PlainCaptioner(train.conditions.shape[1], len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def loss_of(batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        v, inputs, targets = batch
        scores, _ = model((v - mean) / std, inputs)  # (B, T, V)
        return nn.functional.cross_entropy(scores.transpose(1, 2), targets)

    steps = train_for(seconds, model, task.batches(run, data), loss_of, optimizer)
    model.eval()
    longest = max(len(item) for item in test.items) + 1
    out = model.greedy((test.conditions - mean) / std, longest, Vocab.bos_id).tolist()
    right = sum(
        int(row[: len(item) + 1] == [*item, Vocab.eos_id])
        for row, item in zip(out, test.items, strict=True)
    )
    return {"seconds": seconds, "steps": steps, "test_exact_match": right / len(test.items)}


class PlainClassifier(nn.Module):
    """Tokens -> a bidirectional nn.GRU or nn.LSTM -> max over the real steps -> classes."""

    def __init__(self, vocab: int, classes: int, cell: type[nn.Module]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 128, padding_idx=0)
        self.rnn = cell(128, 256, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(512, classes)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Class scores (B, C) of a batch of rnnkit's classify task."""
        lengths = batch["lengths"]
        x = self.drop(self.embedding(batch["inputs"]))  # (B, T, E)
        out = _packed_rnn(self.rnn, x, lengths)  # (B, T, 2H), zeros at padding
        real = torch.arange(out.shape[1])[None, :] < lengths[:, None]  # (B, T)
        pooled = out.masked_fill(~real[..., None], float("-inf")).amax(1)  # (B, 2H)
        return self.head(self.drop(pooled))  # (B, C)


def classify_anchor(name: str, seconds: float, folder: Path) -> dict[str, Any]:
    """The plain classifier of names/ or SST-2; test metrics of the best-dev weights."""
    if name == "names":
        train, dev, test = names_split(folder)
    else:
        train, dev, test = (DATA / "sst2" / f"{part}.tsv" for part in ("train", "dev", "test"))
    task = get_task("classify")
    run = merge(RunConfig(task="classify"), task.preset())
    run = dataclasses.replace(
        run, data=dataclasses.replace(run.data, path=str(train), val=str(dev))
    )
    data = task.load_data(run, None)
    labels = data.meta["labels"]
    cell = nn.GRU if name == "names" else nn.LSTM
    model = PlainClassifier(len(data.meta["vocab"]["tokens"]), len(labels), cell)
    best: dict[str, Any] = {"accuracy": -1.0}

    @torch.no_grad()
    def scores(examples: Examples) -> dict[str, float]:
        model.eval()
        predicted = np.zeros(len(examples), dtype=np.int64)
        for index, batch in sorted_batches(examples, 256):
            predicted[index] = model(batch).argmax(-1).numpy()
        model.train()
        metrics = classification_metrics(list(examples.y), predicted.tolist(), labels)
        return {k: metrics[k] for k in ("accuracy", "macro_f1")}

    def keep_best() -> None:
        dev_scores = scores(data.val)
        if dev_scores["accuracy"] > best["accuracy"]:
            best.update(dev_scores, weights=copy.deepcopy(model.state_dict()))

    def loss_of(batch: dict[str, Tensor]) -> Tensor:
        return nn.functional.cross_entropy(model(batch), batch["targets"])

    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batches = task.batches(run, data)
    steps = train_for(seconds, model, batches, loss_of, optimizer, each_epoch=keep_best)
    test_examples = _examples_of(task, run, test)
    final = scores(test_examples)
    model.load_state_dict(best.pop("weights"))
    return {
        "seconds": seconds,
        "steps": steps,
        "dev": best,
        "test": scores(test_examples),
        "test_final": final,
    }


def _examples_of(task, run: RunConfig, path: Path) -> Examples:
    """``path`` read as the validation split of ``run``'s data (the training vocabulary)."""
    run = dataclasses.replace(run, data=dataclasses.replace(run.data, val=str(path)))
    return task.load_data(run, None).val


def _standardised(forward, mean: Tensor, std: Tensor):
    """``forward`` on features standardised with the training frames' mean and deviation."""

    def run(batch: dict[str, Tensor]) -> Tensor:
        return forward({**batch, "inputs": (batch["inputs"].float() - mean) / std})

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", choices=RUNS)
    parser.add_argument("--seconds", type=float, help="the budget (default: the reference run's)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (1e-3)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "anchors.json")
    args = parser.parse_args()
    global LR
    LR = args.lr
    if not DATA.is_dir():
        sys.exit(f"skipped: {DATA} is absent")
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    torch.manual_seed(0)
    for name in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            seconds = args.seconds or RUNS[name]
            if name == "frames":
                row = frames_anchor(seconds, Path(tmp))
            elif name == "digits":
                row = digits_anchor(seconds, Path(tmp))
            elif name == "wnut17":
                row = wnut17_anchor(seconds)
            else:
                row = classify_anchor(name, seconds, Path(tmp))
        key = name if LR == 1e-3 else f"{name} lr {LR:g}"
        report[key] = {**row, "lr": LR, "provenance": provenance(HERE.parent)}
        print(name, json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
