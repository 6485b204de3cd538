"""One training loop (``loop.Trainer``) and what it trains (``tasks``).

The recipes (``training.recipes``: the ``audiointerp train`` entry point) sit above
evaluation and are imported on their own.
"""

from audiointerp.training.loop import FitResult, Task, TrainConfig, Trainer, evaluate
from audiointerp.training.tasks import ClassifierTask, InterpreterTask

__all__ = [
    "ClassifierTask",
    "FitResult",
    "InterpreterTask",
    "Task",
    "TrainConfig",
    "Trainer",
    "evaluate",
]
