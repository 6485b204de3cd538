"""The inference API: audio in, the sound that made the classifier decide out.

>>> explainer = Explainer.from_pretrained("runs/piq")          # doctest: +SKIP
>>> result = explainer.explain_file("dog_and_rain.wav")         # doctest: +SKIP
>>> result.predicted, result.probability, result.waveform.shape  # doctest: +SKIP

Any length, rate and channel count is accepted. Audio is mixed to mono, resampled to the
model's rate and cut into windows of the classifier's training clip length (see
:mod:`audiointerp.longaudio`); each window is peak-normalised as the training clips were,
classified, masked by the interpreter and synthesised with its own phase
(:func:`audiointerp.explain.explain`); the windows' masks and audio are cross-faded, and
the audio is resampled back to the input's rate and length. Writing files:
:mod:`audiointerp.outputs`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from audiointerp.checkpoints import CheckpointError
from audiointerp.data.esc50 import fit_length
from audiointerp.errors import ConfigError, TargetError
from audiointerp.explain import Explanation, class_summary, classify, explain, interpret
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.baselines import frozen
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.io import AudioError, load_audio_with_rate, resample, to_mono, validate_audio
from audiointerp.longaudio import (
    OverlapAdd,
    WindowPlan,
    frame_weights,
    plan_windows,
    sample_weights,
)
from audiointerp.models import Classifier, ClassifierOutput
from audiointerp.models.fast import COLUMN_BUDGET_BYTES, fast_copy, peak_activation_bytes
from audiointerp.pretrained import INTERPRETER_PREFIX, load_model

__all__ = ["Explainer", "Explanation", "TargetError"]

Normalization = Literal["peak", "signed_max", "none"]


@dataclass
class _ClipState:
    """Accumulators of one clip while its windows are processed."""

    plan: WindowPlan
    explanation: OverlapAdd
    removed: OverlapAdd
    mask: OverlapAdd
    spectrogram: OverlapAdd
    probability_sum: Tensor  # (C,) summed over the windows seen
    windows_seen: int = 0
    target: int | None = None


class Explainer:
    """A frozen classifier and its interpreter, explaining audio of any length.

    Args:
        classifier: maps linear magnitudes (B, T, F) to logits; its feature extractor
            sets the model rate and STFT grid.
        interpreter: maps (features, classifier output, target) to masks (B, T, F).
        window_seconds: the classifier's training clip length; longer audio is explained
            window by window, shorter audio is zero-padded to one window.
        overlap: fraction by which consecutive windows overlap.
        normalization: per-window scaling before classification, as in training (``peak``:
            by max |x|); the explanation is scaled back, so it is on the input's scale.
        window_batch: windows processed together. Memory grows with it, not with the
            length of the audio. None: as many as ``memory_budget`` allows, from one
            window's measured activations (1 at the reference width, where PIQ's decoder
            holds 256 x 408 x 504 maps, more for narrow models).
        memory_budget: bytes of activations a batch of windows may take (window_batch
            None); a quarter of it more may keep classifier outputs of long audio's
            voting pass for its explaining pass (~0.85 MB a window at the reference width).
        fast: explain with :func:`~audiointerp.models.fast.fast_copy` copies of the
            classifier and interpreter (the same math, faster; the originals are not kept).
    """

    def __init__(
        self,
        classifier: Classifier,
        interpreter: Interpreter,
        window_seconds: float = 5.0,
        overlap: float = 0.5,
        normalization: Normalization = "peak",
        window_batch: int | None = None,
        memory_budget: int = 2**30,
        fast: bool = True,
    ):
        assert window_seconds > 0 and (window_batch or 1) > 0, (window_seconds, window_batch)
        assert normalization in ("peak", "signed_max", "none"), normalization
        if fast and classifier.fast_copyable:  # a user's model is explained as given
            classifier, interpreter = fast_copy(classifier), fast_copy(interpreter)
        self.classifier = classifier
        self.interpreter = interpreter
        self.extractor = classifier.feature_extractor
        self.sample_rate = classifier.feature_config.sample_rate
        self.hop_length = classifier.feature_config.hop_length
        self.window = round(window_seconds * self.sample_rate)
        self.overlap = overlap
        self.normalization = normalization
        self.memory_budget = memory_budget
        self._window_batch = window_batch  # None: sized on first use (a forward pass)

    @property
    def window_batch(self) -> int:
        """Windows explained together: as given, else sized from ``memory_budget`` by one
        measured window, once, when audio of more than one window first needs it."""
        if self._window_batch is None:
            self._window_batch = self._budget_window_batch()
        return self._window_batch

    @window_batch.setter
    def window_batch(self, value: int) -> None:
        assert value > 0, value
        self._window_batch = value

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    @classmethod
    def with_method(
        cls, classifier: Classifier, method: str = "saliency", **kwargs: Any
    ) -> Explainer:
        """Explain ``classifier`` (e.g. an :class:`~audiointerp.models.external.ExternalClassifier`
        of your own) with a method that needs no training (saliency, integrated_gradients,
        gradcam, occlusion, energy...); ``kwargs`` go to the constructor. Normalisation
        defaults to ``none`` here: the model hears the audio as given.

        Raises:
            ConfigError: an unknown method, one that needs training (train it with
                ``audiointerp train``) or one that does not apply to this classifier.
        """
        try:
            interpreter = build_interpreter(method, {}, classifier)
        except ConfigError:
            raise
        except ValueError as error:  # an unknown name
            raise ConfigError(str(error)) from error
        if interpreter.capabilities.needs_training:
            raise ConfigError(
                f"interpreter {method!r} must be trained first (audiointerp train {method} "
                "--classifier ... --data ... --out DIR), then Explainer.from_pretrained(DIR)"
            )
        return cls(classifier, interpreter, **{"normalization": "none", **kwargs})

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, classifier: Classifier | None = None, **kwargs: Any
    ) -> Explainer:
        """Load an interpreter checkpoint folder, a run folder holding one in ``model/``, or
        a published model by hub name (``"speechbrain/PIQ-ESC50"``: :func:`audiointerp.hub.pull`
        downloads and converts it once, with the ``HF_*`` environment variables as set now).

        The classifier and interpreter come back in eval mode with gradients off. The
        training clip length and normalisation (the recipe's ``duration_s`` and
        ``normalization``) come from meta.json, else from the run's config.yaml (the parent
        of ``model/``), else 5 s and "peak" (imported SpeechBrain models record "none", as
        SpeechBrain's interface); ``kwargs`` override them (e.g. ``normalization="peak"``).
        ``classifier``: a user's classifier, for an interpreter trained for it (default:
        the one the folder references, loaded by its spec).

        Raises:
            CheckpointError: not such a folder, no interpreter in it, or mismatched weights;
                a hub model that cannot be downloaded or converted.
        """
        model = load_model(path, classifier)
        if model.interpreter is None:
            raise CheckpointError(
                f"{model.folder}: holds no interpreter (config.yaml has no "
                f"'{INTERPRETER_PREFIX}' section with a name); explaining needs an interpreter "
                "checkpoint"
            )
        defaults = {"window_seconds": model.clip_seconds, "normalization": model.normalization}
        return cls(model.classifier, model.interpreter, **{**defaults, **kwargs})

    def class_index(self, target: int | str) -> int:
        """Index of a class given by index or name.

        Raises:
            TargetError: an unknown name or an index out of range; lists the valid names.
        """
        names = self.class_names
        if isinstance(target, str) and target in names:
            return names.index(target)
        if isinstance(target, (int, np.integer)) and 0 <= int(target) < len(names):
            return int(target)
        raise TargetError(
            f"unknown target class {target!r}; valid: {', '.join(names)} "
            f"(or an index 0..{len(names) - 1})"
        )

    def explain(
        self,
        waveform: np.ndarray | Tensor,
        sample_rate: int,
        target: int | str | None = None,
        top_k: int = 5,
        source: str | os.PathLike = "<array>",
    ) -> Explanation:
        """Explain mono (N,), multichannel (N, C) or a batch (B, N) of audio.

        A 2-D input is channels-last (N, C) when N >= C (soundfile's layout: channels are
        averaged), otherwise a batch (B, N) whose clips are explained independently.

        Args:
            waveform: audio samples (numpy array or tensor), any rate.
            sample_rate: rate of ``waveform``; the explanation comes back at this rate.
            target: class to explain (index or name) for every clip; None: the predicted.
            top_k: how many classes to list in ``top_k``.
            source: name used in error messages (a file path for :meth:`explain_file`).

        Raises:
            AudioError: empty, non-finite or silent (all-zero) audio.
            TargetError: an unknown target.
        """
        if isinstance(waveform, Tensor):
            waveform = waveform.detach().cpu().numpy()
        audio = np.asarray(waveform, dtype=np.float32)
        if audio.ndim not in (1, 2):
            raise AudioError(source, f"expected (N,), (N, C) or (B, N) audio, got {audio.shape}")
        batched = audio.ndim == 2 and audio.shape[0] < audio.shape[1]
        clips = list(audio) if batched else [to_mono(audio)]
        target_index = None if target is None else self.class_index(target)
        model_clips = []
        for index, clip in enumerate(clips):
            name = f"{source}[{index}]" if batched else source
            validate_audio(clip, name)
            if not np.any(clip):
                raise AudioError(name, "audio is silent (all zeros): nothing to explain")
            model_clips.append(resample(clip, sample_rate, self.sample_rate))
        results = self._explain_clips(model_clips, target_index, top_k)
        for result, clip in zip(results, clips, strict=True):
            for key in ("waveform", "removed"):
                back = resample(result[key], self.sample_rate, sample_rate)
                result[key] = fit_length(back, len(clip))
        if not batched:
            return Explanation(**results[0], sample_rate=sample_rate, **self._grid())
        stacked = {key: [result[key] for result in results] for key in results[0]}
        for key in ("waveform", "removed", "mask", "spectrogram"):
            stacked[key] = np.stack(stacked[key])
        return Explanation(**stacked, sample_rate=sample_rate, **self._grid())

    def explain_file(
        self, path: str | os.PathLike, target: int | str | None = None, top_k: int = 5
    ) -> Explanation:
        """Explain an audio file; the explanation keeps the file's rate and length.

        Raises:
            AudioError: missing, unreadable, empty, non-finite or silent audio.
        """
        audio, rate = load_audio_with_rate(path, sample_rate=None)
        return self.explain(audio, rate, target=target, top_k=top_k, source=path)

    def _grid(self) -> dict[str, int]:
        return {"model_sample_rate": self.sample_rate, "hop_length": self.hop_length}

    def _explain_clips(
        self, clips: list[np.ndarray], target: int | None, top_k: int
    ) -> list[dict[str, Any]]:
        """Clips (N_i,) at the model rate -> per-clip result fields (model-rate audio).

        Without ``target``, multi-window clips are first classified window by window to
        find the class of highest mean probability, which every window then explains; the
        explaining pass reuses those classifier outputs while they fit in a quarter of
        ``memory_budget``. With ``target``, each window is classified once, as explained.
        """
        states = [self._new_state(len(clip)) for clip in clips]
        all_jobs = [(c, k) for c, state in enumerate(states) for k in range(len(state.plan.starts))]
        long_jobs = [(c, k) for c, k in all_jobs if len(states[c].plan.starts) > 1]
        voted = set(long_jobs) if target is None else set()
        size = self.window_batch if len(all_jobs) > 1 else 1  # one window: nothing to size
        kept: dict[tuple[tuple[int, int], ...], ClassifierOutput] = {}
        room = self.memory_budget // 4
        with frozen(self.classifier), frozen(self.interpreter):
            for chunk in _chunks([job for job in long_jobs if job in voted], size):
                segments, _ = self._segments(clips, states, chunk)
                _, output = classify(self.classifier, segments)
                self._add_probabilities(states, chunk, output.probabilities)
                room -= sum(t.numel() * t.element_size() for t in (*output.hidden, output.logits))
                if room >= 0:
                    kept[tuple(chunk)] = output
            for state in states:
                if state.windows_seen:
                    state.target = int(state.probability_sum.argmax())
            for chunk in _chunks(all_jobs, size):
                output = kept.pop(tuple(chunk), None)
                self._explain_windows(clips, states, chunk, target, voted, output)
        return [self._finish(state, top_k) for state in states]

    def _budget_window_batch(self, most: int = 64) -> int:
        """Windows per batch within ``memory_budget``, from one window's peak activations
        (the largest layer's input + output, the columns of a fold layer, and ~10
        spectrogram-sized buffers: features, mask, masked spectra)."""
        device = self.extractor.window.device
        segment = torch.randn(1, self.window, generator=torch.Generator().manual_seed(0))
        spectrum_bytes = 0

        def explain_one() -> None:
            nonlocal spectrum_bytes
            features, output = classify(self.classifier, 0.1 * segment.to(device))
            spectrum_bytes = features.magnitude.numel() * features.magnitude.element_size()
            interpret(self.interpreter, features, output)

        modules = torch.nn.ModuleList([self.classifier, self.interpreter])
        with frozen(self.classifier), frozen(self.interpreter), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a sizing run: its warnings come again in use
            per_window = peak_activation_bytes(explain_one, modules) + COLUMN_BUDGET_BYTES
        per_window += 10 * spectrum_bytes
        return max(1, min(most, self.memory_budget // per_window))

    def _new_state(self, n_samples: int) -> _ClipState:
        plan = plan_windows(n_samples, self.window, self.hop_length, self.overlap)
        samples, frames = sample_weights(plan), frame_weights(plan)
        n_freqs = self.classifier.feature_config.n_freqs
        return _ClipState(
            plan=plan,
            explanation=OverlapAdd(plan.padded_samples, samples),
            removed=OverlapAdd(plan.padded_samples, samples),
            mask=OverlapAdd(plan.padded_frames, frames, (n_freqs,)),
            spectrogram=OverlapAdd(plan.padded_frames, frames, (n_freqs,)),
            probability_sum=torch.zeros(self.classifier.n_classes),
        )

    def _segments(
        self, clips: list[np.ndarray], states: list[_ClipState], jobs: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """(b, W) normalised windows of ``jobs`` and the (b,) scales that undo it."""
        segments = np.stack([states[c].plan.segment(clips[c], k) for c, k in jobs])
        if self.normalization == "peak":
            scales = np.abs(segments).max(axis=1)
        elif self.normalization == "signed_max":
            scales = segments.max(axis=1)
        else:
            scales = np.ones(len(segments), dtype=np.float32)
        scales = np.where(scales > 0, scales, 1.0).astype(np.float32)  # silent windows
        device = self.extractor.window.device
        segments = torch.from_numpy(segments / scales[:, None]).to(device)
        return segments, torch.from_numpy(scales).to(device)

    def _add_probabilities(
        self, states: list[_ClipState], jobs: list[tuple[int, int]], probabilities: Tensor
    ) -> None:
        for (c, _), row in zip(jobs, probabilities.cpu(), strict=True):
            states[c].probability_sum += row
            states[c].windows_seen += 1

    def _explain_windows(
        self,
        clips: list[np.ndarray],
        states: list[_ClipState],
        jobs: list[tuple[int, int]],
        target: int | None,
        voted: set[tuple[int, int]],
        output: ClassifierOutput | None,
    ) -> None:
        """Mask, synthesise and cross-fade one chunk of windows; ``output``: the
        classifier's on them, if kept; ``voted``: windows whose probabilities are counted."""
        segments, scales = self._segments(clips, states, jobs)
        if output is None:
            features, output = classify(self.classifier, segments)
        else:
            with torch.no_grad():
                features = self.extractor(segments)
        targets = output.prediction.clone()
        for row, (c, _) in enumerate(jobs):
            if states[c].target is not None:
                targets[row] = states[c].target
            elif target is not None:
                targets[row] = target
        if target is None and not self.interpreter.capabilities.any_target:
            targets = output.prediction  # it can explain only each window's own prediction
        explained = explain(self.classifier, self.interpreter, features, targets, output)
        kept = explained.waveform * scales[:, None]  # (b, W)
        removed = explained.removed * scales[:, None]
        mask = explained.mask  # (b, T_w, F)
        spectrogram = features.magnitude * scales[:, None, None]
        fresh = [row for row, job in enumerate(jobs) if job not in voted]
        self._add_probabilities(states, [jobs[row] for row in fresh], output.probabilities[fresh])
        for row, (c, k) in enumerate(jobs):
            state = states[c]
            if state.target is None:
                state.target = int(targets[row])
            start, offset = state.plan.starts[k], state.plan.frame_offset(k)
            state.explanation.add(start, kept[row].cpu().numpy())
            state.removed.add(start, removed[row].cpu().numpy())
            state.mask.add(offset, mask[row].cpu().numpy())
            state.spectrogram.add(offset, spectrogram[row].cpu().numpy())

    def _finish(self, state: _ClipState, top_k: int) -> dict[str, Any]:
        """Cross-faded outputs and the class summary of one clip (model-rate audio)."""
        assert state.windows_seen and state.target is not None
        mean = state.probability_sum / state.windows_seen  # (C,)
        plan = state.plan
        return {
            "waveform": state.explanation.result(plan.n_samples),
            "removed": state.removed.result(plan.n_samples),
            "mask": state.mask.result(plan.n_frames),
            "spectrogram": state.spectrogram.result(plan.n_frames),
            **class_summary(self.class_names, mean, top_k),
            "target": self.class_names[state.target],
        }


def _chunks(jobs: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]
