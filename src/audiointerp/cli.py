"""The ``audiointerp`` command: each subcommand only parses options and calls the library.

Exit codes: 0 success, 1 some inputs failed (the run went on), 2 usage or input errors
(printed as one line, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from audiointerp import __version__
from audiointerp.checkpoints import CheckpointError
from audiointerp.config import ConfigError
from audiointerp.io import AudioError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Errors a user can cause and fix: one line on stderr, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    AudioError,
    ConfigError,
    FileNotFoundError,
    NotADirectoryError,
)


class UserError(ValueError):
    """A usage problem worth one clear line (bad option combination, wrong folder...)."""


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="download ESC-50, generate the synthetic set, mix clips")
    data.add_subparsers(dest="data_command", required=True, metavar="{esc50,synth,mix}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiointerp",
        description="Explain audio classifiers with sound (PIQ, L2I, L-MAC, baselines).",
    )
    parser.add_argument("--version", action="version", version=f"audiointerp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a subcommand, mapping user errors to one line + exit 2."""
    try:
        return int(func(args) or EXIT_OK)
    except (*USER_ERRORS, UserError) as error:
        print(f"audiointerp: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("audiointerp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(args.func, args)
