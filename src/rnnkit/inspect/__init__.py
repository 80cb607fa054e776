"""Seeing inside a language model: what its hidden cells track, how saturated its gates are, how
far back its gradient reaches, which mistakes it makes that an n-gram model does not, and a
self-contained HTML page of it all.

Functions take a model (:class:`rnnkit.tasks.lm.LanguageModel`) and tokens, and return data, a
matplotlib ``Figure`` or an HTML string; they never read or write files (``rnnkit inspect`` and
``rnnkit viz`` do). Modules:

    text           EncodedText: a text as the model's tokens
    steps          the layers run step by step, keeping states and gates (every cell)
    activations    trace(): states, gates and logits over a whole text, chunk by chunk
    features       text features (in_quotes, column, ... and your own regexes)
    search         find_cells(): cells ranked per feature by correlation, probe, ablation
    ablation       the loss change with a cell held at its mean
    saturation     gate_saturation(), plot_saturation()
    gradients      gradient_flow(), plot_gradient_flow(), plot_gradient_comparison()
    ngram          ngram_probabilities(): Witten–Bell n-gram scores
    error_analysis error_analysis(): errors by kind, beside the n-gram's
    report, viz    build_report(): the HTML page
"""

from rnnkit.inspect.activations import LayerTrace, Trace, activations, trace
from rnnkit.inspect.error_analysis import ErrorAnalysis, error_analysis, word_counts
from rnnkit.inspect.features import BUILTIN, Feature, choose_features, parse_feature
from rnnkit.inspect.gradients import (
    GradientFlow,
    gradient_flow,
    plot_gradient_comparison,
    plot_gradient_flow,
)
from rnnkit.inspect.ngram import ngram_probabilities
from rnnkit.inspect.saturation import Saturation, gate_saturation, plot_saturation
from rnnkit.inspect.search import CellScore, CellSearch, find_cells
from rnnkit.inspect.text import EncodedText, encode_text
from rnnkit.inspect.viz import build_report

__all__ = [
    "BUILTIN",
    "CellScore",
    "CellSearch",
    "EncodedText",
    "ErrorAnalysis",
    "Feature",
    "GradientFlow",
    "LayerTrace",
    "Saturation",
    "Trace",
    "activations",
    "build_report",
    "choose_features",
    "encode_text",
    "error_analysis",
    "find_cells",
    "gate_saturation",
    "gradient_flow",
    "ngram_probabilities",
    "parse_feature",
    "plot_gradient_comparison",
    "plot_gradient_flow",
    "plot_saturation",
    "trace",
    "word_counts",
]
