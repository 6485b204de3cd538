"""Interpreter registry: one name per method, so configs, checkpoints and the CLI pick by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audiointerp.config import ConfigError
from audiointerp.interpreters.base import Interpreter
from audiointerp.models.base import Classifier
from audiointerp.models.external import ExternalClassifier

INTERPRETERS: dict[str, type[Interpreter]] = {}


def register(name: str) -> Callable[[type[Interpreter]], type[Interpreter]]:
    """Class decorator: make an interpreter buildable by ``name``."""

    def decorator(cls: type[Interpreter]) -> type[Interpreter]:
        if name in INTERPRETERS:
            raise ValueError(f"interpreter {name!r} registered twice")
        cls.registry_name = name
        INTERPRETERS[name] = cls
        return cls

    return decorator


def build_interpreter(name: str, config: dict[str, Any], classifier: Classifier) -> Interpreter:
    """Construct interpreter ``name`` from its plain config mapping for ``classifier``."""
    if name not in INTERPRETERS:
        raise ValueError(f"unknown interpreter {name!r}; known: {', '.join(sorted(INTERPRETERS))}")
    method = INTERPRETERS[name]
    if isinstance(classifier, ExternalClassifier) and not method.external_classifiers:
        usable = sorted(key for key, value in INTERPRETERS.items() if value.external_classifiers)
        raise ConfigError(
            f"interpreter {name!r} reads our own classifiers' feature maps, so it cannot "
            f"explain {classifier.name}; methods for your own classifier: {', '.join(usable)}"
        )
    return method.from_config(config, classifier)
