"""NMF dictionary: both solvers learn, W stays non-negative, checkpoints and import."""

from __future__ import annotations

import pytest
import torch

from audiointerp.checkpoints import CheckpointError
from audiointerp.cli import main
from audiointerp.features import FeatureConfig
from audiointerp.interpreters.nmf import (
    NMFConfig,
    NMFDictionary,
    fit_nmf,
    import_nmf,
    load_nmf,
    reconstruction_error,
    save_nmf,
)

SMALL = FeatureConfig(n_fft=64, win_ms=4.0, hop_ms=2.0)  # 33 bins


def low_rank_spectra(n_clips: int = 6, frames: int = 20, freqs: int = 33, rank: int = 4):
    """Non-negative (N, T, F) spectra of exact rank ``rank``: a dictionary can fit them."""
    generator = torch.Generator().manual_seed(0)
    templates = torch.rand(freqs, rank, generator=generator)
    activations = torch.rand(n_clips, rank, frames, generator=generator)
    return torch.einsum("fk,nkt->ntf", templates, activations)


@pytest.mark.parametrize(
    "config",
    [
        NMFConfig(n_components=4, solver="multiplicative", epochs=60),
        NMFConfig(n_components=4, solver="gradient", epochs=40, lr=1e-2, batch_size=2),
    ],
    ids=["multiplicative", "gradient"],
)
def test_solver_reduces_error_and_keeps_w_non_negative(config: NMFConfig) -> None:
    spectra = low_rank_spectra()
    result = fit_nmf(spectra, config)
    errors = [error for _, error in result.history]
    assert len(errors) == config.epochs
    assert errors[-1] < 0.2 * errors[0]
    assert bool((result.dictionary.templates >= 0).all())
    assert result.dictionary.W.shape == (33, 4)
    # the dictionary explains held-out spectra built from the same templates
    held_out = low_rank_spectra(n_clips=2)
    assert reconstruction_error(result.dictionary, held_out) < 0.2 * held_out.pow(2).mean()
    if config.solver == "multiplicative":
        assert bool((result.dictionary.W >= 0).all())  # non-negative by construction


def test_multiplicative_error_never_increases() -> None:
    result = fit_nmf(low_rank_spectra(), NMFConfig(n_components=4, epochs=30))
    errors = torch.tensor([error for _, error in result.history])
    assert bool((errors[1:] <= errors[:-1] + 1e-9).all())  # Lee & Seung's monotonicity


def test_decode_shape_and_relu() -> None:
    dictionary = NMFDictionary(33, 5)
    with torch.no_grad():
        dictionary.W.fill_(-1.0)
        dictionary.W[:, 0] = 2.0
    activations = torch.ones(3, 5, 7)
    activations[:, 1] = -4.0
    decoded = dictionary.decode(activations)
    assert decoded.shape == (3, 7, 33)
    torch.testing.assert_close(decoded, torch.full((3, 7, 33), 2.0))


def test_save_load_round_trip_checks_features(tmp_path) -> None:
    dictionary = NMFDictionary(33, 5)
    save_nmf(tmp_path / "nmf", dictionary, SMALL)
    loaded = load_nmf(tmp_path / "nmf", SMALL)
    torch.testing.assert_close(loaded.W, dictionary.W)
    with pytest.raises(CheckpointError, match="44100 Hz"):
        load_nmf(
            tmp_path / "nmf", FeatureConfig(sample_rate=44100, n_fft=64, win_ms=1.0, hop_ms=0.5)
        )


def test_import_reference_checkpoint(tmp_path) -> None:
    """The reference's nmf_decoder.ckpt: torch.save({"W": (513, 100) pre-ReLU})."""
    reference_w = torch.randn(513, 100)
    (tmp_path / "ref").mkdir()
    torch.save({"W": reference_w}, tmp_path / "ref" / "nmf_decoder.ckpt")
    import_nmf(tmp_path / "ref", tmp_path / "ours")
    imported = load_nmf(tmp_path / "ours", FeatureConfig())
    torch.testing.assert_close(imported.W, reference_w)
    activations = torch.rand(1, 100, 4)
    expected = (reference_w.clamp_min(0) @ activations[0]).T  # relu(W) @ relu(H), (T, F)
    torch.testing.assert_close(imported.decode(activations)[0], expected)


def test_import_is_strict(tmp_path) -> None:
    (tmp_path / "ref").mkdir()
    torch.save(
        {"W": torch.rand(513, 100), "extra": torch.zeros(1)}, tmp_path / "ref" / "nmf_decoder.ckpt"
    )
    with pytest.raises(CheckpointError, match="unexpected keys: extra"):
        import_nmf(tmp_path / "ref", tmp_path / "ours")
    torch.save({"weight": torch.rand(513, 100)}, tmp_path / "ref" / "nmf_decoder.ckpt")
    with pytest.raises(CheckpointError, match="missing keys: W"):
        import_nmf(tmp_path / "ref", tmp_path / "ours")
    torch.save({"W": torch.rand(257, 100)}, tmp_path / "ref" / "nmf_decoder.ckpt")
    with pytest.raises(CheckpointError, match="257 frequency bins"):
        import_nmf(tmp_path / "ref", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_cli_imports_the_reference_dictionary(tmp_path, capsys) -> None:
    (tmp_path / "ref").mkdir()
    torch.save({"W": torch.rand(513, 100)}, tmp_path / "ref" / "nmf_decoder.ckpt")
    assert main(["import", "speechbrain", "nmf", str(tmp_path / "ref"), str(tmp_path / "out")]) == 0
    assert "imported nmf: 1 tensors (51,300 values)" in capsys.readouterr().out
    assert load_nmf(tmp_path / "out", FeatureConfig()).W.shape == (513, 100)
    (tmp_path / "ref" / "nmf_decoder.ckpt").unlink()
    assert main(["import", "speechbrain", "nmf", str(tmp_path / "ref"), str(tmp_path / "o2")]) == 2
    assert "nmf_decoder.ckpt: no such checkpoint file" in capsys.readouterr().err
