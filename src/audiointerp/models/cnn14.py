"""CNN14 (PANNs, arXiv 1912.10211) on log1p-mel features, with a linear head.

Parameter names follow SpeechBrain's ``Cnn14`` (encoder: ``norm0``, ``conv_block1..6``)
and a plain ``torch.nn.Linear`` head (``weight``, ``bias``), as in the interpretation
recipes' 16-kHz CNN14, so its checkpoints load key for key. Channel widths scale with
``width`` (1.0 = the reference's 64 ... 2048) so tests and demos can run narrow versions.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.features import FeatureConfig
from audiointerp.models.base import Classifier, ClassifierOutput

REFERENCE_CHANNELS = (64, 128, 256, 512, 1024, 2048)
DROPOUT = 0.2


def cnn14_channels(width: float) -> tuple[int, ...]:
    """Channels of the six conv blocks at ``width`` x the reference's 64 ... 2048."""
    if width <= 0:
        raise ValueError(f"cnn14 width must be > 0, got {width}")
    return tuple(max(1, round(c * width)) for c in REFERENCE_CHANNELS)


class ConvBlock(nn.Module):
    """[Conv3x3 (no bias) -> BN -> ReLU] x 2, then average pooling."""

    # ``forward`` applies each norm directly to its conv's output (fast_copy folds them)
    conv_norm_pairs: ClassVar = (("conv1", "norm1"), ("conv2", "norm2"))

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels)
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: Tensor, pool: int) -> Tensor:
        """(B, C_in, T, M) -> (B, C_out, T // pool, M // pool)."""
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool) if pool > 1 else x


class Cnn14Encoder(nn.Module):
    """BatchNorm over mel bins, six conv blocks, then frequency-mean and time max+mean.

    Returns the (B, C6) embedding and the block outputs the interpreters read,
    (block6, block5, block4, block3); for 431 x 80 at full width these are
    (B, 2048, 13, 2), (B, 1024, 13, 2), (B, 512, 26, 5), (B, 256, 53, 10).
    """

    def __init__(self, n_mels: int = 80, width: float = 1.0):
        super().__init__()
        self.norm0 = nn.BatchNorm2d(n_mels)
        channels = cnn14_channels(width)
        for index, (c_in, c_out) in enumerate(
            zip((1, *channels[:-1]), channels, strict=True), start=1
        ):
            self.add_module(f"conv_block{index}", ConvBlock(c_in, c_out))
        self.out_dim = channels[-1]

    def forward(self, log_mel: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """(B, T, M) log1p mel -> embedding (B, C6), (block6, block5, block4, block3)."""
        x = log_mel.unsqueeze(1)  # (B, 1, T, M)
        x = self.norm0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel bin
        outputs = []
        for index in range(1, 7):
            block = getattr(self, f"conv_block{index}")
            x = block(x, pool=2 if index < 6 else 1)
            outputs.append(x)
            x = F.dropout(x, p=DROPOUT, training=self.training)
        x = x.mean(dim=3)  # (B, C6, T6)
        embedding = x.amax(dim=2) + x.mean(dim=2)  # (B, C6)
        return embedding, (outputs[5], outputs[4], outputs[3], outputs[2])


class Cnn14Classifier(Classifier):
    """log1p(mel(|X|)) (B, T, n_mels) -> CNN14 embedding -> Linear head.

    Args:
        feature_config: STFT and mel settings (``n_mels`` sets ``norm0``'s size).
        class_names: one name per output class.
        width: multiplier of the reference channels 64 ... 2048.
    """

    def __init__(self, feature_config: FeatureConfig, class_names: list[str], width: float = 1.0):
        super().__init__(feature_config, class_names)
        self.encoder = Cnn14Encoder(feature_config.n_mels, width)
        self.head = nn.Linear(self.encoder.out_dim, self.n_classes)

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        """(B, T, F) linear magnitude -> (B, T, n_mels) log1p mel."""
        return self.feature_extractor.log1p_mel(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        """(B, T, n_mels) log1p mel -> logits (B, C), embedding (B, C6), 4 block outputs."""
        embedding, hidden = self.encoder(inputs)
        return ClassifierOutput(self.head(embedding), embedding, hidden)
