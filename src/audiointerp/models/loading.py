"""Your own classifier from a spec string (the CLI's ``--classifier``, saved with the
interpreters trained for it):

* ``path/to/file.py:factory``: the file is imported and ``factory()`` must return an
  :class:`~audiointerp.models.external.ExternalClassifier`;
* ``path/to/model.pt`` (any other file): a TorchScript module (``torch.jit.load``) whose
  ``audiointerp.json`` extra file holds ``sample_rate`` and ``class_names``
  (:func:`save_torchscript` writes it);
* ``hf:FOLDER`` or ``hf:FOLDER#LAYER``: a Hugging Face ``transformers`` audio-classification
  model saved with its feature extractor (:mod:`audiointerp.models.hf`; the optional ``hf``
  extra), reading the activations of ``LAYER`` (a name in the model's ``named_modules()``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from audiointerp.models.external import AdapterError, ExternalClassifier

TORCHSCRIPT_META = "audiointerp.json"  # extra file of a TorchScript classifier
HF_PREFIX = "hf:"


def load_external(spec: str) -> ExternalClassifier:
    """The classifier ``spec`` names (see the module notes), in eval mode, gradients off.

    Its ``source`` is the spec with an absolute path, so an interpreter trained for it can
    load it again from another folder.

    Raises:
        AdapterError: a missing file, a factory that raises or returns something else, a
            TorchScript file without its metadata, or a model that fails its check.
    """
    if spec.startswith(HF_PREFIX):
        from audiointerp.models.hf import load_hf  # optional dependency: only when asked

        path, _, layer = spec[len(HF_PREFIX) :].partition("#")
        folder = Path(path).resolve()
        source = f"{HF_PREFIX}{folder}" + (f"#{layer}" if layer else "")
        classifier = load_hf(folder, layer or None, source)
    else:
        path, _, factory = spec.rpartition(":")
        if path.endswith(".py") and factory:
            classifier = _from_factory(Path(path).resolve(), factory)
        else:
            classifier = load_torchscript(Path(spec).resolve())
    return classifier.eval().requires_grad_(False)


def _from_factory(path: Path, factory: str) -> ExternalClassifier:
    spec = f"{path}:{factory}"
    if not path.is_file():
        raise AdapterError(f"classifier {spec}: no such file")
    module_spec = importlib.util.spec_from_file_location(f"audiointerp_user_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None, path
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        module_spec.loader.exec_module(module)
        build = getattr(module, factory, None)
        if not callable(build):
            raise AdapterError(f"classifier {spec}: {path.name} defines no function {factory!r}")
        classifier = build()
    except AdapterError:
        raise
    except Exception as error:  # the user's code: any failure is theirs to fix
        raise AdapterError(
            f"classifier {spec}: {type(error).__name__}: {error}".rstrip(": ")
        ) from error
    finally:
        sys.path.remove(str(path.parent))
    if not isinstance(classifier, ExternalClassifier):
        raise AdapterError(
            f"classifier {spec}: {factory}() returned {type(classifier).__name__}; expected an "
            "audiointerp.ExternalClassifier(model, sample_rate, class_names, layer=None)"
        )
    classifier.source = classifier.source or spec
    return classifier


def load_torchscript(path: Path) -> ExternalClassifier:
    """A TorchScript classifier file with its ``audiointerp.json`` (rate, class names)."""
    if not path.is_file():
        raise AdapterError(f"classifier {path}: no such file")
    extra = {TORCHSCRIPT_META: ""}
    try:
        with _quiet_jit():
            model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AdapterError(
            f"classifier {path}: not a TorchScript file torch.jit.load reads ({first}); "
            "expected file.py:factory, a TorchScript file or hf:FOLDER"
        ) from error
    try:
        meta = json.loads(extra[TORCHSCRIPT_META] or "{}")
        sample_rate, class_names = int(meta["sample_rate"]), [str(n) for n in meta["class_names"]]
    except (KeyError, TypeError, ValueError) as error:
        raise AdapterError(
            f"classifier {path}: no {TORCHSCRIPT_META} extra file with sample_rate and "
            "class_names; save it with audiointerp.models.loading.save_torchscript"
        ) from error
    return ExternalClassifier(model, sample_rate, class_names, source=str(path))


def save_torchscript(classifier: ExternalClassifier, path: str | os.PathLike) -> Path:
    """Write ``classifier.model`` as TorchScript (scripted, else traced on a 1-s clip) with
    its rate and class names, for :func:`load_external`."""
    model = classifier.model.eval()
    meta = {"sample_rate": classifier.feature_config.sample_rate}
    meta["class_names"] = list(classifier.class_names)  # type: ignore[assignment]
    with _quiet_jit():
        if not isinstance(model, torch.jit.ScriptModule):
            try:
                model = torch.jit.script(model)
            except Exception:  # not scriptable: tracing covers fixed-shape code
                clip = torch.zeros(1, classifier.feature_config.sample_rate)
                model = torch.jit.trace(model, clip)
        torch.jit.save(model, str(path), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
    return Path(path)


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """TorchScript is deprecated in torch 2.x, but it is what the user chose: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
