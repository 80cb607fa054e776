"""Evaluating a trained model folder on held-out text (``rnnkit eval``)."""

from __future__ import annotations

from pathlib import Path

import torch

from rnnkit.config import EvalConfig
from rnnkit.data.text import read_text, tokenize
from rnnkit.errors import DataError
from rnnkit.tasks.lm import LMMetrics, evaluate
from rnnkit.training.checkpoint import load
from rnnkit.training.loop import pick_device


def evaluate_folder(folder: str | Path, data: str | Path, cfg: EvalConfig) -> LMMetrics:
    """Loss of the model in ``folder`` over every token of the text ``data`` (file or folder).

    The text is tokenised as in training (tokens outside the vocabulary count as ``<unk>``)
    and read as ``cfg.batch_size`` contiguous streams, each carrying its state through its
    part of the text.

    Raises:
        CheckpointError: the model folder is missing or damaged.
        DataError: the text is missing, undecodable or shorter than 2 tokens.
    """
    device = pick_device(cfg.device)
    model = load(folder, device=device)
    tokens = tokenize(read_text(data, cfg.encoding), model.level)
    if len(tokens) < 2:
        raise DataError(f"{data} has {len(tokens)} {model.level} token(s); eval needs at least 2")
    ids = torch.tensor(model.vocab.encode(tokens), dtype=torch.long)  # (N,)
    return evaluate(model, ids, cfg.batch_size, cfg.seq_len)
