"""``train_nmf.py``: learn the NMF dictionary L2I explains with, on the train folds.

The dictionary itself (solvers, save/load, the reference's import) is
:mod:`audiointerp.interpreters.nmf`; this module only picks the clips, runs a solver and
writes the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from audiointerp.checkpoints import is_checkpoint
from audiointerp.config import from_dict, load_hparams, save_config
from audiointerp.data.esc50 import ESC50Dataset, Normalization
from audiointerp.data.synthetic import ensure_synthetic
from audiointerp.features import FeatureConfig, FeatureExtractor
from audiointerp.interpreters.nmf import NMFConfig, fit_nmf, reconstruction_error, save_nmf
from audiointerp.io import write_text_atomic


@dataclass
class NMFRecipeConfig:
    """``train_nmf.py``: which clips, which features, how to solve.

    ``data_folder`` "" is the embedded synthetic set; ``output_folder`` "" is
    ``results/<experiment>/<nmf.seed>``. The dictionary goes to ``<output_folder>/model``.
    """

    experiment: str = "train_nmf"
    data_folder: str = ""
    output_folder: str = ""
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    valid_folds: list[int] = field(default_factory=lambda: [4])
    normalization: Normalization = "peak"
    duration_s: float = 5.0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    nmf: NMFConfig = field(default_factory=NMFConfig)


def resolve_folders(config: NMFRecipeConfig) -> NMFRecipeConfig:
    """Fill the default data folder (generating the synthetic set) and output folder."""
    if not config.data_folder:
        config = dataclasses.replace(config, data_folder=str(ensure_synthetic()))
    if not config.output_folder:
        folder = Path("results") / config.experiment / str(config.nmf.seed)
        config = dataclasses.replace(config, output_folder=str(folder))
    return config


def ensure_dictionary(
    hparams: Path,
    data_folder: str,
    train_folds: list[int],
    valid_folds: list[int],
    normalization: Normalization,
    duration_s: float,
    seed: int,
) -> Path:
    """The ``model/`` folder ``hparams`` would train on these clips with this seed; learned
    first (saying so) when it is not there yet. L2I recipes use it for an empty
    ``interpreter.nmf_folder``."""
    nmf = from_dict(NMFRecipeConfig, load_hparams(hparams))
    nmf = dataclasses.replace(
        nmf,
        data_folder=data_folder,
        train_folds=train_folds,
        valid_folds=valid_folds,
        normalization=normalization,
        duration_s=duration_s,
        nmf=dataclasses.replace(nmf.nmf, seed=seed),
    )
    nmf = resolve_folders(nmf)
    model = Path(nmf.output_folder) / "model"
    if not is_checkpoint(model):
        print(f"no NMF dictionary at {model}: learning one with {hparams} first")
        train_nmf_recipe(nmf)
    return model


@torch.no_grad()
def log_spectra(config: NMFRecipeConfig, folds: list[int]) -> Tensor:
    """log1p magnitude spectra (N, T, F) of the clips of ``folds``, at the model rate."""
    clips = ESC50Dataset(
        config.data_folder,
        folds,
        sample_rate=config.features.sample_rate,
        normalization=config.normalization,
        duration_s=config.duration_s,
    )
    extractor = FeatureExtractor(config.features)
    waveforms = torch.stack([clips[i][0] for i in range(len(clips))])  # (N, samples)
    return torch.cat([extractor(chunk).log_magnitude for chunk in waveforms.split(32)])


def train_nmf_recipe(config: NMFRecipeConfig) -> Path:
    """Learn the dictionary on the train folds, measure it on the valid folds, save it.

    Writes ``config.yaml``, ``metrics.json`` (training curve, held-out error) and
    ``model/`` (the dictionary) under ``output_folder``; returns the ``model/`` folder.
    """
    config = resolve_folders(config)
    folder = Path(config.output_folder)
    save_config(config, folder / "config.yaml")
    result = fit_nmf(log_spectra(config, config.train_folds), config.nmf)
    valid_error = reconstruction_error(result.dictionary, log_spectra(config, config.valid_folds))
    seconds, train_error = result.history[-1]
    metrics = {
        "solver": config.nmf.solver,
        "train_error": train_error,
        "valid_error": valid_error,
        "seconds": seconds,
        "history": [{"seconds": s, "train_error": e} for s, e in result.history],
    }
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    summary = {k: v for k, v in metrics.items() if k != "history"}
    model = save_nmf(folder / "model", result.dictionary, config.features, {"metrics": summary})
    print(
        f"nmf ({config.nmf.solver}, K={config.nmf.n_components}): train MSE {train_error:.4f}, "
        f"valid MSE {valid_error:.4f} in {seconds:.1f} s -> {model}"
    )
    return model
