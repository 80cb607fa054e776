r"""``--naive-bayes W`` of ``classify`` on text: a count model of each item's token n-grams.

A multinomial naive Bayes model (the classic language identifier of n-gram counts, Dunning
1994; Cavnar & Trenkle 1994 ranked the same n-grams) reads an item as the bag of its token 1-
to :data:`ORDER`-grams, with a start and an end mark around it (``^ab``, ``b$``), and scores

.. math:: \log p_{NB}(c \mid x) = \operatorname{log\,softmax}_c \Big( \log \pi_c +
          \sum_{g \in x} \log \frac{n_{c,g} + \alpha}{n_c + \alpha G} \Big),

where :math:`n_{c,g}` counts n-gram g in the training items of class c, :math:`n_c` all of
class c's n-grams, G the distinct n-grams of training and :math:`\pi_c` the add-α share of the
items that are of class c. An n-gram training never saw gets :math:`\alpha / (n_c + \alpha G)`.
The classifier's prediction is then

.. math:: \log p(c \mid x) \propto \log p_{net}(c \mid x) + W \log p_{NB}(c \mid x),

a product of the two models' distributions, the count model's flattened by W (Hinton's
product of experts; Wang & Manning 2012 found n-gram naive Bayes strong beside discriminative
models on short texts). The counts are taken once from the training items when the data are
read (a fraction of a second for names/) and kept in the model folder; training the network is
unchanged, and the evaluations that keep the model score the product, as predictions will.

Why it helps on names/: a class of 55 training names is a small share of what the network
fits, and its confidences lean towards the large classes; the counts give each class's own
n-grams their weight. On names/' dev halves (six runs of 120 s each way) it raised the held-out
half's macro-F1 from 0.581 to 0.606 on the mean, with accuracy level (``config.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.examples import Examples
from rnnkit.errors import ConfigError

ORDER = 3
"""The longest n-gram counted (1- to 3-grams). Chosen on names/' dev halves (config.py)."""

ALPHA = 0.1
"""The add-α smoothing of the counts. Chosen with :data:`ORDER`."""

_KEY_LIMIT = 1 << 62
"""n-gram keys are integers below this (int64 with room to spare)."""

_CHUNK = 1024
"""Items per batch when counting."""


class NaiveBayes(nn.Module):
    """Token n-gram counts -> class log-probabilities (see the module docstring).

    An n-gram of tokens t_1..t_n is the integer key Σ_k d(t_k) · base^(n-k), with digits
    d(t) = id + 1 for the V token ids, V + 1 for the start mark and V + 2 for the end mark,
    and base V + 3: no digit is 0, so n-grams of different lengths never share a key.

    Args:
        num_tokens: V, the token ids in [0, V).
        num_labels: C.
        num_grams: G, the distinct n-grams of training (the rows of the tables).

    Shapes:
        forward: inputs (B, T) int64, lengths (B,) -> (B, C) fp32 log-probabilities.
    """

    def __init__(self, num_tokens: int, num_labels: int, num_grams: int) -> None:
        super().__init__()
        self.base = num_tokens + 3
        if self.base**ORDER >= _KEY_LIMIT:
            raise ConfigError(
                f"--naive-bayes: a vocabulary of {num_tokens:,} token types is too large to key "
                f"its {ORDER}-grams in 62 bits (raise --min-freq)"
            )
        self.register_buffer("keys", torch.zeros(num_grams, dtype=torch.long))  # sorted
        # Row g: log (n_cg + α) / (n_c + αG) of the g-th key; the last row, an unseen n-gram.
        self.register_buffer("log_likelihood", torch.zeros(num_grams + 1, num_labels))
        self.register_buffer("log_prior", torch.zeros(num_labels))  # log π_c

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Each item's class log-probabilities (B, C) from its n-grams."""
        keys, real = self.gram_keys(inputs, lengths)  # (B, N), (B, N)
        keys = keys.to(self.keys.device)
        rows = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)  # G >= 1
        rows = torch.where(self.keys[rows] == keys, rows, len(self.keys))  # unseen: the last row
        scores = self.log_likelihood[rows] * real.to(rows.device).unsqueeze(-1)  # (B, N, C)
        return (scores.sum(1) + self.log_prior).log_softmax(-1)  # (B, C)

    def gram_keys(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The keys (B, N) of every 1- to ORDER-gram of each marked item, and whether each is
        real (B, N) bool (False past an item's end mark)."""
        inputs = inputs.long().cpu()
        lengths = lengths.long().cpu()
        batch, steps = inputs.shape
        marked = torch.zeros(batch, steps + 2, dtype=torch.long)  # (B, T + 2)
        marked[:, 0] = self.base - 2  # the start mark's digit
        marked[:, 1:-1] = inputs + 1
        rows = torch.arange(batch)
        marked[rows, lengths + 1] = self.base - 1  # the end mark's digit
        keys, real = [], []
        for n in range(1, ORDER + 1):
            width = steps + 3 - n  # windows of n over the T + 2 marked steps
            if width <= 0:
                break
            key = torch.zeros(batch, width, dtype=torch.long)
            for k in range(n):
                key = key * self.base + marked[:, k : k + width]
            last = torch.arange(width) + n - 1  # (width,), the window's last step
            keys.append(key)
            real.append(last[None, :] <= (lengths + 1)[:, None])
        return torch.cat(keys, 1), torch.cat(real, 1)

    @classmethod
    @torch.no_grad()
    def counted(
        cls, num_tokens: int, num_labels: int, examples: Examples, labels: np.ndarray | list[int]
    ) -> NaiveBayes:
        """The model of the n-grams of the training ``examples`` (their ``ids``, tokens in
        [0, num_tokens)) by class ``labels`` (N,) in [0, num_labels)."""
        model = cls(num_tokens, num_labels, 0)
        found, classes = _count_keys(model, examples, labels)
        keys, inverse = torch.unique(found, return_inverse=True)  # sorted
        counts = torch.zeros(len(keys), num_labels, dtype=torch.float64)
        counts.index_put_((inverse, classes), torch.ones(len(found), dtype=torch.float64), True)
        totals = counts.sum(0) + ALPHA * len(keys)  # (C,)
        table = torch.cat([counts + ALPHA, torch.full((1, num_labels), ALPHA)]) / totals
        items = torch.bincount(torch.as_tensor(np.asarray(labels)), minlength=num_labels)
        prior = (items.double() + ALPHA) / (len(labels) + ALPHA * num_labels)
        model.keys = keys
        model.log_likelihood = table.log().float()
        model.log_prior = prior.log().float()
        return model


def _count_keys(
    model: NaiveBayes, examples: Examples, labels: np.ndarray | list[int]
) -> tuple[Tensor, Tensor]:
    """Every real n-gram key of the examples, and its item's class: (M,), (M,) int64."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    found, classes = [], []
    for start in range(0, len(examples), _CHUNK):
        index = np.arange(start, min(start + _CHUNK, len(examples)))
        batch = examples.batch(index)
        keys, real = model.gram_keys(batch["inputs"], batch["lengths"])  # (B, N)
        found.append(keys[real])
        classes.append(labels[torch.from_numpy(index)][:, None].expand_as(keys)[real])
    if not found:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(found), torch.cat(classes)
