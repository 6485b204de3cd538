"""Hugging Face ``transformers`` audio classifiers (AST, wav2vec2/HuBERT heads) as
:class:`~audiointerp.models.external.ExternalClassifier` s: the optional ``hf`` extra
(``pip install 'audiointerp[hf]'``).

Their feature extractors are numpy code, which gradients cannot cross, so the model
runs behind a torch front end that computes the same thing (:class:`HFWaveformModel`):

* ``ASTFeatureExtractor``: :class:`ASTFrontEnd`, its numpy path in torch ops (400-sample
  frames every 160 samples, DC removed, pre-emphasis 0.97, symmetric Hann window,
  512-point power spectrum, its kaldi-scale mel filters, log with floor 2^-23, frames
  zero-padded or cut to ``max_length``, then ``(x - mean) / (2 std)``);
* ``Wav2Vec2FeatureExtractor`` (wav2vec2, HuBERT): each clip to zero mean and unit
  variance when ``do_normalize``, else as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from audiointerp.models.external import AdapterError, ExternalClassifier

AST_FRAME, AST_HOP, AST_FFT, AST_PREEMPHASIS = 400, 160, 512, 0.97
AST_MEL_FLOOR = 1.192092955078125e-07  # the feature extractor's floor, 2^-23
WAV2VEC2_EPS = 1e-7  # zero_mean_unit_var_norm's variance epsilon


class ASTFrontEnd(nn.Module):
    """waveform (B, N) -> the AST's normalised log-mel input (B, max_length, n_mels)."""

    def __init__(self, extractor: Any):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank, window_function

        filters = mel_filter_bank(
            num_frequency_bins=AST_FFT // 2 + 1,
            num_mel_filters=extractor.num_mel_bins,
            min_frequency=20,
            max_frequency=extractor.sampling_rate // 2,
            sampling_rate=extractor.sampling_rate,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )
        window = window_function(AST_FRAME, "hann", periodic=False)
        self.register_buffer("mel_filters", torch.from_numpy(np.asarray(filters)).float())
        self.register_buffer("window", torch.from_numpy(np.asarray(window)).float())
        self.max_length = int(extractor.max_length)
        self.normalize = bool(extractor.do_normalize)
        self.mean, self.std = float(extractor.mean), float(extractor.std)

    def forward(self, waveform: Tensor) -> Tensor:
        frames = waveform.unfold(-1, AST_FRAME, AST_HOP)  # (B, T, 400)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        emphasised = frames[..., 1:] - AST_PREEMPHASIS * frames[..., :-1]
        frames = torch.cat([frames[..., :1] * (1 - AST_PREEMPHASIS), emphasised], dim=-1)
        spectrum = torch.fft.rfft(frames * self.window, n=AST_FFT)
        power = spectrum.real**2 + spectrum.imag**2  # no |.| so zero bins keep finite grads
        fbank = torch.log((power @ self.mel_filters).clamp_min(AST_MEL_FLOOR))
        missing = self.max_length - fbank.shape[1]
        fbank = nn.functional.pad(fbank, (0, 0, 0, missing)) if missing > 0 else fbank
        fbank = fbank[:, : self.max_length]
        return (fbank - self.mean) / (2 * self.std) if self.normalize else fbank


class Wav2Vec2FrontEnd(nn.Module):
    """waveform (B, N) -> each clip at zero mean and unit variance (if ``do_normalize``)."""

    def __init__(self, extractor: Any):
        super().__init__()
        self.normalize = bool(getattr(extractor, "do_normalize", True))

    def forward(self, waveform: Tensor) -> Tensor:
        if not self.normalize:
            return waveform
        mean = waveform.mean(dim=-1, keepdim=True)
        variance = waveform.var(dim=-1, keepdim=True, unbiased=False)
        return (waveform - mean) / torch.sqrt(variance + WAV2VEC2_EPS)


FRONT_ENDS = {"ASTFeatureExtractor": ASTFrontEnd, "Wav2Vec2FeatureExtractor": Wav2Vec2FrontEnd}


class HFWaveformModel(nn.Module):
    """A ``transformers`` audio-classification model behind its torch front end:
    waveform (B, N) -> logits (B, C), differentiable end to end."""

    def __init__(self, model: nn.Module, extractor: Any):
        super().__init__()
        kind = type(extractor).__name__
        if kind not in FRONT_ENDS:
            raise AdapterError(
                f"no differentiable front end for {kind}; supported: {', '.join(FRONT_ENDS)}"
            )
        self.front_end = FRONT_ENDS[kind](extractor)
        self.model = model

    def forward(self, waveform: Tensor) -> Tensor:
        return self.model(input_values=self.front_end(waveform)).logits


def hf_classifier(
    model: nn.Module, extractor: Any, layer: str | None = None, source: str = ""
) -> ExternalClassifier:
    """An :class:`ExternalClassifier` of a ``transformers`` model and its feature extractor;
    ``layer`` is a name in ``model.named_modules()`` (e.g.
    ``audio_spectrogram_transformer.layers.1``); class names from ``id2label``."""
    config = model.config
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    wrapped = HFWaveformModel(model.eval(), extractor)
    return ExternalClassifier(
        wrapped,
        int(extractor.sampling_rate),
        names,
        layer=None if layer is None else f"model.{layer}",
        source=source or type(model).__name__,
    )


def load_hf(
    folder: str | os.PathLike, layer: str | None = None, source: str = ""
) -> ExternalClassifier:
    """A model folder saved with ``save_pretrained`` (model and feature extractor), offline.

    Raises:
        AdapterError: ``transformers`` is not installed, or the folder does not load.
    """
    try:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    except ImportError as error:
        raise AdapterError(
            f"classifier {source or folder}: needs the optional transformers package "
            "(pip install 'audiointerp[hf]')"
        ) from error
    folder = Path(folder)
    try:
        model = AutoModelForAudioClassification.from_pretrained(folder, local_files_only=True)
        extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AdapterError(
            f"classifier {source or folder}: not a transformers audio-classification folder "
            f"with its feature extractor ({reason})"
        ) from error
    return hf_classifier(model, extractor, layer, source or f"hf:{folder}")
