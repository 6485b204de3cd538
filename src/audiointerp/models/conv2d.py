"""The conv2d classifier of the reference recipe: a strided 2-D conv encoder on log1p|X|
plus an ECAPA-style cosine head.

Parameter names follow SpeechBrain's ``PIQ.Conv2dEncoder_v2`` (encoder) and
``ECAPA_TDNN.Classifier`` (head, one linear block), so the reference's
``embedding_modelft.ckpt`` and ``classifier.ckpt`` load key for key (see
:mod:`audiointerp.models.speechbrain`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.features import FeatureConfig
from audiointerp.models.base import Classifier, ClassifierOutput


class ResBlock(nn.Module):
    """``x + [Conv3x3, BN, ReLU, Conv1x1, BN](x)``; no ReLU after the sum (as the reference)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 1),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Conv2dEncoder(nn.Module):
    """Four Conv2d(k4, s2, p1) + BN + ReLU stages, then a residual block.

    Each stage halves both axes (floor), so (B, 431, 513) -> (B, dim, 26, 32).
    """

    # ``forward`` applies each norm directly to its conv's output (fast_copy folds them)
    conv_norm_pairs: ClassVar = tuple((f"conv{i}", f"bn{i}") for i in range(1, 5))
    # and computes relu(bn2(conv2(relu(bn1(conv1(x)))))) (fast_copy fuses the two stages
    # into conv1, leaving conv2 an identity that ``forward`` skips)
    relu_stem: ClassVar = ("conv1", "bn1", "conv2", "bn2")

    def __init__(self, dim: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(1, dim, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.conv3 = nn.Conv2d(dim, dim, 4, 2, 1)
        self.bn3 = nn.BatchNorm2d(dim)
        self.conv4 = nn.Conv2d(dim, dim, 4, 2, 1)
        self.bn4 = nn.BatchNorm2d(dim)
        self.resblock = ResBlock(dim)

    def forward(self, log_magnitude: Tensor) -> Tensor:
        """(B, T, F) log1p magnitude -> (B, dim, T', F') with T' ~ T/16, F' ~ F/16."""
        x = log_magnitude.unsqueeze(1)  # (B, 1, T, F)
        for conv, norm in (
            (self.conv1, self.bn1),
            (self.conv2, self.bn2),
            (self.conv3, self.bn3),
            (self.conv4, self.bn4),
        ):
            if isinstance(conv, nn.Identity):  # fused into the stage before by fast_copy
                continue
            x = F.relu(norm(conv(x)), inplace=True)  # a fresh output: no copy
        return self.resblock(x)


class _NormBlock(nn.Module):
    """BatchNorm1d under the attribute name ``norm`` (the reference's wrapper layout)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


class _LinearBlock(nn.Module):
    """Linear under the attribute name ``w`` (the reference's wrapper layout)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.w = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.w(x)


class CosineHead(nn.Module):
    """BatchNorm1d -> Linear -> scaled cosine similarity with one weight vector per class.

    ``logit_scale`` 1 gives the reference's raw cosines (logits in [-1, 1], near-uniform
    softmax over 50 classes); a larger scale lets softmax probabilities approach 0 or 1.
    """

    def __init__(self, dim: int, lin_neurons: int, n_classes: int, logit_scale: float = 1.0):
        super().__init__()
        self.blocks = nn.ModuleList([_NormBlock(dim), _LinearBlock(dim, lin_neurons)])
        self.weight = nn.Parameter(torch.empty(n_classes, lin_neurons))
        nn.init.xavier_uniform_(self.weight)
        self.logit_scale = float(logit_scale)

    def forward(self, embedding: Tensor) -> Tensor:
        """(B, dim) -> (B, n_classes) logits in [-logit_scale, logit_scale]."""
        x = embedding
        for block in self.blocks:
            x = block(x)
        cosine = F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))
        return self.logit_scale * cosine


class Conv2dClassifier(Classifier):
    """log1p|X| (B, T, F) -> conv2d encoder map -> mean pooling -> cosine head.

    Args:
        feature_config: STFT settings of the input.
        class_names: one name per output class.
        dim: encoder channels (reference 256).
        lin_neurons: width of the head's linear block (reference 192).
        logit_scale: multiplies the cosine logits: 30 for our training (see
            :class:`audiointerp.models.ClassifierConfig`), 1.0 for imported reference weights.
    """

    def __init__(
        self,
        feature_config: FeatureConfig,
        class_names: list[str],
        dim: int = 256,
        lin_neurons: int = 192,
        logit_scale: float = 30.0,
    ):
        super().__init__(feature_config, class_names)
        self.encoder = Conv2dEncoder(dim)
        self.head = CosineHead(dim, lin_neurons, self.n_classes, logit_scale)

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        """(B, T, F) linear magnitude -> log1p, the reference's "X_stft_logpower"."""
        return torch.log1p(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        """(B, T, F) log1p magnitude -> logits (B, C), embedding (B, dim), hidden (map,).

        The map is (B, dim, T', F'), (B, 256, 26, 32) for 431 x 513 at dim 256.
        """
        feature_map = self.encoder(inputs)  # (B, dim, T', F')
        embedding = feature_map.mean(dim=(-2, -1))  # (B, dim)
        return ClassifierOutput(self.head(embedding), embedding, (feature_map,))
