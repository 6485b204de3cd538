"""ESC-50 download/prepare against a local HTTP server, metadata, splits and normalisation."""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.cli import main
from audiointerp.data.download import download_esc50, prepare_esc50
from audiointerp.data.esc50 import (
    ESC50_REFERENCE_CLASSES,
    ClipMeta,
    DataError,
    ESC50Dataset,
    SplitConfig,
    class_names_from_metadata,
    is_esc50_folder,
    make_splits,
    read_metadata,
)

RATE = 16000
# (src, target, category): file-name order (rain, dog, crow) differs from target order.
CLASSES = ((100, 10, "rain"), (200, 0, "dog"), (300, 9, "crow"))
NEGATIVE_CLIP = "1-100-A-10.wav"  # its largest excursion is negative


def _clip(fold: int, src: int) -> np.ndarray:
    """0.5 s of quiet noise + tone; NEGATIVE_CLIP gets a -0.8 spike above a +0.4 peak."""
    rng = np.random.default_rng(fold * 1000 + src)
    t = np.arange(RATE // 2) / RATE
    audio = 0.3 * np.sin(2 * np.pi * (200 + src) * t) + 0.05 * rng.standard_normal(len(t))
    audio = np.clip(audio, -0.4, 0.4)
    if f"{fold}-{src}-A-" in NEGATIVE_CLIP:
        audio[1000] = -0.8
    return audio.astype(np.float32)


def _esc50_zip(tmp: Path) -> bytes:
    """A small archive in ESC-50's layout: ESC-50-master/{audio/, meta/esc50.csv}."""
    rows = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for fold in range(1, 6):
            for src, target, category in CLASSES:
                name = f"{fold}-{src}-A-{target}.wav"
                wav = tmp / name
                sf.write(wav, _clip(fold, src), RATE, subtype="PCM_16")
                archive.write(wav, f"ESC-50-master/audio/{name}")
                rows.append([name, fold, target, category, "False", src, "A"])
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(sorted(rows))
        archive.writestr("ESC-50-master/meta/esc50.csv", table.getvalue())
        archive.writestr("ESC-50-master/README.md", "tiny ESC-50\n")
    return buffer.getvalue()


class ArchiveServer:
    """Serves one payload with Range support; can drop the first connection half-way."""

    def __init__(self, payload: bytes, drop_first_at: int | None = None):
        self.payload = payload
        self.drop_first_at = drop_first_at
        self.ranges: list[str | None] = []  # the Range header of each request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.removeprefix("bytes=").split("-")[0]) if header else 0
                total = len(server.payload)
                if start >= total:
                    self.send_response(416)
                    self.end_headers()
                    return
                body = server.payload[start:]
                self.send_response(206 if header else 200)
                if header:
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_first_at is not None and len(server.ranges) == 1:
                    self.wfile.write(body[: server.drop_first_at])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/master.zip"

    def __enter__(self) -> ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    return _esc50_zip(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def esc50_folder(tmp_path_factory, archive) -> Path:
    folder = tmp_path_factory.mktemp("esc50")
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        zipped.extractall(folder)
    return folder / "ESC-50-master"


def _assert_extracted(folder: Path, archive: bytes) -> None:
    assert is_esc50_folder(folder)
    assert (folder / ".completed").is_file()
    assert not (folder / ".download").exists()
    assert not list(folder.glob(".extract.*"))
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        for name in zipped.namelist():
            if not name.endswith("/"):
                local = folder / name.removeprefix("ESC-50-master/")
                assert local.read_bytes() == zipped.read(name), name


def test_download_and_prepare(tmp_path, archive):
    with ArchiveServer(archive) as server:
        folder = prepare_esc50(tmp_path / "esc50", url=server.url)
    assert server.ranges == [None]
    _assert_extracted(folder, archive)
    assert len(read_metadata(folder)) == 15


def test_dropped_connection_resumes_with_range(tmp_path, archive):
    half = len(archive) // 2
    with ArchiveServer(archive, drop_first_at=half) as server:
        folder = download_esc50(tmp_path / "esc50", url=server.url, expected_size=len(archive))
    assert server.ranges == [None, f"bytes={half}-"]
    _assert_extracted(folder, archive)


def test_partial_file_of_a_killed_run_is_continued(tmp_path, archive):
    folder = tmp_path / "esc50"
    (folder / ".download").mkdir(parents=True)
    (folder / ".download" / "master.zip.part").write_bytes(archive[:1000])
    with ArchiveServer(archive) as server:
        download_esc50(folder, url=server.url)
    assert server.ranges == ["bytes=1000-"]
    _assert_extracted(folder, archive)


@pytest.mark.parametrize("damage", ["flip_byte", "not_a_zip"])
def test_corrupt_archive_is_rejected_and_nothing_looks_complete(tmp_path, archive, damage):
    if damage == "flip_byte":  # inside the first stored WAV's data: a CRC mismatch
        bad = bytearray(archive)
        bad[len(archive) // 4] ^= 0xFF
        payload, message = bytes(bad), "corrupt zip"
    else:
        payload, message = b"<html>rate limited</html>" * 100, "not a valid zip"
    folder = tmp_path / "esc50"
    with ArchiveServer(payload) as server, pytest.raises(DataError, match=message):
        prepare_esc50(folder, url=server.url)
    assert not (folder / ".completed").exists()
    assert not (folder / "meta").exists() and not (folder / "audio").exists()
    assert not is_esc50_folder(folder)
    assert not list((folder / ".download").iterdir())  # the bad archive is not resumed later


def test_size_and_checksum_are_checked(tmp_path, archive):
    with ArchiveServer(archive) as server:
        with pytest.raises(DataError, match="expected 5"):
            download_esc50(tmp_path / "a", url=server.url, expected_size=5)
        with pytest.raises(DataError, match="sha256"):
            download_esc50(tmp_path / "b", url=server.url, sha256="0" * 64)
    assert not (tmp_path / "a" / ".completed").exists()


def test_existing_folder_is_not_downloaded(esc50_folder, archive):
    with ArchiveServer(archive) as server:
        assert prepare_esc50(esc50_folder, url=server.url) == esc50_folder
    assert server.ranges == []


def test_missing_audio_file_means_not_prepared(tmp_path, archive):
    folder = tmp_path / "esc50"
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        zipped.extractall(tmp_path)
    (tmp_path / "ESC-50-master").rename(folder)
    (folder / "audio" / "5-300-A-9.wav").unlink()
    assert not is_esc50_folder(folder)
    with ArchiveServer(archive) as server:
        prepare_esc50(folder, url=server.url)
    assert server.ranges == [None]
    _assert_extracted(folder, archive)


def test_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        read_metadata(tmp_path)
    (tmp_path / "meta").mkdir()
    csv_path = tmp_path / "meta" / "esc50.csv"
    csv_path.write_text("filename,fold,target\n1-1-A-0.wav,1,0\n")
    with pytest.raises(DataError, match="missing column.*category"):
        read_metadata(tmp_path)
    csv_path.write_text(
        "filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,one,0,dog,False,1,A\n"
    )
    with pytest.raises(DataError, match="line 2"):
        read_metadata(tmp_path)


def test_label_order_is_first_appearance_in_train_folds():
    def row(fold: int, category: str) -> ClipMeta:
        return ClipMeta(f"{fold}-{category}.wav", fold, 0, category, False, "1", "A")

    rows = [row(4, "siren"), row(1, "crow"), row(2, "dog"), row(1, "crow"), row(3, "rain")]
    assert class_names_from_metadata(rows, [1, 2, 3]) == ["crow", "dog", "rain"]
    assert class_names_from_metadata(rows, [4, 1]) == ["siren", "crow"]
    assert len(ESC50_REFERENCE_CLASSES) == len(set(ESC50_REFERENCE_CLASSES)) == 50
    assert ESC50_REFERENCE_CLASSES[:3] == ("dog", "chirping_birds", "vacuum_cleaner")
    assert ESC50_REFERENCE_CLASSES[-1] == "crickets"


def test_splits_by_fold(esc50_folder):
    splits = make_splits(esc50_folder, sample_rate=RATE, duration_s=0.5)
    assert {name: len(ds) for name, ds in splits.items()} == {"train": 9, "valid": 3, "test": 3}
    for dataset in splits.values():
        assert dataset.class_names == ["rain", "dog", "crow"]  # file order, not target order
    waveform, label, clip_id = splits["test"][1]
    assert clip_id == "5-200-A-0" and label == 1  # dog
    assert waveform.dtype == torch.float32
    assert waveform.shape == (RATE // 2,)
    assert {row.fold for row in splits["train"].rows} == {1, 2, 3}
    assert splits["train"].labels == [0, 1, 2] * 3
    custom = make_splits(esc50_folder, SplitConfig([1, 2], [3], [4, 5]), preload=False)
    assert [len(custom[name]) for name in ("train", "valid", "test")] == [6, 3, 6]


def test_resampling_and_length(esc50_folder):
    resampled = ESC50Dataset(esc50_folder, [2], sample_rate=8000, duration_s=0.5)
    assert resampled[0][0].shape == (4000,)
    padded = ESC50Dataset(esc50_folder, [2], sample_rate=RATE, duration_s=0.75)
    assert padded[0][0].shape == (12000,) and not padded[0][0][RATE // 2 :].any()
    cropped = ESC50Dataset(esc50_folder, [2], sample_rate=RATE, duration_s=0.25)
    assert cropped[0][0].shape == (4000,)


def test_signed_max_vs_peak_normalisation(esc50_folder):
    raw, _ = sf.read(esc50_folder / "audio" / NEGATIVE_CLIP, dtype="float32")
    assert -raw.min() > raw.max() > 0
    index = ESC50Dataset(esc50_folder, [1], preload=False, duration_s=0.5).ids.index(
        Path(NEGATIVE_CLIP).stem
    )
    results = {
        mode: ESC50Dataset(esc50_folder, [1], normalization=mode, duration_s=0.5)[index][0]
        for mode in ("peak", "signed_max", "none")
    }
    peak, signed, unscaled = (results[m].numpy() for m in ("peak", "signed_max", "none"))
    np.testing.assert_array_equal(unscaled, raw)
    np.testing.assert_allclose(peak, raw / np.abs(raw).max(), rtol=1e-6)
    assert np.abs(peak).max() == pytest.approx(1.0) and peak.min() == pytest.approx(-1.0)
    np.testing.assert_allclose(signed, raw / raw.max(), rtol=1e-6)
    assert signed.max() == pytest.approx(1.0)
    assert signed.min() == pytest.approx(raw.min() / raw.max()) and signed.min() < -1.9


def test_cli_downloads_and_reports_errors_in_one_line(tmp_path, archive, capsys):
    with ArchiveServer(archive) as server:
        assert (
            main(["data", "esc50", "--data_folder", str(tmp_path / "a"), "--url", server.url]) == 0
        )
    assert "15 clips, 3 classes, 0.5 s at 16000 Hz" in capsys.readouterr().out
    with ArchiveServer(b"not a zip") as server:
        assert (
            main(["data", "esc50", "--data_folder", str(tmp_path / "b"), "--url", server.url]) == 2
        )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a valid zip archive" in err
