"""Encoder-decoder translation and conditional generation: data, speed, and a plain-PyTorch anchor.

    python bench/seq2seq.py prepare DIR     # the reference runs' data files, written to DIR
    python bench/seq2seq.py speed [--quick] # training pairs/s and decoding sentences/s
    python bench/seq2seq.py anchor DIR/eng-fra-train.tsv --val DIR/eng-fra-val.tsv --seconds 300

prepare: ``eng-fra-tutorial.tsv``, the PyTorch translation tutorial's subset of
    ../shared/data/eng-fra/eng-fra.txt (lower case, accents folded to ASCII, a space before
    ``.!?``, other non-letters removed; both sides under 10 words; English starting "i am / he
    is / she is / you are / we are / they are" or their contractions): 10,599 pairs, written
    ``english<TAB>french`` (train French -> English with ``--reverse``), and its random 90/10
    split ``eng-fra-train.tsv`` / ``eng-fra-val.tsv`` (9,539 / 1,060 pairs, the split ``rnnkit
    train`` draws with ``--seed 0``); ``digits-captions.npz``, ../shared/data/digits/digits.npz
    with ``text``, each image's digit as an English word (the captioning pattern of ``--task
    condgen``), and its stratified 80/20 split ``digits-train.npz`` / ``digits-val.npz``;
    ``names-train.tsv`` / ``names-val.tsv`` (../shared/data/names, a split stratified by
    language) with ``names-any-train.tsv`` / ``names-any-val.tsv``, the same names under one
    label (the unconditioned baseline).
speed: (a) training pairs/s (forward + backward + AdamW step, same batches, same optimizer,
    same clipping) of rnnkit's ``Seq2Seq`` beside a plain PyTorch encoder-decoder of the same
    architecture (``torch.nn.GRU`` encoder and decoder, the same additive attention written out
    in plain tensor code) in the same process, as a ratio; each computes its loss as it does in
    training (rnnkit: ``model(..., targets=...)``, the head at the real target steps only; the
    plain model: logits at every padded step and ``ignore_index``); (b) decoding sentences/s of
    ``Seq2Seq.decode``, greedy and beam 5, at batch 1 and 64, beside a plain PyTorch greedy
    loop. The model is the seq2seq preset at H = E = 256 (GRU, bidirectional encoder, additive
    attention; the plain model a bidirectional nn.GRU with its directions summed), with the
    tutorial subset's vocabulary sizes and sentence lengths (random tokens, untrained weights;
    every sentence is decoded to MAX_LENGTH tokens). What is compared takes turns, round by
    round, and each figure is the median of 5 rounds of at least 1 s.
anchor: trains the plain PyTorch model of (a), unidirectional, H = E = 256, dropout 0.1 (the
    issue's "GRU 256 + additive attention"), on a pairs file for ``--seconds`` (rnnkit's random
    90/10 split and vocabularies, the seq2seq preset's batch size, AdamW, learning rate and
    clipping, a constant learning rate) and reports the greedy BLEU (sacrebleu) of the
    held-out pairs: the bar for ``rnnkit train`` with the preset in the same time.

Results are printed and written to bench/results/seq2seq.json (seq2seq.quick.json with
--quick; seq2seq-anchor.json for the anchor).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.benchmark import provenance
from rnnkit.config import RunConfig, merge
from rnnkit.data.generation import decoder_batch, tokens_text
from rnnkit.data.sequences import pad_batch, split_indices
from rnnkit.data.vocab import Vocab
from rnnkit.tasks import get_task
from rnnkit.tasks.decoder import corpus_bleu, token_loss
from rnnkit.tasks.seq2seq import Seq2Seq
from rnnkit.training.optim import make_optimizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data"
ENGLISH_STARTS = (
    *("i am ", "i m ", "he is", "he s ", "she is", "she s "),
    *("you are", "you re ", "we are", "we re ", "they are", "they re "),
)
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MAX_LENGTH = 12  # decoded tokens per sentence in (b)
ANCHOR_DROPOUT = 0.1  # the anchor: a plain GRU 256 (unidirectional) + additive attention


# --- prepare --------------------------------------------------------------------------------


def tutorial_normalise(text: str) -> str:
    """The tutorial's normalisation: lower case, ASCII, `` .``/``!``/``?`` split off, other
    non-letters removed."""
    text = "".join(
        c
        for c in unicodedata.normalize("NFD", text.lower().strip())
        if unicodedata.category(c) != "Mn"
    )
    text = re.sub(r"([.!?])", r" \1", text)
    return re.sub(r"[^a-zA-Z.!?]+", r" ", text).strip()


def prepare(folder: Path) -> None:
    """Write the reference runs' data files into ``folder`` (see the module docstring).

    Raises:
        SystemExit: a source file under ../shared/data is absent (one line naming it; nothing
            is written).
    """
    for path in (DATA / "eng-fra" / "eng-fra.txt", DATA / "digits" / "digits.npz", DATA / "names"):
        if not path.exists():
            sys.exit(f"bench/seq2seq.py prepare: error: {path} is absent (see ../shared/data)")
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DATA / "eng-fra" / "eng-fra.txt").read_text(encoding="utf-8").strip().split("\n")
    kept = []
    for line in lines:
        english, french = (tutorial_normalise(part) for part in line.split("\t"))
        short = len(english.split(" ")) < 10 and len(french.split(" ")) < 10
        if short and english.startswith(ENGLISH_STARTS):
            kept.append(f"{english}\t{french}\n")
    (folder / "eng-fra-tutorial.tsv").write_text("".join(kept), encoding="utf-8")
    train, val = split_indices(len(kept), 0.1, 0)  # what rnnkit train draws with --seed 0
    for part, rows in (("train", train), ("val", val)):
        text = "".join(kept[i] for i in rows)
        (folder / f"eng-fra-{part}.tsv").write_text(text, encoding="utf-8")
    print(f"{folder / 'eng-fra-tutorial.tsv'}: {len(kept)} pairs ({len(train)} + {len(val)})")
    digits = np.load(DATA / "digits" / "digits.npz")
    x, text = digits["x"], np.array(DIGIT_NAMES)[digits["y"]]
    np.savez(folder / "digits-captions.npz", x=x, text=text)
    train, val = split_indices(len(x), 0.2, 0, digits["y"].tolist())  # stratified 80/20
    for part, rows in (("train", train), ("val", val)):
        np.savez(folder / f"digits-{part}.npz", x=x[rows], text=text[rows])
    print(f"{folder / 'digits-captions.npz'}: {len(x)} images ({len(train)} + {len(val)})")
    _names(folder)


def _names(folder: Path) -> None:
    """names-{train,val}.tsv (``language<TAB>name``, a split stratified by language as
    ``rnnkit train`` draws it with seed 0 and --val-frac 0.1) and names-any-{train,val}.tsv,
    the same names under one label ``any``: a condgen model of them is an unconditioned
    character model of the same names, the baseline of the language-conditioned one."""
    files = sorted((DATA / "names").glob("*.txt"))
    rows = [
        (f.stem, line.strip())
        for f in files
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    train, val = split_indices(len(rows), 0.1, 0, [label for label, _ in rows])
    for part, indices in (("train", train), ("val", val)):
        chosen = [rows[i] for i in indices]
        text = "".join(f"{label}\t{name}\n" for label, name in chosen)
        (folder / f"names-{part}.tsv").write_text(text, encoding="utf-8")
        text = "".join(f"any\t{name}\n" for _, name in chosen)
        (folder / f"names-any-{part}.tsv").write_text(text, encoding="utf-8")
    print(f"{folder / 'names-train.tsv'}: {len(train)} names; names-val.tsv: {len(val)}")


# --- the plain PyTorch model ------------------------------------------------------------------


class PlainSeq2Seq(nn.Module):
    """The preset architecture in plain PyTorch: nn.GRU encoder and decoder (the decoder starts
    from the encoder's final state; a bidirectional encoder's two directions summed, in its
    outputs and its final state), additive attention v^T tanh(W_q h_t + W_k o_s) over the real
    source steps, tanh(W_c [c_t; h_t]), dropout on the embeddings and before the head."""

    def __init__(
        self,
        source_size: int,
        target_size: int,
        size: int,
        dropout: float,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.source_embedding = nn.Embedding(source_size, size)
        self.target_embedding = nn.Embedding(target_size, size)
        self.encoder = nn.GRU(size, size, batch_first=True, bidirectional=bidirectional)
        self.decoder = nn.GRU(size, size, batch_first=True)
        self.query = nn.Linear(size, size, bias=False)
        self.key = nn.Linear(size, size, bias=False)
        self.score = nn.Linear(size, 1, bias=False)
        self.combine = nn.Linear(2 * size, size)
        self.head = nn.Linear(size, target_size)
        self.dropout = nn.Dropout(dropout)

    def encode(self, source: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.dropout(self.source_embedding(source))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        outputs, h = self.encoder(packed)  # (dirs, B, H)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])
        if self.encoder.bidirectional:
            outputs = outputs.view(*outputs.shape[:2], 2, -1).sum(dim=2)  # (B, S, H)
            h = h.sum(dim=0, keepdim=True)  # (1, B, H)
        mask = torch.arange(source.shape[1])[None, :] < lengths[:, None]  # (B, S)
        return outputs, self.key(outputs), mask, h

    def output(self, hidden: Tensor, outputs: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        scores = self.score(
            torch.tanh(self.query(hidden)[:, :, None] + keys[:, None])
        )  # (B, T, S, 1)
        scores = scores.squeeze(3).masked_fill(~mask[:, None, :], -math.inf)  # (B, T, S)
        context = scores.softmax(dim=2) @ outputs  # (B, T, H)
        attended = torch.tanh(self.combine(torch.cat([context, hidden], dim=2)))  # (B, T, H)
        return self.head(self.dropout(attended))  # (B, T, V)

    def forward(self, source: Tensor, lengths: Tensor, target_in: Tensor) -> Tensor:
        outputs, keys, mask, h = self.encode(source, lengths)
        hidden, _ = self.decoder(self.dropout(self.target_embedding(target_in)), h)  # (B, T, H)
        return self.output(hidden, outputs, keys, mask)

    @torch.no_grad()
    def greedy(self, source: Tensor, lengths: Tensor, steps: int) -> Tensor:
        outputs, keys, mask, h = self.encode(source, lengths)
        token = torch.full((source.shape[0], 1), Vocab.bos_id)  # (B, 1)
        chosen = []
        for _ in range(steps):
            hidden, h = self.decoder(self.target_embedding(token), h)  # (B, 1, H)
            token = self.output(hidden, outputs, keys, mask).argmax(dim=2)  # (B, 1)
            chosen.append(token)
        return torch.cat(chosen, dim=1)  # (B, steps)


# --- speed ------------------------------------------------------------------------------------


def _preset(**model: Any) -> RunConfig:
    run = merge(RunConfig(task="seq2seq"), get_task("seq2seq").preset())
    return merge(run, {"model": model})


def _random_batches(
    count: int, batch_size: int, sizes: tuple[int, int], lengths: tuple[int, int], seed: int
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        sources = [
            rng.integers(4, sizes[0], rng.integers(*lengths)).tolist() for _ in range(batch_size)
        ]
        targets = [
            rng.integers(4, sizes[1], rng.integers(*lengths)).tolist() for _ in range(batch_size)
        ]
        source, source_lengths = pad_batch(sources)
        target_in, target_out = decoder_batch(targets)
        batches.append((source, source_lengths, target_in, target_out))
    return batches


def _timed(fns: dict[str, Any], repeats: int, min_seconds: float) -> dict[str, float]:
    """Median seconds per call of each of ``fns`` over ``repeats`` rounds of at least
    ``min_seconds`` each, the functions taking turns round by round (each round starting one
    later), so that a burst of load from elsewhere touches them alike."""
    for fn in fns.values():
        fn()  # warm up
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < min_seconds or calls == 0:
                fns[name]()
                calls += 1
            times[name].append(elapsed / calls)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def speed(quick: bool) -> dict[str, Any]:
    size = 16 if quick else 256
    sizes = (60, 50) if quick else (4_345, 2_803)  # the tutorial subset's French / English words
    batch_size = 4 if quick else 64
    repeats, seconds = (1, 0.01) if quick else (5, 1.0)
    run = _preset(hidden_size=size, embedding_size=size)
    torch.manual_seed(0)
    ours = Seq2Seq(run.model, *sizes)
    ours.longest_target = MAX_LENGTH
    plain = PlainSeq2Seq(*sizes, size, run.model.dropout, run.model.bidirectional)
    batches = _random_batches(8, batch_size, sizes, (4, 11), seed=0)

    def trainer(model: nn.Module) -> Any:
        optimizer = make_optimizer(model.parameters(), run.train)
        index = [0]

        def step() -> None:
            source, lengths, target_in, target_out = batches[index[0] % len(batches)]
            index[0] += 1
            if isinstance(model, Seq2Seq):  # what `rnnkit train` runs: the head at real steps
                loss = model(source, lengths, target_in, targets=target_out)
            else:
                loss = token_loss(model(source, lengths, target_in), target_out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), run.train.grad_clip)
            optimizer.step()

        return step

    result: dict[str, Any] = {"threads": torch.get_num_threads(), "hidden_size": size}
    ours.train(), plain.train()
    timed = _timed({"ours": trainer(ours), "plain": trainer(plain)}, repeats, seconds)
    ours_s, plain_s = timed["ours"], timed["plain"]
    result["training"] = {
        "batch_size": batch_size,
        "pairs_per_s": batch_size / ours_s,
        "plain_pairs_per_s": batch_size / plain_s,
        "ratio": plain_s / ours_s,
    }
    ours.eval(), plain.eval()
    decoding = []
    for batch in (1, 64):
        decoding.append(_decoding_row(ours, plain, batch, sizes, repeats, seconds))
    result["decoding"] = decoding
    return result


def _decoding_row(
    ours: Seq2Seq,
    plain: PlainSeq2Seq,
    batch: int,
    sizes: tuple[int, int],
    repeats: int,
    seconds: float,
) -> dict[str, Any]:
    """Sentences/s of greedy and beam-5 decoding, and of the plain greedy loop, at ``batch``."""
    source, lengths, _, _ = _random_batches(1, batch, sizes, (4, 11), seed=batch)[0]
    fns = {
        "greedy": lambda: ours.decode(source, lengths, beam_size=1, max_length=MAX_LENGTH),
        "beam5": lambda: ours.decode(source, lengths, beam_size=5, max_length=MAX_LENGTH),
        "plain_greedy": lambda: plain.greedy(source, lengths, MAX_LENGTH),
    }
    timed = _timed(fns, repeats, seconds)
    return {"batch_size": batch} | {name: batch / s for name, s in timed.items()}


def print_speed(result: dict[str, Any]) -> None:
    t = result["training"]
    print(
        f"training, forward + backward + AdamW, GRU H={result['hidden_size']} + additive "
        f"attention, B={t['batch_size']}, {result['threads']} threads"
    )
    print(f"  {'rnnkit Seq2Seq':<26} {t['pairs_per_s']:10.1f} pairs/s")
    print(f"  {'plain PyTorch':<26} {t['plain_pairs_per_s']:10.1f} pairs/s")
    print(f"  {'ratio':<26} {t['ratio']:10.2f}x")
    print(f"decoding, sentences/s ({MAX_LENGTH} tokens each)")
    print(f"  {'batch':>5} {'greedy':>10} {'beam 5':>10} {'plain greedy':>13}")
    for row in result["decoding"]:
        print(
            f"  {row['batch_size']:>5} {row['greedy']:10.1f} {row['beam5']:10.1f} "
            f"{row['plain_greedy']:13.1f}"
        )


# --- anchor -----------------------------------------------------------------------------------


def train_for(
    seconds: float,
    model: nn.Module,
    batches,
    loss_of,
    optimizer: torch.optim.Optimizer,
    clip: float | None = None,
    each_epoch=None,
) -> int:
    """A plain loop: ``loss_of(batch)``, backward, (clip the gradient norm), step, over
    ``batches.get(epoch, index)`` epoch after epoch for ``seconds``; ``each_epoch()`` after
    every epoch. Returns the steps taken."""
    steps, epoch, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for index in range(len(batches)):
            loss = loss_of(batches.get(epoch, index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
        if each_epoch is not None:
            each_epoch()
    return steps


def anchor(
    path: Path, val: Path | None, seconds: float, reverse: bool, seed: int
) -> dict[str, Any]:
    """Train PlainSeq2Seq on ``path`` for ``seconds``; greedy BLEU of the held-out pairs
    (``val``, or rnnkit's random 10% of ``path``)."""
    data_cfg = {"path": str(path), "reverse": reverse, "val": None if val is None else str(val)}
    data_cfg["val_frac"] = 0.1  # without --val: rnnkit's 10% split (the preset holds out none)
    # The plain model has a row per word: the vocabulary of --no-char-features.
    run = merge(_preset(char_features=False), {"data": data_cfg, "train": {"seed": seed}})
    torch.manual_seed(seed)
    data = get_task("seq2seq").load_data(run, None)
    source_vocab = Vocab.from_dict(data.meta["source"])
    target_vocab = Vocab.from_dict(data.meta["target"])
    model = PlainSeq2Seq(len(source_vocab), len(target_vocab), 256, ANCHOR_DROPOUT)
    optimizer = make_optimizer(model.parameters(), run.train)
    batches = get_task("seq2seq").batches(run, data)

    def loss_of(batch) -> Tensor:
        source, lengths, target_in, target_out, _ = batch
        return token_loss(model(source, lengths, target_in), target_out)

    steps = train_for(seconds, model, batches, loss_of, optimizer, run.train.grad_clip)
    model.eval()
    val = data.val
    outputs = []
    limit = 2 * data.meta["longest_target"] + 1
    for i in range(0, len(val.sources), 64):
        source, lengths = pad_batch(val.sources[i : i + 64])
        for row in model.greedy(source, lengths, limit).tolist():
            row = row[: row.index(Vocab.eos_id)] if Vocab.eos_id in row else row
            outputs.append(tokens_text(target_vocab.decode(row), "word"))
    bleu = corpus_bleu(outputs, val.references, "word")
    return {
        "data": str(path),
        "seconds": seconds,
        "steps": steps,
        "train_pairs": len(data.train.sources),
        "val_pairs": len(val.sources),
        "bleu": bleu,
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="write the reference runs' data files")
    p.add_argument("folder", type=Path)
    s = commands.add_parser("speed", help="training pairs/s and decoding sentences/s")
    s.add_argument("--quick", action="store_true", help="tiny sizes, one short round (smoke test)")
    a = commands.add_parser("anchor", help="plain PyTorch BLEU after --seconds of training")
    a.add_argument("data", type=Path, help="pairs file, e.g. DIR/eng-fra-train.tsv")
    a.add_argument("--val", type=Path, help="held-out pairs, e.g. DIR/eng-fra-val.tsv")
    a.add_argument("--seconds", type=float, default=300.0)
    a.add_argument("--no-reverse", action="store_true", help="the first column is the source")
    a.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"provenance": provenance(ROOT)}
    if args.command == "prepare":
        prepare(args.folder)
    elif args.command == "speed":
        result = {**machine, **speed(args.quick)}
        print_speed(result)
        name = "seq2seq.quick.json" if args.quick else "seq2seq.json"
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    else:
        result = {
            **machine,
            **anchor(args.data, args.val, args.seconds, not args.no_reverse, args.seed),
        }
        print(
            "plain PyTorch GRU 256 + additive attention, "
            f"{result['seconds']:g} s, {result['steps']} steps: greedy BLEU "
            f"{result['bleu']:.2f} on {result['val_pairs']} held-out pairs"
        )
        (RESULTS / "seq2seq-anchor.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
