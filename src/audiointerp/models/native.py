"""Compiled kernels for the fast path, built on first use with the system's C compiler.

One kernel so far: the Winograd input transform (``winograd_kernels.c``), which PyTorch
can only do as three memory-bound passes (rows, a tile copy, columns) that barely speed up
with a second thread (docs/experiments.md, "Fast path"). It is compiled once per machine
(``cc -O3 -march=native -fopenmp``, about a second) into ``$AUDIOINTERP_CACHE`` (default
``~/.cache/audiointerp``) under a name that hashes the source, the flags and the CPU, and
loaded with :mod:`ctypes`; its OpenMP is the one PyTorch already loaded (same soname), and
it runs with ``torch.get_num_threads()`` threads.

Everything here is optional: without a compiler, with ``AUDIOINTERP_NATIVE=0``, or when
the build fails (said once, as a warning), :func:`input_transform` is None and the PyTorch
path runs, with the same results to float rounding.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("winograd_kernels.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


def cache_dir() -> Path:
    """``$AUDIOINTERP_CACHE`` if set, else ``~/.cache/audiointerp``, with ``native`` inside."""
    root = os.environ.get("AUDIOINTERP_CACHE") or Path.home() / ".cache" / "audiointerp"
    return Path(root).expanduser() / "native"


def _cpu_signature() -> str:
    """The CPU's model and flags (``-march=native`` code runs only where they match)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))


def build(compiler: str | None = None) -> Path:
    """Compile the kernels (once per source, flags and CPU) and return the library's path.

    Raises:
        RuntimeError: no C compiler, or it failed (its message included).
    """
    compiler = compiler or os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler {compiler!r} on PATH")
    key = hashlib.sha256(
        "\0".join((SOURCE.read_text(), compiler, *FLAGS, _cpu_signature())).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"winograd-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(built)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: another process sees all of it or none
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("AUDIOINTERP_NATIVE", "1") == "0":
        return None
    try:
        library = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"compiled kernels unavailable ({error}); the fast path uses PyTorch's "
            "operations instead (same results, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    function = library.winograd_input_transform
    function.restype = None
    pointer = ctypes.c_void_p
    function.argtypes = [pointer, pointer, *[ctypes.c_long] * 7, pointer, ctypes.c_int]
    return library


InputTransform = Callable[[Tensor, Tensor, tuple[int, int], int, Tensor], None]


def input_transform() -> InputTransform | None:
    """``transform(slab, spectra, (rows, cols), phases, bt)``: the Winograd input
    transform of :func:`audiointerp.models.winograd._input_spectra` with the (5, 5)
    matrix ``bt`` (B^T), written into ``spectra``, or None when the kernels are
    unavailable (module notes). All three float32, CPU, contiguous."""
    library = _library()
    if library is None:
        return None

    def transform(
        slab: Tensor, spectra: Tensor, shape: tuple[int, int], phases: int, bt: Tensor
    ) -> None:
        b, height, width, channels = slab.shape
        tiles = b * shape[0] * shape[1]
        tensors = (slab, spectra, bt)
        assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
        assert bt.shape == (5, 5), bt.shape
        assert spectra.shape == (25, tiles, phases * phases * channels), spectra.shape
        assert height >= 4 * phases * shape[0] + phases and width >= 4 * phases * shape[1] + phases
        library.winograd_input_transform(
            slab.data_ptr(),
            spectra.data_ptr(),
            b,
            height,
            width,
            channels,
            shape[0],
            shape[1],
            phases,
            bt.data_ptr(),
            torch.get_num_threads(),
        )

    return transform
