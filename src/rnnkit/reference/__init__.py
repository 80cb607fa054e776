"""The NumPy reference engine: character RNN / GRU / LSTM with hand-written BPTT.

In the spirit of min-char-rnn, and never importing torch (it runs where torch is absent):

    m = CharRNN(cell="lstm", vocab_size=V, hidden_size=H, seed=0)  # "rnn" | "gru" | "lstm"
    m.params                     # float64 arrays with torch's names, shapes and gate order
    loss, grads, h = m.loss_and_grads(inputs, targets, h0)   # inputs, targets (T,) or (B, T)
    m.bptt(inputs, targets, h0).d_h0                         # also d loss / d h0

State: ``h`` of shape (H,) or (B, H) for rnn and gru; the tuple ``(h, c)`` for lstm; ``None``
means zeros. The loss is summed over the steps and the sequences of a batch.

Modules: ``cells`` (one forward and one backward step per cell), ``model`` (the sequence loops
and ``CharRNN``), ``optim`` (Adagrad, SGD, clipping), ``sampling``, ``training`` (the resumable
min-char-rnn loop), ``gradcheck`` (finite differences) and ``folder`` (model folders of either
engine: ``load_model(path) -> (CharRNN, tokens)``, ``text_loss``, ``generate``).
"""

from rnnkit.reference.folder import generate, load_model, text_loss, torch_weights
from rnnkit.reference.gradcheck import gradient_check, numerical_gradient, relative_error
from rnnkit.reference.model import BPTTResult, CharRNN, PublicState
from rnnkit.reference.optim import SGD, Adagrad, clip_gradients
from rnnkit.reference.sampling import sample
from rnnkit.reference.training import Trainer

__all__ = [
    "SGD",
    "Adagrad",
    "BPTTResult",
    "CharRNN",
    "PublicState",
    "Trainer",
    "clip_gradients",
    "generate",
    "gradient_check",
    "load_model",
    "numerical_gradient",
    "relative_error",
    "sample",
    "text_loss",
    "torch_weights",
]
