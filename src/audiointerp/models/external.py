"""Your own classifier: a waveform-in model explained with every method that applies.

An :class:`ExternalClassifier` adapts a model that is not ours (any ``nn.Module``, a
TorchScript file, a Hugging Face audio-classification model: :mod:`audiointerp.models.loading`)
to the :class:`~audiointerp.models.base.Classifier` interface the interpreters, metrics
and training read. The model maps a waveform batch (B, N) at its sample rate to logits
(B, C) through its own front end; optionally a layer is named whose activations a
trained interpreter reads (``ClassifierOutput.hidden``; the logits when none is named).

Masks stay on our STFT. A (masked) linear magnitude is turned back into audio with the
phase of the input being explained and fed to the model, so gradients flow from the
logits through the model's front end and the iSTFT to the mask::

    with classifier.explaining(features):            # the input's phase, n_samples
        out = classifier(apply_mask(mask, features.magnitude))   # iSTFT -> model

Why a context rather than a new ``forward`` argument: our own classifiers read the
magnitude only, and every caller that classifies masked magnitudes already holds the
input's :class:`~audiointerp.features.Features` (the interpreters' ``forward`` and
``loss``, the faithfulness metrics, :func:`audiointerp.explain.classify`); each sets it
there, and our classifiers ignore it, so they stay bit-identical. A batch of k x B rows
is k copies of the B explained clips, in order (L-MAC's mask-in/mask-out pass, Captum's
perturbed copies); any other batch, or none set, is an assertion, never a wrong phase.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from audiointerp.config import to_dict
from audiointerp.errors import AdapterError
from audiointerp.features import FeatureConfig, Features
from audiointerp.models.base import Classifier, ClassifierOutput

__all__ = ["AdapterError", "ExternalClassifier", "external_checkpoint"]

PROBE_SECONDS = 1.0  # length of the random clip that checks an adapter when it is built


class ExternalClassifier(Classifier):
    """A waveform-in classifier behind the magnitude-in :class:`Classifier` interface.

    Args:
        model: waveform (B, N) float32 at ``sample_rate`` -> logits (B, C), a tuple whose
            first item is them, or an object with ``.logits`` (Hugging Face outputs).
        sample_rate: the rate ``model`` expects.
        class_names: one name per logit.
        layer: a module name in ``model.named_modules()`` whose output is ``hidden``
            (read with a forward hook, only during a call); None: the logits.
        features: our STFT settings (default: the reference's, at ``sample_rate``).
        source: how to load ``model`` again (a ``file.py:factory`` spec, a TorchScript
            file, ``hf:FOLDER``), saved with interpreters trained for it.

    Raises:
        AdapterError: ``layer`` is not a module of ``model``, or a 1-s random clip does not
            give logits (B, len(class_names)) (or the model raises on it).
    """

    fast_copyable = False  # a user's module: explained as it is

    def __init__(
        self,
        model: nn.Module,
        sample_rate: int,
        class_names: Sequence[str],
        layer: str | None = None,
        features: FeatureConfig | None = None,
        source: str = "",
    ):
        config = features or FeatureConfig(sample_rate=sample_rate)
        assert config.sample_rate == sample_rate, (config.sample_rate, sample_rate)
        if not class_names:
            raise AdapterError(f"classifier {source or type(model).__name__}: no class names")
        super().__init__(config, list(class_names))
        self.model = model
        self.layer = layer
        self.source = source
        self._explained: Features | None = None
        self._layer_module = self._find_layer(layer)
        self.hidden_shape = self._probe()

    @property
    def name(self) -> str:
        return self.source or type(self.model).__name__

    def _find_layer(self, layer: str | None) -> nn.Module | None:
        if layer is None:
            return None
        if isinstance(self.model, torch.jit.ScriptModule):
            raise AdapterError(
                f"classifier {self.name}: a TorchScript model runs no Python hooks, so its "
                f"layer {layer!r} cannot be read; name no layer (the logits are used)"
            )
        modules = dict(self.model.named_modules())
        if layer not in modules or not layer:
            names = [name for name in modules if name][:12]
            raise AdapterError(
                f"classifier {self.name}: no layer {layer!r}; expected a name from "
                f"model.named_modules(), e.g. {', '.join(names)}"
            )
        return modules[layer]

    @torch.no_grad()
    def _probe(self) -> tuple[int, ...]:
        """Run 2 random clips through the model; the (unbatched) shape of ``hidden``."""
        n = round(PROBE_SECONDS * self.feature_config.sample_rate)
        clips = 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(0))
        training = self.model.training
        self.model.eval()
        try:
            out = self.classify_waveform(clips.to(self.feature_extractor.window.device))
        finally:
            self.model.train(training)
        return tuple(out.hidden[0].shape[1:])

    @contextmanager
    def explaining(self, features: Features) -> Iterator[None]:
        previous, self._explained = self._explained, features
        try:
            yield
        finally:
            self._explained = previous

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        """The masks' grid is the network input here: |X| itself (Grad-CAM's width)."""
        return linear_magnitude

    def forward(self, linear_magnitude: Tensor) -> ClassifierOutput:
        """(k B, T, F) magnitudes of the explained clips -> their audio -> the model."""
        features = self._explained
        assert features is not None, (
            "an ExternalClassifier classifies magnitudes only inside "
            "`with classifier.explaining(features):` (it needs the input's phase)"
        )
        rows, clips = linear_magnitude.shape[0], features.spec.shape[0]
        assert rows % clips == 0 and linear_magnitude.shape[1:] == features.spec.shape[1:], (
            f"magnitudes {tuple(linear_magnitude.shape)} are not copies of the explained "
            f"batch {tuple(features.spec.shape)}"
        )
        phase = torch.angle(features.spec.detach()).repeat(rows // clips, 1, 1)
        real, imag = linear_magnitude * torch.cos(phase), linear_magnitude * torch.sin(phase)
        spec = torch.complex(real, imag)
        waveform = self.feature_extractor.istft(spec, features.n_samples)
        return self.forward_waveform(waveform)

    def classify_waveform(self, waveform: Tensor) -> ClassifierOutput:
        with torch.no_grad():
            return self.forward_waveform(waveform)

    def forward_waveform(self, waveform: Tensor) -> ClassifierOutput:
        """waveform (B, N) -> the model's logits and the named layer's activations."""
        captured: list[Tensor] = []

        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured.append(_first_tensor(output, f"layer {self.layer!r}", self.name))

        hook = self._layer_module.register_forward_hook(keep) if self._layer_module else None
        try:
            raw = self.model(waveform)
        finally:
            if hook is not None:
                hook.remove()
        logits = _first_tensor(raw, "the model", self.name)
        expected = (waveform.shape[0], self.n_classes)
        if tuple(logits.shape) != expected:
            raise AdapterError(
                f"classifier {self.name}: expected logits (B, C) = {expected} for a waveform "
                f"batch {tuple(waveform.shape)} and {self.n_classes} class names, "
                f"got {tuple(logits.shape)}"
            )
        hidden = captured[-1] if captured else logits
        if hidden.shape[0] != waveform.shape[0]:
            raise AdapterError(
                f"classifier {self.name}: layer {self.layer!r} gives {tuple(hidden.shape)}; "
                f"expected the batch ({waveform.shape[0]}) first"
            )
        embedding = hidden.flatten(2).mean(-1) if hidden.dim() > 2 else hidden
        return ClassifierOutput(logits.float(), embedding.float(), (hidden.float(),))


def _first_tensor(output: Any, what: str, name: str) -> Tensor:
    """A module's output as one tensor: itself, ``.logits``, or a tuple's first item."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise AdapterError(
        f"classifier {name}: {what} returned {type(output).__name__}; expected a tensor, "
        "a tuple starting with one, or an object with .logits"
    )


EXTERNAL_SECTION = "external_classifier"  # config.yaml section of an interpreter trained for one


def external_checkpoint(
    classifier: ExternalClassifier,
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """(no tensors, ``{"external_classifier": {source, layer}}``, meta) for an interpreter
    folder: the user's model is referenced by its spec, not stored (a Python factory is
    no tensor file)."""
    config = {EXTERNAL_SECTION: {"source": classifier.source, "layer": classifier.layer}}
    meta = {
        "class_names": list(classifier.class_names),
        "sample_rate": classifier.feature_config.sample_rate,
        "features": to_dict(classifier.feature_config),
    }
    return {}, config, meta
