"""Classifier speed on CPU: train samples/s and inference clips/s at batch 1 and 16.

Inputs are 5-s clips at the reference settings (431 x 513 linear magnitude); a train step
is forward + cross-entropy + backward + Adam. Defaults are narrow widths so the run takes
under a minute on 2 cores; ``--dim 256 --cnn14-width 1`` measures the reference sizes.

    python benchmarks/bench_classifiers.py [--dim 32] [--cnn14-width 0.25] [--batches 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.models import Classifier, ClassifierConfig, build_classifier

FRAMES, BINS, N_CLASSES = 431, 513, 50


def multiply_adds(classifier: Classifier, magnitude: Tensor) -> int:
    """Multiply-adds of one forward pass on ``magnitude`` (conv and linear layers)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in classifier.modules()]
    try:
        with torch.no_grad():
            classifier.eval()(magnitude)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def rate(step, batch: int, batches: int) -> float:
    """Items per second of ``step()`` over ``batches`` calls, after one warm-up call."""
    step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batch * batches / (time.perf_counter() - start)


def bench(config: ClassifierConfig, batch: int, batches: int) -> tuple[float | None, float]:
    """(train samples/s or None where BatchNorm1d cannot train on one example, clips/s)."""
    torch.manual_seed(0)
    classifier = build_classifier(config, [f"c{i}" for i in range(N_CLASSES)])
    magnitude = torch.rand(batch, FRAMES, BINS) * 3
    labels = torch.randint(0, N_CLASSES, (batch,))
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(classifier(magnitude).logits, labels).backward()
        optimizer.step()

    @torch.no_grad()
    def infer_step() -> None:
        classifier(magnitude)

    train = None
    if batch > 1 or config.name != "conv2d":  # the cosine head's BatchNorm1d needs batch > 1
        classifier.train()
        train = rate(train_step, batch, batches)
    classifier.eval()
    return train, rate(infer_step, batch, batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=32, help="conv2d channels (reference 256)")
    parser.add_argument("--cnn14-width", type=float, default=0.25, help="reference = 1.0")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per figure")
    args = parser.parse_args()

    configs = {
        f"conv2d dim {args.dim}": ClassifierConfig(name="conv2d", dim=args.dim),
        f"cnn14 width {args.cnn14_width:g}": ClassifierConfig(
            name="cnn14", cnn14_width=args.cnn14_width
        ),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 5-s clips (431x513)")
    for name, config in configs.items():
        classifier = build_classifier(config, [f"c{i}" for i in range(N_CLASSES)])
        params = sum(p.numel() for p in classifier.parameters())
        macs = multiply_adds(classifier, torch.rand(1, FRAMES, BINS))
        print(f"{name}: {params:,} parameters, {macs / 1e9:.2f} G multiply-adds per clip")
        for batch in (1, 16):
            train, infer = bench(config, batch, args.batches)
            train_text = f"{train:7.2f}" if train is not None else "    n/a"
            print(
                f"  batch {batch:2d}: train {train_text} samples/s   inference {infer:7.2f} clips/s"
            )


if __name__ == "__main__":
    main()
