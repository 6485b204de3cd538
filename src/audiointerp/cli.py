"""The ``audiointerp`` command: each subcommand only parses options and calls the library.

Exit codes: 0 success, 1 some inputs failed (the run went on), 2 usage or input errors
(printed as one line, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from audiointerp import __version__
from audiointerp.checkpoints import load_checkpoint
from audiointerp.data.download import ESC50_URL, prepare_esc50
from audiointerp.data.mixtures import make_mixtures
from audiointerp.data.synthetic import ensure_synthetic, summarize
from audiointerp.errors import USER_ERRORS, UserError
from audiointerp.evaluation import BOUND_METHODS, EvalConfig, evaluate, format_table
from audiointerp.hub import HUB_MODELS, pull
from audiointerp.interpreters.nmf import import_nmf
from audiointerp.interpreters.registry import INTERPRETERS
from audiointerp.interpreters.speechbrain import import_piq
from audiointerp.models.loading import load_external
from audiointerp.models.speechbrain import import_cnn14, import_conv2d
from audiointerp.outputs import collect_inputs, explain_to_files
from audiointerp.pipeline import Explainer

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _data_esc50(args: argparse.Namespace) -> int:
    print(summarize(prepare_esc50(args.data_folder, url=args.url)))
    return EXIT_OK


def _data_synth(args: argparse.Namespace) -> int:
    folder = ensure_synthetic(args.out, args.classes, args.clips_per_class, args.seed)
    print(summarize(folder))
    return EXIT_OK


def _data_mix(args: argparse.Namespace) -> int:
    manifest = make_mixtures(
        args.data_folder, args.out, args.folds, args.n, args.snr, args.seed, args.sample_rate
    )
    print(f"{args.n} mixtures with their sources: {manifest}")
    return EXIT_OK


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="download ESC-50, generate the synthetic set, mix clips")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="{esc50,synth,mix}")

    esc50 = commands.add_parser("esc50", help="download and extract ESC-50 (skipped if present)")
    esc50.add_argument("--data_folder", type=Path, required=True, help="where ESC-50 goes")
    esc50.add_argument("--url", default=ESC50_URL, help="archive URL (default: %(default)s)")
    esc50.set_defaults(func=_data_esc50)

    synth = commands.add_parser("synth", help="generate the synthetic set in ESC-50's layout")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--classes", type=int, default=10, help="2 to 50 (default: %(default)s)")
    synth.add_argument("--clips-per-class", type=int, default=40, help="(default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    synth.set_defaults(func=_data_synth)

    mix = commands.add_parser("mix", help="two-class mixtures with their sources")
    mix.add_argument("--data_folder", type=Path, required=True, help="an ESC-50-layout folder")
    mix.add_argument("--out", type=Path, required=True, help="output folder")
    mix.add_argument("--n", type=int, default=40, help="number of mixtures (default: %(default)s)")
    mix.add_argument("--snr", type=float, nargs="+", default=[0.0], help="SNR(s) in dB of a over b")
    mix.add_argument("--folds", type=int, nargs="+", default=[5], help="folds to draw from")
    mix.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    mix.add_argument("--sample-rate", type=int, default=16000, help="(default: %(default)s)")
    mix.set_defaults(func=_data_mix)


# `audiointerp import speechbrain NAME SRC_DIR OUT_DIR`: reference .ckpt files -> our format.
IMPORTERS: dict[str, Callable[[Path, Path], Path]] = {
    "conv2d": import_conv2d,
    "cnn14": import_cnn14,
    "piq": import_piq,
    "nmf": import_nmf,
}


def _import_speechbrain(args: argparse.Namespace) -> int:
    folder = IMPORTERS[args.model](Path(args.src_dir), Path(args.out_dir))
    checkpoint = load_checkpoint(folder)
    values = sum(tensor.numel() for tensor in checkpoint.tensors.values())
    count = len(checkpoint.tensors)
    print(f"imported {args.model}: {count} tensors ({values:,} values) -> {folder}")
    source = checkpoint.meta.get("imported_from")
    if isinstance(source, dict):
        files = ", ".join(str(v) for k, v in source.items() if k.endswith("_file"))
        print(f"from {source.get('folder', args.src_dir)}: {files}")
    names = checkpoint.meta.get("class_names") or []
    if names:
        print(f"{len(names)} classes: {', '.join(map(str, names))}")
    return EXIT_OK


def _add_import_commands(sub: argparse._SubParsersAction) -> None:
    importer = sub.add_parser("import", help="convert reference checkpoints to our format")
    sources = importer.add_subparsers(dest="import_source", required=True, metavar="{speechbrain}")
    speechbrain = sources.add_parser(
        "speechbrain", help="SpeechBrain .ckpt state dicts (HuggingFace downloads)"
    )
    speechbrain.add_argument("model", choices=sorted(IMPORTERS), help="what the files hold")
    speechbrain.add_argument("src_dir", help="folder with the downloaded .ckpt files")
    speechbrain.add_argument("out_dir", help="checkpoint folder to write (our format)")
    speechbrain.set_defaults(func=_import_speechbrain)


def _pull(args: argparse.Namespace) -> int:
    folder = pull(
        args.name,
        args.revision,
        endpoint=args.endpoint,
        cache_dir=args.cache_dir,
        offline=True if args.offline else None,
    )
    meta = load_checkpoint(folder).meta
    hub = meta.get("hub", {})
    print(f"{args.name}@{hub.get('revision', '?')}: {len(meta.get('class_names', []))} classes, "
          f"normalization {meta.get('normalization', 'peak')} -> {folder}")  # fmt: skip
    return EXIT_OK


def _add_pull_command(sub: argparse._SubParsersAction) -> None:
    puller = sub.add_parser(
        "pull",
        help="download and convert a published model into the hub cache",
        description="Downloads the model's files from the Hugging Face hub (file by file, at "
        "the pinned revision), converts them once with the safe importer and prints the "
        "converted folder; later calls reuse it without a request. `interpret NAME` and "
        "Explainer.from_pretrained(NAME) do the same on first use.",
    )
    puller.add_argument("name", choices=sorted(HUB_MODELS), help="published model")
    puller.add_argument("--revision", help="commit, branch or tag (default: the pinned commit)")
    puller.add_argument("--offline", action="store_true",
                        help="use only the cache (also HF_HUB_OFFLINE=1)")  # fmt: skip
    puller.add_argument("--cache-dir", type=Path,
                        help="hub cache (default: HF_HUB_CACHE, else HF_HOME/hub)")  # fmt: skip
    puller.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT, else huggingface.co)")
    puller.set_defaults(func=_pull)


def _interpret(args: argparse.Namespace) -> int:
    """Explain every input file; a bad file is one stderr line and the run goes on."""
    options = {} if args.normalization is None else {"normalization": args.normalization}
    if args.classifier is None:
        explainer = Explainer.from_pretrained(args.model_dir, **options)
    else:
        classifier = load_external(args.classifier)
        if args.model_dir in INTERPRETERS and not Path(args.model_dir).exists():
            explainer = Explainer.with_method(classifier, args.model_dir, **options)
        else:
            explainer = Explainer.from_pretrained(args.model_dir, classifier, **options)
    if args.target is not None:
        explainer.class_index(args.target)
    pairs = collect_inputs(args.inputs)
    if not any(path.exists() for path, _ in pairs):
        inputs = " ".join(map(str, args.inputs))
        raise UserError(f"no audio files (wav, flac, ogg, mp3) found in {inputs}")
    owners: dict[Path, Path] = {}
    for path, stem in pairs:
        if stem in owners:
            raise UserError(f"{owners[stem]} and {path} would both write {args.out / stem}.*")
        owners[stem] = path
    results = []
    for path, stem in tqdm(pairs, desc="explaining", unit="file", disable=None, file=sys.stderr):
        result = explain_to_files(explainer, path, args.out / stem, args.target, args.top_k)
        results.append(result)
        if result.error is not None:
            tqdm.write(f"audiointerp: error: {result.error}", file=sys.stderr)
        elif not args.json:
            explanation = result.explanation
            tqdm.write(f"{path}\t{explanation.predicted}\t{explanation.probability:.4f}")
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=2))
    return EXIT_PARTIAL if any(result.error for result in results) else EXIT_OK


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` parsed from the text and checked to be > 0."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return value

    return parse


_positive_int, _positive_float = _positive(int), _positive(float)


def _add_interpret_command(sub: argparse._SubParsersAction) -> None:
    interpret = sub.add_parser(
        "interpret",
        help="explain audio files: explanation audio, mask and picture per file",
        description="Per input writes <name>.explanation.wav, <name>.mask.npy and <name>.png "
        "under --out (folders mirrored) and prints: file, predicted class, probability. "
        "Exit 0 if every file worked, 1 if some failed, 2 on usage errors.",
    )
    interpret.add_argument("model_dir", metavar="MODEL",
                           help="interpreter checkpoint or run folder, or a published model: "
                           f"{', '.join(sorted(HUB_MODELS))} (downloaded once); with "
                           "--classifier also a method that needs no training (saliency, "
                           "integrated_gradients, gradcam, occlusion...)")  # fmt: skip
    interpret.add_argument("inputs", nargs="+", type=Path, help="audio files or folders")
    interpret.add_argument("--out", type=Path, required=True, help="output folder")
    interpret.add_argument("--target", help="class name to explain (default: the predicted)")
    interpret.add_argument("--top-k", type=_positive_int, default=5, help="classes in --json")
    interpret.add_argument("--json", action="store_true", help="print a JSON list instead")
    interpret.add_argument("--normalization", choices=("peak", "signed_max", "none"),
                           help="per-window input scaling (default: the model's own: peak "
                           "for ours, none for imported SpeechBrain models, as their "
                           "interface)")  # fmt: skip
    interpret.add_argument("--classifier", metavar="SPEC",
                           help="your own classifier: path/to/file.py:factory (returns an "
                           "ExternalClassifier), a TorchScript file or hf:FOLDER (default for "
                           "an interpreter trained for one: its own)")  # fmt: skip
    interpret.set_defaults(func=_interpret)


def _eval(args: argparse.Namespace) -> int:
    config = EvalConfig(
        test_folds=tuple(args.test_folds),
        max_clips=args.max_clips,
        n_mixtures=args.n_mixtures,
        max_mixtures=args.max_mixtures,
        sanity_clips=args.sanity_clips,
        sanity_min_reproducibility=args.sanity_min_reproducibility,
        sanity_min_sensitivity=args.sanity_min_sensitivity,
        n_examples=args.n_examples,
        batch_size=args.batch_size,
        methods=tuple(args.methods),
    )
    result = evaluate(
        args.model_dirs,
        args.data_folder,
        mixtures=args.mixtures,
        out=args.out,
        reference_compatible=args.reference_compatible,
        config=config,
        classifier=None if args.classifier is None else load_external(args.classifier),
    )
    print(format_table(result))
    return EXIT_OK


def _add_eval_commands(sub: argparse._SubParsersAction) -> None:
    evaluation = sub.add_parser(
        "eval",
        help="faithfulness, mixture SI-SNRi, sanity check and speed of trained models",
        description="For each model folder: its interpreter and the 'energy' negative control "
        "on its classifier; then the --methods built on the first folder's classifier. Writes "
        "metrics.json (with each metric's ranking), metrics.csv and examples/ into --out "
        "(default: the first model's run folder) and prints the table.",
    )
    evaluation.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR",
                            help="checkpoint folder or run folder (with model/)")  # fmt: skip
    evaluation.add_argument("--data_folder", type=Path, required=True,
                            help="ESC-50-layout folder whose test folds are explained")  # fmt: skip
    evaluation.add_argument("--mixtures", type=Path,
                            help="mixture folder (default: made from the test folds)")  # fmt: skip
    evaluation.add_argument("--out", type=Path, help="output folder")
    evaluation.add_argument("--reference-compatible", action="store_true",
                            help="the reference recipe's metric formulas")  # fmt: skip
    evaluation.add_argument("--test_folds", type=_positive_int, nargs="+", default=[5])
    evaluation.add_argument("--max_clips", type=_positive_int, help="cap on test clips")
    evaluation.add_argument("--n_mixtures", type=_positive_int, default=16)
    evaluation.add_argument("--max_mixtures", type=_positive_int, help="cap on mixtures used")
    evaluation.add_argument("--sanity_clips", type=_positive_int, default=8,
                            help="clips and mixtures the sanity check re-explains")  # fmt: skip
    evaluation.add_argument("--sanity_min_reproducibility", type=float, default=0.5,
                            help="sanity check: least mean R (two runs on f agree)")  # fmt: skip
    evaluation.add_argument("--sanity_min_sensitivity", type=float, default=0.3,
                            help="sanity check: D = R - C must lie above this (95 %% "
                            "interval)")  # fmt: skip
    evaluation.add_argument("--methods", nargs="*", default=list(BOUND_METHODS), metavar="NAME",
                            help="interpreters built on the first folder's classifier, e.g. "
                            "saliency gradcam integrated_gradients occlusion random ones "
                            f"(default: {' '.join(BOUND_METHODS)}, the bounds; none: only the "
                            "folders' own)")  # fmt: skip
    evaluation.add_argument("--n_examples", type=int, default=2, help="examples per method")
    evaluation.add_argument("--batch_size", type=_positive_int, default=8)
    evaluation.add_argument("--classifier", metavar="SPEC",
                            help="your own classifier, for interpreters trained for one "
                            "(default: the one each folder references)")  # fmt: skip
    evaluation.set_defaults(func=_eval)


def _report(args: argparse.Namespace) -> int:
    from audiointerp.report.html import build_report  # matplotlib loads only when reporting

    print(build_report(args.run_dir, args.out))
    return EXIT_OK


def _add_report_commands(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report",
        help="static HTML report of an evaluated run (audio players, spectrograms, table)",
        description="Reads RUN_DIR/metrics.json and RUN_DIR/examples/ (from `audiointerp "
        "eval`) and writes a self-contained folder (default RUN_DIR/report); prints its "
        "index.html.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="evaluated run folder")
    report.add_argument("--out", type=Path, help="report folder (default RUN_DIR/report)")
    report.set_defaults(func=_report)


def _train(args: argparse.Namespace) -> int:
    from audiointerp.training.recipes.entry import train

    return train(args.argv)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        add_help=False,  # -h/--help goes to the recipe, which lists the file's keys
        help="train (or --test_only test) the recipe an hparams file configures",
        description="audiointerp train HPARAMS.yaml [--key=value ...]: the classifier, NMF or "
        "interpreter recipe the file's sections name (the recipes/esc50/train_*.py scripts "
        "call the same function). HPARAMS is a path or a packaged config name. "
        "audiointerp train lmac --classifier SPEC --data DATA --out DIR [--epochs N]: an "
        "interpreter for your own classifier on your own audio (--help for details).",
    )
    train.add_argument("argv", nargs=argparse.REMAINDER, help="HPARAMS.yaml [--key=value ...]")
    train.set_defaults(func=_train)


def _demo(args: argparse.Namespace) -> int:
    from audiointerp.demo import DemoError, print_summary, run_demo

    try:
        result = run_demo(args.out, args.data_folder, args.n_explained)
    except DemoError as error:
        print(f"audiointerp: demo stopped: {error}", file=sys.stderr)
        return EXIT_PARTIAL
    status = main(["interpret", str(result.model), *map(str, result.mixtures),
                   "--out", str(result.out / "explained")])  # fmt: skip
    print_summary(result)
    return status


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="the main job on the embedded default: data, training, evaluation, report",
        description="Generates the synthetic ESC-50-layout set and its mixtures, trains the "
        "conv2d classifier, NMF, L2I, PIQ and L-MAC (short demo configs), evaluates them, builds "
        "the HTML report and explains a few mixtures with `interpret`. Finished stages are "
        "reused on the next run; interrupted ones resume.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder")
    demo.add_argument("--data_folder", type=Path, help="ESC-50-layout folder (default: synthetic)")
    demo.add_argument("--n_explained", type=_positive_int, default=3,
                      help="mixtures explained with `interpret` at the end")  # fmt: skip
    demo.set_defaults(func=_demo)
    sanity = sub.add_parser(
        "sanity",
        help="the sanity check's slower tier on a finished demo (make sanity)",
        description="Trains each of the demo's explainers (L2I, PIQ, L-MAC) again at its "
        "recipe's full budget, on the randomised classifier f~ and on f with another seed, "
        "then evaluates again into OUT/evaluation_sanity (table, report). Finished runs are "
        "reused; interrupted ones resume. The demo's own table holds the verdicts of the "
        "demo tier (a quarter of the epochs).",
    )
    sanity.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder")
    sanity.add_argument("--data_folder", type=Path,
                        help="ESC-50-layout folder (default: synthetic)")  # fmt: skip
    sanity.add_argument("--data_randomization", action="store_true",
                        help="f~ = the classifier trained on shuffled training labels (Adebayo "
                        "et al. 2018), into OUT/evaluation_data_randomization")  # fmt: skip
    sanity.set_defaults(func=_sanity)


def _sanity(args: argparse.Namespace) -> int:
    from audiointerp.demo import run_sanity

    run_sanity(args.out, args.data_folder, args.data_randomization)
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from audiointerp.app import Limits, serve  # starlette and uvicorn load only when serving

    limits = Limits(args.max_upload_mb, args.max_seconds, args.max_waiting)
    serve(args.models, args.host, args.port, args.report, args.examples, limits)
    return EXIT_OK


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="a local web page (and JSON API) to upload audio and listen to explanations",
        description="Serves one page on http://HOST:PORT/: upload a file or pick an example, "
        "choose the model and the class, listen to the input, the explanation and the removed "
        "part beside their spectrograms and the mask. JSON API: GET /api/models, POST "
        "/api/explain. Uploads and results stay in a temporary folder removed on exit.",
    )
    serve.add_argument(
        "models", nargs="+", type=Path, metavar="MODEL", help="interpreter checkpoint or run folder"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s: this machine)"
    )
    serve.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    serve.add_argument("--report", type=Path, help="an evaluation report folder to serve")
    serve.add_argument(
        "--examples", type=Path, help="a folder of audio files to offer (the demo's mixtures)"
    )
    serve.add_argument(
        "--max-upload-mb", type=_positive_float, default=50.0, help="largest upload (default: 50)"
    )
    serve.add_argument(
        "--max-seconds", type=_positive_float, default=300.0, help="longest audio (default: 300)"
    )
    serve.add_argument(
        "--max-waiting", type=_positive_int, default=8, help="queued explanations (default: 8)"
    )
    serve.set_defaults(func=_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiointerp",
        description="Explain audio classifiers with sound (PIQ, L2I, L-MAC, baselines).",
    )
    parser.add_argument("--version", action="version", version=f"audiointerp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_import_commands(sub)
    _add_pull_command(sub)
    _add_interpret_command(sub)
    _add_eval_commands(sub)
    _add_report_commands(sub)
    _add_train_command(sub)
    _add_demo_command(sub)
    _add_serve_command(sub)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a subcommand, mapping user errors to one line + exit 2."""
    try:
        return int(func(args) or EXIT_OK)
    except USER_ERRORS as error:
        print(f"audiointerp: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("audiointerp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand. Library warnings (torch, numpy, soundfile)
    are not the user's to act on, so they stay out of the output unless asked for with
    ``python -W`` or ``PYTHONWARNINGS``."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:  # options before HPARAMS (e.g. `train --help`): the recipe reports them
        args.argv = [*unknown, *args.argv]
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        return run(args.func, args)
