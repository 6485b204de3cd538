"""Import the reference's SpeechBrain classifier checkpoints into our checkpoint format.

SpeechBrain ``.ckpt`` files are plain ``torch.save(state_dict)`` pickles; they are read
with ``weights_only=True`` (:func:`audiointerp.checkpoints.load_torch_state_dict`), so a
file that would construct arbitrary objects is refused. Sizes are inferred from the
tensor shapes, then every key and shape is checked strictly (SpeechBrain's own loading is
non-strict and silently keeps random weights on a mismatch).

Sources (HuggingFace):
    conv2d: ``speechbrain/PIQ-ESC50`` — ``embedding_modelft.ckpt`` (the fine-tuned encoder
        every interpreter uses; ``embedding_model.ckpt``, its pre-fine-tuning init, is the
        fallback) and ``classifier.ckpt`` (the cosine head).
    cnn14: ``fpaissan/r`` — ``embedding_model.ckpt`` and ``classifier.ckpt`` (16 kHz,
        log1p mel, Linear head), the CNN14 of the L2I-CNN14 and L-MAC recipes.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from audiointerp.checkpoints import CheckpointError, check_keys, load_torch_state_dict
from audiointerp.data.esc50 import ESC50_REFERENCE_CLASSES
from audiointerp.features import FeatureConfig
from audiointerp.models import ClassifierConfig, build_classifier, save_classifier
from audiointerp.models.cnn14 import REFERENCE_CHANNELS

CONV2D_ENCODER_FILES = ("embedding_modelft.ckpt", "embedding_model.ckpt")
CNN14_ENCODER_FILE = "embedding_model.ckpt"
HEAD_FILE = "classifier.ckpt"
LABEL_ENCODER_FILE = "label_encoder.txt"
# SpeechBrain's PIQAudioInterpreter.interpret_file explains the waveform as loaded (at
# 16 kHz, not normalised): imported PIQ-ESC50 models default to the same.
INTERFACE_NORMALIZATION = "none"


def _source_dir(src_dir: str | os.PathLike) -> Path:
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory (expected SpeechBrain .ckpt files)")
    return src


def _shape(state: dict[str, Tensor], key: str, path: Path, what: str) -> tuple[int, ...]:
    """Shape of ``state[key]``; a missing key means the file is not the expected model."""
    if key not in state:
        raise CheckpointError(f"{path}: missing key {key} (not a {what} checkpoint?)")
    return tuple(state[key].shape)


def _load_strict(module: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Copy ``state`` into ``module`` after a key-and-shape check naming every problem."""
    expected = {key: value.shape for key, value in module.state_dict().items()}
    check_keys(str(path), state, expected)
    module.load_state_dict(state, strict=True)


def _check_classes(
    n_classes: int, path: Path, class_names: Sequence[str] | None = None
) -> list[str]:
    """``class_names`` (default: the reference's ESC-50 order) if the head has that many."""
    names = list(ESC50_REFERENCE_CLASSES if class_names is None else class_names)
    if n_classes != len(names):
        given = "the reference ESC-50 classifiers have" if class_names is None else "given:"
        raise CheckpointError(
            f"{path}: head has {n_classes} classes; {given} {len(names)} class names "
            "(class names could not be assigned)"
        )
    return names


def read_label_encoder(path: str | os.PathLike) -> list[str]:
    """Class names by index from a SpeechBrain ``CategoricalEncoder`` text file.

    The format is one ``'name' => index`` line per class, then a ``====`` line and
    encoder settings (``'starting_index' => 0``); names are Python literals.

    Raises:
        CheckpointError: not such a file, or indices that are not 0..C-1 once each.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable label encoder ({error})") from error
    names: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        if line.startswith("="):
            break
        if not line.strip():
            continue
        label, arrow, index = line.rpartition(" => ")
        try:
            name, position = ast.literal_eval(label), int(index)
        except (ValueError, SyntaxError):
            name, position = None, -1
        if not arrow or not isinstance(name, str) or position in names:
            raise CheckpointError(
                f"{path}: line {number} is not a new \"'name' => index\" entry: {line[:60]!r}"
            )
        names[position] = name
    if not names or sorted(names) != list(range(len(names))):
        raise CheckpointError(f"{path}: label indices are not 0..C-1 (not a label encoder?)")
    return [names[index] for index in range(len(names))]


def _provenance(repo: str, src: Path, encoder: Path, head: Path) -> dict[str, Any]:
    return {
        "imported_from": {
            "source": repo,
            "folder": str(src.resolve()),
            "encoder_file": encoder.name,
            "head_file": head.name,
        }
    }


def import_conv2d(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
) -> Path:
    """speechbrain/PIQ-ESC50 conv2d encoder + cosine head -> our checkpoint at ``out_dir``.

    The encoder is ``embedding_modelft.ckpt``, or ``embedding_model.ckpt`` when the
    fine-tuned file is absent (the choice is recorded in meta ``imported_from``).
    ``dim``, ``lin_neurons`` come from the shapes; ``logit_scale`` is 1.0 (raw cosines,
    as the reference), features the reference defaults, classes ``class_names`` (default
    the reference order). Meta ``normalization`` is "none", as SpeechBrain's interface.
    """
    src = _source_dir(src_dir)
    candidates = [src / name for name in CONV2D_ENCODER_FILES]
    encoder_file = next((path for path in candidates if path.is_file()), None)
    if encoder_file is None:
        raise FileNotFoundError(f"{src}: neither {' nor '.join(CONV2D_ENCODER_FILES)} found")
    head_file = src / HEAD_FILE
    encoder_state = load_torch_state_dict(encoder_file)
    head_state = load_torch_state_dict(head_file)

    dim = _shape(encoder_state, "conv1.weight", encoder_file, "conv2d encoder")[0]
    lin_neurons = _shape(head_state, "blocks.1.w.weight", head_file, "conv2d cosine head")[0]
    n_classes = _shape(head_state, "weight", head_file, "conv2d cosine head")[0]
    config = ClassifierConfig(
        name="conv2d", dim=dim, lin_neurons=lin_neurons, logit_scale=1.0, features=FeatureConfig()
    )
    classifier = build_classifier(config, _check_classes(n_classes, head_file, class_names))
    _load_strict(classifier.encoder, encoder_state, encoder_file)
    _load_strict(classifier.head, head_state, head_file)
    meta = _provenance("speechbrain/PIQ-ESC50", src, encoder_file, head_file)
    meta["normalization"] = INTERFACE_NORMALIZATION
    return save_classifier(out_dir, classifier, config, meta)


def import_cnn14(src_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """The interpretation recipes' 16-kHz CNN14 (fpaissan/r) -> our checkpoint at ``out_dir``.

    Width and mel bands come from the shapes. ``speechbrain/cnn14-esc50``'s ECAPA-style
    head (44.1 kHz, dB mel: another pipeline) is detected and refused.
    """
    src = _source_dir(src_dir)
    encoder_file, head_file = src / CNN14_ENCODER_FILE, src / HEAD_FILE
    head_state = load_torch_state_dict(head_file)
    if any(key.startswith("blocks.") for key in head_state):
        raise CheckpointError(
            f"{head_file}: an ECAPA-style head (keys blocks.*), as in speechbrain/cnn14-esc50 — "
            "a 44.1-kHz, dB-mel pipeline the interpretation recipes do not use; import the "
            "16-kHz Linear-head CNN14 (fpaissan/r: embedding_model.ckpt + classifier.ckpt)"
        )
    encoder_state = load_torch_state_dict(encoder_file)

    n_mels = _shape(encoder_state, "norm0.weight", encoder_file, "CNN14 encoder")[0]
    first = _shape(encoder_state, "conv_block1.conv1.weight", encoder_file, "CNN14 encoder")[0]
    n_classes = _shape(head_state, "weight", head_file, "CNN14 Linear head")[0]
    config = ClassifierConfig(
        name="cnn14",
        cnn14_width=first / REFERENCE_CHANNELS[0],
        logit_scale=1.0,
        features=FeatureConfig(n_mels=n_mels),
    )
    classifier = build_classifier(config, _check_classes(n_classes, head_file))
    _load_strict(classifier.encoder, encoder_state, encoder_file)
    _load_strict(classifier.head, head_state, head_file)
    meta = _provenance("fpaissan/r", src, encoder_file, head_file)
    return save_classifier(out_dir, classifier, config, meta)
