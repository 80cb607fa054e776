"""Sampling token ids from a :class:`~rnnkit.reference.model.CharRNN`, one step at a time."""

import numpy as np

from rnnkit.reference.model import CharRNN, PublicState, log_softmax


def sample(
    model: CharRNN,
    h: PublicState | None,
    seed_id: int,
    length: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
) -> np.ndarray:
    """Sample ``length`` token ids that follow ``seed_id``, carrying the state.

    Each step feeds the previous token, scales the logits by 1 / ``temperature`` and draws the
    next token from the softmax with ``rng``; ``temperature == 0`` picks the argmax (greedy).
    The same ``rng`` state, model and arguments always give the same ids.

    Shapes: h None (zeros) or one sequence's state, (H,) or ((H,), (H,)) for lstm
    -> ids (length,) int64, not including ``seed_id``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy); got {temperature}")
    ids = np.empty(length, dtype=np.int64)  # (length,)
    token = seed_id
    for t in range(length):
        logits, h = model.forward(np.array([token]), h)  # (1, V)
        if temperature == 0:
            token = int(np.argmax(logits[0]))
        else:
            probs = np.exp(log_softmax(logits[0] / temperature))  # (V,)
            token = int(rng.choice(model.vocab_size, p=probs))
        ids[t] = token
    return ids
