"""Analytic toy models shared by tests: their true explanations are known by construction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from audiointerp.models.base import Classifier, ClassifierOutput


class BandClassifier(Classifier):
    """Class c scores the mean log1p magnitude of its own equal share of the bins."""

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return torch.log1p(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        bands = inputs.mean(dim=1).tensor_split(self.n_classes, dim=-1)  # C x (B, F/C)
        scores = torch.stack([band.mean(dim=-1) for band in bands], dim=-1)  # (B, C)
        return ClassifierOutput(20.0 * scores, scores, ())


def reference_batch_norm(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    """Eval-mode BatchNorm straight from a reference state dict's ``prefix.*`` tensors."""
    return F.batch_norm(
        x,
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )
