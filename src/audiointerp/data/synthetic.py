"""The embedded default data set: procedurally generated sound classes in ESC-50's layout.

Each class is a family of sounds (harmonic tones, chirps, glides, noise bursts, click
trains, AM/FM tones, bells, thumps, crackles) in one frequency band. Every clip draws its
own pitch, timing, event count, durations, level and background noise, so a classifier
has to learn the family rather than one template. Families sit in partly different
time-frequency regions, which gives two-class mixtures a meaningful ground truth. Classes
10-49 reuse the ten families in other bands (lower, higher, deeper, brighter).

Clip ``i`` of class ``c`` depends only on ``(seed, c, i)``: the same seed gives
byte-identical files, and a 10-class set is the first 10 classes of a 50-class one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import next_fast_len
from scipy.signal import lfilter
from tqdm import tqdm

from audiointerp.data.esc50 import (
    COMPLETED_MARKER,
    CSV_COLUMNS,
    DataError,
    class_names_from_metadata,
    read_metadata,
)
from audiointerp.io import publish_folder, staging_folder

PARAMS_FILE = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the sounds change, so cached sets are regenerated
MAX_HZ = 7200.0  # stay below 8 kHz, the Nyquist frequency of the 16-kHz models
N_FOLDS = 5

Family = Callable[[np.random.Generator, int, int, float], np.ndarray]


# --------------------------------------------------------------------------- building blocks


def _hz(freq: np.ndarray | float) -> np.ndarray:
    return np.minimum(freq, MAX_HZ)


def _phase(freq_hz: np.ndarray, sr: int) -> np.ndarray:
    """Instantaneous phase (radians) of a tone whose frequency varies per sample."""
    return 2 * np.pi * np.cumsum(freq_hz) / sr


def _ramps(length: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Linear attack and release so events start and stop without clicks."""
    envelope = np.ones(length)
    attack = max(1, min(length, int(attack_s * sr)))
    release = max(1, min(length, int(release_s * sr)))
    envelope[:attack] *= np.linspace(0.0, 1.0, attack)
    envelope[-release:] *= np.linspace(1.0, 0.0, release)
    return envelope


def _onset(rng: np.random.Generator, n: int, length: int) -> int:
    return int(rng.integers(0, max(1, n - length)))


def _add(out: np.ndarray, event: np.ndarray, start: int) -> None:
    """Add ``event`` into ``out`` from sample ``start``, cropped at the end."""
    stop = min(len(out), start + len(event))
    if stop > start:
        out[start:stop] += event[: stop - start]


def _band_filter(signal: np.ndarray, sr: int, center_hz: float, width_oct: float) -> np.ndarray:
    """Gaussian band-pass in log frequency (FFT domain), ``width_oct`` octaves wide (std)."""
    n_fft = next_fast_len(len(signal), real=True)  # arbitrary lengths can be slow primes
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    octaves = np.log2(np.maximum(freqs, 1.0) / center_hz)
    gain = np.exp(-0.5 * (octaves / width_oct) ** 2)
    return np.fft.irfft(np.fft.rfft(signal, n=n_fft) * gain, n=n_fft)[: len(signal)]


def _unit_rms(signal: np.ndarray) -> np.ndarray:
    return signal / (np.sqrt(np.mean(signal**2)) + 1e-12)


# ------------------------------------------------------------------------- sound families
# Each family: (rng, n samples, sample rate, frequency scale) -> clean signal (n,).


def _harmonic_tone(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    rolloff = rng.uniform(0.8, 1.6)
    for _ in range(rng.integers(1, 4)):
        length = int(rng.uniform(0.4, 1.6) * sr)
        t = np.arange(length) / sr
        f0 = 260.0 * scale * rng.uniform(0.97, 1.03)
        vibrato = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
        phase = _phase(f0 * vibrato, sr)
        note = sum(k**-rolloff * np.sin(k * phase) for k in range(1, 9) if k * f0 < MAX_HZ)
        _add(out, note * _ramps(length, sr, 0.02, 0.1), _onset(rng, n, length))
    return out


def _bird_chirp_sweep(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(rng.integers(1, 3)):
        n_chirps, gap_s = rng.integers(2, 7), rng.uniform(0.08, 0.25)
        start = _onset(rng, n, int(n_chirps * (0.18 + gap_s) * sr))
        for _ in range(n_chirps):
            length = int(rng.uniform(0.06, 0.18) * sr)
            ratio = np.arange(length) / length
            low, high = 1800.0 * scale, 3200.0 * scale * rng.uniform(0.9, 1.1)
            chirp = np.sin(_phase(_hz(low * (high / low) ** ratio), sr)) * np.hanning(length)
            _add(out, chirp, start)
            start += length + int(gap_s * sr)
    return out


def _falling_whistle(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        length = int(rng.uniform(0.3, 1.2) * sr)
        high = 1400.0 * scale
        low = high / rng.uniform(1.6, 2.2)
        phase = _phase(_hz(high * (low / high) ** (np.arange(length) / length)), sr)
        glide = np.sin(phase) + 0.3 * np.sin(2 * phase)
        _add(out, glide * _ramps(length, sr, 0.02, 0.08), _onset(rng, n, length))
    return out


def _noise_burst(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(rng.integers(2, 7)):
        length = int(rng.uniform(0.1, 0.6) * sr)
        burst = _band_filter(rng.standard_normal(length), sr, _hz(900.0 * scale), 0.3)
        _add(out, _unit_rms(burst) * _ramps(length, sr, 0.01, 0.05), _onset(rng, n, length))
    return out


def _click_train(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    decay_s = rng.uniform(0.002, 0.004)
    t = np.arange(int(5 * decay_s * sr)) / sr
    click = np.exp(-t / decay_s) * np.sin(2 * np.pi * _hz(2500.0 * scale) * t)
    for _ in range(rng.integers(1, 3)):
        rate, duration_s = rng.uniform(6, 25), rng.uniform(1.0, 3.5)
        start = _onset(rng, n, int(duration_s * sr))
        times = np.arange(int(duration_s * rate)) / rate
        times *= 1 + rng.uniform(-0.02, 0.02, len(times))
        for time_s in times:
            _add(out, rng.uniform(0.6, 1.0) * click, start + int(time_s * sr))
    return out


def _am_buzz(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    length = int(rng.uniform(1.5, 4.0) * sr)
    t = np.arange(length) / sr
    phase = 2 * np.pi * 550.0 * scale * t
    carrier = sum(a * np.sin(k * phase) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
    depth = rng.uniform(0.7, 1.0)
    modulation = 1 - depth / 2 * (1 - np.cos(2 * np.pi * rng.uniform(8, 18) * t))
    out = np.zeros(n)
    _add(out, carrier * modulation * _ramps(length, sr, 0.05, 0.2), _onset(rng, n, length))
    return out


def _fm_siren(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    length = int(rng.uniform(2.0, 4.5) * sr)
    t = np.arange(length) / sr
    sweep = np.sin(2 * np.pi * rng.uniform(0.4, 1.5) * t + rng.uniform(0, 2 * np.pi))
    phase = _phase(_hz(1000.0 * scale * (1 + rng.uniform(0.15, 0.3) * sweep)), sr)
    out = np.zeros(n)
    siren = (np.sin(phase) + 0.2 * np.sin(2 * phase)) * _ramps(length, sr, 0.1, 0.3)
    _add(out, siren, _onset(rng, n, length))
    return out


def _bell_resonance(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        decay_s = rng.uniform(0.3, 1.2)
        length = min(n, int(4 * decay_s * sr))
        t = np.arange(length) / sr
        f0 = 480.0 * scale * rng.uniform(0.98, 1.02)
        strike = sum(
            amp * np.exp(-t * (1 + ratio / 3) / decay_s) * np.sin(2 * np.pi * f0 * ratio * t)
            for ratio, amp in ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25))
            if f0 * ratio < MAX_HZ
        )
        _add(out, strike * _ramps(length, sr, 0.002, 0.05), _onset(rng, n, length))
    return out


def _rhythmic_thump(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    decay_s = rng.uniform(0.04, 0.08)
    t = np.arange(int(0.3 * sr)) / sr
    phase = _phase(60.0 * scale * (1 + np.exp(-t / 0.03)), sr)
    thump = (np.sin(phase) + 0.5 * np.sin(2 * phase)) * np.exp(-t / decay_s)
    period = int(sr / rng.uniform(1.5, 4.0))
    count = rng.integers(4, 13)
    start = _onset(rng, n, count * period)
    for i in range(count):
        _add(out, rng.uniform(0.7, 1.0) * thump, start + i * period)
    return out


def _crackle(rng: np.random.Generator, n: int, sr: int, scale: float) -> np.ndarray:
    out = np.zeros(n)
    length = int(rng.uniform(1.5, 4.5) * sr)
    start = _onset(rng, n, length)
    width_s = rng.uniform(0.0005, 0.0015)
    t = np.arange(-4 * width_s, 4 * width_s, 1 / sr)
    grain = np.exp(-0.5 * (t / width_s) ** 2) * np.cos(2 * np.pi * _hz(3000.0 * scale) * t)
    count = rng.poisson(rng.uniform(15, 60) * length / sr)
    for position in np.sort(rng.integers(0, length, count)):
        _add(out, rng.uniform(0.2, 1.0) * rng.choice([-1.0, 1.0]) * grain, start + position)
    return out


FAMILIES: tuple[tuple[str, Family], ...] = (
    ("harmonic_tone", _harmonic_tone),
    ("bird_chirp_sweep", _bird_chirp_sweep),
    ("falling_whistle", _falling_whistle),
    ("noise_burst", _noise_burst),
    ("click_train", _click_train),
    ("am_buzz", _am_buzz),
    ("fm_siren", _fm_siren),
    ("bell_resonance", _bell_resonance),
    ("rhythmic_thump", _rhythmic_thump),
    ("crackle", _crackle),
)
# Frequency bands for classes 10-49, spaced by ~1.5x so that the +-15 % pitch variation
# within a class never reaches the next band of the same family.
BANDS: tuple[tuple[str, float], ...] = (
    ("", 1.0),
    ("_low", 0.67),
    ("_high", 1.5),
    ("_deep", 0.45),
    ("_bright", 2.2),
)
MAX_CLASSES = len(FAMILIES) * len(BANDS)


def class_names(n_classes: int) -> list[str]:
    """Names of the first ``n_classes`` synthetic classes (index = ESC-50 ``target``)."""
    assert 2 <= n_classes <= MAX_CLASSES, f"n_classes must be in [2, {MAX_CLASSES}]"
    return [FAMILIES[c % len(FAMILIES)][0] + BANDS[c // len(FAMILIES)][0] for c in range(n_classes)]


def synthesize_clip(
    target: int, clip: int, seed: int = 0, sample_rate: int = 44100, duration_s: float = 5.0
) -> np.ndarray:
    """Clip ``clip`` of class ``target`` as int16 samples (n,), a function of its arguments."""
    rng = np.random.default_rng([seed, target, clip])
    family = FAMILIES[target % len(FAMILIES)][1]
    scale = BANDS[target // len(FAMILIES)][1] * np.exp(rng.uniform(np.log(0.87), np.log(1.15)))
    n = round(duration_s * sample_rate)
    signal = _unit_rms(family(rng, n, sample_rate, scale))
    # Background noise 10-30 dB below the signal, between white and low-passed (rumble).
    white = rng.standard_normal(n)
    rumble = _unit_rms(lfilter([1.0], [1.0, -0.98], white))
    tilt = rng.uniform(0.0, 1.0)
    noise = _unit_rms((1 - tilt) * white + tilt * rumble)
    mixed = signal + 10 ** (-rng.uniform(10, 30) / 20) * noise
    level = 10 ** (rng.uniform(-12, -1) / 20)
    mixed *= level / np.max(np.abs(mixed))
    return np.round(mixed * 32767).astype(np.int16)


# ------------------------------------------------------------------------------ data set


def generate_synthetic(
    out_dir: str | os.PathLike,
    n_classes: int = 10,
    clips_per_class: int = 40,
    seed: int = 0,
    sample_rate: int = 44100,
    duration_s: float = 5.0,
) -> Path:
    """Write the synthetic set in ESC-50's layout to ``out_dir`` (atomically) and return it.

    ``audio/{fold}-{src}-{take}-{target}.wav`` (16-bit PCM mono) and ``meta/esc50.csv``;
    each class's clips are spread evenly over 5 folds. The folder appears complete or not
    at all (built beside it, then renamed); ``.completed`` and ``synthetic.json`` (the
    parameters) mark it. An older synthetic set in ``out_dir`` is replaced.
    """
    if not 2 <= n_classes <= MAX_CLASSES:
        raise DataError(out_dir, f"n_classes must be in [2, {MAX_CLASSES}], got {n_classes}")
    if not 1 <= clips_per_class <= 1000:
        raise DataError(out_dir, f"clips_per_class must be in [1, 1000], got {clips_per_class}")
    if seed < 0:
        raise DataError(out_dir, f"seed must be non-negative, got {seed}")
    names = class_names(n_classes)
    params = _params(n_classes, clips_per_class, seed, sample_rate, duration_s)
    staging = staging_folder(out_dir)
    try:
        (staging / "audio").mkdir()
        (staging / "meta").mkdir()
        rows = []
        jobs = [(target, clip) for target in range(n_classes) for clip in range(clips_per_class)]
        for target, clip in tqdm(jobs, desc="synthesizing clips", disable=None):
            fold, src_file, take = clip % N_FOLDS + 1, str(100000 + 1000 * target + clip), "A"
            filename = f"{fold}-{src_file}-{take}-{target}.wav"
            samples = synthesize_clip(target, clip, seed, sample_rate, duration_s)
            sf.write(staging / "audio" / filename, samples, sample_rate, subtype="PCM_16")
            rows.append((filename, fold, target, names[target], target < 10, src_file, take))
        rows.sort()  # ESC-50's esc50.csv is sorted by file name, hence by fold first
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        (staging / "meta" / "esc50.csv").write_text(table.getvalue(), encoding="utf-8")
        (staging / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
        (staging / COMPLETED_MARKER).write_text("")
        return publish_folder(staging, out_dir, PARAMS_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _params(
    n_classes: int, clips_per_class: int, seed: int, sample_rate: int, duration_s: float
) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "n_classes": n_classes,
        "clips_per_class": clips_per_class,
        "seed": seed,
        "sample_rate": sample_rate,
        "duration_s": duration_s,
    }


def default_data_folder() -> Path:
    """``$AUDIOINTERP_DATA`` if set, else ``~/.cache/audiointerp/synthetic-esc50``."""
    override = os.environ.get("AUDIOINTERP_DATA")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "audiointerp" / "synthetic-esc50"


def ensure_synthetic(
    folder: str | os.PathLike | None = None,
    n_classes: int = 10,
    clips_per_class: int = 40,
    seed: int = 0,
) -> Path:
    """Return the synthetic set in ``folder``, generating it only when needed.

    ``folder`` defaults to :func:`default_data_folder`. A completed set whose
    ``synthetic.json`` records the same parameters (44.1 kHz, 5-s clips) is reused as is.
    """
    folder = Path(folder) if folder is not None else default_data_folder()
    wanted = _params(n_classes, clips_per_class, seed, 44100, 5.0)
    try:
        found = json.loads((folder / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        found = None
    if found == wanted and (folder / COMPLETED_MARKER).is_file():
        return folder
    return generate_synthetic(folder, n_classes, clips_per_class, seed)


def summarize(folder: str | os.PathLike) -> str:
    """A few lines describing an ESC-50-layout folder: clips, classes, folds, audio format."""
    folder = Path(folder)
    rows = read_metadata(folder)
    names = class_names_from_metadata(rows, {row.fold for row in rows})
    info = sf.info(str(folder / "audio" / rows[0].filename))
    per_fold = Counter(row.fold for row in rows)
    folds = ", ".join(f"{fold}: {count}" for fold, count in sorted(per_fold.items()))
    return "\n".join(
        [
            f"{folder}: {len(rows)} clips, {len(names)} classes, "
            f"{info.duration:.1f} s at {info.samplerate} Hz ({info.subtype_info})",
            f"clips per fold: {folds}",
            f"classes: {', '.join(names)}",
        ]
    )
