"""The recipes behind ``audiointerp train`` and ``recipes/esc50/train_*.py``.

``entry`` (the one entry point: hparams file + overrides -> the recipe its sections name),
``common`` (settings every classifier/interpreter recipe shares, fitting a task),
``classifier``, ``interpreter`` (+ ``interpretations``: files saved per test clip), ``nmf``.
"""
