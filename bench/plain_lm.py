"""A plain PyTorch character language model: the anchor of ``bench/lm.py --quality``.

What a PyTorch user writes without rnnkit, after char-rnn: embedding (64) -> ``torch.nn.LSTM``
2x512 with dropout 0.25 between the layers -> dropout 0.25 -> linear head. The training text is
read as B = 64 contiguous streams cut into T = 100-step chunks, the state carried from chunk to
chunk and reset at each pass; ``torch.optim.Adam`` at 3e-3 with cosine decay to 0 over the time
budget, the gradient norm clipped at 1.0; bf16 autocast only where the CPU computes bf16
natively (decided by rnnkit's ``pick_precision("auto", cpu)``: on an AVX2-only CPU autocast
emulates bf16 at a few % of fp32's speed, so fp32 there). Every ``eval_seconds`` of the budget,
and once at its end, the held-out ids are evaluated: the mean loss of every next-character
prediction, in nats, with the state carried along B streams. The budget counts evaluations too,
as ``rnnkit train --max-time`` does.

Only the token ids come from rnnkit (``rnnkit.data.text.load_lm_data`` in bench/lm.py: the same
tokens and split as ``rnnkit train``); the model, batching and loop are written here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # targets past the end of the held-out text


@dataclass(frozen=True)
class PlainConfig:
    """The plain script's settings (see the module docstring)."""

    hidden_size: int = 512
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.25
    batch_size: int = 64
    seq_len: int = 100
    lr: float = 3e-3
    grad_clip: float = 1.0


class CharLSTM(nn.Module):
    """Embedding -> torch.nn.LSTM -> dropout -> head. tokens (B, T) -> logits (B, T, V)."""

    def __init__(self, vocab_size: int, cfg: PlainConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_size)
        self.lstm = nn.LSTM(
            cfg.embedding_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout,
            batch_first=True,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, vocab_size)

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(self.embedding(tokens), state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)


def streams(ids: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Inputs and targets (B, L) of ``batch_size`` contiguous streams, L = (N - 1) // B."""
    length = (ids.numel() - 1) // batch_size
    inputs = ids[: batch_size * length].view(batch_size, length)  # (B, L)
    targets = ids[1 : batch_size * length + 1].view(batch_size, length)  # (B, L)
    return inputs, targets


@torch.no_grad()
def evaluate(model: CharLSTM, ids: Tensor, cfg: PlainConfig, autocast: Any) -> float:
    """Mean loss (nats) of every next-token prediction of ``ids`` (N,), state carried along
    B streams; the last stream's end is padded and left out of the mean."""
    model.eval()
    count = ids.numel() - 1
    rows = min(cfg.batch_size, count)
    length = math.ceil(count / rows)
    inputs = torch.zeros(rows * length, dtype=torch.long)  # (B·L,)
    targets = torch.full((rows * length,), IGNORE, dtype=torch.long)  # (B·L,)
    inputs[:count], targets[:count] = ids[:-1], ids[1:]
    inputs, targets = inputs.view(rows, length), targets.view(rows, length)  # (B, L)
    total, state = 0.0, None
    for start in range(0, length, cfg.seq_len):
        with autocast:
            logits, state = model(inputs[:, start : start + cfg.seq_len], state)  # (B, t, V)
        chunk = targets[:, start : start + cfg.seq_len]  # (B, t)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), chunk.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        total += loss.item()
    model.train()
    return total / count


def train_plain(
    train_ids: Tensor,
    val_ids: Tensor,
    vocab_size: int,
    seconds: float,
    *,
    cfg: PlainConfig,
    eval_seconds: float,
    precision: str,
    seed: int = 0,
) -> dict[str, Any]:
    """Train for ``seconds`` of wall time (evaluations included); the best validation loss.

    Returns:
        ``steps``, ``tokens_per_s`` (training steps' time only), ``best_val_loss`` and
        ``curve`` [(seconds, step, val loss)], and the settings.
    """
    torch.manual_seed(seed)
    model = CharLSTM(vocab_size, cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    inputs, targets = streams(train_ids, cfg.batch_size)  # (B, L), (B, L)
    chunks = inputs.shape[1] // cfg.seq_len
    curve: list[tuple[float, int, float]] = []
    step, train_seconds, state = 0, 0.0, None
    start = time.perf_counter()
    next_eval = eval_seconds
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * elapsed / seconds))
        chunk = step % chunks
        if chunk == 0:
            state = None  # each pass starts every stream from a zero state
        window = slice(chunk * cfg.seq_len, (chunk + 1) * cfg.seq_len)
        began = time.perf_counter()
        with autocast:
            logits, state = model(inputs[:, window], state)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets[:, window].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state = (state[0].detach(), state[1].detach())
        train_seconds += time.perf_counter() - began
        step += 1
        if time.perf_counter() - start >= next_eval:
            val = evaluate(model, val_ids, cfg, autocast)
            curve.append((round(time.perf_counter() - start, 1), step, val))
            next_eval += eval_seconds
    if not curve or curve[-1][1] != step:
        curve.append(
            (round(time.perf_counter() - start, 1), step, evaluate(model, val_ids, cfg, autocast))
        )
    return {
        "settings": {**dataclasses.asdict(cfg), "optimizer": "adam", "schedule": "cosine to 0"},
        "precision": precision,
        "steps": step,
        "tokens_per_s": round(step * cfg.batch_size * cfg.seq_len / max(train_seconds, 1e-9), 1),
        "best_val_loss": min(val for _, _, val in curve),
        "curve": curve,
    }
