"""The compiled Winograd input transform: equal to PyTorch's, built once, optional."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from audiointerp.models import native, winograd
from audiointerp.models.fast import fast_conv

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler"
)


def _pytorch_spectra(monkeypatch, slab, shape, phases) -> torch.Tensor:
    with monkeypatch.context() as patch:
        patch.setattr(native, "input_transform", lambda: None)
        return winograd._input_spectra(slab, shape, phases, winograd._ChunkBuffers(slab)).clone()


@needs_compiler
@pytest.mark.parametrize("phases", [1, 2])
@pytest.mark.parametrize(("batch", "channels", "shape"), [(2, 70, (3, 5)), (1, 128, (1, 1))])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_input_transform_equals_pytorch(
    monkeypatch, phases, batch, channels, shape, threads
) -> None:
    """Channels past a multiple of the kernel's block of 64, a batch, one tile, and a slab
    wider than the tiles read (the pixels past them are ignored)."""
    transform = native.input_transform()
    assert transform is not None
    torch.manual_seed(3)
    height, width = (4 * phases * n + phases for n in shape)
    slab = torch.randn(batch, height + 1, width + 3, channels)
    expected = _pytorch_spectra(monkeypatch, slab, shape, phases)
    spectra = torch.full((25, batch * shape[0] * shape[1], phases**2 * channels), float("nan"))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        transform(slab, spectra, shape, phases, winograd._transforms()[2].float())
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(spectra, expected, rtol=1e-5, atol=1e-5)
    assert not torch.isnan(spectra).any()  # every element written


@needs_compiler
def test_build_is_cached_per_source_and_leaves_no_partial_files(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path / "native" and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]
    source = tmp_path / "changed.c"
    source.write_text(native.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native, "SOURCE", source)
    assert native.build() != first  # another source, another library


def test_no_compiler_or_switched_off_falls_back_to_pytorch(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="no C compiler"):
        native.build(compiler="no-such-compiler-here")
    monkeypatch.setenv("CC", "no-such-compiler-here")
    native._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="compiled kernels unavailable"):
            assert native.input_transform() is None
        native._library.cache_clear()
        monkeypatch.setenv("AUDIOINTERP_NATIVE", "0")
        assert native.input_transform() is None
        # the layers still compute the stock convolution, through PyTorch's transform
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
        layer = torch.nn.Conv2d(3, 4, 4, 2, 1)
        x = torch.randn(1, 3, 21, 18)
        with torch.no_grad():
            torch.testing.assert_close(fast_conv(layer)(x), layer(x), rtol=1e-5, atol=1e-5)
    finally:
        native._library.cache_clear()


@needs_compiler
def test_compiler_errors_are_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path))
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    with pytest.raises(RuntimeError, match="failed"):
        native.build()
    assert not any((tmp_path / "native").iterdir())  # nothing half-written left behind
