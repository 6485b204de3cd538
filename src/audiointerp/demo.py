"""The main job on the embedded default (``make demo`` / ``audiointerp demo``).

Synthetic ESC-50-layout set -> two-class mixtures -> conv2d classifier -> NMF dictionary
-> L2I, PIQ and L-MAC -> evaluation (faithfulness, SI-SNRi on mixtures, sanity check) -> HTML
report; the CLI then explains a few mixtures with ``audiointerp interpret``. Each stage
writes a run folder under ``out``; a finished stage (its ``metrics.json`` exists) is
reused on the next run, an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audiointerp.config import PACKAGED
from audiointerp.data.mixtures import make_mixtures
from audiointerp.data.synthetic import ensure_synthetic, summarize
from audiointerp.evaluation import EvalConfig, evaluate, format_table
from audiointerp.report.html import build_report
from audiointerp.training.recipes.entry import train

HPARAMS = PACKAGED  # the demo's configs ship with the package (no source checkout needed)


class DemoError(RuntimeError):
    """A demo stage failed; its own error line was already printed."""


def _stage(title: str, folder: Path, run: Callable[[], int]) -> None:
    """Run one stage unless its run folder already holds finished results."""
    if (folder / "metrics.json").is_file():
        print(f"== {title}: reusing {folder} (delete it to retrain)")
        return
    print(f"== {title} -> {folder}")
    start = time.perf_counter()
    status = run()
    if status != 0:
        raise DemoError(f"{title} failed (exit status {status})")
    print(f"   done in {time.perf_counter() - start:.0f} s")


@dataclass
class DemoResult:
    """Where the demo put things; the CLI explains ``mixtures`` with ``model``."""

    out: Path
    report: Path
    evaluation: Path
    model: Path
    mixtures: list[Path]
    seconds: float


def run_demo(out: Path, data_folder: Path | None = None, n_explained: int = 3) -> DemoResult:
    """Run every training/evaluation stage into ``out``.

    Args:
        out: the demo's folder (``runs/demo`` from ``make demo``).
        data_folder: an ESC-50-layout folder; None = the embedded synthetic set.
        n_explained: mixtures explained with the ``interpret`` CLI at the end.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data_folder) if data_folder else ensure_synthetic()
    print(summarize(data))
    mixtures = out / "mixtures"
    manifest = mixtures / "mixtures.csv"
    if not manifest.is_file():
        make_mixtures(data, mixtures, folds=(5,), n_mixtures=16, snrs_db=(0.0,), seed=0)
    print(f"== mixtures: {manifest}")

    def run(hparams: str, folder: Path, *extra: str) -> Callable[[], int]:
        argv = [str(HPARAMS / hparams), f"--data_folder={data}", f"--output_folder={folder}"]
        return lambda: train([*argv, *extra])

    classifier = out / "conv2d"
    _stage("conv2d classifier", classifier, run("conv2d_demo.yaml", classifier))
    nmf = out / "nmf"
    _stage("NMF dictionary", nmf, run("nmf_demo.yaml", nmf))
    models = []
    for method, extra in (
        ("l2i", [f"--interpreter.nmf_folder={nmf / 'model'}"]),
        ("piq", []),
        ("lmac", []),
    ):
        folder = out / method
        hparams = f"{method}_demo.yaml"
        classifier_model = f"--classifier_folder={classifier / 'model'}"
        _stage(f"{method.upper()} interpreter", folder,
               run(hparams, folder, classifier_model, *extra))  # fmt: skip
        models.append(folder / "model")

    print("== evaluation (faithfulness, SI-SNRi on mixtures, sanity check)")
    evaluation = out / "evaluation"
    # the fast gradient baselines and the random/all-ones bounds on the same table
    # (integrated gradients and occlusion run at ~0.1 clips/s: `audiointerp eval --methods`)
    config = EvalConfig(methods=("saliency", "gradcam", "random", "ones"))
    evaluate(models, data, mixtures=manifest, out=evaluation, config=config)
    report = build_report(evaluation)
    inputs = sorted((mixtures / "mixtures").glob("*.wav"))[:n_explained]
    return DemoResult(out, report, evaluation, models[-1], inputs, time.perf_counter() - start)


def print_summary(result: DemoResult) -> None:
    """The demo's closing lines: the table, where the report is and how to open it."""
    metrics = json.loads((result.evaluation / "metrics.json").read_text())
    print()
    print(format_table(metrics))
    print(f"\nDemo finished in {result.seconds / 60:.1f} min.")
    print(f"Summary table: {result.evaluation / 'metrics.csv'}")
    print(f"Explanations of mixtures: {result.out / 'explained'}")
    print(f"Report: {result.report}")
    print(f"Open it with: python -m webbrowser file://{result.report.resolve()}")
