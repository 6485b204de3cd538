"""L2I explanation speed (CPU or GPU), and theta's agreement with the classifier.

    python benchmarks/bench_l2i.py [--model results/l2i_demo/1234/model] [--data_folder DIR]
                                   [--batch 16] [--seconds 5] [--threads 1] [--device cuda]

Speed (a batch of clips, random audio): the whole explanation (STFT -> classifier -> psi
-> relevance -> mask -> iSTFT of the kept and removed parts) for the batch at once vs one
clip at a time, and the mask step alone (from the activations H) vectorised vs the
reference's per-sample loop (boolean component selection, W[:, L] H[L] / (W H + eps) per
clip). Without ``--model`` it uses a freshly initialised conv2d classifier and L2I at
``--width`` (speed only).

With ``--model`` (a trained L2I folder) it also prints theta's agreement with the
classifier's prediction on the test fold (the recipe's "L2I fidelity").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from audiointerp.data.esc50 import ESC50Dataset
from audiointerp.data.synthetic import ensure_synthetic
from audiointerp.explain import classify, explain
from audiointerp.interpreters.l2i import L2I
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import Classifier, ClassifierConfig, build_classifier
from audiointerp.pretrained import load_model


def loop_masks(interpreter: L2I, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference's interpret_computation_steps: one clip at a time, boolean selection."""
    templates = interpreter.nmf.templates  # (F, K)
    masks = []
    for h, target in zip(activations, targets, strict=True):  # h: (K, T)
        pooled = interpreter.theta.pool(h[None])[0]  # (K,)
        scores = interpreter.theta.class_weight[target] * pooled
        kept = scores / scores.abs().max() > interpreter.config.relevance_threshold
        masks.append(((templates[:, kept] @ h[kept]) / (templates @ h + 1e-10)).T)
    return torch.stack(masks)  # (B, T, F), as the reference batches its masks


def clips_per_second(run: Callable[[], object], n_clips: int, repeats: int) -> float:
    run()  # warm-up
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize()
    return n_clips * repeats / (time.perf_counter() - start)


def synchronize() -> None:
    """Wait for queued GPU work, so the timings cover it (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def speed(classifier: Classifier, interpreter: L2I, batch: int, seconds: float, repeats: int):
    rate = classifier.feature_config.sample_rate
    waveform = 0.1 * torch.randn(
        batch, int(seconds * rate), generator=torch.Generator().manual_seed(0)
    ).to(next(interpreter.parameters()).device)
    vectorised = clips_per_second(
        lambda: explain(classifier, interpreter, waveform).waveform, batch, repeats
    )
    per_clip = clips_per_second(
        lambda: [explain(classifier, interpreter, clip[None]).waveform for clip in waveform],
        batch,
        repeats,
    )
    features, out = classify(classifier, waveform)
    activations = interpreter.activations(out, features.magnitude.shape[1])
    targets = out.prediction
    threshold = interpreter.config.relevance_threshold

    def vectorised_mask() -> torch.Tensor:
        selected = interpreter.relevance(activations, targets) > threshold
        return interpreter.component_mask(activations, selected)

    mask_vectorised = clips_per_second(vectorised_mask, batch, repeats)
    mask_loop = clips_per_second(
        lambda: loop_masks(interpreter, activations, targets), batch, repeats
    )
    frames, bins = features.magnitude.shape[1:]
    where = waveform.device if waveform.is_cuda else f"{torch.get_num_threads()} thread(s)"
    print(f"{batch} clips of {seconds:g} s ({frames} x {bins}), {where}")
    print(f"whole explanation: batch {vectorised:.2f} clips/s, one clip at a time "
          f"{per_clip:.2f} clips/s ({vectorised / per_clip:.2f}x)")  # fmt: skip
    print(f"mask step from H:  vectorised {mask_vectorised:.1f} clips/s, per-sample loop "
          f"{mask_loop:.1f} clips/s ({mask_vectorised / mask_loop:.2f}x)")  # fmt: skip


@torch.no_grad()
def theta_agreement(model: str, data_folder: str, test_folds: list[int], batch: int) -> None:
    loaded = load_model(model)
    classifier, interpreter = loaded.classifier, loaded.interpreter
    assert isinstance(interpreter, L2I), f"{model} holds no L2I interpreter"
    test_set = ESC50Dataset(data_folder, test_folds, classifier.feature_config.sample_rate,
                            class_names=classifier.class_names)  # fmt: skip
    agree = total = 0
    for waveform, _, _ in DataLoader(test_set, batch_size=batch):
        features, out = classify(classifier, waveform)
        activations = interpreter.activations(out, features.magnitude.shape[1])
        agree += int((interpreter.theta(activations).argmax(-1) == out.prediction).sum())
        total += len(waveform)
    print(f"theta agrees with the classifier on {agree}/{total} test clips "
          f"({100 * agree / total:.1f}%)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a trained L2I folder (model/)")
    parser.add_argument("--data_folder", default="", help="'' = the embedded synthetic set")
    parser.add_argument("--test_folds", type=int, nargs="+", default=[5])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=16, help="psi and encoder width (no --model)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the speed part)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        loaded = load_model(args.model)
        classifier, interpreter = loaded.classifier, loaded.interpreter
    else:
        torch.manual_seed(0)
        config = ClassifierConfig(name="conv2d", dim=args.width, lin_neurons=32)
        classifier = build_classifier(config, [f"class{i}" for i in range(10)]).eval()
        interpreter = build_interpreter("l2i", {"width": args.width}, classifier).eval()
    speed(classifier.to(args.device), interpreter.to(args.device), args.batch, args.seconds,
          args.repeats)  # fmt: skip
    if args.model:
        data_folder = args.data_folder or str(ensure_synthetic())
        theta_agreement(args.model, data_folder, args.test_folds, args.batch)


if __name__ == "__main__":
    main()
