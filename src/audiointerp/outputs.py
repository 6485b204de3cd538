"""Files in, files out: which files to explain and what each explanation writes.

``audiointerp interpret`` explains every input with :class:`~audiointerp.pipeline.Explainer`
and writes, per input, ``<stem>.explanation.wav``, ``<stem>.mask.npy`` and ``<stem>.png``
(:func:`~audiointerp.report.figures.plot_explanation`), atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiointerp.explain import Explanation
from audiointerp.io import (
    AudioError,
    atomic_write,
    find_audio_files,
    save_audio,
    write_bytes_atomic,
)
from audiointerp.pipeline import Explainer


@dataclass
class FileResult:
    """The outcome of explaining one file: its explanation and outputs, or an error."""

    path: Path
    explanation: Explanation | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready mapping."""
        if self.explanation is None:
            return {"file": str(self.path), "error": self.error}
        result = self.explanation
        return {
            "file": str(self.path),
            "predicted": result.predicted,
            "probability": result.probability,
            "target": result.target,
            "top_k": [[name, probability] for name, probability in result.top_k],
            "outputs": {kind: str(path) for kind, path in self.outputs.items()},
        }


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """``(audio file, output stem relative to --out)`` for files and folders (recursive).

    A folder's files keep their sub-folders (a mirrored layout); a file's stem is its name
    without the extension. A path that does not exist is returned as itself, so explaining
    it reports the error for that input alone.
    """
    pairs = []
    for item in map(Path, inputs):
        if item.is_dir():
            for file in find_audio_files(item):
                relative = file.relative_to(item)
                pairs.append((file, relative.parent / relative.stem))
        else:
            pairs.append((item, Path(item.stem)))
    return pairs


def explain_to_files(
    explainer: Explainer,
    path: Path,
    stem: Path,
    target: int | str | None = None,
    top_k: int = 5,
) -> FileResult:
    """Explain one file and write ``<stem>.explanation.wav``, ``.mask.npy`` and ``.png``.

    Audio problems (unreadable, empty, NaN, silent...) are returned as the result's
    ``error`` instead of raised, so a caller looping over files can go on.
    """
    try:
        explanation = explainer.explain_file(path, target=target, top_k=top_k)
    except AudioError as error:
        return FileResult(path, error=str(error))
    return FileResult(path, explanation, save_explanation(explanation, stem))


def save_explanation(explanation: Explanation, stem: str | os.PathLike) -> dict[str, Path]:
    """Write one clip's explanation audio, mask and picture next to ``stem`` (atomically)."""
    assert explanation.mask.ndim == 2, "save one clip at a time"
    stem = Path(stem)
    audio_path = stem.with_name(stem.name + ".explanation.wav")
    mask_path = stem.with_name(stem.name + ".mask.npy")
    picture_path = stem.with_name(stem.name + ".png")
    save_audio(audio_path, explanation.waveform, explanation.sample_rate)
    with atomic_write(mask_path) as partial:  # np.save straight to disk: no in-memory copy
        with open(partial, "wb") as handle:
            np.save(handle, explanation.mask.astype(np.float32, copy=False))
    from audiointerp.report.figures import plot_explanation  # matplotlib only when writing

    write_bytes_atomic(picture_path, plot_explanation(explanation))
    return {"audio": audio_path, "mask": mask_path, "picture": picture_path}
