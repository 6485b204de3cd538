"""NMF dictionary of spectral templates: learn it, save/load it, import the reference's.

L2I explains a decision with the few templates (columns of W) that matter for it, so the
dictionary is learned once, on log1p magnitude spectra of the training folds at the model
rate (16 kHz; the reference learned it at 44.1 kHz and applied it to 16-kHz spectra).

Two solvers of ``min ||V - W H||^2`` with W, H >= 0:

- ``gradient``: the reference's recipe, a convolutional encoder (spectrogram -> H) and the
  dictionary trained jointly with Adam; W is stored unconstrained and read through ReLU.
- ``multiplicative``: Lee & Seung's multiplicative updates for the Euclidean cost
  (NIPS 2000) on the training frames; W stays non-negative by construction.

A dictionary checkpoint is a folder in our format: ``nmf.W`` (F, K) in
``model.safetensors``, ``{"nmf": {n_freqs, n_components}}`` in ``config.yaml``, the sample
rate and STFT settings in ``meta.json``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from audiointerp.checkpoints import (
    CheckpointError,
    check_keys,
    load_checkpoint,
    load_torch_state_dict,
    save_checkpoint,
)
from audiointerp.config import to_dict
from audiointerp.features import FeatureConfig

CHECKPOINT_PREFIX = "nmf"
REFERENCE_FILE = "nmf_decoder.ckpt"
MU_EPS = 1e-10  # keeps multiplicative-update denominators positive


class NMFDictionary(nn.Module):
    """``V ~ relu(W) relu(H)``: W (F, K) spectral templates, H (B, K, T) activations.

    The parameter is named ``W`` and read through ReLU, like the reference's
    ``NMFDecoderAudio``, so its ``nmf_decoder.ckpt`` loads as is.
    """

    def __init__(self, n_freqs: int = 513, n_components: int = 100):
        super().__init__()
        self.W = nn.Parameter(0.1 * torch.rand(n_freqs, n_components))

    @property
    def n_freqs(self) -> int:
        return self.W.shape[0]

    @property
    def n_components(self) -> int:
        return self.W.shape[1]

    @property
    def templates(self) -> Tensor:
        """The non-negative dictionary relu(W), (F, K)."""
        return F.relu(self.W)

    def decode(self, activations: Tensor) -> Tensor:
        """H (B, K, T) -> reconstructed log1p magnitude (B, T, F)."""
        # (B, T, K) @ (K, F): one GEMM over all frames, twice as fast as the einsum path
        return F.relu(activations).transpose(1, 2) @ self.templates.T


class NMFEncoder(nn.Module):
    """The reference's ``NMFEncoder``: three Conv1d(k8, 'same') + ReLU, V (B, F, T) -> H."""

    def __init__(self, n_freqs: int = 513, n_components: int = 100):
        super().__init__()
        self.convenc = nn.Sequential(
            nn.Conv1d(n_freqs, 256, kernel_size=8, padding="same"),
            nn.ReLU(),
            nn.Conv1d(256, 128, kernel_size=8, padding="same"),
            nn.ReLU(),
            nn.Conv1d(128, n_components, kernel_size=8, padding="same"),
            nn.ReLU(),
        )

    def forward(self, log_magnitude: Tensor) -> Tensor:
        """(B, T, F) log1p magnitude -> activations H (B, K, T)."""
        return self.convenc(log_magnitude.transpose(1, 2))


@dataclass
class NMFConfig:
    """How to learn the dictionary.

    Attributes:
        n_components: K, the number of templates (reference 100).
        solver: ``gradient`` (the reference's encoder + Adam) or ``multiplicative``.
        epochs: passes over the clips (gradient) or update sweeps (multiplicative).
        batch_size: clips per Adam step (reference 2).
        lr: Adam rate (reference 5e-5).
        weight_decay: Adam weight decay (reference 2e-6).
        max_frames: multiplicative solver: at most this many training frames, drawn at
            random (W is what we keep; a subset bounds memory on the full data set).
        seed: initialisation and sampling seed.
    """

    n_components: int = 100
    solver: Literal["gradient", "multiplicative"] = "multiplicative"
    epochs: int = 300
    batch_size: int = 2
    lr: float = 5e-5
    weight_decay: float = 2e-6
    max_frames: int = 200_000
    seed: int = 1234


@dataclass
class NMFResult:
    """A learned dictionary and its training curve: (seconds since start, mean squared
    reconstruction error of the training spectra) after each epoch."""

    dictionary: NMFDictionary
    history: list[tuple[float, float]] = field(default_factory=list)


def fit_nmf(log_spectra: Tensor, config: NMFConfig) -> NMFResult:
    """Learn a dictionary from log1p magnitude spectra (N, T, F) with ``config.solver``."""
    assert log_spectra.dim() == 3 and bool((log_spectra >= 0).all()), "need (N, T, F) >= 0"
    if config.solver == "gradient":
        return fit_gradient(log_spectra, config)
    return fit_multiplicative(log_spectra, config)


def fit_gradient(log_spectra: Tensor, config: NMFConfig) -> NMFResult:
    """The reference's solver: encoder + dictionary, MSE, Adam over mini-batches of clips."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n_clips, _, n_freqs = log_spectra.shape
    dictionary = NMFDictionary(n_freqs, config.n_components)
    encoder = NMFEncoder(n_freqs, config.n_components)
    params = [*dictionary.parameters(), *encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[tuple[float, float]] = []
    start = time.perf_counter()
    for _ in tqdm(range(config.epochs), desc="nmf (gradient)", disable=None):
        total = 0.0
        for index in torch.randperm(n_clips, generator=generator).split(config.batch_size):
            batch = log_spectra[index]  # (b, T, F)
            loss = F.mse_loss(dictionary.decode(encoder(batch)), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append((time.perf_counter() - start, total / n_clips))
    return NMFResult(dictionary, history)


def fit_multiplicative(log_spectra: Tensor, config: NMFConfig) -> NMFResult:
    """Lee & Seung's Euclidean multiplicative updates on the frames of all clips.

    V (F, M) holds the frames as columns; each sweep updates H then W:
    ``H *= W^T V / (W^T W H)``, ``W *= V H^T / (W H H^T)``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    frames = log_spectra.reshape(-1, log_spectra.shape[-1])  # (M, F)
    if frames.shape[0] > config.max_frames:
        keep = torch.randperm(frames.shape[0], generator=generator)[: config.max_frames]
        frames = frames[keep]
    data = frames.T.contiguous().double()  # (F, M); float64 keeps the ratios stable
    scale = data.mean().sqrt() / config.n_components**0.5
    W = scale * torch.rand(data.shape[0], config.n_components, generator=generator).double()
    H = scale * torch.rand(config.n_components, data.shape[1], generator=generator).double()
    history: list[tuple[float, float]] = []
    start = time.perf_counter()
    data_energy = (data**2).sum()
    for _ in tqdm(range(config.epochs), desc="nmf (multiplicative)", disable=None):
        H *= (W.T @ data) / ((W.T @ W) @ H + MU_EPS)
        data_h, gram_h = data @ H.T, H @ H.T  # (F, K), (K, K)
        W *= data_h / (W @ gram_h + MU_EPS)
        # ||V - WH||^2 = ||V||^2 - 2 tr(W^T V H^T) + tr(W^T W H H^T), without forming WH
        residual = data_energy - 2 * (W * data_h).sum() + ((W.T @ W) * gram_h).sum()
        history.append((time.perf_counter() - start, residual.item() / data.numel()))
    dictionary = NMFDictionary(data.shape[0], config.n_components)
    with torch.no_grad():
        dictionary.W.copy_(W.float())
    return NMFResult(dictionary, history)


def project(dictionary: NMFDictionary, log_spectra: Tensor, iterations: int = 200) -> Tensor:
    """Best activations for a fixed dictionary: multiplicative updates of H only.

    Args:
        log_spectra: (N, T, F) >= 0.
    Returns:
        H (N, K, T) >= 0.
    """
    W = dictionary.templates.detach().double()  # (F, K)
    data = log_spectra.double().transpose(1, 2)  # (N, F, T)
    H = torch.full((data.shape[0], W.shape[1], data.shape[2]), 0.1, dtype=torch.float64)
    numerator = torch.einsum("fk,nft->nkt", W, data)
    gram = W.T @ W  # (K, K)
    for _ in range(iterations):
        H *= numerator / (torch.einsum("jk,nkt->njt", gram, H) + MU_EPS)
    return H.float()


def reconstruction_error(dictionary: NMFDictionary, log_spectra: Tensor) -> float:
    """Mean squared error of the best non-negative reconstruction of (N, T, F) spectra.

    Compares dictionaries learned by either solver on the same held-out data.
    """
    activations = project(dictionary, log_spectra)
    with torch.no_grad():
        return F.mse_loss(dictionary.decode(activations), log_spectra).item()


def save_nmf(
    folder: str | os.PathLike,
    dictionary: NMFDictionary,
    feature_config: FeatureConfig,
    meta: dict | None = None,
) -> Path:
    """Write a dictionary checkpoint folder (atomic)."""
    assert dictionary.n_freqs == feature_config.n_freqs, "dictionary does not fit these features"
    config = {
        CHECKPOINT_PREFIX: {"n_freqs": dictionary.n_freqs, "n_components": dictionary.n_components}
    }
    full_meta = {
        "sample_rate": feature_config.sample_rate,
        "features": to_dict(feature_config),
        **(meta or {}),
    }
    return save_checkpoint(folder, {f"{CHECKPOINT_PREFIX}.W": dictionary.W}, config, full_meta)


def load_nmf(
    folder: str | os.PathLike, feature_config: FeatureConfig | None = None
) -> NMFDictionary:
    """Read a dictionary folder; with ``feature_config``, check it was learned on those
    features (same sample rate and number of bins)."""
    checkpoint = load_checkpoint(folder)
    section = checkpoint.config.get(CHECKPOINT_PREFIX)
    if not isinstance(section, dict) or {"n_freqs", "n_components"} - set(section):
        raise CheckpointError(f"{folder}: config.yaml has no nmf.n_freqs / nmf.n_components")
    dictionary = NMFDictionary(int(section["n_freqs"]), int(section["n_components"]))
    state = checkpoint.state_dict(CHECKPOINT_PREFIX)
    check_keys(f"{folder} (nmf.*)", state, {"W": dictionary.W.shape})
    dictionary.load_state_dict(state, strict=True)
    if feature_config is not None:
        rate = checkpoint.meta.get("sample_rate")
        if rate != feature_config.sample_rate or dictionary.n_freqs != feature_config.n_freqs:
            raise CheckpointError(
                f"{folder}: dictionary learned at {rate} Hz with {dictionary.n_freqs} bins; "
                f"the model uses {feature_config.sample_rate} Hz with "
                f"{feature_config.n_freqs} bins"
            )
    return dictionary


def import_nmf(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    feature_config: FeatureConfig | None = None,
) -> Path:
    """Convert the reference's ``nmf_decoder.ckpt`` (in ``src_dir``) into our format.

    Key ``W`` (pre-ReLU, (513, 100) in the reference) is checked strictly. The reference
    learned it at 44.1 kHz; the folder records ``feature_config``'s rate (16 kHz by
    default) because that is where the reference's L2I applies it.
    """
    path = Path(src_dir) / REFERENCE_FILE
    state = load_torch_state_dict(path)
    if "W" not in state or state["W"].dim() != 2:
        check_keys(str(path), state, {"W": torch.Size([513, 100])})
    dictionary = NMFDictionary(*state["W"].shape)
    check_keys(str(path), state, {"W": dictionary.W.shape})
    dictionary.load_state_dict(state, strict=True)
    feature_config = feature_config or FeatureConfig()
    if dictionary.n_freqs != feature_config.n_freqs:
        raise CheckpointError(
            f"{path}: W has {dictionary.n_freqs} frequency bins; the features have "
            f"{feature_config.n_freqs} (n_fft {feature_config.n_fft})"
        )
    return save_nmf(out_dir, dictionary, feature_config, {"imported_from": str(path)})
