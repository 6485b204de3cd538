"""The main job on the embedded default (``make demo`` / ``audiointerp demo``), and its
slower sanity tier (``make sanity`` / ``audiointerp sanity``).

Synthetic ESC-50-layout set -> two-class mixtures -> conv2d classifier -> NMF dictionary
-> L2I, PIQ and L-MAC -> the demo's sanity tier (each trained explainer trained again on
the randomised classifier and with another seed, at a quarter of its epochs) ->
evaluation (faithfulness, SI-SNRi on mixtures, sanity check, each with its interval) ->
HTML report; the CLI then explains a few mixtures with ``audiointerp interpret``.
``run_sanity`` trains those runs at the recipes' full budget and evaluates again (or, with
data randomisation, on a classifier trained on shuffled labels). Each stage writes a run
folder under ``out``; a finished stage (its ``metrics.json`` exists) is reused on the next
run, an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audiointerp.config import PACKAGED, load_hparams
from audiointerp.data.mixtures import make_mixtures
from audiointerp.data.synthetic import ensure_synthetic, summarize
from audiointerp.evaluation import EvalConfig, evaluate, format_table
from audiointerp.report.html import build_report
from audiointerp.sanity_runs import TrainedMethod, permuted_label_classifier, train_sanity_runs
from audiointerp.training.recipes.entry import train

HPARAMS = PACKAGED  # the demo's configs ship with the package (no source checkout needed)
N_MIXTURES = 48  # enough for the best method's SI-SNRi interval to be narrower than 2 dB
DEMO_TIER_FRACTION = 4  # the demo's sanity runs train a quarter of the recipe's epochs
# the fast gradient baselines and the random/all-ones bounds on the same table
# (integrated gradients and occlusion run at ~0.1 clips/s: `audiointerp eval --methods`)
EVAL_METHODS = ("saliency", "gradcam", "random", "ones")


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


def _trained_methods(out: Path, data: Path) -> list[TrainedMethod]:
    """The demo's trained explainers and their training commands (less the classifier
    and output folders)."""
    common = (f"--data_folder={data}",)
    nmf = f"--interpreter.nmf_folder={out / 'nmf' / 'model'}"
    return [
        TrainedMethod("l2i_conv2d", HPARAMS / "l2i_demo.yaml", (*common, nmf)),
        TrainedMethod("piq_conv2d", HPARAMS / "piq_demo.yaml", common),
        TrainedMethod("lmac_conv2d", HPARAMS / "lmac_demo.yaml", common),
    ]


def _run_folder(out: Path, method: TrainedMethod) -> Path:
    """Where the demo trains ``method``: ``out/<interpreter>`` (``out/lmac``, ...)."""
    return out / method.name.split("_")[0]


def _demo_epochs(methods: list[TrainedMethod]) -> dict[str, int]:
    """A quarter of each recipe's epochs (at least one): the demo tier's budget."""
    return {
        m.name: max(1, int(load_hparams(m.hparams)["train"]["epochs"]) // DEMO_TIER_FRACTION)
        for m in methods
    }


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
        make_mixtures(data, mixtures, folds=(5,), n_mixtures=N_MIXTURES, snrs_db=(0.0,), seed=0)
    print(f"== mixtures: {manifest}")

    def run(hparams: str, folder: Path, *extra: str) -> Callable[[], int]:
        argv = [str(HPARAMS / hparams), f"--data_folder={data}", f"--output_folder={folder}"]
        return lambda: train([*argv, *extra])

    classifier = out / "conv2d"
    _stage("conv2d classifier", classifier, run("conv2d_demo.yaml", classifier))
    nmf = out / "nmf"
    _stage("NMF dictionary", nmf, run("nmf_demo.yaml", nmf))
    methods = _trained_methods(out, data)
    models = []
    for method in methods:
        folder = _run_folder(out, method)
        title = f"{folder.name.upper()} interpreter"
        argv = [str(method.hparams), *method.overrides, f"--output_folder={folder}"]
        argv.append(f"--classifier_folder={classifier / 'model'}")
        _stage(title, folder, lambda argv=argv: train(argv))
        models.append(folder / "model")

    tier_start = time.perf_counter()
    print("== sanity check, demo tier: each trained explainer again on f~ and with another seed")
    runs = train_sanity_runs(
        methods, classifier / "model", out / "sanity_demo", _demo_epochs(methods), tier="demo tier"
    )
    print(f"   demo tier trained in {time.perf_counter() - tier_start:.0f} s")
    print("== evaluation (faithfulness, SI-SNRi on mixtures, sanity check)")
    evaluation = out / "evaluation"
    config = EvalConfig(methods=EVAL_METHODS)
    evaluate(models, data, mixtures=manifest, out=evaluation, config=config, sanity_runs=runs)
    report = build_report(evaluation)
    inputs = sorted((mixtures / "mixtures").glob("*.wav"))[:n_explained]
    return DemoResult(out, report, evaluation, models[-1], inputs, time.perf_counter() - start)


def run_sanity(
    out: Path, data_folder: Path | None = None, data_randomization: bool = False
) -> Path:
    """The slower tier on a finished demo in ``out``: each trained explainer trained again
    at its recipe's full budget (on f~ and with another seed), then the evaluation again
    into ``out/evaluation_sanity``; returns that folder.

    With ``data_randomization`` f~ is instead the demo's classifier recipe trained on
    shuffled training labels (``conv2d_permuted.yaml``); the explainers are trained again
    on it (the runs on f with another seed are shared) and the evaluation goes to
    ``out/evaluation_data_randomization``.

    Raises:
        FileNotFoundError: ``out`` holds no finished demo (run ``make demo`` first).
    """
    start = time.perf_counter()
    data = Path(data_folder) if data_folder else ensure_synthetic()
    classifier = out / "conv2d" / "model"
    methods = _trained_methods(out, data)
    models = [_run_folder(out, method) / "model" for method in methods]
    missing = [str(m) for m in (classifier, *models) if not (m / "config.yaml").is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: run `make demo` first")
    runs_folder = out / "sanity_full"
    random_folder = None
    if data_randomization:
        hparams = HPARAMS / "conv2d_permuted.yaml"
        random_folder, _ = permuted_label_classifier(hparams, data, runs_folder, seed=0)
    tier = "make sanity, data randomisation" if data_randomization else "make sanity"
    runs = train_sanity_runs(
        methods, classifier, runs_folder, tier=tier, random_folder=random_folder
    )
    print(f"   sanity tier trained in {time.perf_counter() - start:.0f} s")
    name = "evaluation_data_randomization" if data_randomization else "evaluation_sanity"
    evaluation = out / name
    config = EvalConfig(methods=EVAL_METHODS)
    manifest = out / "mixtures" / "mixtures.csv"
    result = evaluate(models, data, mixtures=manifest, out=evaluation, config=config,
                      sanity_runs=runs, randomized_classifier=random_folder)  # fmt: skip
    print(format_table(result))
    build_report(evaluation)
    print(f"Sanity tier finished in {(time.perf_counter() - start) / 60:.1f} min: {evaluation}")
    return evaluation


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
