"""Training: the one loop, optimisers and schedules, model folders (checkpoints)."""

from rnnkit.training.checkpoint import load
from rnnkit.training.evaluation import evaluate_folder
from rnnkit.training.loop import TrainResult, train

__all__ = ["TrainResult", "evaluate_folder", "load", "train"]
