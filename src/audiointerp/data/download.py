"""ESC-50's download: resumable, verified, extracted atomically into a data folder.

Downloads move ``meta/`` into place last and write ``.completed`` after it, so an
interrupted run never leaves a folder that :func:`~audiointerp.data.esc50.is_esc50_folder`
takes for complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from audiointerp.data.esc50 import COMPLETED_MARKER, is_esc50_folder
from audiointerp.errors import DataError
from audiointerp.io import write_text_atomic

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
_CHUNK_BYTES = 1 << 20


def download_esc50(
    data_folder: str | os.PathLike,
    url: str = ESC50_URL,
    expected_size: int | None = None,
    sha256: str | None = None,
    retries: int = 3,
) -> Path:
    """Download the ESC-50 archive into ``data_folder`` and extract it there atomically.

    The archive streams to ``data_folder/.download/<name>.part``; a partial file left by a
    killed run or a dropped connection is continued with an HTTP Range request (up to
    ``retries`` retries per call). The archive is checked (size and sha256 when given, zip
    CRCs always), extracted to a temporary folder, its top folder's content moved into
    ``data_folder`` (``meta/`` last), then ``.completed`` is written and the archive removed.

    Raises:
        DataError: the download failed, or the archive is corrupt or not ESC-50.
    """
    folder = Path(data_folder)
    download_dir = folder / ".download"
    download_dir.mkdir(parents=True, exist_ok=True)
    archive = download_dir / (Path(urlparse(url).path).name or "esc50.zip")
    part = archive.with_name(archive.name + ".part")
    if not archive.is_file():
        _fetch_resumable(url, part, retries)
        try:
            _verify_archive(part, expected_size, sha256)
        except DataError:
            part.unlink(missing_ok=True)  # a bad archive must not be resumed next time
            raise
        os.replace(part, archive)
    try:
        _extract_into(archive, folder)
    except DataError:
        archive.unlink(missing_ok=True)  # not ESC-50: fetch afresh next time
        raise
    write_text_atomic(folder / COMPLETED_MARKER, f"{url}\n")
    shutil.rmtree(download_dir, ignore_errors=True)
    return folder


def prepare_esc50(data_folder: str | os.PathLike, url: str = ESC50_URL) -> Path:
    """Return ``data_folder`` holding ESC-50, downloading only when it does not already."""
    folder = Path(data_folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory")
    if is_esc50_folder(folder):
        return folder
    return download_esc50(folder, url=url)


def _fetch_resumable(url: str, part: Path, retries: int) -> None:
    """Stream ``url`` onto ``part``, resuming from its current size with a Range request."""
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(attempt - 1)  # first retry at once, then back off
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
                if offset and reply.status != 206:  # the server ignored the range
                    offset = 0
                length = reply.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                with (
                    part.open("ab" if offset else "wb") as sink,
                    tqdm(
                        total=total, initial=offset, unit="B", unit_scale=True, disable=None
                    ) as bar,
                ):
                    while chunk := reply.read(_CHUNK_BYTES):
                        sink.write(chunk)
                        bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)
            return
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # nothing left to send: the file is whole
                return
            if error.code < 500:
                raise DataError(
                    url, f"download failed (HTTP {error.code} {error.reason})"
                ) from error
            last_error = error
        except (OSError, http.client.HTTPException) as error:
            last_error = error
    raise DataError(url, f"download failed after {retries + 1} attempts ({last_error!r})")


def _verify_archive(path: Path, expected_size: int | None, sha256: str | None) -> None:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DataError(path, f"size {size} bytes, expected {expected_size}")
    if sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                digest.update(chunk)
        if digest.hexdigest() != sha256.lower():
            raise DataError(path, f"sha256 {digest.hexdigest()}, expected {sha256}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(path, f"not a valid zip archive ({error})") from error
    if bad is not None:
        raise DataError(path, f"corrupt zip archive (bad CRC for {bad})")


def _extract_into(archive: Path, folder: Path) -> None:
    """Extract to a temporary folder, check the layout, move the content in, ``meta/`` last."""
    for stale in folder.glob(".extract.*"):  # left by a killed extraction
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract.", dir=folder))
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(staging)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise DataError(archive, f"cannot extract ({error})") from error
        entries = list(staging.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if not is_esc50_folder(root):
            raise DataError(archive, "archive does not hold meta/esc50.csv and its audio/")
        for entry in sorted(root.iterdir(), key=lambda p: p.name == "meta"):
            target = folder / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
