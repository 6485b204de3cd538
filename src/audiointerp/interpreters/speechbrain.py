"""Import of SpeechBrain's published PIQ-ESC50 (``psi_model.ckpt`` + the conv2d classifier)
as one of our checkpoint folders; the classifiers' importers are in
:mod:`audiointerp.models.speechbrain`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audiointerp.checkpoints import (
    check_keys,
    load_checkpoint,
    load_torch_state_dict,
    prefixed,
    save_checkpoint,
)
from audiointerp.errors import CheckpointError
from audiointerp.interpreters.piq import PIQ, PIQConfig, classifier_width, code_classes
from audiointerp.models import classifier_checkpoint, load_classifier
from audiointerp.models.speechbrain import INTERFACE_NORMALIZATION, import_conv2d

PSI_FILE = "psi_model.ckpt"


def import_piq(
    src_dir: str | Path,
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Import SpeechBrain's PIQ-ESC50 (psi + conv2d classifier) as one checkpoint folder.

    ``src_dir`` holds ``psi_model.ckpt``, ``embedding_modelft.ckpt`` and
    ``classifier.ckpt`` under their published names. The folder written to ``out_dir``
    has tensors ``classifier.*`` and ``interpreter.*``, explains in the ``log1p`` domain
    and records ``normalization: none`` (the input as loaded), exactly as SpeechBrain's
    ``PIQAudioInterpreter.interpret_file``. ``class_names`` default to the reference
    order; ``meta`` adds entries to meta.json (e.g. where the files came from).

    Raises:
        CheckpointError: missing/extra/wrong-shape keys (named), or a codebook with fewer
            keys than the classifier has classes.
        FileNotFoundError: ``src_dir`` or one of the classifier files is missing.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    psi_path = src_dir / PSI_FILE
    psi_state = load_torch_state_dict(psi_path)
    if "codebook.embedding.weight" not in psi_state:
        raise CheckpointError(f"{psi_path}: missing keys: codebook.embedding.weight")
    n_keys, dim = psi_state["codebook.embedding.weight"].shape
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as staging:
        classifier_dir = import_conv2d(src_dir, Path(staging) / "classifier", class_names)
        classifier, classifier_config = load_classifier(classifier_dir)
        provenance = load_checkpoint(classifier_dir).meta.get("imported_from", {})
    width = classifier_width(classifier)
    if dim != width:
        raise CheckpointError(
            f"{psi_path}: codebook.embedding.weight has dim {dim}, but the classifier's "
            f"width is {width}"
        )
    try:
        code_classes(n_keys, classifier.n_classes)
    except ValueError as error:
        raise CheckpointError(f"{psi_path}: codebook.embedding.weight: {error}") from error
    interpreter = PIQ(PIQConfig(dim=dim, n_keys=n_keys, mask_domain="log1p"), classifier.n_classes)
    check_keys(str(psi_path), psi_state, {k: v.shape for k, v in interpreter.state_dict().items()})
    interpreter.load_state_dict(psi_state, strict=True)
    tensors, config, base_meta = classifier_checkpoint(classifier, classifier_config)
    tensors.update(prefixed("interpreter", interpreter.state_dict()))
    config["interpreter"] = {"name": "piq", **interpreter.config_dict()}
    base_meta["imported_from"] = {**provenance, "interpreter_file": PSI_FILE}
    base_meta["normalization"] = INTERFACE_NORMALIZATION
    return save_checkpoint(out_dir, tensors, config, {**base_meta, **(meta or {})})
