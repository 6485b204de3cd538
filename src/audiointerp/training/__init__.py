"""One training loop (``loop.Trainer``) and what it trains (``tasks``).

The recipe runner (``training.recipe``) sits above evaluation and is imported on its own.
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
