"""A classifier that is not ours, for the tests: waveform (B, N) -> logits, with its own
log-mel front end (torch ops only), as a user would write one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from audiointerp.features import FeatureConfig
from audiointerp.models.external import ExternalClassifier

SAMPLE_RATE = 8000
CLASSES = ["tone", "noise", "click"]


class WaveformNet(nn.Module):
    """log-mel (its own STFT: n_fft 256, hop 128, 16 triangular bands) -> conv -> logits."""

    def __init__(self, n_classes: int = len(CLASSES), n_mels: int = 16, width: int = 4):
        super().__init__()
        self.register_buffer("window", torch.hann_window(256), persistent=False)
        bins = torch.linspace(0, 1, 129)[:, None]
        centres = torch.linspace(0, 1, n_mels + 2)[1:-1][None, :]
        bands = (1 - (bins - centres).abs() * (n_mels + 1)).clamp_min(0)
        self.register_buffer("mel", bands, persistent=False)  # (129, n_mels)
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, n_classes)

    def forward(self, waveform: Tensor) -> Tensor:
        spec = torch.stft(waveform, 256, 128, window=self.window, return_complex=True)
        logmel = torch.log(spec.abs().pow(2).transpose(1, 2) @ self.mel + 1e-6)  # (B, T, M)
        h = self.conv(logmel.unsqueeze(1))  # (B, K, T, M)
        return self.head(h.mean(dim=(2, 3)))


def build(layer: str | None = "conv") -> ExternalClassifier:
    """The factory ``--classifier tests/external_model.py:build`` calls."""
    torch.manual_seed(0)
    return ExternalClassifier(WaveformNet(), SAMPLE_RATE, CLASSES, layer=layer)


def build_logits_only() -> ExternalClassifier:
    return build(layer=None)


def broken() -> ExternalClassifier:
    raise RuntimeError("weights file missing")


def build_small() -> ExternalClassifier:
    """:func:`build` on a coarse STFT of ours (129 bins, 16-ms hop): fast CLI tests."""
    torch.manual_seed(0)
    features = FeatureConfig(sample_rate=SAMPLE_RATE, n_fft=256, hop_ms=16.0, win_ms=32.0)
    return ExternalClassifier(WaveformNet(), SAMPLE_RATE, CLASSES, "conv", features)
