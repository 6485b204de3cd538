"""Explanation speed: the fast inference path against the plain one, same run, same clips.

For PIQ, L2I and L-MAC on the conv2d classifier, at the reference width (the recipes'
``piq.yaml``, ``l2i_conv2dclassifier.yaml``, ``lmac_conv2d.yaml`` on ``conv2d.yaml``: 5-s
clips, 431 x 513) and at the demo width (``*_demo.yaml`` on ``conv2d_demo.yaml``), prints
clips/s of :meth:`Explainer.explain` with ``fast=False`` (the stock PyTorch layers, what
the reference runs) and ``fast=True`` (:func:`audiointerp.models.fast.fast_copy`), their
ratio (of wall time, and of this process's CPU time), each the best of ``--clips``
timings with the two paths taking turns (steadiest on a shared machine), at 1 and 2
threads, and the SNR of the fast explanation audio against the plain one. Weights are
random (speed does not depend on training; BatchNorm statistics are randomised so that
folding them is exercised). Then the training samples/s of PIQ and L-MAC at the demo
width, and the peak RSS and time per audio minute of a long file at the reference width
(``bench_long_audio.py`` in a subprocess, so the RSS is its own).

    python benchmarks/bench_inference.py [--quick] [--clips 3] [--threads 1,2]
        [--device cpu] [--long-minutes 10] [--widths reference,demo] [--methods piq,l2i,lmac]
        [--no-training]

The full run takes ~9 minutes on 2 cores (the 10-minute file ~5 of them); ``--quick``
(demo width, 1 clip, 1 thread, a 1-minute file) about one.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiointerp.config import from_dict, load_hparams
from audiointerp.data.mixtures import MixingConfig
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import Classifier, ClassifierConfig, build_classifier
from audiointerp.pipeline import Explainer, Explanation
from audiointerp.training.tasks import InterpreterTask

HPARAMS = Path(__file__).resolve().parents[1] / "recipes" / "esc50" / "hparams"
WIDTHS = {  # width -> (classifier hparams, classes, {method: interpreter hparams})
    "reference": (
        "conv2d.yaml",
        50,
        {"piq": "piq.yaml", "l2i": "l2i_conv2dclassifier.yaml", "lmac": "lmac_conv2d.yaml"},
    ),
    "demo": (
        "conv2d_demo.yaml",
        10,
        {"piq": "piq_demo.yaml", "l2i": "l2i_demo.yaml", "lmac": "lmac_demo.yaml"},
    ),
}


def randomise_batch_norms(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters (trained-like BatchNorms)."""
    generator = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            size = norm.num_features
            norm.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
            norm.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            if norm.affine:
                norm.weight.data.copy_(1.0 + 0.1 * torch.randn(size, generator=generator))
                norm.bias.data.copy_(0.1 * torch.randn(size, generator=generator))


def build(width: str, method: str, device: str) -> tuple[Classifier, nn.Module, dict]:
    """Classifier and interpreter of ``method`` at ``width``, and the recipe's hparams."""
    classifier_file, n_classes, methods = WIDTHS[width]
    torch.manual_seed(0)
    config = from_dict(ClassifierConfig, load_hparams(HPARAMS / classifier_file)["classifier"])
    classifier = build_classifier(config, [f"class{i}" for i in range(n_classes)])
    hparams = load_hparams(HPARAMS / methods[method])
    section = {k: v for k, v in hparams["interpreter"].items() if k not in ("name",)}
    interpreter = build_interpreter(method, section, classifier)
    for module in (classifier, interpreter):
        randomise_batch_norms(module)
        module.to(device).eval().requires_grad_(False)
    return classifier, interpreter, hparams


def test_clip(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Tones, a chirp and decaying noise bursts: a clip with structure to mask."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(rate * seconds)) / rate
    clip = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (300 * t + 400 * t**2))
    clip += 0.1 * rng.standard_normal(len(t)) * np.exp(-3 * (t % 1.0))
    return clip.astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|reference|^2 / |reference - estimate|^2); inf when they are equal."""
    error = float(np.sum((reference - estimate) ** 2))
    return math.inf if error == 0 else 10 * math.log10(float(np.sum(reference**2)) / error)


def best_rates(
    explainers: dict[str, Explainer], clip: np.ndarray, rate: int, repeats: int
) -> dict[str, tuple[float, float, Explanation]]:
    """Per explainer: (clips/s of wall time, clips per CPU second of this process, the last
    explanation), each the best of ``repeats`` single-clip timings after a warm-up clip.
    The explainers take turns, so load from other processes hits them alike; the best
    (least disturbed) timing is the steadiest figure on a shared machine."""
    best = {kind: (math.inf, math.inf) for kind in explainers}
    results = {kind: explainer.explain(clip, rate) for kind, explainer in explainers.items()}
    for _ in range(repeats):
        for kind, explainer in explainers.items():
            start, cpu = time.perf_counter(), time.process_time()
            results[kind] = explainer.explain(clip, rate)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            best[kind] = (min(best[kind][0], wall), min(best[kind][1], cpu))
    return {kind: (1 / best[kind][0], 1 / best[kind][1], results[kind]) for kind in explainers}


def bench_explain(
    widths: list[str], methods: list[str], threads: list[int], clips: int, device: str
) -> None:
    print(f"\nexplanation of a 5-s clip (Explainer.explain, batch 1), best of {clips} clips each")
    header = ("width", 9), ("method", 6), ("threads", 7), ("plain", 8), ("fast", 8)
    ratios = f"{'ratio':>6} {'SNR':>7} {'CPU ratio':>9}"
    print(" ".join(f"{name:>{size}}" for name, size in header), ratios)
    for width in widths:
        for method in methods:
            classifier, interpreter, hparams = build(width, method, device)
            seconds = float(hparams.get("duration_s", 5.0))
            rate = classifier.feature_config.sample_rate
            clip = test_clip(rate, seconds)
            explainers = {
                kind: Explainer(
                    classifier, interpreter, window_seconds=seconds, fast=kind == "fast"
                )
                for kind in ("plain", "fast")
            }
            for count in threads:
                torch.set_num_threads(count)
                measured = best_rates(explainers, clip, rate, clips)
                speed, cpu, result = ({k: v[i] for k, v in measured.items()} for i in range(3))
                snr = snr_db(result["plain"].waveform, result["fast"].waveform)
                print(
                    f"{width:>9} {method:>6} {count:>7} {speed['plain']:>8.3f} "
                    f"{speed['fast']:>8.3f} {speed['fast'] / speed['plain']:>5.2f}x "
                    f"{snr:>5.1f}dB {cpu['fast'] / cpu['plain']:>8.2f}x",
                    flush=True,
                )


def bench_training(threads: int, steps: int, batch: int) -> None:
    """Samples/s of InterpreterTask training steps (forward, backward, Adam) at demo width."""
    torch.set_num_threads(threads)
    print(f"\ntraining at the demo width, batch {batch}, {steps} timed steps, {threads} threads")
    for method in ("piq", "lmac"):
        classifier, interpreter, hparams = build("demo", method, "cpu")
        interpreter.train().requires_grad_(True)
        mixing = from_dict(MixingConfig, hparams.get("mixing", {}))
        task = InterpreterTask(interpreter, classifier, ClassifierConfig(), mixing=mixing)
        optimizer = torch.optim.Adam(interpreter.parameters(), lr=1e-4)
        rate = classifier.feature_config.sample_rate
        generator = torch.Generator().manual_seed(0)
        samples = round(rate * float(hparams.get("duration_s", 5.0)))
        waveform = 0.1 * torch.randn(batch, samples, generator=generator)
        labels = torch.arange(batch) % classifier.n_classes
        for step in range(steps + 1):
            if step == 1:
                start = time.perf_counter()
            optimizer.zero_grad()
            task.training_step((waveform, labels, [""] * batch))["loss"].backward()
            optimizer.step()
        rate_s = steps * batch / (time.perf_counter() - start)
        print(f"{method:>6}: {rate_s:.1f} samples/s (mixing prob {mixing.prob:g})", flush=True)
    print("(training steps run no classifier pass that only feeds a metric: nothing to remove)")


def bench_long(minutes: float, dim: int, threads: int) -> None:
    """The long-audio benchmark in its own process (its peak RSS is the explanation's)."""
    script = Path(__file__).with_name("bench_long_audio.py")
    command = [sys.executable, str(script), "--minutes", f"{minutes:g}", "--dim", str(dim)]
    command += ["--threads", str(threads), "--warmup-minutes", "0"]
    print(f"\nlong audio: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo width, 1 clip, 1 thread")
    parser.add_argument("--clips", type=int, default=3, help="timed clips per figure (best)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="0: skip")
    parser.add_argument("--widths", default="reference,demo", help="comma-separated widths")
    parser.add_argument("--methods", default="piq,l2i,lmac", help="comma-separated methods")
    parser.add_argument("--no-training", action="store_true", help="skip the training figures")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    widths = ["demo"] if args.quick else args.widths.split(",")
    threads = [1] if args.quick else [int(t) for t in args.threads.split(",")]
    clips = 1 if args.quick else args.clips
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} cores")
    bench_explain(widths, args.methods.split(","), threads, clips, args.device)
    if not args.no_training:
        with torch.enable_grad():
            bench_training(max(threads), 2 if args.quick else 5, 8)
    if args.long_minutes > 0:
        minutes = 1.0 if args.quick else args.long_minutes
        bench_long(minutes, 16 if args.quick else 256, max(threads))


if __name__ == "__main__":
    main()
