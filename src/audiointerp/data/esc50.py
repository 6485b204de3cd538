"""ESC-50: metadata, fold splits and a torch Dataset (download: :mod:`audiointerp.data.download`).

The folder layout is ESC-50's own: ``audio/{fold}-{src}-{take}-{target}.wav`` and
``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take). The synthetic
set (:mod:`audiointerp.data.synthetic`) uses the same layout, so everything here reads both.
A folder "looks complete" only when ``meta/esc50.csv`` exists and every clip it lists is in
``audio/``; downloads move ``meta/`` into place last and write ``.completed`` after it, so an
interrupted run never leaves such a folder behind.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from audiointerp.errors import DataError
from audiointerp.io import load_audio

CSV_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
COMPLETED_MARKER = ".completed"
Normalization = Literal["peak", "signed_max", "none"]

# The reference's label order (first appearance of `category` in esc50.csv's train rows).
ESC50_REFERENCE_CLASSES = (
    "dog", "chirping_birds", "vacuum_cleaner", "thunderstorm", "door_wood_knock",
    "can_opening", "crow", "clapping", "fireworks", "chainsaw", "airplane", "mouse_click",
    "pouring_water", "train", "sheep", "water_drops", "church_bells", "clock_alarm",
    "keyboard_typing", "wind", "footsteps", "frog", "cow", "brushing_teeth", "car_horn",
    "crackling_fire", "helicopter", "drinking_sipping", "rain", "insects", "laughing", "hen",
    "engine", "breathing", "crying_baby", "hand_saw", "coughing", "glass_breaking",
    "snoring", "toilet_flush", "pig", "washing_machine", "clock_tick", "sneezing",
    "rooster", "sea_waves", "siren", "cat", "door_wood_creaks", "crickets",
)  # fmt: skip


@dataclass(frozen=True)
class ClipMeta:
    """One row of ``meta/esc50.csv``."""

    filename: str
    fold: int
    target: int
    category: str
    esc10: bool
    src_file: str
    take: str

    @property
    def clip_id(self) -> str:
        """The reference's clip ID: the file name without ``.wav``."""
        return Path(self.filename).stem


@dataclass
class SplitConfig:
    """Which folds make each split (the reference: train 1,2,3 · valid 4 · test 5)."""

    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    valid_folds: list[int] = field(default_factory=lambda: [4])
    test_folds: list[int] = field(default_factory=lambda: [5])


# ----------------------------------------------------------------------------- metadata


def metadata_path(folder: str | os.PathLike) -> Path:
    """Where a data set folder keeps its clip list."""
    return Path(folder) / "meta" / "esc50.csv"


def read_metadata(folder: str | os.PathLike) -> list[ClipMeta]:
    """Rows of ``folder/meta/esc50.csv`` in file order.

    Raises:
        FileNotFoundError: the CSV is missing.
        DataError: a column is missing or a value is malformed (names the line).
    """
    path = metadata_path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ESC-50 metadata (expected meta/esc50.csv)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)}")
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(
                    ClipMeta(
                        filename=_non_empty(record["filename"]),
                        fold=int(record["fold"]),
                        target=int(record["target"]),
                        category=_non_empty(record["category"]),
                        esc10=record["esc10"].strip().lower() == "true",
                        src_file=record["src_file"],
                        take=record["take"],
                    )
                )
            except (TypeError, ValueError, AttributeError) as error:
                raise DataError(path, f"line {line}: malformed row ({error})") from error
    if not rows:
        raise DataError(path, "no rows")
    return rows


def _non_empty(value: str | None) -> str:
    if not value or not value.strip():
        raise ValueError("empty field")
    return value.strip()


def class_names_from_metadata(rows: Iterable[ClipMeta], folds: Iterable[int]) -> list[str]:
    """Class names in order of first appearance among the rows of ``folds``.

    This is the reference's label encoding (built from the train manifest in esc50.csv
    order), not ESC-50's ``target`` numbering.
    """
    folds = set(folds)
    names: dict[str, None] = {}
    for row in rows:
        if row.fold in folds:
            names.setdefault(row.category, None)
    return list(names)


def is_esc50_folder(folder: str | os.PathLike) -> bool:
    """True when ``meta/esc50.csv`` reads and every clip it lists is in ``audio/``."""
    try:
        rows = read_metadata(folder)
    except (FileNotFoundError, DataError):
        return False
    audio = Path(folder) / "audio"
    return all((audio / row.filename).is_file() for row in rows)


def normalize_waveform(waveform: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Scale a clip: ``peak`` by max |x|, ``signed_max`` by max x (the reference), or not.

    Silent clips (or, for ``signed_max``, clips with no positive sample) are left as they
    are rather than divided by zero or flipped.
    """
    if normalization == "peak":
        scale = float(np.max(np.abs(waveform)))
    elif normalization == "signed_max":
        scale = float(np.max(waveform))
    else:
        assert normalization == "none", f"unknown normalization {normalization!r}"
        return waveform
    return waveform / scale if scale > 0 else waveform


def fit_length(waveform: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop or zero-pad the end of ``waveform`` (N,) to ``n_samples``."""
    if len(waveform) >= n_samples:
        return waveform[:n_samples]
    return np.pad(waveform, (0, n_samples - len(waveform)))


class ESC50Dataset(Dataset):
    """Clips of some folds as ``(waveform float32 (N,), label, clip_id)``.

    Waveforms are loaded mono at ``sample_rate`` (soxr), cropped/zero-padded to
    ``duration_s`` and normalised. Labels index ``class_names``; by default that is the
    reference's order, derived from the reference train folds 1,2,3 of this folder's CSV,
    so that every split of one folder shares it. ``preload`` keeps all waveforms in memory.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        folds: Sequence[int],
        sample_rate: int = 16000,
        class_names: Sequence[str] | None = None,
        normalization: Normalization = "peak",
        duration_s: float = 5.0,
        preload: bool = True,
    ):
        assert normalization in ("peak", "signed_max", "none"), normalization
        self.folder = Path(folder)
        all_rows = read_metadata(self.folder)
        if class_names is None:
            class_names = class_names_from_metadata(all_rows, SplitConfig().train_folds)
        self.class_names = list(class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        wanted = set(folds)
        self.rows = [row for row in all_rows if row.fold in wanted]
        unknown = sorted({row.category for row in self.rows} - index.keys())
        if unknown:
            raise DataError(metadata_path(folder), f"classes not in class_names: {unknown}")
        self.labels = [index[row.category] for row in self.rows]
        self.ids = [row.clip_id for row in self.rows]
        self.sample_rate = sample_rate
        self.normalization = normalization
        self.n_samples = round(duration_s * sample_rate)
        self._cache: list[torch.Tensor] | None = None
        if preload:
            self._cache = [
                self._load(i)
                for i in tqdm(range(len(self.rows)), desc="loading clips", disable=None)
            ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        waveform = self._cache[i] if self._cache is not None else self._load(i)
        return waveform, self.labels[i], self.ids[i]

    def _load(self, i: int) -> torch.Tensor:
        audio = load_audio(self.folder / "audio" / self.rows[i].filename, self.sample_rate)
        audio = normalize_waveform(fit_length(audio, self.n_samples), self.normalization)
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def make_splits(
    folder: str | os.PathLike, split: SplitConfig | None = None, **dataset_kwargs
) -> dict[str, ESC50Dataset]:
    """``{"train", "valid", "test"}`` datasets sharing the label order of the train folds."""
    split = split or SplitConfig()
    class_names = dataset_kwargs.pop("class_names", None) or class_names_from_metadata(
        read_metadata(folder), split.train_folds
    )
    folds = {"train": split.train_folds, "valid": split.valid_folds, "test": split.test_folds}
    return {
        name: ESC50Dataset(folder, fold_list, class_names=class_names, **dataset_kwargs)
        for name, fold_list in folds.items()
    }
