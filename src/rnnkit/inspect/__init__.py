"""Seeing inside a language model: activations, interpretable cells, gate saturation,
gradient flow, error analysis, and a self-contained HTML report."""
