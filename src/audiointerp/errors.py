"""Every error a user can cause and fix, in one place.

Each is one line that names what is wrong and how to fix it; the CLI and the recipe
scripts print it and exit with status 2 (:data:`USER_ERRORS`). Programmer errors stay
assertions.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """A usage problem worth one clear line (bad option combination, wrong folder...)."""


class SourceError(UserError):
    """A problem with one input (a file, folder, archive, URL or array): names it and why."""

    def __init__(self, source: str | os.PathLike, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class AudioError(SourceError):
    """An audio file or array that cannot be explained (unreadable, empty, NaN, silent...)."""


class DataError(SourceError):
    """A data set folder, metadata file, archive or download that cannot be used."""


class ConfigError(UserError):
    """A bad config file or override; the message names the key."""


class CheckpointError(UserError):
    """A checkpoint folder or file that cannot be used; the message says why."""


class AdapterError(UserError):
    """A classifier of the user's that cannot be explained as given (a factory that
    raises, logits of the wrong shape, an unknown layer...); says what was expected."""


class TargetError(UserError):
    """A ``target`` class the model does not have; the message lists the valid names."""


class UnsupportedTargetError(TargetError):
    """A method asked to explain a class it cannot explain (e.g. not the prediction)."""


# What the CLI and the recipes turn into one line on stderr and exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError)
