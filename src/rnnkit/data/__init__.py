"""Data: vocabularies, readers (text, TSV, BIO, pairs, feature arrays, word vectors), TBPTT
streams and padded batches (never imports torch.nn)."""

from rnnkit.data.embeddings import read_word_vectors
from rnnkit.data.labelled import (
    FeatureSequences,
    LabelledPairs,
    LabelledTexts,
    TaggedSentences,
    VectorTexts,
    check_bio,
    parse_tag_input,
    read_conll,
    read_features,
    read_labelled_texts,
    read_pairs,
    read_vector_captions,
)
from rnnkit.data.sequences import BucketBatches, pad_batch, split_indices
from rnnkit.data.text import LMData, TokenStreams, eval_chunks, load_lm_data, read_text, tokenize
from rnnkit.data.vocab import Vocab

__all__ = [
    "BucketBatches",
    "FeatureSequences",
    "LMData",
    "LabelledPairs",
    "LabelledTexts",
    "TaggedSentences",
    "TokenStreams",
    "VectorTexts",
    "Vocab",
    "check_bio",
    "eval_chunks",
    "load_lm_data",
    "pad_batch",
    "parse_tag_input",
    "read_conll",
    "read_features",
    "read_labelled_texts",
    "read_pairs",
    "read_text",
    "read_vector_captions",
    "read_word_vectors",
    "split_indices",
    "tokenize",
]
