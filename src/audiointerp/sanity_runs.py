"""The sanity check's retraining: trained explainers trained again, for the evaluation.

The check (:mod:`audiointerp.metrics.sanity`) treats a trained explainer as a procedure:
to see whether it depends on the classifier f, the same recipe is run again on f~ (f with
every layer re-initialised) and once more on f with another seed. This module writes f~
as a classifier folder and trains those two runs per method with the recipe's own
command (``audiointerp train HPARAMS --classifier_folder=... --train.seed=...``), at the
recipe's budget or at a reduced number of epochs (the same for both runs, so R and C are
measured alike). Finished runs are reused; an interrupted one resumes. The result maps
each method's evaluation name to its :class:`~audiointerp.evaluation.SanityRuns`.

Data randomisation (Adebayo et al. 2018) is the slower variant: f~ is the classifier's
recipe trained on the training folds with their labels shuffled, until it fits them
(:func:`permuted_label_classifier`); the explainers are then retrained on that f~.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiointerp.checkpoints import is_checkpoint, load_checkpoint, prefixed, save_checkpoint
from audiointerp.config import load_hparams
from audiointerp.data.esc50 import is_esc50_folder, metadata_path
from audiointerp.errors import UserError
from audiointerp.evaluation import SanityRuns
from audiointerp.io import write_text_atomic
from audiointerp.metrics.sanity import randomize_weights
from audiointerp.models import CHECKPOINT_PREFIX, classifier_from_checkpoint, load_classifier
from audiointerp.training.loop import TrainConfig
from audiointerp.training.recipes.classifier import test_classifier
from audiointerp.training.recipes.common import dataset
from audiointerp.training.recipes.entry import load_recipe, train

OTHER_SEED_OFFSET = 1  # the second run's seed: the recipe's plus this


class SanityRunError(UserError):
    """A retraining run of the sanity check failed (its own error was printed)."""


@dataclass(frozen=True)
class TrainedMethod:
    """A trained explainer as the evaluation names it, and the command that trained it.

    Attributes:
        name: the evaluation's method name, ``<interpreter>_<classifier>``.
        hparams: its recipe's hparams file.
        overrides: the other ``--key=value`` arguments of its training command (data
            folder, NMF dictionary, ...), without the classifier folder and output folder.
    """

    name: str
    hparams: Path
    overrides: tuple[str, ...] = ()


def randomized_classifier(classifier_folder: Path, out: Path, seed: int) -> Path:
    """f~ as a classifier folder (written once): ``randomize_weights(f, seed)`` with the
    folder's config and meta, so a recipe trains on it as on f."""
    if is_checkpoint(out):
        return out
    checkpoint = load_checkpoint(classifier_folder)
    classifier, _ = classifier_from_checkpoint(checkpoint, classifier_folder)
    randomized = randomize_weights(classifier, seed)
    tensors = prefixed(CHECKPOINT_PREFIX, randomized.state_dict())
    meta = {**checkpoint.meta, "randomized_from": str(classifier_folder), "randomized_seed": seed}
    return save_checkpoint(out, tensors, checkpoint.config, meta)


def permuted_label_data(data: Path, out: Path, seed: int, folds: Sequence[int]) -> Path:
    """``data`` with the labels (``target``, ``category``) of the clips of ``folds``
    shuffled among those clips, written once to ``out``: the metadata is rewritten, the
    audio folder is linked. Each class keeps its number of clips; the other folds keep
    their true labels."""
    if is_esc50_folder(out):
        return out
    with metadata_path(data).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    wanted = set(folds)
    chosen = [i for i, row in enumerate(rows) if int(row["fold"]) in wanted]
    if len(chosen) < 2:
        raise UserError(f"{data}: fewer than two clips in folds {list(folds)} to shuffle")
    labels = [(rows[i]["target"], rows[i]["category"]) for i in chosen]
    order = np.random.default_rng(seed).permutation(len(chosen))
    for i, j in zip(chosen, order, strict=True):
        rows[i] = {**rows[i], "target": labels[j][0], "category": labels[j][1]}
    (out / "meta").mkdir(parents=True, exist_ok=True)
    audio = out / "audio"
    if not audio.exists():
        audio.symlink_to((data / "audio").resolve(), target_is_directory=True)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(metadata_path(out), table.getvalue())  # whole or absent after a crash
    return out


def permuted_label_classifier(
    hparams: Path, data: Path, out: Path, seed: int
) -> tuple[Path, float]:
    """Data randomisation's f~: the classifier recipe ``hparams`` trained on ``data`` with
    the labels of its training folds shuffled; written once to ``out``.

    ``hparams`` should validate on the training folds and train long enough to fit them
    (``conv2d_permuted.yaml``). Returns f~'s model folder and its accuracy on the shuffled
    training labels (``out/fit.json``), printed beside chance: a low fit means the test
    compares against an untrained network rather than a model of random labels.
    """
    folder = out / "permuted_classifier"
    fit_file = folder / "fit.json"
    if fit_file.is_file():
        print(f"== permuted-label classifier: reusing {folder}")
        return folder / "model", float(json.loads(fit_file.read_text())["train_accuracy"])
    _, config, _ = load_recipe([str(hparams), f"--data_folder={data}"])
    folds = config.splits.train_folds
    shuffled = permuted_label_data(data, out / "permuted_data", seed, folds)
    print(f"== permuted-label classifier -> {folder}")
    start = time.perf_counter()
    status = train([str(hparams), f"--data_folder={shuffled}", f"--output_folder={folder}"])
    if status != 0:
        raise SanityRunError(f"permuted-label classifier failed (exit status {status})")
    classifier, _ = load_classifier(folder / "model")
    clips = dataset(dataclasses.replace(config, data_folder=str(shuffled)), folds, classifier)
    batch = config.train.batch_size
    fit = test_classifier(classifier, clips, batch, torch.device("cpu"))["test_accuracy"]
    test = json.loads((folder / "metrics.json").read_text())["test_accuracy"]
    chance = 1 / classifier.n_classes
    write_text_atomic(fit_file, json.dumps({"train_accuracy": fit, "test_accuracy": test,
                                            "chance": chance}, indent=2) + "\n")  # fmt: skip
    print(f"   done in {time.perf_counter() - start:.0f} s: fits {100 * fit:.1f} % of the "
          f"shuffled training labels; test accuracy {100 * test:.1f} % (chance "
          f"{100 * chance:.1f} %)")  # fmt: skip
    return folder / "model", fit


def recipe_seed(hparams: Path) -> int:
    """The ``train.seed`` a recipe uses (the training config's default when unset)."""
    section = load_hparams(hparams).get("train", {})
    return int(section.get("seed", TrainConfig.seed))


def train_sanity_runs(
    methods: Sequence[TrainedMethod],
    classifier_folder: Path,
    out: Path,
    epochs: dict[str, int] | None = None,
    seed: int = 0,
    tier: str = "sanity tier",
    random_folder: Path | None = None,
) -> dict[str, SanityRuns]:
    """Per method: the run on f with another seed and the run on f~, trained in ``out``.

    Args:
        methods: the trained explainers of the evaluation.
        classifier_folder: f's model folder (what they explain).
        out: where f~ and the runs go (``out/randomized_classifier``, ``out/<name>_seed``,
            ``out/<name>_randomized``).
        epochs: per method name, the reduced budget (None or missing: the recipe's own).
        seed: f~'s re-initialisation seed; the evaluation must use the same.
        tier: printed with each verdict; the budget is added to it.
        random_folder: f~'s model folder (data randomisation: the permuted-label
            classifier), its runs trained in ``out/<name>_permuted``; None = f with every
            layer re-initialised (``out/randomized_classifier``).
    """
    random_kind = "permuted" if random_folder else "randomized"
    if random_folder is None:
        random_folder = randomized_classifier(
            classifier_folder, out / "randomized_classifier", seed
        )
    runs = {}
    for method in methods:
        budget = (epochs or {}).get(method.name)
        plural = "" if budget == 1 else "s"
        label = (
            f"{tier}, {budget} epoch{plural} a run" if budget else f"{tier}, the recipe's budget"
        )
        base_seed = recipe_seed(method.hparams)
        extra = [*method.overrides, *([f"--train.epochs={budget}"] if budget else [])]
        folders = {}
        for kind, classifier, run_seed in (
            ("seed", classifier_folder, base_seed + OTHER_SEED_OFFSET),
            (random_kind, random_folder, base_seed),
        ):
            folder = out / f"{method.name}_{kind}"
            folders[kind] = folder / "model"
            if (folder / "metrics.json").is_file():
                print(f"== sanity run {folder.name}: reusing {folder}")
                continue
            print(f"== sanity run {folder.name} -> {folder}")
            start = time.perf_counter()
            status = train(
                [
                    str(method.hparams),
                    *extra,
                    f"--classifier_folder={classifier}",
                    f"--output_folder={folder}",
                    f"--train.seed={run_seed}",
                ]
            )
            if status != 0:
                raise SanityRunError(f"sanity run {folder.name} failed (exit status {status})")
            print(f"   done in {time.perf_counter() - start:.0f} s")
        runs[method.name] = SanityRuns(folders["seed"], folders[random_kind], label)
    return runs
