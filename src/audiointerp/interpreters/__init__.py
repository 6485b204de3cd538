"""Interpreters; importing a module registers its methods."""

from audiointerp.interpreters import (
    baselines,  # noqa: F401
    controls,  # noqa: F401
    l2i,  # noqa: F401
    lmac,  # noqa: F401
    piq,  # noqa: F401
)
