"""Long audio: wall time and peak memory of explaining a 10-minute file.

Generates a synthetic recording (tones, chirps and noise bursts at 16 kHz, written as a
WAV file), explains it with :meth:`Explainer.explain_file` and writes the CLI's outputs
(explanation audio, mask, picture). Peak RSS is this process's high-water mark,
measured after a 1-minute warm-up file and again after the long one: memory grows with
the output arrays (audio and the (T, F) mask), not with the windows' activations.

The default model is a narrow conv2d classifier with PIQ at the same width (random
weights: speed and memory do not depend on training), so the run takes minutes on 2
cores; ``--model DIR`` explains with a trained checkpoint folder instead.

The explainer takes the fast path and sizes its window batches from its memory budget
(:class:`Explainer` defaults); ``--dim 256`` is the reference width.

    python benchmarks/bench_long_audio.py [--minutes 10] [--dim 16] [--model DIR]
        [--threads N] [--warmup-minutes 1]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiointerp.interpreters.registry import build_interpreter
from audiointerp.longaudio import plan_windows
from audiointerp.models import ClassifierConfig, build_classifier
from audiointerp.outputs import save_explanation
from audiointerp.pipeline import Explainer

RATE = 16000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux's ``VmHWM`` where there is one: ``getrusage``'s maximum survives ``exec``, so a
    process started by a large one would report its parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def synthetic_recording(path: Path, minutes: float, seed: int = 0) -> Path:
    """A recording that changes every second: a tone, a chirp or a noise burst."""
    rng = np.random.default_rng(seed)
    seconds = int(minutes * 60)
    t = np.arange(RATE) / RATE
    pieces = []
    for _ in range(seconds):
        kind = rng.integers(3)
        if kind == 0:
            piece = np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        elif kind == 1:
            f0, f1 = rng.uniform(200, 6000, 2)
            piece = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2))
        else:
            piece = rng.standard_normal(RATE) * np.exp(-5 * t)
        pieces.append(rng.uniform(0.1, 0.5) * piece)
    sf.write(path, np.concatenate(pieces).astype(np.float32), RATE, subtype="PCM_16")
    return path


def default_explainer(dim: int) -> Explainer:
    """conv2d (width ``dim``, 50 classes) + PIQ of the same width, random weights."""
    torch.manual_seed(0)
    config = ClassifierConfig(dim=dim, lin_neurons=min(192, 4 * dim))
    classifier = build_classifier(config, [f"class{i}" for i in range(50)]).eval()
    interpreter = build_interpreter("piq", {"n_keys": 200}, classifier).eval()
    return Explainer(classifier, interpreter)


def explain(explainer: Explainer, path: Path, out: Path) -> tuple[float, float, float]:
    """(explain seconds, write seconds, peak RSS MiB after both)."""
    start = time.perf_counter()
    explanation = explainer.explain_file(path)
    explained = time.perf_counter()
    save_explanation(explanation, out / path.stem)
    written = time.perf_counter()
    assert explanation.waveform.shape == (sf.info(path).frames,)
    return explained - start, written - explained, peak_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dim", type=int, default=16, help="conv2d/PIQ width (reference 256)")
    parser.add_argument("--model", type=Path, help="a trained checkpoint folder instead")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--warmup-minutes", type=float, default=1.0, help="0: no warm-up file")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    explainer = Explainer.from_pretrained(args.model) if args.model else default_explainer(args.dim)
    print(
        f"model rate {explainer.sample_rate} Hz, window {explainer.window} samples, "
        f"memory budget {explainer.memory_budget / 2**20:.0f} MiB, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"peak RSS after loading: {peak_rss_mb():.0f} MiB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for minutes in [m for m in (args.warmup_minutes, args.minutes) if m > 0]:
            path = synthetic_recording(folder / f"synthetic_{minutes:g}min.wav", minutes)
            seconds, writing, peak = explain(explainer, path, folder / "out")
            n_windows = len(
                plan_windows(
                    sf.info(path).frames, explainer.window, explainer.hop_length, explainer.overlap
                ).starts
            )
            print(
                f"{minutes:g} min ({n_windows} windows, {explainer.window_batch} a batch): "
                f"explain {seconds:.1f} s ({seconds / minutes:.1f} s per audio minute, "
                f"{minutes * 60 / seconds:.1f}x real time), write outputs {writing:.1f} s, "
                f"peak RSS {peak:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
