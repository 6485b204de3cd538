"""Explanation throughput on CPU (clips/s) at batch 1 and 16, for every registered interpreter.

One explanation is the whole path a user waits for (:func:`audiointerp.explain.explain`):
waveform -> STFT -> frozen conv2d classifier -> interpreter mask -> masked magnitudes ->
iSTFT of the kept and the removed part, on 5-s clips (431 x 513).
Every method in ``INTERPRETERS`` that can be built for a conv2d classifier of the given
width with its default settings is timed (randomly initialised weights: speed does not
depend on training); the others are listed with the reason. "classifier only" is the
floor every method pays. To keep the default run to a minute or two on 2 cores, batch 16
is skipped ("-") for a method whose batch-1 rate predicts more than ``--max-seconds``;
``--max-seconds 0`` times everything, ``--dim 256`` measures the reference width.

    python benchmarks/bench_interpreters.py [--dim 16] [--batches 1] [--only piq,l2i]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

import audiointerp.interpreters  # noqa: F401  (registers every interpreter)
from audiointerp.checkpoints import CheckpointError
from audiointerp.config import ConfigError
from audiointerp.explain import classify, explain
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.models import ClassifierConfig, build_classifier

SAMPLES, N_CLASSES = 80000, 50  # 5 s at 16 kHz -> 431 frames


def clips_per_second(step: Callable[[Tensor], Tensor], batch: int, batches: int) -> float:
    """Clips/s of ``step`` on (batch, 5 s) noise over ``batches`` calls, after a warm-up."""
    waveform = torch.randn(batch, SAMPLES) * 0.1
    step(waveform[:1])
    start = time.perf_counter()
    for _ in range(batches):
        step(waveform)
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=16, help="conv2d classifier width (ref. 256)")
    parser.add_argument("--batches", type=int, default=1, help="timed batches per figure")
    parser.add_argument("--only", default="", help="comma-separated interpreter names")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="0: no limit")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ClassifierConfig(name="conv2d", dim=args.dim)
    classifier = build_classifier(config, [f"c{i}" for i in range(N_CLASSES)]).eval()
    classifier.requires_grad_(False)
    names = [n for n in args.only.split(",") if n] or sorted(INTERPRETERS)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, conv2d dim {args.dim}, "
        "5-s clips (431x513), clips/s of the whole explanation (STFT ... kept and removed iSTFT)"
    )
    print(f"{'method':>20}  {'parameters':>10}  {'batch 1':>8}  {'batch 16':>8}")
    rows: list[tuple[str, Interpreter | None]] = [("classifier only", None)]
    for name in names:
        try:
            rows.append((name, build_interpreter(name, {}, classifier).eval()))
        except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as error:
            print(f"{name:>20}  skipped: {str(error).splitlines()[0]}")
    for name, interpreter in rows:
        params = sum(p.numel() for p in interpreter.parameters()) if interpreter else 0

        def step(waveform: Tensor, interpreter: Interpreter | None = interpreter) -> Tensor:
            if interpreter is None:
                return classify(classifier, waveform)[1].logits
            return explain(classifier, interpreter, waveform).waveform

        single = clips_per_second(step, 1, args.batches)
        slow = args.max_seconds > 0 and 16 * args.batches / single > args.max_seconds
        batched = "       -" if slow else f"{clips_per_second(step, 16, args.batches):8.2f}"
        print(f"{name:>20}  {params:>10,}  {single:8.2f}  {batched}")


if __name__ == "__main__":
    main()
