"""Checkpoints as versioned data, never pickles.

A checkpoint is a folder::

    model.safetensors   tensors only (state dicts, prefixed by component: "classifier.",
                        "interpreter.", ...)
    config.yaml         the constructor arguments (plain YAML)
    meta.json           format version, class names, sample rate, feature settings,
                        package versions, metric summary

The folder is written under a temporary name and renamed into place, so a kill never
leaves a half checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from audiointerp import __version__
from audiointerp.errors import CheckpointError
from audiointerp.io import replace_folder

FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE, META_FILE = "model.safetensors", "config.yaml", "meta.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE, META_FILE)


@dataclass
class Checkpoint:
    """What a checkpoint folder holds."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix.``, with the prefix stripped (one component's state)."""
        start = prefix + "."
        return {k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)}


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``prefix.`` to every key of a state dict."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def save_checkpoint(
    folder: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    full_meta = {
        "format_version": FORMAT_VERSION,
        "audiointerp_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **(meta or {}),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(contiguous, str(staging / WEIGHTS_FILE))
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        (staging / META_FILE).write_text(json.dumps(full_meta, indent=2, default=str))
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder (no pickle involved); checks the format version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no such directory)")
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: not a checkpoint folder (missing {', '.join(missing)})")
    meta = json.loads((folder / META_FILE).read_text())
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint format {version} is not supported (expected {FORMAT_VERSION})"
        )
    config = yaml.safe_load((folder / CONFIG_FILE).read_text()) or {}
    return Checkpoint(tensors=load_file(str(folder / WEIGHTS_FILE)), config=config, meta=meta)


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a written checkpoint (its three files; they are written
    together, atomically, so all or none are there)."""
    return all((Path(folder) / name).is_file() for name in CHECKPOINT_FILES)


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a checkpoint folder, else its ``model/`` (a run folder).

    Raises:
        CheckpointError: neither holds the three checkpoint files.
    """
    path = Path(path)
    for folder in (path, path / "model"):
        if is_checkpoint(folder):
            return folder
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such model folder")
    raise CheckpointError(
        f"{path}: not a model checkpoint folder ({WEIGHTS_FILE}, {CONFIG_FILE}, {META_FILE}) "
        "nor a run folder with one in model/"
    )


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a SpeechBrain ``.ckpt`` (a plain ``torch.save(state_dict)``) safely.

    ``weights_only=True`` refuses pickles that would construct arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: refused or unreadable (only plain tensor state dicts are loaded "
            f"safely; {first})"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return state


def check_keys(
    source: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Size]
) -> None:
    """Strict key and shape check of an imported state dict; errors name the keys."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected keys: {', '.join(extra)}")
    shapes = [
        f"{k}: {tuple(state[k].shape)} != expected {tuple(expected[k])}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k])
    ]
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes))
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))
