"""The inference API: audio in, the sound that made the classifier decide out.

>>> explainer = Explainer.from_pretrained("runs/piq")          # doctest: +SKIP
>>> result = explainer.explain_file("dog_and_rain.wav")         # doctest: +SKIP
>>> result.predicted, result.probability, result.waveform.shape  # doctest: +SKIP

Any length, rate and channel count is accepted. Audio is mixed to mono, resampled to the
model's rate and cut into windows of the classifier's training clip length (see
:mod:`audiointerp.longaudio`); each window is peak-normalised as the training clips were,
classified, masked by the interpreter and synthesised with its own phase; the windows'
masks and audio are cross-faded, and the audio is resampled back to the input's rate and
length.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from audiointerp.checkpoints import (
    CONFIG_FILE,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    check_keys,
    load_checkpoint,
)
from audiointerp.config import load_yaml
from audiointerp.errors import TargetError
from audiointerp.features import apply_mask
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.io import (
    AudioError,
    atomic_write,
    find_audio_files,
    load_audio_with_rate,
    resample,
    save_audio,
    to_mono,
    validate_audio,
    write_bytes_atomic,
)
from audiointerp.longaudio import (
    OverlapAdd,
    WindowPlan,
    frame_weights,
    plan_windows,
    sample_weights,
)
from audiointerp.models import Classifier, load_classifier

Normalization = Literal["peak", "signed_max", "none"]
INTERPRETER_PREFIX = "interpreter"


@dataclass
class Explanation:
    """What :meth:`Explainer.explain` returns, for one clip or a batch of B clips.

    Attributes:
        waveform: explanation audio (mask-in), (N,) or (B, N), at ``sample_rate`` and
            exactly the input's length.
        removed: mask-out audio (what the explanation left out), same shape.
        mask: (T, F) or (B, T, F) in [0, 1] on the model's STFT grid
            (``model_sample_rate``, ``hop_length``); cross-faded over windows.
        spectrogram: the input's linear magnitude on the same grid (for plotting).
        predicted: predicted class name (a list for a batch); for audio longer than one
            window, the class with the highest mean probability over windows.
        predicted_index: its index (a list for a batch).
        probability: its (mean) probability (a list for a batch).
        top_k: ``[(name, probability), ...]``, best first (a list of lists for a batch).
        target: the class the mask explains (``predicted`` unless a target was given).
        sample_rate: rate of ``waveform`` and ``removed`` (the input's rate).
        model_sample_rate: rate of the mask's STFT grid.
        hop_length: samples per mask frame at ``model_sample_rate``.
    """

    waveform: np.ndarray
    removed: np.ndarray
    mask: np.ndarray
    spectrogram: np.ndarray
    predicted: str | list[str]
    predicted_index: int | list[int]
    probability: float | list[float]
    top_k: list[tuple[str, float]] | list[list[tuple[str, float]]]
    target: str | list[str]
    sample_rate: int
    model_sample_rate: int
    hop_length: int


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


@dataclass
class FileResult:
    """The outcome of explaining one file: its explanation and outputs, or an error."""

    path: Path
    explanation: Explanation | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready mapping."""
        if self.explanation is None:
            return {"file": str(self.path), "error": self.error}
        result = self.explanation
        return {
            "file": str(self.path),
            "predicted": result.predicted,
            "probability": result.probability,
            "target": result.target,
            "top_k": [[name, probability] for name, probability in result.top_k],
            "outputs": {kind: str(path) for kind, path in self.outputs.items()},
        }


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
            length of the audio; 1 suits reference-width models (PIQ's decoder holds
            several 256 x 408 x 504 maps per window).
    """

    def __init__(
        self,
        classifier: Classifier,
        interpreter: Interpreter,
        window_seconds: float = 5.0,
        overlap: float = 0.5,
        normalization: Normalization = "peak",
        window_batch: int = 1,
    ):
        assert window_seconds > 0 and window_batch > 0, (window_seconds, window_batch)
        assert normalization in ("peak", "signed_max", "none"), normalization
        self.classifier = classifier
        self.interpreter = interpreter
        self.extractor = classifier.feature_extractor
        self.sample_rate = classifier.feature_config.sample_rate
        self.hop_length = classifier.feature_config.hop_length
        self.window = round(window_seconds * self.sample_rate)
        self.overlap = overlap
        self.normalization = normalization
        self.window_batch = window_batch

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> Explainer:
        """Load an interpreter checkpoint folder, or a run folder holding one in ``model/``.

        The classifier and interpreter come back in eval mode with gradients off. The
        training clip length and normalisation (the recipe's ``duration_s`` and
        ``normalization``) come from meta.json, else from the run's config.yaml (the parent
        of ``model/``), else 5 s and "peak"; ``kwargs`` override them.

        Raises:
            CheckpointError: not such a folder, no interpreter in it, or mismatched weights.
        """
        folder = _checkpoint_folder(Path(path))
        classifier, _ = load_classifier(folder)
        checkpoint = load_checkpoint(folder)
        section = checkpoint.config.get(INTERPRETER_PREFIX)
        if not isinstance(section, dict) or "name" not in section:
            raise CheckpointError(
                f"{folder}: holds no interpreter (config.yaml has no '{INTERPRETER_PREFIX}' "
                "section with a name); explaining needs an interpreter checkpoint"
            )
        config = {key: value for key, value in section.items() if key != "name"}
        try:
            interpreter = build_interpreter(str(section["name"]), config, classifier)
        except ValueError as error:
            raise CheckpointError(f"{folder}: config.yaml: {error}") from error
        state = checkpoint.state_dict(INTERPRETER_PREFIX)
        expected = {key: value.shape for key, value in interpreter.state_dict().items()}
        check_keys(f"{folder} ({INTERPRETER_PREFIX}.*)", state, expected)
        interpreter.load_state_dict(state, strict=True)
        for module in (classifier, interpreter):
            module.eval().requires_grad_(False)
        recipe = _training_settings(folder, checkpoint.meta)
        defaults = {
            "window_seconds": float(recipe.get("duration_s", 5.0)),
            "normalization": recipe.get("normalization", "peak"),
        }
        return cls(classifier, interpreter, **{**defaults, **kwargs})

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
                result[key] = _fit_length(back, len(clip))
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

        Multi-window clips are first classified window by window to find the class of
        highest mean probability, which every window then explains (unless ``target``).
        """
        states = [self._new_state(len(clip)) for clip in clips]
        all_jobs = [(c, k) for c, state in enumerate(states) for k in range(len(state.plan.starts))]
        long_jobs = [(c, k) for c, k in all_jobs if len(states[c].plan.starts) > 1]
        with _frozen(self.classifier, self.interpreter), torch.no_grad():
            for chunk in _chunks(long_jobs, self.window_batch):
                segments, _ = self._segments(clips, states, chunk)
                probabilities = self.classifier(self.extractor(segments).magnitude).probabilities
                self._add_probabilities(states, chunk, probabilities)
            for state in states:
                if state.windows_seen:
                    state.target = int(state.probability_sum.argmax()) if target is None else target
            for chunk in _chunks(all_jobs, self.window_batch):
                self._explain_windows(clips, states, chunk, target)
        return [self._finish(state, top_k) for state in states]

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
    ) -> None:
        """Mask, synthesise and cross-fade one chunk of windows."""
        segments, scales = self._segments(clips, states, jobs)
        features = self.extractor(segments)
        output = self.classifier(features.magnitude)
        targets = output.prediction.clone()
        for row, (c, _) in enumerate(jobs):
            if states[c].target is not None:
                targets[row] = states[c].target
            elif target is not None:
                targets[row] = target
        if target is None and not self.interpreter.capabilities.any_target:
            targets = output.prediction  # it can explain only each window's own prediction
        with torch.set_grad_enabled(self.interpreter.capabilities.needs_gradients):
            mask = self.interpreter(features, output, targets).detach()  # (b, T_w, F)
        assert mask.shape == features.magnitude.shape, (mask.shape, features.magnitude.shape)
        domain = self.interpreter.mask_domain
        magnitude = features.magnitude
        kept = self.extractor.synthesize(apply_mask(mask, magnitude, domain), features)
        removed = self.extractor.synthesize(apply_mask(1 - mask, magnitude, domain), features)
        kept, removed = kept * scales[:, None], removed * scales[:, None]  # (b, W)
        spectrogram = magnitude * scales[:, None, None]
        single = [row for row, (c, _) in enumerate(jobs) if len(states[c].plan.starts) == 1]
        self._add_probabilities(states, [jobs[row] for row in single], output.probabilities[single])
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
        best = mean.argsort(descending=True)[: max(1, top_k)]
        predicted = int(best[0])
        plan = state.plan
        return {
            "waveform": state.explanation.result(plan.n_samples),
            "removed": state.removed.result(plan.n_samples),
            "mask": state.mask.result(plan.n_frames),
            "spectrogram": state.spectrogram.result(plan.n_frames),
            "predicted": self.class_names[predicted],
            "predicted_index": predicted,
            "probability": float(mean[predicted]),
            "top_k": [(self.class_names[int(i)], float(mean[i])) for i in best],
            "target": self.class_names[state.target],
        }


def _checkpoint_folder(path: Path) -> Path:
    """``path`` itself when it is a checkpoint folder, else its ``model/`` (a run folder)."""
    for folder in (path, path / "model"):
        if all((folder / name).is_file() for name in (WEIGHTS_FILE, CONFIG_FILE, META_FILE)):
            return folder
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such model folder")
    raise CheckpointError(
        f"{path}: not a model checkpoint folder ({WEIGHTS_FILE}, {CONFIG_FILE}, {META_FILE}) "
        "nor a run folder with one in model/"
    )


def _training_settings(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``duration_s``/``normalization`` of training: meta.json, else the run's config.yaml."""
    run_config = folder.parent / CONFIG_FILE
    if folder.name == "model" and run_config.is_file():
        return {**load_yaml(run_config), **meta}
    return meta


class _frozen:
    """Context: modules in eval mode, their previous train/eval flags restored on exit."""

    def __init__(self, *modules: nn.Module):
        self.modules = modules
        self.flags: list[list[bool]] = []

    def __enter__(self) -> None:
        self.flags = [[m.training for m in module.modules()] for module in self.modules]
        for module in self.modules:
            module.eval()

    def __exit__(self, *exc: object) -> None:
        for module, flags in zip(self.modules, self.flags, strict=True):
            for submodule, flag in zip(module.modules(), flags, strict=True):
                submodule.training = flag


def _chunks(jobs: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop or zero-pad the end of (N,) audio to ``n_samples`` (resampling rounds)."""
    if len(audio) >= n_samples:
        return audio[:n_samples]
    return np.pad(audio, (0, n_samples - len(audio)))


# ------------------------------------------------------------------ files in, files out


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """``(audio file, output stem relative to --out)`` for files and folders (recursive).

    A folder's files keep their sub-folders (a mirrored layout); a file's stem is its name
    without the extension. A path that does not exist is returned as itself, so explaining
    it reports the error for that input alone.
    """
    pairs = []
    for item in map(Path, inputs):
        if item.is_dir():
            for file in find_audio_files(item):
                relative = file.relative_to(item)
                pairs.append((file, relative.parent / relative.stem))
        else:
            pairs.append((item, Path(item.stem)))
    return pairs


def explain_to_files(
    explainer: Explainer,
    path: Path,
    stem: Path,
    target: int | str | None = None,
    top_k: int = 5,
) -> FileResult:
    """Explain one file and write ``<stem>.explanation.wav``, ``.mask.npy`` and ``.png``.

    Audio problems (unreadable, empty, NaN, silent...) are returned as the result's
    ``error`` instead of raised, so a caller looping over files can go on.
    """
    try:
        explanation = explainer.explain_file(path, target=target, top_k=top_k)
    except AudioError as error:
        return FileResult(path, error=str(error))
    return FileResult(path, explanation, save_explanation(explanation, stem))


def save_explanation(explanation: Explanation, stem: str | os.PathLike) -> dict[str, Path]:
    """Write one clip's explanation audio, mask and picture next to ``stem`` (atomically)."""
    assert explanation.mask.ndim == 2, "save one clip at a time"
    stem = Path(stem)
    audio_path = stem.with_name(stem.name + ".explanation.wav")
    mask_path = stem.with_name(stem.name + ".mask.npy")
    picture_path = stem.with_name(stem.name + ".png")
    save_audio(audio_path, explanation.waveform, explanation.sample_rate)
    with atomic_write(mask_path) as partial:  # np.save straight to disk: no in-memory copy
        with open(partial, "wb") as handle:
            np.save(handle, explanation.mask.astype(np.float32, copy=False))
    write_bytes_atomic(picture_path, plot_explanation(explanation))
    return {"audio": audio_path, "mask": mask_path, "picture": picture_path}


def plot_explanation(explanation: Explanation, max_columns: int = 2000) -> bytes:
    """PNG of the input's log spectrogram, the mask and the masked spectrogram.

    Long recordings are decimated in time to at most ``max_columns`` frames for the
    picture only. Uses matplotlib's Agg canvas directly (no pyplot, no global backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    step = max(1, -(-len(explanation.mask) // max_columns))
    mask = explanation.mask[::step]
    log_magnitude = np.log1p(explanation.spectrogram[::step])
    seconds = len(explanation.mask) * explanation.hop_length / explanation.model_sample_rate
    extent = (0.0, seconds, 0.0, explanation.model_sample_rate / 2000.0)
    figure = Figure(figsize=(9, 7))
    FigureCanvasAgg(figure)
    top = float(log_magnitude.max())
    panels = (  # (title, image (T, F), colour map, largest value shown)
        ("input log1p|X|", log_magnitude, "magma", top),
        (f"mask for '{explanation.target}'", mask, "viridis", 1.0),
        ("explanation: mask x log1p|X|", mask * log_magnitude, "magma", top),
    )
    axes = figure.subplots(3, 1, sharex=True)
    for axis, (title, image, cmap, vmax) in zip(axes, panels, strict=True):
        axis.imshow(
            image.T, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=0, vmax=vmax
        )
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    figure.suptitle(f"predicted {explanation.predicted} (p = {explanation.probability:.2f})")
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.91, hspace=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
