"""What every classifier returns, and the base class interpreters and metrics rely on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from audiointerp.features import FeatureConfig, FeatureExtractor, Features


@dataclass
class ClassifierOutput:
    """A classifier's decision and the hidden representation interpreters read.

    Attributes:
        logits: (B, C) class scores (softmax gives probabilities).
        embedding: (B, D) pooled embedding.
        hidden: intermediate feature maps, in the reference's order: conv2d gives one
            (B, dim, T/16, F/16) map; CNN14 gives (block6, block5, block4, block3).
    """

    logits: Tensor
    embedding: Tensor
    hidden: tuple[Tensor, ...]

    @property
    def probabilities(self) -> Tensor:
        return self.logits.softmax(dim=-1)

    @property
    def prediction(self) -> Tensor:
        """(B,) argmax class."""
        return self.logits.argmax(dim=-1)

    def __getitem__(self, index: Tensor) -> ClassifierOutput:
        """The rows ``index`` of every tensor."""
        return ClassifierOutput(
            self.logits[index], self.embedding[index], tuple(h[index] for h in self.hidden)
        )


class Classifier(nn.Module):
    """Base class: linear magnitude STFT (B, T, F) -> :class:`ClassifierOutput`.

    Each classifier owns its input transform (``input_features``), so mask-in/mask-out
    magnitudes go back through exactly the classifier's own feature path.
    """

    fast_copyable = True  # models/fast.py may rewrite it for inference

    def __init__(self, feature_config: FeatureConfig, class_names: list[str]):
        super().__init__()
        self.feature_extractor = FeatureExtractor(feature_config)
        self.class_names = list(class_names)

    @property
    def feature_config(self) -> FeatureConfig:
        return self.feature_extractor.config

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @contextmanager
    def explaining(self, features: Features) -> Iterator[None]:
        """Calls inside classify magnitudes (masked or not) of ``features``' clips. Ours read
        the magnitude only, so nothing happens; a waveform-in classifier
        (:mod:`audiointerp.models.external`) takes the input's phase from here."""
        yield

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        """(B, T, F) linear magnitude -> the network's input (e.g. log1p or log1p-mel)."""
        raise NotImplementedError

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        """The network on already-transformed inputs."""
        raise NotImplementedError

    def forward(self, linear_magnitude: Tensor) -> ClassifierOutput:
        return self.forward_features(self.input_features(linear_magnitude))

    @torch.no_grad()
    def classify_waveform(self, waveform: Tensor) -> ClassifierOutput:
        """Convenience: waveform (B, N) at the model rate -> output (no gradients)."""
        return self(self.feature_extractor(waveform).magnitude)
