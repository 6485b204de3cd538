"""Controls that ignore the classifier: the negative control and two floors.

* ``energy``: the input's loud bins, ``log1p|X| > 0.35 * max`` per example. It is
  exactly PIQ's reconstruction target (docs/reference.md pitfall 5), so a sanity check that
  re-initialises the classifier must flag it: it cannot change.
* ``random``: uniform noise from a fixed seed (reproducible, so also classifier-blind).
* ``ones``: keep everything; the explanation is the input itself (SI-SNRi 0).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from audiointerp.config import ConfigError
from audiointerp.features import Features
from audiointerp.interpreters.base import Capabilities, Interpreter
from audiointerp.interpreters.registry import register
from audiointerp.models.base import Classifier, ClassifierOutput


def _check_keys(name: str, config: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(config) - allowed - {"name"})
    if unknown:
        raise ConfigError(f"interpreter {name!r}: unknown config keys {', '.join(unknown)}")


class Control(Interpreter):
    """A mask that ignores the classifier, so also the class: every ``target`` gets the
    same mask, by design (a reference point for the metrics, not an explanation)."""

    capabilities = Capabilities(
        any_target=True, batched=True, needs_gradients=False, needs_training=False
    )


@register("energy")
class EnergyControl(Control):
    """Binary mask of the bins whose log1p magnitude exceeds ``threshold`` x the example's max."""

    def __init__(self, threshold: float = 0.35):
        super().__init__()
        self.threshold = float(threshold)

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> EnergyControl:
        _check_keys("energy", config, {"threshold"})
        return cls(threshold=config.get("threshold", 0.35))

    def config_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        """(B, T, F) mask in {0, 1}; ``classifier_out`` and ``target`` are ignored on purpose."""
        log_magnitude = features.log_magnitude
        peak = log_magnitude.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        return (log_magnitude > self.threshold * peak).to(log_magnitude.dtype)


@register("random")
class RandomControl(Control):
    """Uniform [0, 1) mask, a floor for every metric.

    Each clip's mask is drawn from ``seed`` plus a fingerprint of that clip's magnitude, so
    it is reproducible and does not depend on the clip's batch-mates or position.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> RandomControl:
        _check_keys("random", config, {"seed"})
        return cls(seed=config.get("seed", 0))

    def config_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        masks = []
        for magnitude in features.magnitude.detach().cpu().double():
            fingerprint = int(magnitude.sum().item() * 1e4) % (2**31)
            generator = torch.Generator().manual_seed(self.seed + fingerprint)
            masks.append(torch.rand(magnitude.shape, generator=generator))
        return torch.stack(masks).to(features.magnitude)


@register("ones")
class OnesControl(Control):
    """All-ones mask: the explanation is the whole input."""

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> OnesControl:
        _check_keys("ones", config, set())
        return cls()

    def config_dict(self) -> dict[str, Any]:
        return {}

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        return torch.ones_like(features.magnitude)
