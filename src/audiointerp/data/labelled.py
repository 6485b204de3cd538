"""Your own labelled audio, for training an interpreter of your own classifier.

Three layouts (:func:`read_labelled`):

* a folder with one sub-folder per class (``DIR/dog/*.wav``, ``DIR/rain/*.flac``...);
* a CSV file ``path,label[,fold]`` (a header row naming those columns is optional; paths
  relative to the CSV's folder);
* an ESC-50-layout folder (``meta/esc50.csv`` + ``audio/``).

Problems are reported, not crashed on: a clip of a class the model does not have, or a
file that does not read as audio, is skipped with one line naming it, and the summary
counts them (:class:`LabelledClips`). Splits (:func:`train_valid_split`): with folds the
last fold validates; without, every fifth clip of each class.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from audiointerp.data.esc50 import Normalization, fit_length, normalize_waveform, read_metadata
from audiointerp.errors import AudioError, DataError
from audiointerp.io import find_audio_files, load_audio

VALID_EVERY = 5  # without folds, every fifth clip of a class validates


@dataclass(frozen=True)
class LabelledFile:
    """One listed clip: its file, class name and fold (0: none given)."""

    path: Path
    label: str
    fold: int = 0


def read_labelled(source: str | os.PathLike) -> list[LabelledFile]:
    """The clips a class-folder tree, a ``path,label[,fold]`` CSV or an ESC-50 folder lists.

    Raises:
        DataError: nothing there, a malformed CSV row (names the line), or no clips.
    """
    source = Path(source)
    if source.is_file():
        files = _read_csv(source)
    elif (source / "meta" / "esc50.csv").is_file():
        rows = read_metadata(source)
        files = [LabelledFile(source / "audio" / r.filename, r.category, r.fold) for r in rows]
    elif source.is_dir():
        files = [
            LabelledFile(path, folder.name)
            for folder in sorted(p for p in source.iterdir() if p.is_dir())
            for path in find_audio_files(folder)
        ]
    else:
        raise DataError(source, "no such file or folder")
    if not files:
        raise DataError(
            source,
            "no clips: expected one sub-folder of audio files per class, a CSV "
            "path,label[,fold] or an ESC-50 folder",
        )
    return files


def _read_csv(path: Path) -> list[LabelledFile]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
        start = 2
    else:
        start = 1
    files = []
    for line, row in enumerate(rows, start=start):
        cells = [cell.strip() for cell in row]
        if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
            raise DataError(path, f"line {line}: expected path,label[,fold], got {row}")
        try:
            fold = int(cells[2]) if len(cells) == 3 else 0
        except ValueError as error:
            raise DataError(path, f"line {line}: fold {cells[2]!r} is not an integer") from error
        files.append(LabelledFile(path.parent / cells[0], cells[1], fold))
    return files


class LabelledClips(Dataset):
    """The readable clips of known classes as ``(waveform float32 (N,), label, clip_id)``,
    loaded once: mono, at ``sample_rate``, cropped/zero-padded to ``duration_s``, normalised.

    Attributes:
        files: the clips kept, in listed order.
        problems: one line per skipped clip or missing class (what the caller reports).
    """

    def __init__(
        self,
        listed: Sequence[LabelledFile],
        class_names: Sequence[str],
        sample_rate: int,
        duration_s: float = 5.0,
        normalization: Normalization = "peak",
    ):
        self.class_names = list(class_names)
        self.files: list[LabelledFile] = []
        self.problems: list[str] = []
        self._audio: list[torch.Tensor] = []
        index = {name: i for i, name in enumerate(self.class_names)}
        n_samples = round(duration_s * sample_rate)
        unknown: dict[str, int] = {}
        unreadable = 0
        for item in tqdm(listed, desc="loading clips", disable=None):
            if item.label not in index:
                unknown[item.label] = unknown.get(item.label, 0) + 1
                continue
            try:
                audio = load_audio(item.path, sample_rate)
            except AudioError as error:
                unreadable += 1
                self.problems.append(f"skipped {error}")
                continue
            audio = normalize_waveform(fit_length(audio, n_samples), normalization)
            self._audio.append(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
            self.files.append(item)
        for label, count in unknown.items():
            self.problems.append(f"skipped {count} clip(s) of {label!r}: not a class of the model")
        if unknown:
            self.problems.append(
                f"{sum(unknown.values())} clip(s) of {len(unknown)} class(es) the model does not "
                f"have; its classes: {', '.join(self.class_names)}"
            )
        if unreadable:
            self.problems.append(f"{unreadable} unreadable file(s) skipped")
        absent = [name for name in self.class_names if name not in {f.label for f in self.files}]
        if absent:
            self.problems.append(f"no clips of the model's class(es) {', '.join(absent)}")
        self.labels = [index[item.label] for item in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        return self._audio[i], self.labels[i], self.files[i].path.stem


def train_valid_split(clips: LabelledClips) -> tuple[list[int], list[int]]:
    """Row indices (train, valid): the last fold validates when folds are given, else every
    :data:`VALID_EVERY`-th clip of each class (both sides non-empty when there are 2 clips).

    Raises:
        DataError: fewer than 2 usable clips.
    """
    if len(clips) < 2:
        raise DataError("data", f"{len(clips)} usable clip(s): training needs at least 2")
    folds = sorted({item.fold for item in clips.files})
    if len(folds) > 1:
        valid = [i for i, item in enumerate(clips.files) if item.fold == folds[-1]]
    else:
        seen: dict[str, int] = {}
        valid = []
        for i, item in enumerate(clips.files):
            seen[item.label] = seen.get(item.label, 0) + 1
            if seen[item.label] % VALID_EVERY == 0:
                valid.append(i)
        valid = valid or [len(clips) - 1]
    chosen = set(valid)
    return [i for i in range(len(clips)) if i not in chosen], valid
