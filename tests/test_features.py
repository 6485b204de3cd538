"""Features: reference STFT settings, perfect reconstruction, mel filterbank, masking."""

import math

import pytest
import torch

from audiointerp.features import (
    FeatureConfig,
    FeatureExtractor,
    apply_mask,
    fit_frames,
    log_compress,
    magnitude,
    mel_filterbank,
    power,
    unit_phase,
)


def _snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


def test_reference_settings_give_431_by_513_for_five_seconds() -> None:
    config = FeatureConfig()
    assert (config.hop_length, config.win_length, config.n_freqs) == (186, 372, 513)
    features = FeatureExtractor(config)(torch.randn(3, 80000))
    assert features.spec.shape == (3, 431, 513) and features.spec.is_complex()
    assert features.magnitude.shape == (3, 431, 513)
    assert config.n_frames(80000) == 431


@pytest.mark.parametrize("n_samples", [80000, 16000, 12345, 187])
def test_ones_mask_reconstructs_input(n_samples: int) -> None:
    extractor = FeatureExtractor()
    waveform = torch.randn(2, n_samples)
    features = extractor(waveform)
    mask = torch.ones_like(features.magnitude)
    for domain in ("linear", "log1p"):
        rebuilt = extractor.synthesize(apply_mask(mask, features.magnitude, domain), features)
        assert rebuilt.shape == waveform.shape
        assert _snr_db(waveform, rebuilt) > 60


def test_zero_mask_gives_silence_and_half_mask_halves_linear() -> None:
    extractor = FeatureExtractor()
    waveform = torch.randn(1, 16000)
    features = extractor(waveform)
    zeros = extractor.synthesize(
        apply_mask(torch.zeros_like(features.magnitude), features.magnitude), features
    )
    assert zeros.abs().max() < 1e-6
    half = extractor.synthesize(0.5 * features.magnitude, features)
    assert _snr_db(0.5 * waveform, half) > 60


def test_unit_phase_is_polar_of_the_angle_including_zeros() -> None:
    spec = torch.randn(2, 7, 9, dtype=torch.complex64)
    spec[0, 0, :3] = torch.tensor([0.0, -2.0, 3j])  # zero, negative real, imaginary
    expected = torch.polar(torch.ones(spec.shape), torch.angle(spec))
    unit = unit_phase(spec)
    assert torch.allclose(unit, expected, atol=1e-6)
    assert unit[0, 0, 0] == 1.0 and unit[0, 0, 1] == -1.0 and unit[0, 0, 2] == 1j


def test_magnitude_matches_reference_formula() -> None:
    spec = torch.complex(torch.tensor([[3.0, 0.0]]), torch.tensor([[4.0, 0.0]]))
    assert torch.allclose(magnitude(spec), torch.tensor([[5.0, 1e-7]]), atol=1e-9)
    assert torch.allclose(power(spec), torch.tensor([[25.0, 0.0]]))


def test_log_compressions() -> None:
    x = torch.tensor([0.0, math.e - 1])
    assert torch.allclose(log_compress(x, "log1p"), torch.tensor([0.0, 1.0]))
    assert torch.allclose(log_compress(torch.tensor([10.0]), "db"), torch.tensor([10.0]))
    with pytest.raises(ValueError, match="unknown compression"):
        log_compress(x, "cube")  # type: ignore[arg-type]


def test_mel_filterbank_shape_peaks_and_energy() -> None:
    config = FeatureConfig()
    filters = mel_filterbank(config)
    assert filters.shape == (513, 80)
    assert filters.min() >= 0 and filters.max() <= 1.0 + 1e-6
    # every filter peaks near 1 (centres rarely fall exactly on a bin) and has energy
    assert torch.all(filters.max(dim=0).values > 0.5)
    assert torch.all(filters.sum(dim=0) > 0)
    # centres increase monotonically along mel
    assert torch.all(torch.diff(filters.argmax(dim=0)) >= 0)
    # a flat spectrum puts more energy into the wider high-frequency filters
    flat = FeatureExtractor(config).mel(torch.ones(1, 1, 513))[0, 0]
    assert flat[-1] > flat[0]


def test_mel_filterbank_matches_reference_construction() -> None:
    config = FeatureConfig(n_mels=4, n_fft=16, sample_rate=16000, hop_ms=0.5, win_ms=1.0)
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    points = [inv(mel(8000) * i / 5) for i in range(6)]
    freqs = [8000 * k / 8 for k in range(9)]
    expected = torch.tensor(
        [
            [
                max(
                    0.0,
                    min(
                        (f - points[i + 1]) / (points[i + 1] - points[i]) + 1,
                        1 - (f - points[i + 1]) / (points[i + 1] - points[i]),
                    ),
                )
                for i in range(4)
            ]
            for f in freqs
        ]
    )
    assert torch.allclose(mel_filterbank(config), expected, atol=1e-5)


def test_apply_mask_domains_and_shape_check() -> None:
    mag = torch.tensor([[[0.0, 1.0, 10.0]]])
    mask = torch.tensor([[[0.5, 0.5, 0.5]]])
    assert torch.allclose(apply_mask(mask, mag, "linear"), torch.tensor([[[0.0, 0.5, 5.0]]]))
    log_domain = apply_mask(mask, mag, "log1p")
    assert torch.allclose(torch.log1p(log_domain), 0.5 * torch.log1p(mag))
    binary = torch.tensor([[[1.0, 0.0, 1.0]]])
    assert torch.allclose(apply_mask(binary, mag, "log1p"), apply_mask(binary, mag, "linear"))
    with pytest.raises(ValueError, match="mask"):
        apply_mask(mask[..., :2], mag)
    with pytest.raises(ValueError, match="domain"):
        apply_mask(mask, mag, "db")  # type: ignore[arg-type]


def test_fit_frames_crops_and_pads() -> None:
    x = torch.arange(6.0).reshape(1, 3, 2)
    assert fit_frames(x, 2).shape == (1, 2, 2)
    assert torch.equal(fit_frames(x, 5)[0, 3:], torch.tensor([[4.0, 5.0], [4.0, 5.0]]))
    assert torch.equal(fit_frames(x, 4, mode="zeros")[0, 3], torch.zeros(2))


def test_bad_feature_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_fft"):
        FeatureConfig(n_fft=256)
