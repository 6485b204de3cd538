"""The synthetic set: determinism, ESC-50 layout, variation within classes, 50 classes."""

from __future__ import annotations

import json
import os
import re
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiointerp.cli import main
from audiointerp.data import synthetic
from audiointerp.data.esc50 import DataError, ESC50Dataset, read_metadata
from audiointerp.data.synthetic import (
    class_names,
    default_data_folder,
    ensure_synthetic,
    generate_synthetic,
    summarize,
)

SMALL = dict(n_classes=3, clips_per_class=5, sample_rate=16000, duration_s=1.0)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "set", **SMALL)


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path, small_set):
    again = _files(generate_synthetic(tmp_path / "again", **SMALL))
    assert again == _files(small_set)
    other = _files(generate_synthetic(tmp_path / "other", seed=1, **SMALL))
    assert other.keys() == again.keys()
    wavs = [name for name in again if name.endswith(".wav")]
    assert len(wavs) == 15 and all(other[name] != again[name] for name in wavs)


def test_layout_is_esc50(small_set):
    rows = read_metadata(small_set)
    assert len(rows) == 15
    assert [row.filename for row in rows] == sorted(row.filename for row in rows)
    for row in rows:
        assert re.fullmatch(r"\d-\d+-[A-Z]-\d+\.wav", row.filename)
        assert row.filename == f"{row.fold}-{row.src_file}-{row.take}-{row.target}.wav"
        assert row.category == class_names(3)[row.target]
        info = sf.info(str(small_set / "audio" / row.filename))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            16000,
            1,
            "PCM_16",
            16000,
        )
    assert Counter((row.fold, row.target) for row in rows) == {
        (fold, target): 1 for fold in range(1, 6) for target in range(3)
    }
    assert (small_set / ".completed").is_file()
    assert json.loads((small_set / "synthetic.json").read_text())["seed"] == 0
    assert not list(small_set.parent.glob(".set.tmp.*"))


def test_loader_reads_it_unchanged(tmp_path):
    folder = generate_synthetic(
        tmp_path / "set", n_classes=4, clips_per_class=10, sample_rate=16000, duration_s=0.5
    )
    train = ESC50Dataset(folder, [1, 2, 3], sample_rate=8000, duration_s=0.5)
    test = ESC50Dataset(folder, [5], sample_rate=8000, duration_s=0.5)
    assert train.class_names == class_names(4)
    assert Counter(train.labels) == {0: 6, 1: 6, 2: 6, 3: 6}
    assert Counter(test.labels) == {0: 2, 1: 2, 2: 2, 3: 2}
    waveform, label, clip_id = test[0]
    assert waveform.shape == (4000,) and float(waveform.abs().max()) == pytest.approx(1.0)
    assert clip_id.startswith("5-")


def test_clips_vary_within_a_class(small_set):
    for target in range(3):
        clips = [
            sf.read(small_set / "audio" / row.filename)[0]
            for row in read_metadata(small_set)
            if row.target == target
        ]
        peaks = [np.abs(clip).max() for clip in clips]
        assert len({round(p, 3) for p in peaks}) == len(clips)  # levels differ
        for i in range(len(clips)):
            for j in range(i + 1, len(clips)):
                a, b = clips[i], clips[j]
                correlation = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
                assert abs(correlation) < 0.9  # not one template at another level


def _dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def test_fifty_classes_sit_in_bands(tmp_path):
    folder = generate_synthetic(
        tmp_path / "fifty", n_classes=50, clips_per_class=1, sample_rate=16000, duration_s=0.5
    )
    rows = read_metadata(folder)
    assert len(rows) == 50 and len({row.category for row in rows}) == 50
    assert {row.fold for row in rows} == {1}
    by_name = {row.category: folder / "audio" / row.filename for row in rows}
    # One family in its five bands: the fundamental rises with the band's scale.
    order = ["harmonic_tone_deep", "harmonic_tone_low", "harmonic_tone", "harmonic_tone_high"]
    pitches = [_dominant_hz(sf.read(by_name[name])[0], 16000) for name in order]
    assert pitches == sorted(pitches) and pitches[-1] > 2.5 * pitches[0]


def test_bad_parameters_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(DataError, match="n_classes"):
        generate_synthetic(tmp_path / "x", n_classes=51)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not ours"):
        generate_synthetic(foreign, n_classes=2, clips_per_class=1, duration_s=0.1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left


def test_ensure_generates_once_per_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOINTERP_DATA", str(tmp_path / "cache"))
    assert default_data_folder() == tmp_path / "cache"
    calls = []
    real = synthetic.generate_synthetic
    monkeypatch.setattr(
        synthetic, "generate_synthetic", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    folder = ensure_synthetic(n_classes=2, clips_per_class=1)
    assert folder == tmp_path / "cache" and len(calls) == 1
    assert ensure_synthetic(n_classes=2, clips_per_class=1) == folder and len(calls) == 1
    ensure_synthetic(n_classes=2, clips_per_class=1, seed=3)
    assert len(calls) == 2 and json.loads((folder / "synthetic.json").read_text())["seed"] == 3
    info = sf.info(str(next((folder / "audio").iterdir())))
    assert (info.samplerate, info.duration) == (44100, 5.0)


def test_summary_and_cli(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--classes", "2",
                 "--clips-per-class", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.strip() == summarize(tmp_path / "s")
    assert "2 clips, 2 classes, 5.0 s at 44100 Hz" in printed
    assert "clips per fold: 1: 2" in printed
    assert "classes: harmonic_tone, bird_chirp_sweep" in printed
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "--classes", "99"]) == 2
    assert "n_classes must be in [2, 50]" in capsys.readouterr().err


def test_published_data_folder_keeps_the_umask(tmp_path: Path) -> None:
    """The data set folder is staged with mkdtemp (0700) and published with the user's
    umask, so other users of the machine can read it."""
    previous = os.umask(0o022)
    try:
        folder = ensure_synthetic(tmp_path / "synth", n_classes=2, clips_per_class=1, seed=0)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
