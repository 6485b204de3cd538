"""One loader for model folders: the checkpoint is read once, whatever it holds.

:func:`load_model` serves :meth:`audiointerp.pipeline.Explainer.from_pretrained` and the
evaluation (which also loads classifier-only folders), so both read a folder the same
way: ``checkpoint_folder`` -> one :func:`~audiointerp.checkpoints.load_checkpoint` ->
the classifier and, if the folder names one, its interpreter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiointerp.checkpoints import CONFIG_FILE, check_keys, checkpoint_folder, load_checkpoint
from audiointerp.config import load_yaml
from audiointerp.errors import CheckpointError
from audiointerp.hub import HUB_MODELS, pull
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import Classifier, ClassifierConfig, classifier_from_checkpoint
from audiointerp.models.external import EXTERNAL_SECTION, AdapterError, ExternalClassifier
from audiointerp.models.loading import load_external

INTERPRETER_PREFIX = "interpreter"
DEFAULT_CLIP_SECONDS, DEFAULT_NORMALIZATION = 5.0, "peak"


@dataclass
class Pretrained:
    """What a model folder holds, rebuilt; both modules in eval mode with gradients off.

    Attributes:
        folder: the checkpoint folder (a run folder's ``model/``).
        classifier: the classifier, strictly loaded.
        classifier_config: how to rebuild it (None: a user's classifier, referenced in
            the ``external_classifier`` section and passed or loaded by its spec).
        interpreter: the interpreter, or None for a classifier-only folder.
        meta: the folder's ``meta.json``.
        clip_seconds: training clip length (the recipe's ``duration_s``).
        normalization: training waveform normalisation (the recipe's ``normalization``).
    """

    folder: Path
    classifier: Classifier
    classifier_config: ClassifierConfig | None
    interpreter: Interpreter | None
    meta: dict[str, Any]
    clip_seconds: float
    normalization: str


def load_model(path: str | os.PathLike, classifier: Classifier | None = None) -> Pretrained:
    """Load a checkpoint folder, a run folder holding one in ``model/``, or a published model
    by hub name (``"speechbrain/PIQ-ESC50"``: :func:`audiointerp.hub.pull` downloads and
    converts it once, with the ``HF_*`` environment variables as set now), reading it once.

    The training clip length and normalisation come from meta.json, else from the run's
    config.yaml (the parent of ``model/``), else 5 s and "peak".

    An interpreter trained for a user's classifier (:mod:`audiointerp.models.external`)
    explains ``classifier`` (e.g. from :func:`~audiointerp.models.loading.load_external`),
    by default the one its folder references; it must have the folder's class names and
    layer.

    Raises:
        CheckpointError: not such a folder, an unknown interpreter or mismatched weights;
            ``classifier`` given for a folder that embeds its own, or missing, not
            loadable or with other classes where the folder needs one.
    """
    if str(path) in HUB_MODELS and not Path(path).exists():
        path = pull(str(path))  # a published model: downloaded and converted once
    folder = checkpoint_folder(path)
    checkpoint = load_checkpoint(folder)
    classifier_config: ClassifierConfig | None = None
    if isinstance(checkpoint.config.get(EXTERNAL_SECTION), dict):
        classifier = _external_classifier(folder, checkpoint.config, checkpoint.meta, classifier)
    elif classifier is not None:
        raise CheckpointError(
            f"{folder}: embeds its own classifier; a classifier of your own is only for "
            "interpreters trained for it"
        )
    else:
        classifier, classifier_config = classifier_from_checkpoint(checkpoint, folder)
    interpreter = None
    section = checkpoint.config.get(INTERPRETER_PREFIX)
    if isinstance(section, dict) and "name" in section:
        config = {key: value for key, value in section.items() if key != "name"}
        try:
            interpreter = build_interpreter(str(section["name"]), config, classifier)
        except ValueError as error:
            raise CheckpointError(f"{folder}: config.yaml: {error}") from error
        state = checkpoint.state_dict(INTERPRETER_PREFIX)
        expected = {key: value.shape for key, value in interpreter.state_dict().items()}
        check_keys(f"{folder} ({INTERPRETER_PREFIX}.*)", state, expected)
        interpreter.load_state_dict(state, strict=True)
        interpreter.eval().requires_grad_(False)
    classifier.eval().requires_grad_(False)
    settings = _training_settings(folder, checkpoint.meta)
    return Pretrained(
        folder=folder,
        classifier=classifier,
        classifier_config=classifier_config,
        interpreter=interpreter,
        meta=checkpoint.meta,
        clip_seconds=float(settings.get("duration_s", DEFAULT_CLIP_SECONDS)),
        normalization=str(settings.get("normalization", DEFAULT_NORMALIZATION)),
    )


def _training_settings(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``duration_s``/``normalization`` of training: meta.json, else the run's config.yaml."""
    run_config = folder.parent / CONFIG_FILE
    if folder.name == "model" and run_config.is_file():
        return {**load_yaml(run_config), **meta}
    return meta


def _external_classifier(
    folder: Path, config: dict[str, Any], meta: dict[str, Any], given: Classifier | None
) -> ExternalClassifier:
    """The user's classifier an interpreter folder was trained for: ``given``, else loaded
    by the spec the folder saved; its class names and layer must be the folder's."""
    section = config[EXTERNAL_SECTION]
    spec, layer = str(section.get("source") or ""), section.get("layer")
    if given is None:
        if not spec:
            raise CheckpointError(
                f"{folder}: was trained for a classifier of your own that it cannot load "
                "again; pass it (--classifier SPEC, or classifier= in Python)"
            )
        try:
            given = load_external(spec)
        except AdapterError as error:
            raise CheckpointError(
                f"{folder}: its classifier {spec} does not load ({error}); pass it with "
                "--classifier SPEC (classifier= in Python)"
            ) from error
    if not isinstance(given, ExternalClassifier):
        raise CheckpointError(
            f"{folder}: needs a classifier of your own, not our {type(given).__name__}"
        )
    names = [str(name) for name in meta.get("class_names", [])]
    if list(given.class_names) != names:
        raise CheckpointError(
            f"{folder}: trained for classes {names}; classifier {given.name} has "
            f"{list(given.class_names)}"
        )
    if given.layer != layer:
        raise CheckpointError(
            f"{folder}: trained on {_layer(layer)} of its classifier; {given.name} reads "
            f"{_layer(given.layer)}"
        )
    return given.eval()


def _layer(name: str | None) -> str:
    return f"layer {name!r}" if name else "no layer (the logits)"
