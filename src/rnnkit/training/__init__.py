"""Training: the one loop, optimisers and schedules, model folders (checkpoints)."""

from rnnkit.training.checkpoint import load
from rnnkit.training.control import TrainResult
from rnnkit.training.evaluation import evaluate_folder, predict_folder
from rnnkit.training.run import train

__all__ = ["TrainResult", "evaluate_folder", "load", "predict_folder", "train"]
