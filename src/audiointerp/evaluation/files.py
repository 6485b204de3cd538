"""What an evaluation writes: ``metrics.json``, ``metrics.csv`` and ``examples/``.

Every file is written atomically; ``examples/`` is built beside its target and swapped in
whole, so a failed run leaves the previous one. :mod:`audiointerp.report` reads them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from torch import Tensor

from audiointerp.evaluation.methods import Method
from audiointerp.io import replace_folder, save_audio, write_text_atomic
from audiointerp.metrics.faithfulness import METRIC_NAMES

METRICS_JSON, METRICS_CSV, EXAMPLES_DIR, EXAMPLES_INDEX, SANITY_MASKS = (
    "metrics.json",
    "metrics.csv",
    "examples",
    "index.json",
    "sanity.npz",
)
CSV_COLUMNS = (
    "method",
    "classifier_id",
    "classifier_accuracy",
    *METRIC_NAMES,
    "si_snri",
    "si_snri_ci",
    "si_snri_oracle_fraction",
    "sanity_passed",
    "sanity_reason",
    "sanity_reproducibility",
    "sanity_cross_model",
    "sanity_sensitivity",
    "sanity_sensitivity_interval",
    "sanity_reused_correlation",
    "sanity_empirt_ratio",
    "sanity_mask_mean_change",
    "sanity_mixtures_reproducibility",
    "sanity_mixtures_sensitivity",
    "sanity_mixtures_sensitivity_interval",
    "sanity_si_snri_randomized",
    "sanity_tier",
    "clips_per_s",
)


@dataclass
class Example:
    """One explained input as saved for the report.

    Attributes:
        explanation: the kept part, (N,).
        removed: the removed part (1 - mask), (N,).
        mask: (T, F) in [0, 1], in the interpreter's mask domain.
        magnitude: the input's linear magnitude, (T, F).
        probabilities: the classifier's class probabilities, (C,).
    """

    explanation: Tensor
    removed: Tensor
    mask: Tensor
    magnitude: Tensor
    probabilities: Tensor


def write_metrics(out: Path, result: dict[str, Any]) -> None:
    """``out/metrics.json`` (the whole result) and ``out/metrics.csv`` (one row a method)."""
    write_text_atomic(out / METRICS_JSON, json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / METRICS_CSV, metrics_csv(result))


def metrics_csv(result: dict[str, Any]) -> str:
    """One row per method: accuracy, faithfulness, SI-SNRi, oracle fraction, sanity, speed."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, row in result["methods"].items():
        writer.writerow([name, *(_cell(row.get(column)) for column in CSV_COLUMNS[1:])])
    return table.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):  # an interval
        return " ".join(_cell(item) for item in value)
    return str(value)


def json_safe(value: Any) -> Any:
    """NaN/Inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


class StagedExamples:
    """``out/examples/`` built in a hidden folder beside it and swapped in on a clean exit.

    Use as ``with StagedExamples(out) as examples:``, then ``examples.save(...)`` per method;
    the index (``examples/index.json``: method -> its entries) is written last. The hidden
    folder is made on construction and removed on exit, whatever happened.
    """

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.staging = Path(tempfile.mkdtemp(prefix=f".{EXAMPLES_DIR}.", dir=out))
        self.index: dict[str, list[dict[str, Any]]] = {}

    def __enter__(self) -> StagedExamples:
        return self

    def save(
        self,
        method: Method,
        clips: tuple[Tensor, Tensor, list[str]],
        clip_examples: list[Example],
        mixtures: list[dict],
        mixture_examples: list[Example],
    ) -> None:
        """Write the first test clips' examples and one example per item of ``mixtures``."""
        folder = self.staging / method.name
        waveforms, labels, ids = clips
        names = method.classifier.class_names
        entries = []
        for n, example in enumerate(clip_examples):
            extra = {"input": waveforms[n], "kind": "clip", "id": ids[n], "label": names[labels[n]]}
            entries.append(_save_example(folder / f"clip_{n}", method, example, extra))
        for n, (item, example) in enumerate(zip(mixtures, mixture_examples, strict=True)):
            a, b = (names[int(label)] for label in item["labels"])
            extra = {
                "input": item["mixture"],
                "kind": "mixture",
                "id": item["id"],
                "label": f"{a} + {b}",
                "sources": {"source_a": item["sources"][0], "source_b": item["sources"][1]},
                "source_labels": [a, b],
            }
            entries.append(_save_example(folder / f"mixture_{n}", method, example, extra))
        self.index[method.name] = entries

    def save_sanity(self, method: Method, masks: dict[str, Tensor]) -> None:
        """``<method>/sanity.npz``: the first sanity clip's magnitude and its masks under
        f, f with another seed, f~ and the decoder reused on f~ (those computed), with the
        clip's duration and sample rate."""
        folder = self.staging / method.name
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {key: value.detach().cpu().numpy() for key, value in masks.items()}
        rate = method.classifier.feature_config.sample_rate
        arrays |= {"seconds": np.array(method.clip_seconds), "sample_rate": np.array(rate)}
        np.savez_compressed(folder / SANITY_MASKS, **arrays)

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error_type is None:
                index = json.dumps(self.index, indent=2) + "\n"
                write_text_atomic(self.staging / EXAMPLES_INDEX, index)
                replace_folder(self.staging, self.out / EXAMPLES_DIR)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)


def _save_example(
    folder: Path, method: Method, example: Example, extra: dict[str, Any]
) -> dict[str, Any]:
    """Audio (input, explanation, removed part) and arrays (mask, magnitude) of one example."""
    folder.mkdir(parents=True, exist_ok=True)
    rate = method.classifier.feature_config.sample_rate
    predicted = int(example.probabilities.argmax())
    files = {
        "input": _wav(folder / "input.wav", extra.pop("input"), rate),
        "explanation": _wav(folder / "explanation.wav", example.explanation, rate),
        "removed": _wav(folder / "removed.wav", example.removed, rate),
    }
    for key, audio in extra.pop("sources", {}).items():
        files[key] = _wav(folder / f"{key}.wav", audio, rate)
    np.save(folder / "mask.npy", example.mask.cpu().numpy().astype(np.float16))
    np.save(folder / "magnitude.npy", example.magnitude.cpu().numpy().astype(np.float16))
    return {
        "folder": f"{method.name}/{folder.name}",
        "files": files,
        "mask": "mask.npy",
        "magnitude": "magnitude.npy",
        "mask_domain": method.interpreter.mask_domain,
        "sample_rate": rate,
        "predicted": method.classifier.class_names[predicted],
        "probability": float(example.probabilities[predicted]),
        **extra,
    }


def _wav(path: Path, audio: Tensor, rate: int) -> str:
    samples = np.clip(audio.detach().cpu().numpy(), -1.0, 1.0)
    save_audio(path, samples, rate, subtype="PCM_16")
    return path.name
