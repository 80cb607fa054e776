"""Data: vocabularies, text readers and tokenisers, TBPTT streams (never imports torch.nn)."""

from rnnkit.data.text import LMData, TokenStreams, eval_chunks, load_lm_data, read_text, tokenize
from rnnkit.data.vocab import Vocab

__all__ = [
    "LMData",
    "TokenStreams",
    "Vocab",
    "eval_chunks",
    "load_lm_data",
    "read_text",
    "tokenize",
]
