"""Audio in and out: any file soundfile reads -> validated mono float32 at the model rate.

Every failure a user can cause (missing file, directory, corrupt or empty audio, NaN/Inf
samples) raises :class:`AudioError`, whose message names the file and the reason, so the
CLI can print one line and exit 2. Writes are atomic (temp file + rename) and keep the
user's umask: files come out ``0o666 & ~umask``, folders ``0o777 & ~umask``, as if written
directly (a temporary file or folder alone would be private, 0600 / 0700).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiointerp.errors import AudioError, DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
NOT_AUDIO = "not an audio file soundfile can read"
_STDERR_LOCK = threading.Lock()


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels: (N,) or (N, C) -> (N,) float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise ValueError(f"audio must be (N,) or (N, C), got shape {audio.shape}")
    return audio


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """High-quality resampling with soxr; a no-op when the rates agree."""
    if orig_rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(audio, orig_rate, target_rate, quality="HQ").astype(np.float32)


def validate_audio(audio: np.ndarray, source: str | os.PathLike = "<array>") -> np.ndarray:
    """Reject empty or non-finite audio with an :class:`AudioError`; returns the input."""
    if audio.size == 0:
        raise AudioError(source, "audio is empty (zero samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(source, "audio contains NaN or Inf samples")
    return audio


def load_audio(path: str | os.PathLike, sample_rate: int | None = 16000) -> np.ndarray:
    """Read a file as mono float32 at ``sample_rate`` (None keeps the file's rate).

    Raises:
        AudioError: missing path, a directory, an unreadable/corrupt file, zero-length or
            non-finite audio. The message names the file and the reason.
    """
    audio, _ = load_audio_with_rate(path, sample_rate)
    return audio


def load_audio_with_rate(
    path: str | os.PathLike, sample_rate: int | None = 16000
) -> tuple[np.ndarray, int]:
    """Like :func:`load_audio`, also returning the rate of the returned samples."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    with _native_stderr_silenced():  # libsndfile's mp3 decoder prints "Note: ..." lines
        try:
            sound = sf.SoundFile(str(path))
        except Exception as error:  # libsndfile's reasons for this ("possibly a pipe?") mislead
            raise AudioError(path, NOT_AUDIO) from error
        try:
            with sound:
                audio, rate = sound.read(dtype="float32", always_2d=True), sound.samplerate
        except Exception as error:  # soundfile raises several types for corrupt data
            text = str(error).strip()
            reason = text.splitlines()[0] if text else type(error).__name__
            raise AudioError(path, f"cannot read audio ({reason})") from error
    audio = validate_audio(to_mono(audio), path)
    if sample_rate is not None and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, int(rate)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only when the
    block finishes, so readers never see half a file (same folder: ``os.replace`` is
    atomic). On an exception the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp made it 0600
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def replace_folder(new: Path, target: Path) -> None:
    """Swap the finished folder ``new`` into ``target``'s place; an existing target is
    moved aside first, then deleted, so ``target`` is never half written. ``new`` gets the
    mode of a folder made with the user's umask (``tempfile.mkdtemp`` makes it 0700)."""
    os.chmod(new, 0o777 & ~current_umask())
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def save_audio(
    path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None
) -> Path:
    """Write mono (N,) or multichannel (N, C) audio atomically; format from the extension."""
    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    validate_audio(audio, path)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    with atomic_write(path) as temporary:
        sf.write(str(temporary), audio, sample_rate, subtype=subtype, format=fmt)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Text variant of :func:`write_bytes_atomic` (UTF-8)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block: native libraries (mpg123 inside
    libsndfile) print there directly, past Python's ``sys.stderr``. Python's own stderr is
    flushed first; a lock keeps threads from restoring each other's descriptor."""
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2: nothing to silence
            saved = None
        if saved is None:
            yield
            return
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """Audio files under ``root`` (recursively, sorted); a file path returns itself."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)


# ------------------------------------------------------------------- atomic folders


def staging_folder(target: str | os.PathLike) -> Path:
    """A fresh temporary folder beside ``target`` (same file system, so renames are atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))


def publish_folder(staging: Path, target: str | os.PathLike, signature: str) -> Path:
    """Rename a finished ``staging`` folder to ``target``, replacing an older one.

    An existing ``target`` is replaced only when it is empty or holds ``signature`` (a file
    this package writes), so a user's unrelated folder is never deleted.
    """
    target = Path(target)
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp made it 0700
    if target.exists():
        if not target.is_dir():
            raise NotADirectoryError(f"{target}: not a directory")
        if any(target.iterdir()) and not (target / signature).exists():
            raise DataError(target, f"exists and is not ours (no {signature}); choose another")
        retired = staging_folder(target)
        os.replace(target, retired / "old")
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
    return target


# ------------------------------------------------------------------------------ dataset
