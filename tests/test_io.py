"""Audio I/O: any readable file -> validated mono float32 at the requested rate."""

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiointerp.cli import run
from audiointerp.io import (
    AudioError,
    atomic_write,
    find_audio_files,
    load_audio,
    load_audio_with_rate,
    replace_folder,
    save_audio,
    write_text_atomic,
)

RANDOM_BYTES = np.random.default_rng(1).bytes(20_000)  # libsndfile tries its mp3 decoder


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_any_format_rate_and_channels_to_mono_16k(tmp_path: Path, fmt: str) -> None:
    tone = _tone(44100, 1.0)
    stereo = np.stack([tone, 0.5 * tone], axis=1)
    path = tmp_path / f"stereo.{fmt}"
    sf.write(path, stereo, 44100)
    audio, rate = load_audio_with_rate(path, 16000)
    assert rate == 16000 and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    # mean of the channels = 0.75 * tone; amplitude 0.375 survives resampling
    assert np.max(np.abs(audio[1000:-1000])) == pytest.approx(0.375, abs=0.02)


def test_mp3_is_read(tmp_path: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without MP3 support")
    path = tmp_path / "tone.mp3"
    sf.write(path, _tone(22050, 0.5), 22050, format="MP3")
    audio = load_audio(path, 16000)
    assert abs(len(audio) - 8000) < 1200  # mp3 encoders pad a few frames


def test_keep_native_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _tone(8000, 0.25), 8000)
    audio, rate = load_audio_with_rate(path, None)
    assert rate == 8000 and len(audio) == 2000


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage"), "not an audio file soundfile can read"),
        (lambda p: p.write_text("not audio at all"), "not an audio file soundfile can read"),
        (lambda p: p.write_bytes(RANDOM_BYTES), "not an audio file soundfile can read"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "empty"),
        (
            lambda p: sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT"),
            "NaN or Inf",
        ),
        (
            lambda p: sf.write(p, np.array([0.1, np.inf], np.float32), 16000, subtype="FLOAT"),
            "NaN or Inf",
        ),
    ],
    ids=["missing", "directory", "corrupt", "text", "random", "empty", "nan", "inf"],
)
def test_bad_inputs_raise_one_clear_error(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(path) in str(info.value) and reason in str(info.value)


def test_save_audio_is_atomic_and_round_trips(tmp_path: Path) -> None:
    tone = _tone(16000, 0.5)
    path = save_audio(tmp_path / "sub" / "out.wav", tone, 16000, subtype="FLOAT")
    assert np.array_equal(sf.read(path, dtype="float32")[0], tone)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp files left
    with pytest.raises(AudioError):
        save_audio(tmp_path / "nan.wav", np.array([np.nan], np.float32), 16000)
    assert not (tmp_path / "nan.wav").exists()


def test_find_audio_files_recursive(tmp_path: Path) -> None:
    for name in ["a.wav", "x/b.flac", "x/y/c.ogg", "x/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_audio_files(tmp_path)] == ["a.wav", "b.flac", "c.ogg"]


def test_cli_reports_user_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def failing(_args: object) -> int:
        load_audio("/nonexistent/clip.wav")
        return 0

    assert run(failing, None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["audiointerp: error: /nonexistent/clip.wav: no such file"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_write(target) as temporary:
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_replace_folder_swaps_in_the_new_folder(tmp_path: Path) -> None:
    target, new = tmp_path / "report", tmp_path / "staging"
    (target / "stale").mkdir(parents=True)
    (new / "fresh").mkdir(parents=True)
    replace_folder(new, target)
    assert [p.name for p in target.iterdir()] == ["fresh"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


@pytest.mark.parametrize("suffix", [".wav", ".mp3"])
def test_random_bytes_are_not_audio_and_the_decoder_stays_quiet(
    tmp_path: Path, suffix: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(RANDOM_BYTES)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(info.value) == f"{path}: not an audio file soundfile can read"
    os.write(2, b"fd 2 restored\n")
    assert capfd.readouterr() == ("", "fd 2 restored\n")  # no mpg123 "Note: ..." lines


@pytest.fixture()
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_atomic_writes_keep_the_users_umask(tmp_path: Path) -> None:
    text = write_text_atomic(tmp_path / "metrics.json", "{}")
    audio = save_audio(tmp_path / "clip.wav", _tone(8000, 0.1), 8000)
    with atomic_write(tmp_path / "model.safetensors") as temporary:
        temporary.write_bytes(b"weights")
    assert [_mode(p) for p in (text, audio, tmp_path / "model.safetensors")] == [0o644] * 3
    os.umask(0o027)
    assert _mode(write_text_atomic(tmp_path / "config.yaml", "a: 1")) == 0o640


@pytest.mark.usefixtures("umask_022")
def test_replace_folder_gives_a_mkdtemp_folder_the_users_umask(tmp_path: Path) -> None:
    staging = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700
    write_text_atomic(staging / "index.html", "<html>")
    replace_folder(staging, tmp_path / "report")
    assert _mode(tmp_path / "report") == 0o755
    assert _mode(tmp_path / "report" / "index.html") == 0o644
