"""Running the evaluation: every method on the test clips and the mixtures.

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
This is the one module of the package that loads explainers and runs the explain step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from audiointerp.data.esc50 import ESC50Dataset
from audiointerp.data.mixtures import MixtureDataset, make_mixtures
from audiointerp.errors import ConfigError
from audiointerp.evaluation.files import Example, StagedExamples, json_safe, write_metrics
from audiointerp.evaluation.methods import (
    BOUND_METHODS,
    CONTROL_METHODS,
    EvalConfig,
    Method,
    SanityRuns,
    build_methods,
    classifier_id,
    default_output_folder,
    inference_parts,
)
from audiointerp.evaluation.table import rank_methods
from audiointerp.explain import Explanation, explain
from audiointerp.explain import classify as classify_waveforms
from audiointerp.interpreters.controls import EnergyControl
from audiointerp.metrics.faithfulness import METRIC_NAMES, faithfulness_metrics
from audiointerp.metrics.sanity import Explainer, randomize_weights, sanity_check
from audiointerp.metrics.separation import evaluate_mixtures
from audiointerp.metrics.uncertainty import bootstrap_interval, bootstrap_ratio_interval
from audiointerp.models import load_classifier
from audiointerp.models.base import Classifier
from audiointerp.pretrained import load_model


def load_methods(
    model_dir: str | os.PathLike, classifier: Classifier | None = None
) -> list[Method]:
    """The folder's interpreter (if it has one) and the ``energy`` control on its classifier
    (``classifier``: a user's, for an interpreter trained for it)."""
    model = load_model(model_dir, classifier)
    config = model.classifier_config
    classifier_name = config.name if config is not None else "external"
    settings = (model.folder, model.clip_seconds, model.normalization, classifier_name)
    methods = []
    if model.interpreter is not None:
        name = f"{model.interpreter.registry_name}_{classifier_name}"
        methods.append(Method(name, model.classifier, model.interpreter, *settings))
    methods.append(
        Method(f"energy_{classifier_name}", model.classifier, EnergyControl(), *settings)
    )
    return methods


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
    runs: tuple[Explainer, Explainer, str] | None = None,
    random_classifier: Classifier | None = None,
) -> tuple[dict[str, Any], list[Example], dict[str, Tensor]]:
    """Metrics of one method (each mean with its 95 % bootstrap interval over clips or
    mixtures), the examples of its first ``n_examples`` clips, and the sanity check's
    masks of its first clip. ``runs``: a trained explainer trained again (on f with
    another seed, on f~) and the tier that trained them, for the sanity check;
    ``random_classifier``: the check's f~, if already made."""
    waveforms, labels, _ = clips
    parts = inference_parts(method)  # the sanity check randomises copies of the originals
    per_example: dict[str, list[Tensor]] = {name: [] for name in METRIC_NAMES}
    correct, seconds, examples = 0, 0.0, []
    for start in tqdm(
        range(0, len(waveforms), config.batch_size), desc=f"{method.name} clips", disable=None
    ):
        batch = waveforms[start : start + config.batch_size]
        began = time.perf_counter()
        explained = explain(*parts, batch)
        seconds += time.perf_counter() - began
        metrics = faithfulness_metrics(
            parts[0],
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
            examples += _examples(explained)
    row: dict[str, Any] = {}
    for name, values in per_example.items():
        merged = torch.cat(values).double().numpy()
        row |= {name: _nanmean(merged), f"{name}_ci": list(bootstrap_interval(merged))}
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
        scores = evaluate_mixtures(*parts, mixtures, config.batch_size)
        summary = scores.summary()
        si_snri_before = summary["si_snri"]
        per_mixture = scores.si_snri.mean(dim=1).double().numpy()
        oracle = scores.oracle_si_snri.mean(dim=1).double().numpy()
        row |= summary | {
            "si_snri_ci": list(bootstrap_interval(per_mixture)),
            "si_snri_per_mixture": per_mixture.tolist(),
            "si_snri_oracle_fraction_ci": list(bootstrap_ratio_interval(per_mixture, oracle)),
        }
    sanity_mixtures = mixtures[: config.sanity_clips]
    second, randomized, tier = runs if runs is not None else (None, None, "eval")
    sanity = sanity_check(
        method.classifier,
        method.interpreter,
        waveforms[: config.sanity_clips],
        second=second,
        randomized=randomized,
        mixtures=sanity_mixtures,
        cutoffs=config.sanity_cutoffs,
        seed=config.seed,
        batch_size=config.batch_size,
        si_snri_before=si_snri_before if len(sanity_mixtures) == len(mixtures) else None,
        random_classifier=random_classifier,
    )
    row |= {f"sanity_{key}": value for key, value in sanity.items() if key != "masks"}
    row |= {
        "sanity_tier": tier,
        "sanity_clips": min(config.sanity_clips, len(waveforms)),
        "sanity_cutoffs": [config.sanity_min_reproducibility, config.sanity_min_sensitivity],
    }
    return row, examples[: config.n_examples], sanity["masks"]


def _load_runs(runs: SanityRuns | None) -> tuple[Explainer, Explainer, str] | None:
    """The explainers of a method's sanity runs, loaded from their folders."""
    if runs is None:
        return None
    second, randomized = load_model(runs.second), load_model(runs.randomized)
    assert second.interpreter is not None and randomized.interpreter is not None, runs
    return (
        (second.classifier, second.interpreter),
        (randomized.classifier, randomized.interpreter),
        runs.tier,
    )


def randomized_accuracy(
    random_classifier: Classifier,
    clips: tuple[Tensor, Tensor, list[str]],
    batch_size: int,
    class_names: Sequence[str],
) -> dict[str, float]:
    """Test accuracy of the randomised classifier f~ of the sanity check, beside chance:
    f~ must have learned nothing for the check to mean anything. ``class_names`` name the
    labels of ``clips`` (f's order; a permuted-label f~ may order its classes otherwise)."""
    waveforms, labels, _ = clips
    to_label = torch.tensor([list(class_names).index(n) for n in random_classifier.class_names])
    correct = 0
    with torch.no_grad():
        for start in range(0, len(waveforms), batch_size):
            batch = waveforms[start : start + batch_size]
            prediction = classify_waveforms(random_classifier, batch)[1].prediction.cpu()
            correct += int((to_label[prediction] == labels[start : start + len(batch)]).sum())
    return {"accuracy": correct / len(waveforms), "chance": 1 / random_classifier.n_classes}


def explain_mixture_examples(method: Method, mixtures: list[dict]) -> list[Example]:
    """One example per mixture item, the mixtures explained in one batch."""
    if not mixtures:
        return []
    mixture = torch.stack([item["mixture"] for item in mixtures])
    return _examples(explain(method.classifier, method.interpreter, mixture))


def _examples(explained: Explanation) -> list[Example]:
    """A batch's explanation cut into one :class:`Example` per input."""
    return [
        Example(
            explained.waveform[i],
            explained.removed[i],
            explained.mask[i],
            explained.features.magnitude[i],
            explained.classifier_out.probabilities[i],
        )
        for i in range(len(explained.mask))
    ]


def _nanmean(values: np.ndarray) -> float:
    known = values[~np.isnan(values)]
    return float(known.mean()) if len(known) else math.nan


def evaluate(
    model_dirs: Sequence[str | os.PathLike],
    data_folder: str | os.PathLike,
    mixtures: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    reference_compatible: bool = False,
    config: EvalConfig | None = None,
    classifier: Classifier | None = None,
    sanity_runs: Mapping[str, SanityRuns] | None = None,
    randomized_classifier: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate every model folder; write metrics.json, metrics.csv and examples/ into ``out``.

    Args:
        model_dirs: checkpoint folders or run folders (holding ``model/``).
        data_folder: an ESC-50-layout folder; its test folds are explained.
        mixtures: a ``make_mixtures`` folder or manifest; None creates ``out/mixtures``
            from the test folds.
        out: output folder; None = the first model's run folder.
        reference_compatible: faithfulness with the reference recipe's formulas.
        classifier: a user's classifier, for folders of interpreters trained for one
            (default: the one each folder references).
        sanity_runs: per method name, its explainer trained again on f with another seed
            and on f~ (``audiointerp sanity`` / the demo's tier): without them a trained
            explainer's sanity verdict is "not checked".
        randomized_classifier: the sanity check's f~ as a classifier folder (data
            randomisation: f's recipe trained on shuffled labels; its classes must be f's);
            None = f with every layer re-initialised.

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
        for method in load_methods(model_dir, classifier):
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
    inputs: dict[tuple, tuple[tuple[Tensor, Tensor, list[str]], list[dict]]] = {}
    hashes: dict[int, str] = {}  # id(classifier) -> classifier_id
    randomized: dict[str, Classifier] = {}  # classifier_id -> the sanity check's f~
    given = load_classifier(randomized_classifier)[0] if randomized_classifier else None
    with StagedExamples(out) as staged:
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
            if id(classifier) not in hashes:
                hashes[id(classifier)] = classifier_id(classifier)
            clf = hashes[id(classifier)]
            if clf not in randomized:  # one f~ per classifier (folders hold copies of one)
                randomized[clf] = given or randomize_weights(classifier, config.seed)
                if sorted(randomized[clf].class_names) != sorted(classifier.class_names):
                    raise ConfigError(
                        f"{randomized_classifier}: its classes are not those of {method.name}'s "
                        "classifier"
                    )
            runs = _load_runs((sanity_runs or {}).get(method.name))
            row, examples, masks = evaluate_method(
                method, clips, mixture_items, config, reference_compatible, runs, randomized[clf]
            )
            rows[method.name] = {"classifier_id": clf, **row}
            chosen = mixture_items[: config.n_examples]
            staged.save(method, clips, examples, chosen, explain_mixture_examples(method, chosen))
            staged.save_sanity(method, masks)
    oracle_keys = ("oracle_si_snr", "oracle_si_snri", "n_mixtures")
    first_row = rows[first.name]
    first_clips = next(iter(inputs.values()))[0]
    result = {
        "methods": rows,
        "randomized_classifier": randomized_accuracy(
            randomized[hashes[id(first.classifier)]],
            first_clips,
            config.batch_size,
            first.classifier.class_names,
        )
        | {"source": str(randomized_classifier) if given else "re-initialised"},
        "oracle": {key.removeprefix("oracle_"): first_row.get(key) for key in oracle_keys},
        "mixture": {"si_snri": 0.0},
        "reference_compatible": reference_compatible,
        "data_folder": str(data_folder),
        "mixtures": str(manifest),
        "test_folds": list(config.test_folds),
    }
    result = json_safe(result)
    result["ranking"] = rank_methods(result["methods"])
    write_metrics(out, result)
    return result
