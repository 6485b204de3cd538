"""One evaluation for every model folder: faithfulness, mixtures, sanity check, speed.

For each model folder (a trained interpreter, or a classifier alone) we evaluate its
interpreter and, always, the ``energy`` negative control on the same classifier. The
methods named in :attr:`EvalConfig.methods` (gradient baselines, the ``random`` and
``ones`` bounds) are built on the first folder's classifier and evaluated the same way:

* faithfulness (AI, AD, AG, FF, fid_in, SPS, COMP) and classifier accuracy on the test folds;
* SI-SNR(i) on two-class mixtures of the test folds, beside the ideal-ratio-mask oracle;
* the model-randomisation sanity check;
* explanation clips/s (STFT, classifier, mask, synthesis).

Each row names the classifier it explained (``classifier_id``, a hash of its tensors), and
``metrics.json["ranking"]`` orders the compared methods on every metric, best first.
Writes ``metrics.json``, ``metrics.csv`` and ``examples/`` (audio and mask arrays of a few
examples per method, read by :mod:`audiointerp.report`) into the output folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from audiointerp import interpreters  # noqa: F401  (registers every method)
from audiointerp.checkpoints import CheckpointError, load_checkpoint
from audiointerp.config import ConfigError
from audiointerp.data.esc50 import ESC50Dataset
from audiointerp.data.mixtures import MixtureDataset, make_mixtures
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.controls import EnergyControl
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.io import replace_folder, save_audio, write_text_atomic
from audiointerp.metrics.faithfulness import METRIC_NAMES, faithfulness_metrics
from audiointerp.metrics.sanity import SANITY_THRESHOLD, sanity_check
from audiointerp.metrics.separation import Explanation, evaluate_mixtures, explain
from audiointerp.models import Classifier, load_classifier
from audiointerp.pipeline import Explainer

METRICS_JSON, METRICS_CSV, EXAMPLES_DIR, EXAMPLES_INDEX = (
    "metrics.json",
    "metrics.csv",
    "examples",
    "index.json",
)
CSV_COLUMNS = (
    "method",
    "classifier_id",
    "classifier_accuracy",
    *METRIC_NAMES,
    "si_snri",
    "si_snri_oracle_fraction",
    "sanity_passed",
    "sanity_rank_correlation",
    "clips_per_s",
)
BOUND_METHODS = ("random", "ones")  # floor and "the whole input": shown as bounds
CONTROL_METHODS = ("energy", *BOUND_METHODS)  # interpreters that explain nothing
# Ranked metrics: True when higher is better.
METRIC_DIRECTIONS = {
    "AI": True,
    "AD": False,
    "AG": True,
    "FF": True,
    "fid_in": True,
    "SPS": True,
    "COMP": False,
    "si_snri": True,
    "si_snri_oracle_fraction": True,
    "clips_per_s": True,
}


@dataclass
class EvalConfig:
    """How much to evaluate; defaults keep a narrow model's evaluation to about a minute.

    Attributes:
        test_folds: folds of the data folder whose clips are explained.
        max_clips: cap on test clips (None: all).
        n_mixtures: mixtures created when no mixture folder is given.
        max_mixtures: cap on mixtures used (None: all).
        sanity_clips: clips whose masks the sanity check compares (and mixtures whose
            SI-SNRi it re-measures), so slow methods stay bounded.
        sanity_threshold: the check passes iff the mean rank correlation is below it.
        n_examples: examples per method (clips and mixtures each) saved for the report.
        batch_size: clips per forward pass.
        seed: mixture drawing and weight re-initialisation.
        methods: registered interpreters with nothing to train (see
            :func:`classifier_methods`) built on the first folder's classifier.
    """

    test_folds: tuple[int, ...] = (5,)
    max_clips: int | None = None
    n_mixtures: int = 16
    max_mixtures: int | None = None
    sanity_clips: int = 8
    sanity_threshold: float = SANITY_THRESHOLD
    n_examples: int = 2
    batch_size: int = 8
    seed: int = 0
    methods: tuple[str, ...] = BOUND_METHODS

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        known = classifier_methods()
        unknown = [name for name in self.methods if name not in known]
        if unknown:
            raise ConfigError(
                f"eval methods: unknown {', '.join(map(repr, unknown))}; methods built on a "
                f"classifier: {', '.join(known)} (trained interpreters come from model folders)"
            )


def classifier_methods() -> list[str]:
    """Registered interpreters that need no training, so any classifier can host them."""
    return sorted(name for name, cls in INTERPRETERS.items() if not cls.capabilities.needs_training)


@dataclass
class Method:
    """One evaluated (classifier, interpreter) pair and how its inputs are prepared."""

    name: str  # e.g. "piq_conv2d", "energy_conv2d"
    classifier: Classifier
    interpreter: Interpreter
    model_dir: Path
    clip_seconds: float
    normalization: str
    classifier_name: str  # e.g. "conv2d"


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """``path`` when it is a checkpoint folder, else its ``model/`` (a run folder)."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / "model.safetensors").is_file():
            return folder
    raise CheckpointError(f"{path}: neither a model folder nor a run folder with model/")


def default_output_folder(model_dir: str | os.PathLike) -> Path:
    """A model's run folder: the parent of its checkpoint folder (``run/model`` -> ``run``)."""
    return checkpoint_folder(model_dir).parent


def load_methods(model_dir: str | os.PathLike) -> list[Method]:
    """The folder's interpreter (if it has one) and the ``energy`` control on its classifier."""
    folder = checkpoint_folder(model_dir)
    checkpoint = load_checkpoint(folder)
    meta = checkpoint.meta
    clip_seconds = float(meta.get("duration_s", 5.0))
    normalization = str(meta.get("normalization", "peak"))
    section = checkpoint.config.get("interpreter")
    classifier_name = str(checkpoint.config["classifier"]["name"])
    methods = []
    if isinstance(section, dict) and "name" in section:
        explainer = Explainer.from_pretrained(folder)
        classifier, interpreter = explainer.classifier, explainer.interpreter
        name = f"{section['name']}_{classifier_name}"
        methods.append(
            Method(name, classifier, interpreter, folder, clip_seconds, normalization,
                   classifier_name)
        )  # fmt: skip
    else:
        classifier, _ = load_classifier(folder)
        classifier.requires_grad_(False)
    methods.append(
        Method(f"energy_{classifier_name}", classifier, EnergyControl(), folder, clip_seconds,
               normalization, classifier_name)
    )  # fmt: skip
    return methods


def build_methods(host: Method, names: Sequence[str]) -> list[Method]:
    """Interpreters ``names`` built on ``host``'s classifier, named ``<name>_<classifier>``."""
    return [
        Method(
            f"{name}_{host.classifier_name}",
            host.classifier,
            build_interpreter(name, {}, host.classifier),
            host.model_dir,
            host.clip_seconds,
            host.normalization,
            host.classifier_name,
        )
        for name in names
    ]


def classifier_id(classifier: Classifier) -> str:
    """First 8 hex digits of a SHA-256 over the classifier's tensors (names, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(classifier.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:8]


def load_test_clips(
    data_folder: str | os.PathLike, method: Method, config: EvalConfig
) -> tuple[Tensor, Tensor, list[str]]:
    """(waveforms (n, N), labels (n,), ids) of the test folds, prepared as in training."""
    dataset = ESC50Dataset(
        data_folder,
        config.test_folds,
        sample_rate=method.classifier.feature_config.sample_rate,
        class_names=method.classifier.class_names,
        normalization=method.normalization,  # type: ignore[arg-type]
        duration_s=method.clip_seconds,
        preload=False,
    )
    count = len(dataset) if config.max_clips is None else min(config.max_clips, len(dataset))
    items = [dataset[i] for i in range(count)]
    if not items:
        raise FileNotFoundError(f"{data_folder}: no clips in folds {list(config.test_folds)}")
    waveforms = torch.stack([waveform for waveform, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items])
    return waveforms, labels, [clip_id for _, _, clip_id in items]


def load_mixture_items(manifest: Path, method: Method, config: EvalConfig) -> list[dict]:
    """Mixture items cropped to the model's clip length and scaled to a mixture peak of 1.

    The same factor scales the sources, so mixture == sum of sources still holds.
    """
    rate = method.classifier.feature_config.sample_rate
    dataset = MixtureDataset(manifest, method.classifier.class_names, rate)
    count = len(dataset) if config.max_mixtures is None else min(config.max_mixtures, len(dataset))
    n_samples = round(method.clip_seconds * rate)
    items = []
    for i in range(count):
        item = dataset[i]
        mixture, sources = item["mixture"][:n_samples], item["sources"][:, :n_samples]
        if len(mixture) < n_samples:
            pad = n_samples - len(mixture)
            mixture = torch.nn.functional.pad(mixture, (0, pad))
            sources = torch.nn.functional.pad(sources, (0, pad))
        peak = float(mixture.abs().max()) or 1.0
        items.append({**item, "mixture": mixture / peak, "sources": sources / peak})
    return items


def evaluate_method(
    method: Method,
    clips: tuple[Tensor, Tensor, list[str]],
    mixtures: list[dict],
    config: EvalConfig,
    reference_compatible: bool = False,
) -> tuple[dict[str, Any], list[Explanation]]:
    """Metrics of one method and the explanations of its first ``n_examples`` clips."""
    waveforms, labels, _ = clips
    parts = (method.classifier, method.interpreter)
    per_example: dict[str, list[Tensor]] = {name: [] for name in METRIC_NAMES}
    correct, seconds, examples = 0, 0.0, []
    for start in tqdm(
        range(0, len(waveforms), config.batch_size), desc=f"{method.name} clips", disable=None
    ):
        batch = waveforms[start : start + config.batch_size]
        began = time.perf_counter()
        explained = explain(parts, batch)
        seconds += time.perf_counter() - began
        metrics = faithfulness_metrics(
            method.classifier,
            explained.features,
            explained.mask,
            method.interpreter.mask_domain,
            reference_compatible=reference_compatible,
            method=method.interpreter.registry_name,
            probabilities=explained.classifier_out.probabilities,
        )
        for name, values in metrics.items():
            per_example[name].append(values)
        prediction = explained.classifier_out.prediction.cpu()
        correct += int((prediction == labels[start : start + len(batch)]).sum())
        if len(examples) < config.n_examples:
            examples.append(explained)
    row: dict[str, Any] = {
        name: _nanmean(torch.cat(values)) for name, values in per_example.items()
    }
    row |= {
        "classifier_accuracy": correct / len(waveforms),
        "clips_per_s": len(waveforms) / seconds if seconds > 0 else math.nan,
        "n_clips": len(waveforms),
        "interpreter": method.interpreter.registry_name,
        "classifier": method.classifier_name,
        "mask_domain": method.interpreter.mask_domain,
        "control": method.interpreter.registry_name in CONTROL_METHODS,
        "bound": method.interpreter.registry_name in BOUND_METHODS,
        "model_dir": str(method.model_dir),
    }
    si_snri_before = None
    if mixtures:
        summary = evaluate_mixtures(parts, mixtures, config.batch_size).summary()
        si_snri_before = summary["si_snri"]
        row |= summary
    sanity_mixtures = mixtures[: config.sanity_clips]
    sanity = sanity_check(
        parts,
        waveforms[: config.sanity_clips],
        sanity_mixtures,
        threshold=config.sanity_threshold,
        seed=config.seed,
        batch_size=config.batch_size,
        si_snri_before=si_snri_before if len(sanity_mixtures) == len(mixtures) else None,
    )
    row |= {
        "sanity_passed": sanity["sanity_passed"],
        "sanity_rank_correlation": sanity["rank_correlation"],
        "sanity_threshold": sanity["threshold"],
    }
    if "si_snri_drop" in sanity:
        row |= {
            "sanity_si_snri_randomized": sanity["si_snri_randomized"],
            "sanity_si_snri_drop": sanity["si_snri_drop"],
        }
    return row, examples


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if len(finite) else math.nan


def evaluate(
    model_dirs: Sequence[str | os.PathLike],
    data_folder: str | os.PathLike,
    mixtures: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    reference_compatible: bool = False,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Evaluate every model folder; write metrics.json, metrics.csv and examples/ into ``out``.

    Args:
        model_dirs: checkpoint folders or run folders (holding ``model/``).
        data_folder: an ESC-50-layout folder; its test folds are explained.
        mixtures: a ``make_mixtures`` folder or manifest; None creates ``out/mixtures``
            from the test folds.
        out: output folder; None = the first model's run folder.
        reference_compatible: faithfulness with the reference recipe's formulas.

    Methods are named ``<interpreter>_<classifier>``; when two folders give the same name
    (e.g. both add ``energy_conv2d``), the first folder's is evaluated. ``config.methods``
    are built on the first folder's classifier and evaluated after the folders' own.

    Returns:
        The metrics.json mapping: {"methods": {name: {...}}, "oracle": {...}, ...}.
    """
    assert model_dirs, "no model folder to evaluate"
    config = config or EvalConfig()
    out = Path(out) if out is not None else default_output_folder(model_dirs[0])
    methods: dict[str, Method] = {}
    for model_dir in model_dirs:
        for method in load_methods(model_dir):
            methods.setdefault(method.name, method)
    first = next(iter(methods.values()))
    for method in build_methods(first, config.methods):
        methods.setdefault(method.name, method)
    if mixtures is None:
        mixtures = make_mixtures(
            data_folder,
            out / "mixtures",
            folds=config.test_folds,
            n_mixtures=config.n_mixtures,
            seed=config.seed,
            sample_rate=first.classifier.feature_config.sample_rate,
        )
    manifest = Path(mixtures)
    rows: dict[str, dict[str, Any]] = {}
    saved: dict[str, list[dict[str, Any]]] = {}
    staging = Path(tempfile.mkdtemp(prefix=f".{EXAMPLES_DIR}.", dir=_made(out)))
    inputs: dict[tuple, tuple[tuple[Tensor, Tensor, list[str]], list[dict]]] = {}
    hashes: dict[int, str] = {}  # id(classifier) -> classifier_id
    try:
        for method in methods.values():
            classifier = method.classifier
            key = (classifier.feature_config.sample_rate, tuple(classifier.class_names),
                   method.clip_seconds, method.normalization)  # fmt: skip
            if key not in inputs:  # methods on one classifier share their inputs
                inputs[key] = (
                    load_test_clips(data_folder, method, config),
                    load_mixture_items(manifest, method, config),
                )
            clips, mixture_items = inputs[key]
            row, examples = evaluate_method(
                method, clips, mixture_items, config, reference_compatible
            )
            if id(classifier) not in hashes:
                hashes[id(classifier)] = classifier_id(classifier)
            rows[method.name] = {"classifier_id": hashes[id(classifier)], **row}
            saved[method.name] = save_examples(
                staging / method.name, method, clips, examples, mixture_items, config
            )
        write_text_atomic(staging / EXAMPLES_INDEX, json.dumps(saved, indent=2) + "\n")
        replace_folder(staging, out / EXAMPLES_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    oracle_keys = ("oracle_si_snr", "oracle_si_snri", "n_mixtures")
    first_row = rows[first.name]
    result = {
        "methods": rows,
        "oracle": {key.removeprefix("oracle_"): first_row.get(key) for key in oracle_keys},
        "mixture": {"si_snri": 0.0},
        "reference_compatible": reference_compatible,
        "data_folder": str(data_folder),
        "mixtures": str(manifest),
        "test_folds": list(config.test_folds),
    }
    result = _json_safe(result)
    result["ranking"] = rank_methods(result["methods"])
    write_text_atomic(out / METRICS_JSON, json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / METRICS_CSV, metrics_csv(result))
    print(format_table(result))
    return result


def rank_methods(rows: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per metric of :data:`METRIC_DIRECTIONS`, method names best first.

    Ranked: every method except the controls, plus the controls shown as bounds
    (``random``, ``ones``); rows without a finite value are left out; ties keep table order.
    """
    ranked = {name: row for name, row in rows.items() if row.get("bound") or not row.get("control")}
    ranking = {}
    for metric, higher in METRIC_DIRECTIONS.items():
        scored = [
            (float(row[metric]), name)
            for name, row in ranked.items()
            if _is_number(row.get(metric)) and math.isfinite(row[metric])
        ]
        scored.sort(key=lambda item: -item[0] if higher else item[0])
        ranking[metric] = [name for _, name in scored]
    return ranking


def metric_ranks(result: dict[str, Any], metric: str) -> dict[str, int]:
    """{method: rank} on ``metric`` from ``result["ranking"]`` (1 = best; ties share a rank)."""
    order = result.get("ranking", {}).get(metric, [])
    ranks: dict[str, int] = {}
    for position, name in enumerate(order):
        before = order[position - 1] if position else name
        tied = position and result["methods"][before][metric] == result["methods"][name][metric]
        ranks[name] = ranks[before] if tied else position + 1
    return ranks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _json_safe(value: Any) -> Any:
    """NaN/Inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _wav(path: Path, audio: Tensor, rate: int) -> str:
    samples = np.clip(audio.detach().cpu().numpy(), -1.0, 1.0)
    save_audio(path, samples, rate, subtype="PCM_16")
    return path.name


def _save_example(
    folder: Path, method: Method, explained: Explanation, index: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Audio (input, explanation, removed part) and arrays (mask, magnitude) of one example."""
    folder.mkdir(parents=True, exist_ok=True)
    rate = method.classifier.feature_config.sample_rate
    probabilities = explained.classifier_out.probabilities[index]
    predicted = int(probabilities.argmax())
    files = {
        "input": _wav(folder / "input.wav", extra.pop("input"), rate),
        "explanation": _wav(folder / "explanation.wav", explained.explanation[index], rate),
        "removed": _wav(folder / "removed.wav", explained.removed[index], rate),
    }
    for key, audio in extra.pop("sources", {}).items():
        files[key] = _wav(folder / f"{key}.wav", audio, rate)
    np.save(folder / "mask.npy", explained.mask[index].cpu().numpy().astype(np.float16))
    magnitude = explained.features.magnitude[index].cpu().numpy().astype(np.float16)
    np.save(folder / "magnitude.npy", magnitude)
    return {
        "folder": f"{method.name}/{folder.name}",
        "files": files,
        "mask": "mask.npy",
        "magnitude": "magnitude.npy",
        "mask_domain": method.interpreter.mask_domain,
        "sample_rate": rate,
        "predicted": method.classifier.class_names[predicted],
        "probability": float(probabilities[predicted]),
        **extra,
    }


def save_examples(
    folder: Path,
    method: Method,
    clips: tuple[Tensor, Tensor, list[str]],
    examples: list[Explanation],
    mixtures: list[dict],
    config: EvalConfig,
) -> list[dict[str, Any]]:
    """Write the first test clips' and mixtures' examples; returns their index entries."""
    waveforms, labels, ids = clips
    names = method.classifier.class_names
    entries = []
    flat = [(explained, i) for explained in examples for i in range(len(explained.mask))]
    for n, (explained, i) in enumerate(flat[: config.n_examples]):
        extra = {"input": waveforms[n], "kind": "clip", "id": ids[n], "label": names[labels[n]]}
        entries.append(_save_example(folder / f"clip_{n}", method, explained, i, extra))
    chosen = mixtures[: config.n_examples]
    if chosen:
        mixture = torch.stack([item["mixture"] for item in chosen])
        explained = explain((method.classifier, method.interpreter), mixture)
        for n, item in enumerate(chosen):
            a, b = (names[int(label)] for label in item["labels"])
            extra = {
                "input": item["mixture"],
                "kind": "mixture",
                "id": item["id"],
                "label": f"{a} + {b}",
                "sources": {"source_a": item["sources"][0], "source_b": item["sources"][1]},
                "source_labels": [a, b],
            }
            entries.append(_save_example(folder / f"mixture_{n}", method, explained, n, extra))
    return entries


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
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """The printed summary: each method beside the oracle's SI-SNRi, with its SI-SNRi rank.

    ``clf`` is the explained classifier's id; rows marked ``[bound]`` are the random and
    all-ones masks, which bound the compared methods from below and above.
    """
    columns = {
        "classifier_id": "clf",
        "classifier_accuracy": "acc",
        "AI": "AI",
        "AD": "AD",
        "AG": "AG",
        "FF": "FF",
        "fid_in": "FidIn",
        "SPS": "SPS",
        "COMP": "COMP",
        "si_snri": "SI-SNRi",
        "si_snri_rank": "#SI-SNRi",
        "oracle_si_snri": "oracle",
        "si_snri_oracle_fraction": "frac",
        "sanity_passed": "sanity",
        "clips_per_s": "clips/s",
    }
    ranks = metric_ranks(result, "si_snri")
    labels = {
        name: f"{name} [bound]" if row.get("bound") else name
        for name, row in result["methods"].items()
    }
    width = max(len(label) for label in labels.values()) + 2
    lines = ["method".ljust(width) + "".join(c.rjust(9) for c in columns.values())]
    for name, row in result["methods"].items():
        row = {**row, "si_snri_rank": ranks.get(name)}
        cells = []
        for key in columns:
            value = row.get(key)
            if isinstance(value, bool):
                cells.append("pass" if value else "FLAGGED")
            elif isinstance(value, int):
                cells.append(str(value))
            elif isinstance(value, float):
                cells.append(f"{value:.3g}")
            elif isinstance(value, str):
                cells.append(value)
            else:
                cells.append("-")
        lines.append(labels[name].ljust(width) + "".join(c.rjust(9) for c in cells))
    oracle = result["oracle"].get("si_snri")
    if oracle is not None:
        lines.append(
            f"oracle (ideal ratio mask) SI-SNRi {oracle:.2f} dB on "
            f"{result['oracle']['n_mixtures']} mixtures; the mixture itself: 0 dB"
        )
    ids = {row.get("classifier_id") for row in result["methods"].values()}
    if len(ids) > 1:
        lines.append(
            f"rows explain {len(ids)} different classifiers (column clf): compare within one"
        )
    return "\n".join(lines + baseline_shortfalls(result))


def baseline_shortfalls(result: dict[str, Any], metric: str = "si_snri") -> list[str]:
    """One line per (trained method, attribution baseline) pair of the same classifier
    where the trained method scores lower on ``metric``: the comparison users ask for
    ("does training an interpreter beat a gradient map?"), stated where it fails."""
    rows = {
        name: row
        for name, row in result["methods"].items()
        if not row.get("bound") and not row.get("control") and isinstance(row.get(metric), float)
    }
    needs_training = {name: cls.capabilities.needs_training for name, cls in INTERPRETERS.items()}
    trained = {n: r for n, r in rows.items() if needs_training[r["interpreter"]]}
    baselines = {n: r for n, r in rows.items() if not needs_training[r["interpreter"]]}
    return [
        f"{name} is below the baseline {other} on {metric}: {row[metric]:.3g} vs {base[metric]:.3g}"
        for name, row in trained.items()
        for other, base in baselines.items()
        if row.get("classifier_id") == base.get("classifier_id") and row[metric] < base[metric]
    ]
