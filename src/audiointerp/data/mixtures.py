"""Two-class mixtures with their sources: the ground truth for "which part is which class".

From any ESC-50-layout folder, ``make_mixtures`` draws pairs of clips from different
classes, scales the second so that 10·log10(P_a / P_b) equals the requested SNR, and writes
source a, source b and their sum as float WAV files, so that mixture == a + b holds exactly
(in float32) after reading them back. ``mixtures.csv`` (and ``mixtures.json``) list them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from audiointerp.data.esc50 import (
    COMPLETED_MARKER,
    ClipMeta,
    DataError,
    fit_length,
    read_metadata,
)
from audiointerp.io import load_audio, publish_folder, save_audio, staging_folder

MANIFEST = "mixtures.csv"
MANIFEST_COLUMNS = (
    "mixture",
    "source_a",
    "source_b",
    "clip_a",
    "clip_b",
    "class_a",
    "class_b",
    "snr_db",
)
_MAX_DRAWS = 100  # redraws allowed per mixture when a clip is silent


def make_mixtures(
    data_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    folds: Sequence[int] = (5,),
    n_mixtures: int = 40,
    snrs_db: Sequence[float] = (0.0,),
    seed: int = 0,
    sample_rate: int = 16000,
) -> Path:
    """Write ``n_mixtures`` two-class mixtures of clips from ``folds``; return the manifest.

    Mixture ``i`` uses SNR ``snrs_db[i % len(snrs_db)]``; its clip a is drawn uniformly,
    clip b uniformly among the clips of the other classes. Both are loaded mono at
    ``sample_rate``, b is cropped/zero-padded to a's length and scaled to the SNR; then all
    three signals are divided by the same factor so that none exceeds 1. Deterministic from
    ``seed``; the folder is built beside ``out_dir`` and renamed into place.

    Raises:
        DataError: fewer than two classes in ``folds``, no audible pair found, or
            ``n_mixtures`` < 1 or no SNR.
    """
    if n_mixtures < 1 or not snrs_db:
        raise DataError(out_dir, "need at least one mixture and one SNR")
    wanted = set(folds)
    rows = [row for row in read_metadata(data_folder) if row.fold in wanted]
    if len({row.category for row in rows}) < 2:
        raise DataError(data_folder, f"folds {list(folds)} hold fewer than two classes")
    rng = np.random.default_rng(seed)
    audio_dir = Path(data_folder) / "audio"
    cache: dict[str, np.ndarray] = {}

    def clip(row: ClipMeta) -> np.ndarray:
        if row.filename not in cache:
            cache[row.filename] = load_audio(audio_dir / row.filename, sample_rate)
        return cache[row.filename]

    staging = staging_folder(out_dir)
    try:
        (staging / "mixtures").mkdir()
        (staging / "sources").mkdir()
        records = []
        for i in tqdm(range(n_mixtures), desc="mixing", disable=None):
            snr_db = float(snrs_db[i % len(snrs_db)])
            row_a, row_b = _draw_pair(rng, rows, clip)
            source_a, source_b, mixture = mix_at_snr(clip(row_a), clip(row_b), snr_db)
            name = f"mix{i:04d}"
            paths = (f"mixtures/{name}.wav", f"sources/{name}_a.wav", f"sources/{name}_b.wav")
            for path, signal in zip(paths, (mixture, source_a, source_b), strict=True):
                save_audio(staging / path, signal, sample_rate, subtype="FLOAT")
            records.append(
                {
                    "mixture": paths[0],
                    "source_a": paths[1],
                    "source_b": paths[2],
                    "clip_a": row_a.clip_id,
                    "clip_b": row_b.clip_id,
                    "class_a": row_a.category,
                    "class_b": row_b.category,
                    "snr_db": snr_db,
                }
            )
        with (staging / MANIFEST).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        (staging / "mixtures.json").write_text(json.dumps(records, indent=2) + "\n")
        (staging / COMPLETED_MARKER).write_text("")
        return publish_folder(staging, out_dir, MANIFEST) / MANIFEST
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _draw_pair(
    rng: np.random.Generator, rows: list[ClipMeta], clip: Callable[[ClipMeta], np.ndarray]
) -> tuple[ClipMeta, ClipMeta]:
    """Two clips of different classes, neither silent."""
    for _ in range(_MAX_DRAWS):
        row_a = rows[rng.integers(len(rows))]
        others = [row for row in rows if row.category != row_a.category]
        row_b = others[rng.integers(len(others))]
        if np.any(clip(row_a)) and np.any(clip(row_b)):
            return row_a, row_b
    raise DataError(rows[0].filename, f"no pair of non-silent clips in {_MAX_DRAWS} draws")


def mix_at_snr(
    clip_a: np.ndarray, clip_b: np.ndarray, snr_db: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source_a, source_b, mixture) float32 (N,), N = len(clip_a), with
    10·log10(P_a / P_b) = ``snr_db``, mixture = source_a + source_b, all peaks <= 1."""
    a = torch.from_numpy(clip_a.astype(np.float64))
    b = torch.from_numpy(fit_length(clip_b, len(clip_a)).astype(np.float64))
    a, b = scale_pair(a, b, torch.tensor(float(snr_db), dtype=torch.float64))
    source_a, source_b = a.numpy().astype(np.float32), b.numpy().astype(np.float32)
    return source_a, source_b, source_a + source_b


def scale_pair(a: Tensor, b: Tensor, snr_db: Tensor) -> tuple[Tensor, Tensor]:
    """Scale source pairs (..., N): b to 10·log10(P_a / P_b) = ``snr_db`` (...,), then both
    by one factor so that a, b and a + b all peak at <= 1. A silent b stays silent."""
    power_a = a.pow(2).mean(-1, keepdim=True)
    power_b = b.pow(2).mean(-1, keepdim=True)
    ratio = power_a / (power_b * 10 ** (snr_db[..., None] / 10)).clamp_min(1e-30)
    b = b * torch.where(power_b > 0, ratio.sqrt(), torch.zeros_like(ratio))
    peaks = torch.stack([a.abs(), b.abs(), (a + b).abs()]).amax(dim=(0, -1))[..., None]
    peak = peaks.clamp_min(torch.finfo(a.dtype).tiny)
    return a / peak, b / peak


@dataclass
class MixingConfig:
    """Training on mixtures: with probability ``prob`` a training example is replaced by
    its sum with a clip of another class from the same batch, at an SNR (dB, the example
    over its partner) drawn uniformly from [``snr_db_min``, ``snr_db_max``]. 0 = clean
    clips only (the reference)."""

    prob: float = 0.0
    snr_db_min: float = -5.0
    snr_db_max: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"snr_db_min {self.snr_db_min} > snr_db_max {self.snr_db_max}")


@dataclass
class MixedBatch:
    """A training batch after :func:`mix_batch`; unmixed rows keep their clip as source 0."""

    mixture: Tensor  # (B, N) what the classifier hears
    sources: Tensor  # (B, 2, N) mixture == sources.sum(1); source 1 is zero when unmixed
    labels: Tensor  # (B, 2) class of each source; -1 where there is no second source


def mix_batch(
    waveform: Tensor, labels: Tensor, config: MixingConfig, generator: torch.Generator | None = None
) -> MixedBatch:
    """Mix rows of a batch (B, N) with partners of another class drawn from the same batch.

    A row is mixed with probability ``config.prob`` when the batch holds another class; its
    partner is drawn uniformly among those rows. Sources are scaled by :func:`scale_pair`.
    """
    batch = waveform.shape[0]
    other_class = labels[:, None] != labels[None, :]  # (B, B)
    scores = torch.rand(batch, batch, generator=generator).masked_fill(~other_class, -1.0)
    partner = scores.argmax(1)
    mixed = (torch.rand(batch, generator=generator) < config.prob) & other_class.any(1)
    span = config.snr_db_max - config.snr_db_min
    snr_db = config.snr_db_min + span * torch.rand(batch, generator=generator)
    b = waveform[partner] * mixed[:, None].to(waveform.dtype)
    a, b = scale_pair(waveform, b, snr_db.to(waveform.dtype))
    a = torch.where(mixed[:, None], a, waveform)  # unmixed rows stay exactly as they were
    pair_labels = torch.stack([labels, torch.where(mixed, labels[partner], -1)], 1)
    return MixedBatch(mixture=a + b, sources=torch.stack([a, b], 1), labels=pair_labels)


class MixtureDataset(Dataset):
    """Mixtures of a ``make_mixtures`` folder as dicts of tensors.

    Item: ``{"mixture": (N,), "sources": (2, N), "labels": (2,) long, "snr_db": float,
    "id": str}``; labels index ``class_names``.
    """

    def __init__(
        self,
        out_dir_or_manifest: str | os.PathLike,
        class_names: Sequence[str],
        sample_rate: int = 16000,
    ):
        path = Path(out_dir_or_manifest)
        self.manifest = path / MANIFEST if path.is_dir() else path
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.manifest}: no mixture manifest")
        self.root = self.manifest.parent
        with self.manifest.open(newline="", encoding="utf-8") as handle:
            self.records = list(csv.DictReader(handle))
        missing = [c for c in MANIFEST_COLUMNS if self.records and c not in self.records[0]]
        if missing:
            raise DataError(self.manifest, f"missing column(s) {', '.join(missing)}")
        self.class_names = list(class_names)
        unknown = sorted(
            {r[key] for r in self.records for key in ("class_a", "class_b")} - set(class_names)
        )
        if unknown:
            raise DataError(self.manifest, f"classes not in class_names: {unknown}")
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        mixture, source_a, source_b = (
            torch.from_numpy(load_audio(self.root / record[key], self.sample_rate))
            for key in ("mixture", "source_a", "source_b")
        )
        labels = [self.class_names.index(record[key]) for key in ("class_a", "class_b")]
        return {
            "mixture": mixture,
            "sources": torch.stack([source_a, source_b]),
            "labels": torch.tensor(labels, dtype=torch.long),
            "snr_db": float(record["snr_db"]),
            "id": Path(record["mixture"]).stem,
        }
