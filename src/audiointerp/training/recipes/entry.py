"""``audiointerp train HPARAMS [--key=value ...]``: the one training entry point, which
every ``recipes/esc50/train_*.py`` calls. Command shapes, as in the reference::

    python train_classifier.py hparams/conv2d.yaml [--data_folder=DIR] [--key=value ...]
    python train_piq.py hparams/piq.yaml [--classifier_folder=DIR] [--test_only]

The hparams file is looked up relative to the working directory, then to the script's
folder, then among the packaged configs (``audiointerp train lmac_demo.yaml`` works
anywhere). Its sections name the recipe: ``interpreter: {name: ...}`` that interpreter's,
else ``classifier`` the classifier's, else ``nmf`` the dictionary's. Overrides are typed
against the recipe's config dataclass (``--train.lr=1e-3``); ``--seed`` and ``--device``
are short for ``--train.seed`` and ``--train.device`` (``--nmf.seed`` for NMF). An empty
``data_folder`` means the embedded synthetic set (generated on first use). A run folder
(``output_folder``, default ``results/<experiment>/<seed>``) gets ``config.yaml``,
``train_log.txt``, ``model/``, ``train_state/`` and ``metrics.json``; training resumes
from ``train_state/`` when the same command is run again. Launch with ``torchrun`` for
data-parallel training; testing then runs on rank 0 alone.

``audiointerp train METHOD --classifier SPEC --data DATA --out DIR`` trains an interpreter
for your own classifier instead (:mod:`audiointerp.training.recipes.external`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audiointerp.config import (
    PACKAGED,
    ConfigError,
    apply_overrides,
    describe,
    find_config,
    from_dict,
    load_hparams,
    parse_overrides,
)
from audiointerp.data.synthetic import ensure_synthetic
from audiointerp.errors import USER_ERRORS
from audiointerp.interpreters.registry import INTERPRETERS
from audiointerp.training import ddp
from audiointerp.training.recipes.classifier import ClassifierRecipeConfig, train_classifier
from audiointerp.training.recipes.external import load_external_recipe, train_external
from audiointerp.training.recipes.interpreter import (
    interpreter_recipe_class,
    train_interpreter,
    with_dictionary,
)
from audiointerp.training.recipes.nmf import NMFRecipeConfig, resolve_folders, train_nmf_recipe

SHORT_KEYS = {"seed": "train.seed", "device": "train.device"}
EXTERNAL_USAGE = """usage: audiointerp train {method} --classifier SPEC --data DATA --out DIR
                         [--epochs N] [--key=value ...]

Trains {method} for your own classifier on your own labelled audio; the same command
resumes a killed run. SPEC: path/to/file.py:factory (returns an ExternalClassifier), a
TorchScript file saved with audiointerp.models.loading.save_torchscript, or hf:FOLDER.
DATA: a folder with one sub-folder per class, a CSV path,label[,fold], or an ESC-50
folder. Other keys as in `audiointerp train {method}_demo.yaml --help` (e.g.
--train.lr=3e-4, --interpreter.width=0.5, --duration_s=2). DIR/model then explains with
`audiointerp interpret DIR/model clip.wav`. Exit status: 0 ok, 2 bad usage/config/data,
130 interrupted."""
NMF_SHORT_KEYS = {"seed": "nmf.seed"}


def recipe_name(data: dict[str, Any], overrides: dict[str, Any], hparams: Path) -> str:
    """``classifier``, ``nmf`` or an interpreter's name, from the file's sections."""
    if "interpreter" in data:
        section = data["interpreter"] if isinstance(data["interpreter"], dict) else {}
        name = overrides.get("interpreter.name", section.get("name"))
        if name not in INTERPRETERS:
            raise ConfigError(
                f"{hparams}: interpreter.name: {name!r} is not one of {sorted(INTERPRETERS)}"
            )
        return str(name)
    for name in ("classifier", "nmf"):
        if name in data:
            return name
    raise ConfigError(f"{hparams}: not a training config (no interpreter, classifier or nmf)")


def recipe_class(name: str) -> type:
    """The config dataclass of recipe ``name`` (see :func:`recipe_name`)."""
    if name == "classifier":
        return ClassifierRecipeConfig
    if name == "nmf":
        return NMFRecipeConfig
    return interpreter_recipe_class(name)


def search_path(script_dir: Path | None) -> list[Path]:
    """Where an hparams argument is looked for before the packaged configs."""
    return [Path.cwd(), *([script_dir] if script_dir else [])]


def load_recipe(argv: list[str], script_dir: Path | None = None) -> tuple[str, Any, Path]:
    """``[HPARAMS.yaml, --key=value, ...]`` -> (recipe name, typed config with its data and
    output folders filled in, resolved hparams path)."""
    if not argv or argv[0].startswith("-"):
        raise ConfigError("usage: SCRIPT HPARAMS.yaml [--key=value ...] (hparams file first)")
    hparams = find_config(argv[0], search_path(script_dir))
    data = load_hparams(hparams)
    overrides = parse_overrides(argv[1:])
    name = recipe_name(data, overrides, hparams)
    short = NMF_SHORT_KEYS if name == "nmf" else SHORT_KEYS
    overrides = {short.get(key, key): value for key, value in overrides.items()}
    config = apply_overrides(from_dict(recipe_class(name), data), overrides)
    if name == "nmf":
        return name, resolve_folders(config), hparams
    if not config.data_folder:
        config = dataclasses.replace(config, data_folder=str(ensure_synthetic()))
    if not config.output_folder:
        folder = Path("results") / config.experiment / str(config.train.seed)
        config = dataclasses.replace(config, output_folder=str(folder))
    return name, config, hparams


def run_recipe(name: str, config: Any, hparams: Path) -> None:
    """Train (or with ``test_only`` test) recipe ``name`` as ``config`` says."""
    if name == "classifier":
        train_classifier(config)
    elif name == "nmf":
        train_nmf_recipe(config)
    else:
        train_interpreter(with_dictionary(config, hparams.parent), hparams.parent)


def script_of(name: str) -> str:
    """The recipe script of recipe ``name``."""
    return f"train_{name}.py"


def print_help(argv: list[str], script_dir: Path | None, expect: str | None) -> None:
    """Usage, then every overridable key of the file's recipe (or of ``expect``'s)."""
    script = f"python {script_of(expect)}" if expect else "audiointerp train"
    print(f"usage: {script} HPARAMS.yaml [--key=value | --key value | --flag ...]\n")
    print("Trains (or with --test_only tests) as configured by HPARAMS.yaml (relative to the")
    print("working directory, to hparams/ beside the script, or a packaged config); every key")
    print("below can be overridden on the command line. Exit status: 0 ok, 2 bad")
    print("usage/config/data, 130 interrupted (run the same command again to resume).\n")
    if argv and not argv[0].startswith("-"):
        hparams = find_config(argv[0], search_path(script_dir))
        name = recipe_name(load_hparams(hparams), {}, hparams)
    elif expect:
        name = expect
    else:
        packaged = sorted(p.name for p in PACKAGED.glob("*.yaml"))
        print(f"Packaged configs: {', '.join(packaged)}")
        return
    print("\n".join(describe(recipe_class(name))))


def run_guarded(main: Callable[[], None]) -> int:
    """Run a recipe: user errors become one line on stderr and exit status 2."""
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        ddp.shutdown()
    return 0


def _train_external(argv: list[str]) -> None:
    train_external(load_external_recipe(argv))


def train(argv: list[str], script_dir: Path | None = None, expect: str | None = None) -> int:
    """``audiointerp train`` and every recipe script; returns the exit status.

    Args:
        argv: ``[HPARAMS.yaml, --key=value, ...]`` (``-h``/``--help`` lists the keys).
        script_dir: a recipe script's folder, searched for HPARAMS after the working dir.
        expect: the recipe a script runs (``classifier``, ``nmf`` or an interpreter's
            name); a file configuring another one is a usage error.
    """
    if argv and argv[0] in INTERPRETERS and not expect:  # METHOD --classifier ... --data ...
        if {"-h", "--help"} & set(argv):
            return run_guarded(lambda: print(EXTERNAL_USAGE.format(method=argv[0])))
        return run_guarded(lambda: _train_external(argv))
    if {"-h", "--help"} & set(argv):
        return run_guarded(lambda: print_help(argv, script_dir, expect))

    def main() -> None:
        name, config, hparams = load_recipe(argv, script_dir)
        if expect and name != expect:
            raise ConfigError(
                f"{argv[0]} configures the {name} recipe, not {expect}: run "
                f"{script_of(name)} or `audiointerp train {argv[0]}`"
            )
        run_recipe(name, config, hparams)

    return run_guarded(main)
