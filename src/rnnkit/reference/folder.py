"""Model folders for the NumPy engine, read and written without torch.

A model folder (see DESIGN.md) stores the torch language model's weights under its own names;
a one-layer character model with one-hot input (``embedding_size`` 0) is exactly a
:class:`~rnnkit.reference.model.CharRNN`, whose parameters map one-to-one:

    rnn.weight_ih_l0 <-> weight_ih     rnn.weight_hh_l0 <-> weight_hh
    rnn.bias_ih_l0   <-> bias_ih       rnn.bias_hh_l0   <-> bias_hh
    head.weight      <-> weight_out    head.bias        <-> bias_out

So a folder written by either engine is read by the other. This module reads config.json,
vocab.json and model.safetensors with ``json`` and ``safetensors.numpy`` only, and measures the
loss of a text and samples text the way ``rnnkit eval`` and ``rnnkit sample`` do.
"""

import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from rnnkit.errors import CheckpointError, ConfigError, read_folder_json
from rnnkit.reference.cells import CELLS
from rnnkit.reference.model import PARAM_NAMES, CharRNN, log_softmax

#: The torch language model's key of each CharRNN parameter.
TORCH_NAMES = {
    "weight_ih": "rnn.weight_ih_l0",
    "weight_hh": "rnn.weight_hh_l0",
    "bias_ih": "rnn.bias_ih_l0",
    "bias_hh": "rnn.bias_hh_l0",
    "weight_out": "head.weight",
    "bias_out": "head.bias",
}
#: How many special tokens open every vocabulary (<pad>, <unk>, <bos>, <eos>): never sampled.
NUM_SPECIALS = 4


def torch_weights(model: CharRNN) -> dict[str, np.ndarray]:
    """The parameters under the torch language model's names, as float32 (torch's dtype)."""
    return {TORCH_NAMES[name]: model.params[name].astype(np.float32) for name in PARAM_NAMES}


def load_model(path: str | Path) -> tuple[CharRNN, list[str]]:
    """The model of a folder written by ``rnnkit train`` (either engine), and its tokens.

    The folder must hold a one-layer character model (rnn, gru or lstm) with one-hot input:
    ``--num-layers 1 --embedding-size 0``. Token ``i`` of the list is id ``i``; the first
    :data:`NUM_SPECIALS` are the special tokens.

    Raises:
        CheckpointError: a missing or corrupted file, or a model the NumPy engine cannot run.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise CheckpointError(f"model folder {folder} {what}")
    config = read_folder_json(folder / "config.json")
    model, data = (_section(config, name) for name in ("model", "data"))
    level = data.get("level", "char")
    needs = {
        "--cell": (
            isinstance(model.get("cell"), str) and model["cell"] in CELLS,
            f"one of {', '.join(CELLS)}",
            model.get("cell"),
        ),
        "--num-layers": (model.get("num_layers") == 1, "1", model.get("num_layers")),
        "--embedding-size": (model.get("embedding_size") == 0, "0", model.get("embedding_size")),
        "--level": (level == "char", "char", level),
    }
    for flag, (ok, expected, got) in needs.items():
        if not ok:
            raise CheckpointError(
                f"{folder} holds a model the NumPy engine cannot run: it needs {flag} {expected}, "
                f"the model has {got!r}"
            )
    vocab = read_folder_json(folder / "vocab.json")
    tokens = vocab.get("tokens") if isinstance(vocab, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise CheckpointError(f"{folder / 'vocab.json'} is corrupted: no list of 'tokens'")
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(
            f"{folder} has no model.safetensors; was it written by `rnnkit train`?"
        )
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights_path} is corrupted: {err}") from None
    missing = sorted(set(TORCH_NAMES.values()) - set(weights))
    if missing:
        raise CheckpointError(f"{weights_path} lacks {', '.join(missing)}")
    params = {name: weights[TORCH_NAMES[name]] for name in PARAM_NAMES}
    for name, value in params.items():
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise CheckpointError(
                f"{weights_path} is corrupted: {TORCH_NAMES[name]} must hold finite numbers"
            )
    try:
        charrnn = CharRNN.from_params(model["cell"], params)
    except ValueError as err:
        raise CheckpointError(f"{weights_path} does not fit config.json: {err}") from None
    if charrnn.vocab_size != len(tokens):
        raise CheckpointError(
            f"{weights_path} is for {charrnn.vocab_size} tokens, vocab.json has {len(tokens)}"
        )
    return charrnn, tokens


def _section(config: object, name: str) -> dict:
    """The table ``name`` of config.json's object (empty where absent or malformed: the checks
    of :func:`load_model` then name what is missing)."""
    section = config.get(name) if isinstance(config, dict) else None
    return section if isinstance(section, dict) else {}


def text_loss(model: CharRNN, ids: np.ndarray, batch_size: int, seq_len: int) -> float:
    """Mean loss (nats per token) of every next-token prediction of ``ids`` (N,).

    Read as ``rnnkit eval`` reads a text: the N − 1 (input, target) pairs are split into
    ``min(batch_size, N − 1)`` contiguous streams of ceil((N − 1) / B) steps (the end of the
    last is padding that does not count), each read ``seq_len`` steps at a time with its state
    carried. The loss does not depend on ``batch_size`` or ``seq_len`` beyond rounding.
    """
    ids = np.asarray(ids, dtype=np.int64)  # (N,)
    count = ids.size - 1
    if count < 1:
        raise ValueError(f"text_loss needs at least 2 tokens, got {ids.size}")
    streams = min(batch_size, count)
    length = math.ceil(count / streams)
    inputs = np.zeros(streams * length, dtype=np.int64)  # (B·L,) padded with id 0
    targets = np.zeros(streams * length, dtype=np.int64)  # (B·L,)
    inputs[:count], targets[:count] = ids[:-1], ids[1:]
    counted = (np.arange(streams * length) < count).reshape(streams, length)  # (B, L)
    inputs, targets = inputs.reshape(streams, length), targets.reshape(streams, length)
    total, h = 0.0, None
    for start in range(0, length, seq_len):
        span = slice(start, start + seq_len)
        logits, h = model.forward(inputs[:, span], h)  # (B, t, V)
        logp = np.take_along_axis(log_softmax(logits), targets[:, span, None], axis=-1)  # (B, t, 1)
        total -= float(logp[..., 0][counted[:, span]].sum())
    return total / count


def generate(
    model: CharRNN,
    tokens: list[str],
    prime: str,
    length: int,
    *,
    temperature: float,
    seed: int,
    num_samples: int = 1,
) -> list[str]:
    """``num_samples`` texts: the prime followed by ``length`` sampled characters each.

    The prime is read once (an empty prime starts as after a line break), then each step
    draws the next character from softmax(logits / temperature), ``temperature`` 0 being
    greedy; the special tokens are never drawn. The same seed gives the same texts.

    Raises:
        ConfigError: the prime has characters that are not in the vocabulary, or a negative
            temperature.
    """
    if temperature < 0:
        raise ConfigError(f"--temperature must be 0 or more, got {temperature!r}")
    index = {token: i for i, token in enumerate(tokens)}
    unknown = list(dict.fromkeys(ch for ch in prime if ch not in index))
    if unknown:
        raise ConfigError(
            "the prime has characters that the model never saw in training: "
            + ", ".join(map(repr, unknown))
        )
    prime_ids = [index[ch] for ch in prime] or [index.get("\n", NUM_SPECIALS - 1)]
    rng = np.random.default_rng(seed)
    inputs = np.tile(np.array(prime_ids), (num_samples, 1))  # (N, P)
    logits, h = model.forward(inputs)  # (N, P, V)
    logits = logits[:, -1]  # (N, V)
    chosen = np.empty((num_samples, length), dtype=np.int64)  # (N, length)
    for t in range(length):
        logits[:, :NUM_SPECIALS] = -np.inf
        if temperature == 0:
            token = logits.argmax(axis=-1)  # (N,)
        else:
            probs = np.exp(log_softmax(logits / temperature))  # (N, V)
            token = np.array([rng.choice(model.vocab_size, p=p) for p in probs])  # (N,)
        chosen[:, t] = token
        step_logits, h = model.forward(token[:, None], h)  # (N, 1, V)
        logits = step_logits[:, 0]  # (N, V)
    return [prime + "".join(tokens[i] for i in row) for row in chosen]
