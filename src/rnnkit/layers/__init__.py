"""Recurrent layers: drop-in ``torch.nn.RNN / GRU / LSTM`` and the minimal RNNs MinGRU, MinLSTM."""

from rnnkit.layers.minimal import MinGRU, MinLSTM
from rnnkit.layers.recurrent import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN", "MinGRU", "MinLSTM"]
