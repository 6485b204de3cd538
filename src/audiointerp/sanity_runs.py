"""The sanity check's retraining: trained explainers trained again, for the evaluation.

The check (:mod:`audiointerp.metrics.sanity`) treats a trained explainer as a procedure:
to see whether it depends on the classifier f, the same recipe is run again on f~ (f with
every layer re-initialised) and once more on f with another seed. This module writes f~
as a classifier folder and trains those two runs per method with the recipe's own
command (``audiointerp train HPARAMS --classifier_folder=... --train.seed=...``), at the
recipe's budget or at a reduced number of epochs (the same for both runs, so R and C are
measured alike). Finished runs are reused; an interrupted one resumes. The result maps
each method's evaluation name to its :class:`~audiointerp.evaluation.SanityRuns`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audiointerp.checkpoints import is_checkpoint, load_checkpoint, prefixed, save_checkpoint
from audiointerp.config import load_hparams
from audiointerp.errors import UserError
from audiointerp.evaluation import SanityRuns
from audiointerp.metrics.sanity import randomize_weights
from audiointerp.models import CHECKPOINT_PREFIX, classifier_from_checkpoint
from audiointerp.training.loop import TrainConfig
from audiointerp.training.recipes.entry import train

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
    """
    random_folder = randomized_classifier(classifier_folder, out / "randomized_classifier", seed)
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
            ("randomized", random_folder, base_seed),
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
        runs[method.name] = SanityRuns(folders["seed"], folders["randomized"], label)
    return runs
