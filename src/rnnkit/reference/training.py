"""min-char-rnn's training loop for a :class:`~rnnkit.reference.model.CharRNN`, resumable.

Each step takes the next window of ``seq_len`` tokens (targets shifted by one), carries the
state from the previous window, clips every gradient element to ±clip and takes an Adagrad (or
SGD) step. When the next window would run past the end of the text, the position and the state
go back to zero. With ``batch_size`` B > 1 the text is cut into B equal contiguous streams that
are walked side by side (the tail that does not fill a stream is not used).

The loss is summed over steps and batch, as in :meth:`CharRNN.loss_and_grads` (Adagrad does not
care about the scale); :meth:`Trainer.step` reports it per token, in nats.

Everything needed to resume exactly is in :meth:`Trainer.state_dict`: a dict of float64 arrays
(parameters, optimiser memory, carried state) and a JSON-ready dict (configuration, step,
position, smoothed loss, the sampling generator's state). Nothing here writes files.
"""

import math
from typing import Any

import numpy as np

from rnnkit.errors import ConfigError
from rnnkit.reference.model import PARAM_NAMES, CharRNN
from rnnkit.reference.optim import SGD, Adagrad, clip_gradients
from rnnkit.reference.sampling import sample

OPTIMIZERS = ("adagrad", "sgd")


class Trainer:
    """Trains a character model on a sequence of token ids, one window per :meth:`step`.

    Args:
        text_ids: the training text as token ids, shape (N,).
        vocab_size: V.
        cell: "rnn" | "gru" | "lstm".
        hidden_size: H.
        seq_len: T, tokens per window (the truncation length of BPTT).
        batch_size: B, parallel streams.
        lr: learning rate.
        clip: gradient elements are clipped to [−clip, clip].
        optimizer: "adagrad" (min-char-rnn's) or "sgd".
        seed: seeds the parameters (``CharRNN(seed=seed)``) and, separately, the generator
            used by :meth:`sample`.

    Attributes:
        model: the :class:`CharRNN` being trained.
        step_count: steps taken so far.
        position: index in each stream of the next window's first input.
        h: the state carried into the next window, (B, H) or a pair of them for lstm.
        smooth_loss: exponential average (0.999) of the loss per token, starting at log V.
        rng: the generator :meth:`sample` draws from.
    """

    def __init__(
        self,
        text_ids: np.ndarray,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 100,
        seq_len: int = 25,
        batch_size: int = 1,
        lr: float = 0.1,
        clip: float = 5.0,
        optimizer: str = "adagrad",
        seed: int = 0,
    ):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of 'adagrad', 'sgd'; got {optimizer!r}")
        if seq_len < 1 or batch_size < 1:
            raise ConfigError(
                f"seq_len and batch_size must be positive; got {seq_len}, {batch_size}"
            )
        text = np.asarray(text_ids, dtype=np.int64)  # (N,)
        stream_len = text.size // batch_size
        if stream_len < seq_len + 1:
            raise ConfigError(
                f"the text has {text.size} tokens: too short for batch_size={batch_size} streams "
                f"of seq_len + 1 = {seq_len + 1} tokens; use a longer text or smaller sizes"
            )
        self.config: dict[str, Any] = {
            "vocab_size": vocab_size,
            "cell": cell,
            "hidden_size": hidden_size,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "lr": lr,
            "clip": clip,
            "optimizer": optimizer,
            "seed": seed,
        }
        self.text_length = text.size
        self.streams = text[: batch_size * stream_len].reshape(batch_size, stream_len)  # (B, S)
        self.model = CharRNN(cell, vocab_size, hidden_size, seed)
        self.optimizer = Adagrad(self.model.params, lr) if optimizer == "adagrad" else SGD(lr)
        self.rng = np.random.default_rng([seed, 1])
        self.step_count = 0
        self.position = 0
        self.h = self.model.init_state(batch_size)
        self.smooth_loss = math.log(vocab_size)

    def step(self) -> float:
        """Train on the next window; returns its loss per token (nats)."""
        T = self.config["seq_len"]
        if self.position + T + 1 > self.streams.shape[1]:
            self.position = 0
            self.h = self.model.init_state(self.config["batch_size"])
        inputs = self.streams[:, self.position : self.position + T]  # (B, T)
        targets = self.streams[:, self.position + 1 : self.position + T + 1]  # (B, T)
        loss, grads, self.h = self.model.loss_and_grads(inputs, targets, self.h)
        clip_gradients(grads, self.config["clip"])
        self.optimizer.step(self.model.params, grads)
        self.position += T
        self.step_count += 1
        loss_per_token = loss / inputs.size
        self.smooth_loss = 0.999 * self.smooth_loss + 0.001 * loss_per_token
        return loss_per_token

    def train(self, num_steps: int) -> list[float]:
        """Take ``num_steps`` steps; returns each step's loss per token."""
        return [self.step() for _ in range(num_steps)]

    def sample(self, length: int, temperature: float = 1.0) -> np.ndarray:
        """A preview, as min-char-rnn prints: ``length`` ids sampled with :attr:`rng` from the
        first stream's carried state, seeded with that stream's next input token. (length,)"""
        h = tuple(part[0] for part in self.h) if isinstance(self.h, tuple) else self.h[0]
        seed_id = int(self.streams[0, self.position % self.streams.shape[1]])
        return sample(self.model, h, seed_id, length, self.rng, temperature)

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta): everything needed to resume; arrays are copies.

        arrays: ``params.<name>`` for each parameter, ``optimizer.<name>`` for the Adagrad
        memory (none for SGD), ``state.h`` and, for lstm, ``state.c`` (B, H).
        meta: ``config`` (this constructor's arguments, without the text), ``text_length``,
        ``step``, ``position``, ``smooth_loss`` and ``rng`` (the bit generator's state; its
        integers exceed 64 bits, which Python's json module keeps exact).
        """
        arrays = {f"params.{name}": value.copy() for name, value in self.model.params.items()}
        arrays |= {f"optimizer.{name}": v for name, v in self.optimizer.state_dict().items()}
        state = self.h if isinstance(self.h, tuple) else (self.h,)
        arrays |= {f"state.{name}": part.copy() for name, part in zip("hc", state, strict=False)}
        meta = {
            "config": dict(self.config),
            "text_length": self.text_length,
            "step": self.step_count,
            "position": self.position,
            "smooth_loss": self.smooth_loss,
            "rng": self.rng.bit_generator.state,
        }
        return arrays, meta

    @classmethod
    def from_state_dict(
        cls, text_ids: np.ndarray, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> "Trainer":
        """Rebuild a trainer from :meth:`state_dict`'s output and the same text; training then
        continues exactly as if it had never stopped."""
        if np.size(text_ids) != meta["text_length"]:
            raise ValueError(
                f"the saved run was trained on a text of {meta['text_length']} tokens; "
                f"got {np.size(text_ids)}; resume with the same text"
            )
        trainer = cls(text_ids, **meta["config"])
        trainer.model = CharRNN.from_params(
            meta["config"]["cell"], {name: arrays[f"params.{name}"] for name in PARAM_NAMES}
        )
        trainer.optimizer.load_state_dict(
            {
                k.removeprefix("optimizer."): v
                for k, v in arrays.items()
                if k.startswith("optimizer.")
            }
        )
        h = np.array(arrays["state.h"], dtype=np.float64)  # (B, H)
        trainer.h = (h, np.array(arrays["state.c"], dtype=np.float64)) if "state.c" in arrays else h
        trainer.step_count = meta["step"]
        trainer.position = meta["position"]
        trainer.smooth_loss = meta["smooth_loss"]
        trainer.rng.bit_generator.state = meta["rng"]
        return trainer
