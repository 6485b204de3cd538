"""Ground truth on mixtures: does the explanation of a class sound like that class's source?

For a two-source mixture M = S_a + S_b we explain the class of each source in turn (and
the predicted class) and score the explanation waveform against that source with
SI-SNR, and SI-SNRi = SI-SNR(explanation) - SI-SNR(mixture). Bounds on the same STFT:

* lower: the mixture itself (an all-ones mask), SI-SNRi 0 by definition;
* upper ("oracle"): the ideal ratio mask |S_c| / (|S_a| + |S_b|) applied to |M| with the
  mixture's phase. It is in [0, 1] by construction (no clipping needed), and is the
  best a mask over |M| can do without the sources' phase, up to cross-terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from audiointerp.explain import explain_targets
from audiointerp.features import FeatureExtractor, apply_mask
from audiointerp.interpreters.base import Interpreter
from audiointerp.models.base import Classifier

SI_SNR_EPS = 1e-8


def si_snr(estimate: Tensor, reference: Tensor) -> Tensor:
    """Scale-invariant signal-to-noise ratio in dB, (B, N) x (B, N) -> (B,).

    Both are made zero-mean; the estimate is projected on the reference (Le Roux et al.
    2019, "SDR - half-baked or well done?").
    """
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (
        reference.pow(2).sum(-1, keepdim=True) + SI_SNR_EPS
    )
    target = scale * reference
    noise = estimate - target
    ratio = (target.pow(2).sum(-1) + SI_SNR_EPS) / (noise.pow(2).sum(-1) + SI_SNR_EPS)
    return 10.0 * torch.log10(ratio)


def si_snri(estimate: Tensor, mixture: Tensor, reference: Tensor) -> Tensor:
    """SI-SNR improvement over the unprocessed mixture, (B,) dB."""
    return si_snr(estimate, reference) - si_snr(mixture, reference)


def ideal_ratio_mask(extractor: FeatureExtractor, sources: Tensor) -> Tensor:
    """|S_c| / sum_k |S_k| for each source, (B, K, N) -> (B, K, T, F) in [0, 1]."""
    batch, n_sources, n_samples = sources.shape
    magnitudes = extractor.stft(sources.reshape(batch * n_sources, n_samples)).abs()
    magnitudes = magnitudes.reshape(batch, n_sources, *magnitudes.shape[1:])
    total = magnitudes.sum(1, keepdim=True)
    return (magnitudes / total.clamp(min=1e-12)).clamp(0.0, 1.0)


@torch.no_grad()
def oracle_separation(extractor: FeatureExtractor, mixture: Tensor, sources: Tensor) -> Tensor:
    """Each source estimated with its ideal ratio mask on the mixture, (B, K, N)."""
    features = extractor(mixture)
    masks = ideal_ratio_mask(extractor, sources)
    estimates = [
        extractor.synthesize(apply_mask(masks[:, k], features.magnitude, "linear"), features)
        for k in range(sources.shape[1])
    ]
    return torch.stack(estimates, dim=1)


@dataclass
class MixtureEvaluation:
    """Per-mixture scores (n mixtures, K = 2 sources), dB.

    ``predicted_si_snri`` is NaN where the prediction is neither source's class.
    """

    si_snr: Tensor  # (n, K) explanation of source k's class vs source k
    si_snri: Tensor  # (n, K)
    oracle_si_snr: Tensor  # (n, K)
    oracle_si_snri: Tensor  # (n, K)
    predicted_si_snri: Tensor  # (n,)

    def summary(self) -> dict[str, float]:
        """Means over mixtures and sources; the method's SI-SNRi as a fraction of the oracle's."""
        oracle = float(self.oracle_si_snri.mean())
        method = float(self.si_snri.mean())
        matched = ~torch.isnan(self.predicted_si_snri)
        return {
            "si_snr": float(self.si_snr.mean()),
            "si_snri": method,
            "si_snri_predicted": float(self.predicted_si_snri[matched].mean())
            if matched.any()
            else math.nan,
            "prediction_in_mixture": float(matched.float().mean()),
            "oracle_si_snr": float(self.oracle_si_snr.mean()),
            "oracle_si_snri": oracle,
            "si_snri_oracle_fraction": method / oracle if oracle > 0 else math.nan,
            "n_mixtures": int(self.si_snri.shape[0]),
        }


def _as_tensor(value: Any) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float32)


def _batches(dataset: Sequence[dict], batch_size: int) -> list[dict[str, Tensor]]:
    batches = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batches.append(
            {
                "mixture": torch.stack([_as_tensor(item["mixture"]) for item in items]),
                "sources": torch.stack([_as_tensor(item["sources"]) for item in items]),
                "labels": torch.stack([torch.as_tensor(item["labels"]).long() for item in items]),
            }
        )
    return batches


def _source_scores(estimates: Tensor, mixture: Tensor, sources: Tensor) -> tuple[Tensor, Tensor]:
    """SI-SNR and SI-SNRi of each source's estimate, (B, K, N) -> two (B, K)."""
    snr = torch.stack([si_snr(estimates[:, k], sources[:, k]) for k in range(sources.shape[1])], 1)
    mixture_snr = torch.stack([si_snr(mixture, sources[:, k]) for k in range(sources.shape[1])], 1)
    return snr, snr - mixture_snr


def evaluate_mixtures(
    classifier: Classifier,
    interpreter: Interpreter,
    mixtures: Sequence[dict],
    batch_size: int = 4,
) -> MixtureEvaluation:
    """Explain each source's class (and the prediction) on every mixture and score it.

    Args:
        classifier: the explained classifier.
        interpreter: its interpreter.
        mixtures: items {"mixture" (N,), "sources" (K, N), "labels" (K,)} whose mixture is
            the sum of its sources (``data.mixtures.MixtureDataset``).
        batch_size: mixtures per forward pass.
    """
    assert len(mixtures) > 0, "no mixtures to evaluate"
    extractor = classifier.feature_extractor
    scores: dict[str, list[Tensor]] = {k: [] for k in ("snr", "snri", "osnr", "osnri", "pred")}
    for batch in tqdm(_batches(mixtures, batch_size), desc="mixtures", disable=None):
        mixture, sources, labels = batch["mixture"], batch["sources"], batch["labels"]
        n_sources = sources.shape[1]
        # a method that explains only the prediction is scored on its one mask per source
        per_class = interpreter.capabilities.any_target
        targets = [labels[:, k] if per_class else None for k in range(n_sources)]
        *per_source, predicted = explain_targets(classifier, interpreter, mixture, targets + [None])
        estimates = torch.stack([explained.waveform for explained in per_source], 1)
        for prefix, candidates in (
            ("", estimates),
            ("o", oracle_separation(extractor, mixture, sources)),
        ):
            snr, snri = _source_scores(candidates, mixture, sources)
            scores[prefix + "snr"].append(snr)
            scores[prefix + "snri"].append(snri)
        prediction = predicted.classifier_out.prediction
        matches = labels == prediction[:, None]  # (B, K)
        which = matches.float().argmax(1)
        reference = sources[torch.arange(len(which)), which]
        predicted_snri = si_snri(predicted.waveform, mixture, reference)
        scores["pred"].append(torch.where(matches.any(1), predicted_snri, math.nan))
    return MixtureEvaluation(
        si_snr=torch.cat(scores["snr"]),
        si_snri=torch.cat(scores["snri"]),
        oracle_si_snr=torch.cat(scores["osnr"]),
        oracle_si_snri=torch.cat(scores["osnri"]),
        predicted_si_snri=torch.cat(scores["pred"]),
    )
