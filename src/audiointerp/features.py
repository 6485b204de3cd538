"""Time-frequency features and their inverse, batched torch code.

Defaults follow the reference recipe (16 kHz, n_fft 1024, hop 11.6099 ms = 186 samples,
win 23.2199 ms = 372 samples, periodic Hamming window, centred with zero padding): a 5-s
clip gives 431 frames x 513 bins. Spectrograms are laid out (B, T, F).

This module owns the one masking function (:func:`apply_mask`) used by training,
explanation and metrics alike, so "mask-in" and "mask-out" mean the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

MAGNITUDE_EPS = 1e-14  # the reference's spectral_magnitude eps, inside the sqrt
MaskDomain = Literal["linear", "log1p"]


@dataclass
class FeatureConfig:
    """STFT and mel settings shared by classifiers and interpreters."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_ms: float = 11.6099
    win_ms: float = 23.2199
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / 1000.0 * self.hop_ms))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate / 1000.0 * self.win_ms))

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT of ``n_samples`` samples."""
        return n_samples // self.hop_length + 1

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_ms gives {self.win_length} samples > n_fft {self.n_fft}")
        if self.hop_length < 1:
            raise ValueError("hop_ms gives a hop of 0 samples")


@dataclass
class Features:
    """An input's STFT and what every model reads from it.

    Attributes:
        spec: complex STFT, (B, T, F); its phase is reused to synthesise explanations.
        magnitude: linear magnitude sqrt(re^2 + im^2 + eps), (B, T, F).
        n_samples: waveform length, so synthesis returns exactly the input length.
    """

    spec: Tensor
    magnitude: Tensor
    n_samples: int

    @property
    def log_magnitude(self) -> Tensor:
        """log1p of the magnitude: the reference's "X_stft_logpower", (B, T, F)."""
        return torch.log1p(self.magnitude)

    def to(self, device: torch.device | str) -> Features:
        return Features(self.spec.to(device), self.magnitude.to(device), self.n_samples)

    def __getitem__(self, index: slice | Tensor | list[int]) -> Features:
        return Features(self.spec[index], self.magnitude[index], self.n_samples)


def hz_to_mel(freq: Tensor) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + freq / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(config: FeatureConfig) -> Tensor:
    """Triangular mel filters, (F, n_mels), laid out as the reference's Filterbank.

    n_mels + 2 points evenly spaced in HTK mel between f_min and f_max; filter i is a
    symmetric triangle centred at point i+1 with half-width = distance to point i, peak 1,
    no area normalisation, evaluated at linspace(0, sr/2, F).
    """
    f_max = config.f_max if config.f_max is not None else config.sample_rate / 2
    mel_points = torch.linspace(
        float(hz_to_mel(torch.tensor(config.f_min))),
        float(hz_to_mel(torch.tensor(f_max))),
        config.n_mels + 2,
        dtype=torch.float64,
    )
    hz = mel_to_hz(mel_points)
    centres = hz[1:-1]
    half_width = (hz[1:] - hz[:-1])[:-1]
    freqs = torch.linspace(0, config.sample_rate / 2, config.n_freqs, dtype=torch.float64)
    slope = (freqs[:, None] - centres[None, :]) / half_width[None, :]
    filters = torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0)
    return filters.float()


class FeatureExtractor(nn.Module):
    """Waveform <-> STFT features, holding the window and mel filterbank as buffers."""

    def __init__(self, config: FeatureConfig | None = None):
        super().__init__()
        self.config = config or FeatureConfig()
        window = torch.hamming_window(self.config.win_length)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel_filters", mel_filterbank(self.config), persistent=False)

    def stft(self, waveform: Tensor) -> Tensor:
        """waveform (B, N) or (N,) -> complex STFT (B, T, F)."""
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        cfg = self.config
        spec = torch.stft(
            waveform,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.transpose(1, 2)  # (B, F, T) -> (B, T, F)

    def forward(self, waveform: Tensor) -> Features:
        """waveform (B, N) -> :class:`Features`."""
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        spec = self.stft(waveform)
        return Features(spec=spec, magnitude=magnitude(spec), n_samples=waveform.shape[-1])

    def mel(self, linear_magnitude: Tensor) -> Tensor:
        """(B, T, F) linear magnitude -> (B, T, n_mels) mel magnitude (not logged)."""
        return linear_magnitude @ self.mel_filters

    def log1p_mel(self, linear_magnitude: Tensor) -> Tensor:
        """The CNN14 input of the interpretation recipes: log1p(mel(|X|)), (B, T, n_mels)."""
        return torch.log1p(self.mel(linear_magnitude))

    def istft(self, spec: Tensor, n_samples: int) -> Tensor:
        """complex (B, T, F) -> waveform (B, n_samples)."""
        cfg = self.config
        return torch.istft(
            spec.transpose(1, 2),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=True,
            normalized=False,
            onesided=True,
            length=n_samples,
        )

    def synthesize(self, linear_magnitude: Tensor, features: Features) -> Tensor:
        """Masked magnitude + the input's phase -> waveform of the input's length.

        ``linear_magnitude`` may have fewer frames than the input (reference decoders
        stop early); missing frames are silent.
        """
        frames = features.spec.shape[1]
        linear_magnitude = fit_frames(linear_magnitude, frames, mode="zeros")
        return self.istft(linear_magnitude * unit_phase(features.spec), features.n_samples)


def unit_phase(spec: Tensor) -> Tensor:
    """exp(i angle(spec)): spec / |spec|, and 1 where spec is 0 (angle 0). The same as
    ``polar(1, angle(spec))`` to float rounding, without the arctangent, sine and cosine
    (3x faster on a (431, 513) spectrum)."""
    unit = torch.sgn(spec)
    return unit.masked_fill_(spec == 0, 1.0)


def magnitude(spec: Tensor) -> Tensor:
    """sqrt(re^2 + im^2 + 1e-14), the reference's spectral_magnitude(power=0.5)."""
    return torch.sqrt(spec.real**2 + spec.imag**2 + MAGNITUDE_EPS)


def power(spec: Tensor) -> Tensor:
    """|X|^2."""
    return spec.real**2 + spec.imag**2


def log_compress(x: Tensor, kind: Literal["log1p", "log", "db"] = "log1p") -> Tensor:
    """Dynamic-range compression: log1p(x), log(x + 1e-10) or 10·log10(x + 1e-10)."""
    if kind == "log1p":
        return torch.log1p(x)
    if kind == "log":
        return torch.log(x + 1e-10)
    if kind == "db":
        return 10.0 * torch.log10(x + 1e-10)
    raise ValueError(f"unknown compression {kind!r}; expected log1p, log or db")


def fit_frames(x: Tensor, frames: int, mode: Literal["zeros", "edge"] = "edge") -> Tensor:
    """Crop or pad (B, T, F) along T to ``frames``: pad with zeros or by repeating the edge."""
    current = x.shape[1]
    if current == frames:
        return x
    if current > frames:
        return x[:, :frames]
    if mode == "zeros":
        pad = x.new_zeros(x.shape[0], frames - current, *x.shape[2:])
    else:
        pad = x[:, -1:].expand(x.shape[0], frames - current, *x.shape[2:])
    return torch.cat([x, pad], dim=1)


def apply_mask(mask: Tensor, linear_magnitude: Tensor, domain: MaskDomain = "linear") -> Tensor:
    """Apply a [0, 1] mask to a linear magnitude; returns a linear magnitude.

    ``linear``: mask * |X| (the mask is a gain). ``log1p``: expm1(mask * log1p|X|), the
    reference's PIQ/L-MAC domain, kept for parity with imported models. Mask-out is
    ``apply_mask(1 - mask, ...)`` in both domains.

    Args:
        mask: (B, T, F) in [0, 1].
        linear_magnitude: (B, T, F) >= 0.
    """
    if mask.shape != linear_magnitude.shape:
        raise ValueError(f"mask {tuple(mask.shape)} != magnitude {tuple(linear_magnitude.shape)}")
    if domain == "linear":
        return mask * linear_magnitude
    if domain == "log1p":
        return torch.expm1(mask * torch.log1p(linear_magnitude))
    raise ValueError(f"unknown mask domain {domain!r}; expected 'linear' or 'log1p'")
