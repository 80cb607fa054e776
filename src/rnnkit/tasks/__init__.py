"""Task models, one module per sequence shape: model head, loss, metrics and decoding.

``lm`` (many-to-many language modelling) predicts the next token of a text.
"""
