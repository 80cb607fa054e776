r"""``--word-votes W`` of ``tag`` on text: each word votes for its tag alone, out of context.

A bag of the word's hashed character n-grams, its whole lower-cased form and the shape of its
first characters (fastText's model of a word, Bojanowski et al. 2017) gives log-probabilities
of the C tags, :math:`\log p(c \mid w)`, from the spelling alone. When decoding, the tagger's
scores get

.. math:: s_t(c) \mathrel{+}= W \, (\log p(c \mid w_t) - \log p(c)),

the vote's log-ratio against the tags' frequency in training, so that a word votes for a tag
only where its spelling says more than the tag's frequency does (a tag that is rare overall is
not voted down everywhere). Viterbi (with ``--crf``) or the argmax then decodes the sum.
Training the tagger is unchanged.

The votes are trained apart, once, before the tagger (:func:`train_word_votes`): a few passes
over the training tokens, a few seconds on a CPU core, counted in ``--max-time``. They see no
context: a word spelt like the training entities votes for their tag wherever it stands, and
the tagger's scores weigh that against the sentence. On WNUT-17, whose test entities are mostly
unseen, they raised the dev entity F1 of trained taggers by about 0.035 (``config.py``).
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.errors import ConfigError

logger = logging.getLogger(__name__)

NO_WORDS = "--word-votes reads the words of text: .npz feature sequences have none"
"""The refusal of ``--word-votes`` for a tagger of feature sequences."""

BUCKETS = 1 << 16
"""Rows of the hashed feature table; row BUCKETS is the padding (fastText hashes the same way)."""

EMBEDDING = 64
"""Width of the feature embeddings."""

PASSES, BATCH_SIZE, LR = 5, 256, 3e-3
"""How the votes train: passes over the training tokens, tokens per step, Adam's rate.
Chosen on WNUT-17's dev split (config.py): 3 passes gave less, 8 no more."""

SHAPE_CHARS = 6
"""The shape feature reads this many characters from the word's start (``Xxxxx``, ``dd``)."""

_PRIME, _MODULUS = 1_000_003, 2_147_483_647  # polynomial hash, reduced mod 2^31 - 1


class WordVotes(nn.Module):
    """Per word: mean of its feature embeddings -> ReLU -> linear -> log-softmax.

    A word's features are the 2- to 4-grams of ``<word>`` as written, the 3- to 5-grams of
    ``<word>`` in lower case (``<`` and ``>`` mark its start and end), the whole word in
    lower case, and the shape of its first :data:`SHAPE_CHARS` characters (upper, lower,
    digit, or the character itself). Each is hashed to one of :data:`BUCKETS` rows.

    The parameters do not require gradients: the tagger's optimizer leaves them alone, and
    only :func:`train_word_votes` changes them.

    Args:
        num_chars: character ids in [0, num_chars), 0 the padding.
        lower: (num_chars,) the id of each character's lower-case form (itself if unknown).
        shape: (num_chars,) each character's shape: 1 upper, 2 lower, 3 digit, else 4 + id.
        num_tags: C.

    Shapes:
        forward: chars (..., W) int64, word_lengths (...) -> (..., C) fp32 log-probabilities.
    """

    def __init__(self, num_chars: int, lower: Tensor, shape: Tensor, num_tags: int) -> None:
        super().__init__()
        self.num_chars = num_chars
        self.register_buffer("lower", lower.long(), persistent=False)
        self.register_buffer("shape", shape.long(), persistent=False)
        self.features = nn.EmbeddingBag(
            BUCKETS + 1, EMBEDDING, mode="mean", padding_idx=BUCKETS, sparse=True
        )
        self.head = nn.Linear(EMBEDDING, num_tags)
        self.register_buffer("log_prior", torch.zeros(num_tags))  # log p(c), set by training
        self.requires_grad_(False)

    def forward(self, chars: Tensor, word_lengths: Tensor) -> Tensor:
        """Each word's tag log-probabilities from its spelling: see the class docstring."""
        ids = self.feature_ids(chars, word_lengths)  # (..., G)
        return self.scores(ids.flatten(0, -2)).log_softmax(-1).view(*ids.shape[:-1], -1)

    def scores(self, ids: Tensor) -> Tensor:
        """Tag scores (N, C) fp32 of words given by their feature ids (N, G)."""
        return self.head(torch.relu(self.features(ids))).float()

    def log_ratio(self, chars: Tensor, word_lengths: Tensor) -> Tensor:
        """log p(c | w) - log p(c), what the votes add to the scores: (..., W) -> (..., C)."""
        return self(chars, word_lengths) - self.log_prior

    def feature_ids(self, chars: Tensor, word_lengths: Tensor) -> Tensor:
        """Bucket ids (..., G) of each word's features; BUCKETS where a word has fewer."""
        chars, word_lengths = chars.long(), word_lengths.long()
        lowered = self.lower[chars]
        start, end = self.num_chars, self.num_chars + 1  # ids of "<" and ">"
        cased = _ngrams(_marked(chars, word_lengths, start, end), word_lengths, (2, 3, 4), 1)
        low = _ngrams(_marked(lowered, word_lengths, start, end), word_lengths, (3, 4, 5), 2)
        whole = _hash(lowered, word_lengths, salt=3)
        shape = _hash(self.shape[chars], word_lengths.clamp(max=SHAPE_CHARS), salt=4)
        real = (word_lengths > 0).unsqueeze(-1)  # (..., 1)
        ids = torch.cat([cased[0], low[0], whole[..., None], shape[..., None]], -1) % BUCKETS
        ok = torch.cat([cased[1], low[1], real, real], -1)  # (..., G)
        return ids.masked_fill(~ok, BUCKETS)


def _marked(chars: Tensor, lengths: Tensor, start: int, end: int) -> Tensor:
    """``<word>``: (..., W) -> (..., W + 2), ``start`` before and ``end`` after each word."""
    shape = (*chars.shape[:-1], chars.shape[-1] + 2)
    marked = torch.zeros(shape, dtype=torch.long, device=chars.device)
    marked[..., 0] = start
    marked[..., 1:-1] = chars
    marked.scatter_(-1, (lengths + 1).unsqueeze(-1), end)  # after the last character
    return marked


def _ngrams(
    marked: Tensor, lengths: Tensor, sizes: tuple[int, ...], salt: int
) -> tuple[Tensor, Tensor]:
    """Hashes (..., G) of the n-grams of ``<word>`` (``marked``) for each n in ``sizes``, and
    whether each lies inside the word's ``lengths + 2`` marked characters (..., G)."""
    span = lengths + 2  # characters of <word>
    ids, ok = [], []
    for n in sizes:
        if marked.shape[-1] < n:
            continue
        windows = marked.unfold(-1, n, 1)  # (..., W + 3 - n, n)
        h = torch.full(
            windows.shape[:-1], 100_003 * salt + n, dtype=torch.long, device=marked.device
        )
        for k in range(n):
            h = (h * _PRIME + windows[..., k]) % _MODULUS
        ids.append(h)
        positions = torch.arange(windows.shape[-2], device=marked.device)
        ok.append(positions + n <= span.unsqueeze(-1))
    return torch.cat(ids, -1), torch.cat(ok, -1)


def _hash(chars: Tensor, lengths: Tensor, salt: int) -> Tensor:
    """One hash (...) of each word's first ``lengths`` characters (..., W), and of that count."""
    h = torch.full(chars.shape[:-1], 100_003 * salt, dtype=torch.long, device=chars.device)
    for k in range(chars.shape[-1]):
        h = torch.where(k < lengths, (h * _PRIME + chars[..., k]) % _MODULUS, h)
    return (h * _PRIME + lengths) % _MODULUS


def word_votes(config: ModelConfig, chars: list[str] | None, num_tags: int) -> WordVotes | None:
    """The tagger's votes if ``config.word_votes`` (a weight above 0), else None.

    Args:
        chars: the known characters (ids from 2 on; 0 pads, 1 is unknown), or None for
            feature sequences.

    Raises:
        ConfigError: ``--word-votes`` on feature sequences.
    """
    if not config.word_votes:
        return None
    if chars is None:
        raise ConfigError(NO_WORDS)
    index = {c: i + 2 for i, c in enumerate(chars)}
    lower = torch.arange(len(chars) + 2)
    shape = 4 + torch.arange(len(chars) + 2)
    for c, i in index.items():
        lower[i] = index.get(c.lower(), i)
        if c.isupper():
            shape[i] = 1
        elif c.islower():
            shape[i] = 2
        elif c.isdigit():
            shape[i] = 3
    return WordVotes(len(chars) + 2, lower, shape, num_tags)


def train_word_votes(
    votes: WordVotes, chars: list[list[list[int]]], tags: list[list[int]], num_tags: int
) -> float:
    """Train ``votes`` on the training tokens alone: :data:`PASSES` shuffled passes of
    :data:`BATCH_SIZE` tokens, Adam (sparse for the table) at :data:`LR`; set ``log_prior``
    to the tags' frequency (add-one). Draws from torch's global generator.

    Args:
        chars: per sentence, per word, its character ids (as the tagger's examples have them).
        tags: per sentence, each word's tag id in [0, num_tags).

    Returns:
        The last pass's mean training loss (nats per token).
    """
    started = time.monotonic()
    words = [tuple(w) for sentence in chars for w in sentence]  # N tokens
    types = {w: i for i, w in enumerate(dict.fromkeys(words))}  # U distinct spellings
    width = max(1, max(len(w) for w in types))
    padded = torch.zeros(len(types), width, dtype=torch.long)
    for w, i in types.items():
        padded[i, : len(w)] = torch.tensor(w, dtype=torch.long)
    lengths = torch.tensor([len(w) for w in types])
    device = votes.head.weight.device
    features = votes.feature_ids(padded.to(device), lengths.to(device))  # (U, G), once a type
    token_types = torch.tensor([types[w] for w in words], device=device)  # (N,)
    targets = torch.tensor([t for sentence in tags for t in sentence], device=device)  # (N,)
    counts = torch.bincount(targets, minlength=num_tags).double() + 1.0
    votes.log_prior.copy_((counts / counts.sum()).log().float())
    votes.requires_grad_(True)
    table = torch.optim.SparseAdam(list(votes.features.parameters()), lr=LR)
    head = torch.optim.Adam(votes.head.parameters(), lr=LR)
    try:
        for _ in range(PASSES):
            total = torch.zeros((), device=device)
            for batch in torch.randperm(len(words), device=device).split(BATCH_SIZE):
                ids = features[token_types[batch]]  # (batch, G)
                loss = F.cross_entropy(votes.scores(ids), targets[batch])
                table.zero_grad()
                head.zero_grad()
                loss.backward()
                table.step()
                head.step()
                total += loss.detach() * len(batch)
            mean = float(total) / len(words)
    finally:
        votes.zero_grad(set_to_none=True)  # no sparse gradient left for the tagger's clipping
        votes.requires_grad_(False)
    logger.info(
        "word votes: %d passes over %d training tokens in %.1f s, loss %.4f",
        PASSES,
        len(words),
        time.monotonic() - started,
        mean,
    )
    return mean
