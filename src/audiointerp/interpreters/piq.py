"""PIQ: posthoc interpretation via vector quantization (Paissan et al., arXiv 2303.12659).

The frozen conv2d classifier's hidden map goes through an adapter and a down-sampling
conv, is quantized with the codebook keys that belong to the explained class (nearest
neighbour, straight-through gradient), and a transposed-conv decoder turns the codes into
a sigmoid mask over the input STFT. Training teaches the decoder to reconstruct the
input's energy mask (log1p|X| > loud_threshold * max); the class-partitioned codebook is the
bottleneck that makes the mask class-specific.

Parameter names and shapes follow SpeechBrain's ``VectorQuantizedPSI_Audio`` so the
published ``psi_model.ckpt`` loads key for key (:func:`import_piq`).

The decoder's mask is shorter than the input (417 of 431 frames for a 5-s clip); we
extend it by repeating its last frame, so the first 417 frames are exactly the
reference's mask and the explanation covers the whole input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.config import ConfigError, from_dict
from audiointerp.features import Features, MaskDomain, fit_frames
from audiointerp.interpreters.base import Guidance, Interpreter, guided_bce, resolve_target
from audiointerp.interpreters.decoders import upsampling_stack, xavier_init
from audiointerp.interpreters.registry import register
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.models.conv2d import Conv2dClassifier, ResBlock


@dataclass
class PIQConfig:
    """PIQ settings; defaults are the reference's ``piq.yaml``.

    Attributes:
        dim: channels of the psi network. None: the classifier's width (the adapter reads
            the classifier's map directly, so the two must agree).
        n_keys: codebook size K, split among the classes (the reference's ``K``).
        loud_threshold: the reconstruction target is log1p|X| > loud_threshold * its
            per-clip max (the reference's ``mask_th``).
        reconstruction_weight, vq_weight, commit_weight: loss weights (the reference uses 1, 1, 1).
        reseed_dead_codes: at each epoch end, re-initialise the codes of a class that no
            example of that class used, from recent encoder outputs of that class.
        reservoir_size: encoder output vectors kept per class for re-seeding.
        mask_domain: ``log1p`` applies the mask to log1p|X| (the reference), ``linear``
            to |X| (see :func:`audiointerp.features.apply_mask`).
        loud_weight: extra weight of the reconstruction BCE averaged over the input's
            loud bins (:func:`~audiointerp.interpreters.base.guided_bce`); 0 in the
            reference.
    """

    dim: int | None = None
    n_keys: int = 1024
    loud_threshold: float = field(default=0.35, metadata={"aliases": ("mask_th",)})
    reconstruction_weight: float = field(default=1.0, metadata={"aliases": ("rec_weight",)})
    vq_weight: float = 1.0
    commit_weight: float = 1.0
    reseed_dead_codes: bool = False
    reservoir_size: int = 64
    mask_domain: MaskDomain = "log1p"
    loud_weight: float = 0.0
    # removed (measured not to help, docs/experiments.md); older checkpoints hold them off
    retired_keys: ClassVar[dict[str, Any]] = {"detail_channels": 0, "in_weight": 0.0}

    def __post_init__(self) -> None:
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if not 0.0 <= self.loud_threshold < 1.0:
            raise ValueError(f"loud_threshold must lie in [0, 1), got {self.loud_threshold}")
        if self.reservoir_size < 1:
            raise ValueError(f"reservoir_size must be positive, got {self.reservoir_size}")


def code_classes(n_keys: int, n_classes: int) -> Tensor:
    """(n_keys,) class owning each code: round(linspace(-0.5, C - 0.51, K)), as the reference.

    Contiguous blocks of about K / C codes (torch.round is half-to-even, so -0.5 -> 0).
    Raises ValueError when some class would own no code (K < C).
    """
    owners = torch.round(torch.linspace(-0.5, n_classes - 0.51, n_keys)).long()
    counts = torch.bincount(owners, minlength=n_classes)
    if n_keys < n_classes or int(counts.min()) == 0:
        raise ValueError(
            f"a codebook of {n_keys} keys cannot be split among {n_classes} classes "
            "(every class needs at least one key)"
        )
    return owners


@dataclass
class Quantized:
    """Result of the class-restricted nearest-neighbour search.

    Attributes:
        codes: (B, D, H, W) code vectors with the straight-through gradient: the forward
            value is the code, the gradient goes to the encoder output unchanged.
        code_vectors: (B, D, H, W) the same codes with the gradient to the codebook.
        indices: (B, H, W) chosen code per position.
    """

    codes: Tensor
    code_vectors: Tensor
    indices: Tensor


class ClassPartitionedCodebook(nn.Module):
    """K code vectors (``embedding.weight``, K x D), each owned by one class."""

    def __init__(self, n_keys: int, dim: int, n_classes: int):
        super().__init__()
        self.embedding = nn.Embedding(n_keys, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_keys, 1.0 / n_keys)
        self.register_buffer("owners", code_classes(n_keys, n_classes), persistent=False)

    def nearest(self, h: Tensor, target: Tensor) -> Tensor:
        """Index of the nearest code of class ``target[b]`` for every position of ``h[b]``.

        Args:
            h: (B, D, H, W) encoder output.
            target: (B,) class per example.
        Returns:
            (B, H, W) code indices.
        """
        batch, dim, height, width = h.shape
        z = h.permute(0, 2, 3, 1).reshape(batch, height * width, dim)  # (B, HW, D)
        codebook = self.embedding.weight.detach()  # (K, D)
        distances = (
            z.pow(2).sum(-1, keepdim=True)
            + codebook.pow(2).sum(-1)[None, None, :]
            - 2.0 * z @ codebook.t()
        )  # (B, HW, K)
        foreign = self.owners[None, :] != target[:, None]  # (B, K)
        distances = distances.masked_fill(foreign[:, None, :], float("inf"))
        return distances.argmin(dim=-1).reshape(batch, height, width)

    def forward(self, h: Tensor, target: Tensor) -> Quantized:
        """(B, D, H, W) -> :class:`Quantized` codes from class ``target``'s partition."""
        indices = self.nearest(h, target)
        code_vectors = self.embedding(indices).permute(0, 3, 1, 2)  # (B, D, H, W)
        codes = code_vectors.detach() + (h - h.detach())  # value: the code; grad: to h
        return Quantized(codes=codes, code_vectors=code_vectors, indices=indices)


@dataclass
class CodebookUsage:
    """Which codes the training examples used since the last reset.

    Attributes:
        used: fraction of all codes used at least once.
        per_class: (C,) fraction of each class's codes used (0 for classes never seen).
        classes_seen: (C,) bool, whether any example was explained as that class.
        code_used: (K,) bool, whether each code was used.
    """

    used: float
    per_class: Tensor
    classes_seen: Tensor
    code_used: Tensor

    def summary(self) -> dict[str, float]:
        """Scalars for a training log: overall, and min/mean over the classes seen."""
        seen = self.per_class[self.classes_seen]
        return {
            "codebook/used": self.used,
            "codebook/used_class_min": float(seen.min()) if len(seen) else 0.0,
            "codebook/used_class_mean": float(seen.mean()) if len(seen) else 0.0,
        }


def classifier_width(classifier: Classifier) -> int:
    """Channels of the conv2d classifier's hidden map (PIQ's adapter input)."""
    if not isinstance(classifier, Conv2dClassifier):
        raise ConfigError(f"PIQ explains the conv2d classifier; got {type(classifier).__name__}")
    return classifier.encoder.conv1.out_channels


@register("piq")
class PIQ(Interpreter):
    """Adapter -> down conv -> class-partitioned VQ -> up conv -> decoder -> sigmoid mask.

    Args:
        config: :class:`PIQConfig` with ``dim`` resolved.
        n_classes: classes of the explained classifier (codebook partitions).
    """

    config_class = PIQConfig
    learns_targets = True  # the class picks the codebook partition the mask is decoded from
    external_classifiers = False  # its quantiser reads the conv2d classifier's map

    def __init__(self, config: PIQConfig, n_classes: int):
        super().__init__()
        assert config.dim is not None, "resolve dim before building PIQ"
        dim = config.dim
        self.config = config
        self.mask_domain = config.mask_domain
        self.n_classes = n_classes
        self.adapter = ResBlock(dim)
        self.down = nn.Conv2d(dim, dim, 4, 2, 1)
        self.codebook = ClassPartitionedCodebook(config.n_keys, dim, n_classes)
        self.up = nn.ConvTranspose2d(dim, dim, 4, 2, 1)
        self.decoder = nn.Sequential(*upsampling_stack(dim, dim))
        for module in self.modules():  # pre-order (not .apply): the seeded init stays as it was
            xavier_init(module)
        reservoir = config.reservoir_size if config.reseed_dead_codes else 0
        self.register_buffer("code_hits", torch.zeros(config.n_keys), persistent=False)
        self.register_buffer("reservoir", torch.zeros(n_classes, reservoir, dim), persistent=False)
        self.register_buffer("reservoir_count", torch.zeros(n_classes), persistent=False)

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> PIQ:
        """Build for ``classifier`` from a plain mapping of :class:`PIQConfig` fields."""
        parsed = from_dict(PIQConfig, config, prefix="interpreter.")
        width = classifier_width(classifier)
        if parsed.dim is not None and parsed.dim != width:
            raise ConfigError(
                f"interpreter.dim: {parsed.dim} != the classifier's width {width} "
                "(PIQ's adapter reads the classifier's hidden map)"
            )
        try:
            code_classes(parsed.n_keys, classifier.n_classes)
        except ValueError as error:
            raise ConfigError(f"interpreter.n_keys: {error}") from error
        return cls(dataclasses.replace(parsed, dim=width), classifier.n_classes)

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    # --- the data flow, one step per method -------------------------------------------

    def encode(self, hidden: Tensor) -> Tensor:
        """Classifier map (B, D, T', F') -> VQ input h (B, D, T'/2, F'/2), (26x32 -> 13x16)."""
        return self.down(self.adapter(hidden))

    def quantize(self, h: Tensor, target: Tensor) -> Quantized:
        """h (B, D, H, W) -> nearest codes of class ``target`` (B,)."""
        return self.codebook(h, target)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, D, H, W) -> mask logits (B, T_dec, F_dec); 13x16 -> 417x513."""
        return self.decoder(self.up(codes)).squeeze(1)

    def mask_logits(self, features: Features, codes: Tensor) -> tuple[Tensor, int]:
        """Logits (B, T, F) fitted to the input, and the decoder's own frame count.

        The reference decoder stops at 417 of 431 frames; repeating its last frame keeps
        the first 417 frames exactly the reference's mask and covers the whole input.
        """
        decoded = self.decode(codes)
        frames, bins = features.magnitude.shape[1:]
        logits = fit_frames(decoded, frames, mode="edge")
        logits = fit_frames(logits.transpose(1, 2), bins, mode="edge").transpose(1, 2)
        return logits, decoded.shape[1]

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        """Mask (B, T, F) in [0, 1] explaining class ``target`` (default: the prediction)."""
        classes = resolve_target(classifier_out, target)
        quantized = self.quantize(self.encode(classifier_out.hidden[0]), classes)
        return torch.sigmoid(self.mask_logits(features, quantized.codes)[0])

    # --- training ---------------------------------------------------------------------

    def loss(
        self,
        features: Features,
        classifier_out: ClassifierOutput,
        classifier: Classifier,
        guidance: Guidance | None = None,
    ) -> dict[str, Tensor]:
        """rec: BCE(mask, target); vq: ||sg(h) - z_q||^2; commit: ||h - sg(z_q)||^2.

        The class is ``guidance.classes`` (default: the prediction). The target is
        :meth:`Guidance.target_mask` at ``loud_threshold``: on a clean clip the reference's energy
        mask, on a mixture the bins where that class's source is loud and dominant. It is
        compared over the decoder's own frames (the first 417 for a 5-s clip), with the
        threshold taken per clip over those frames, as the reference does.
        """
        guidance = guidance or Guidance.unmixed(features, classifier_out.prediction)
        classes = guidance.classes
        h = self.encode(classifier_out.hidden[0])
        quantized = self.quantize(h, classes)
        logits, decoded_frames = self.mask_logits(features, quantized.codes)
        frames = min(decoded_frames, logits.shape[1])
        guidance = guidance.crop(frames, logits.shape[2])
        if self.training:
            self._record_usage(quantized.indices, classes, h.detach())
        cfg = self.config
        return {
            "loss/rec": cfg.reconstruction_weight
            * guided_bce(
                logits[:, :frames],
                guidance,
                features.log_magnitude[:, :frames],
                cfg.loud_threshold,
                cfg.loud_weight,
            ).mean(),
            "loss/vq": cfg.vq_weight * F.mse_loss(quantized.code_vectors, h.detach()),
            "loss/commit": cfg.commit_weight * F.mse_loss(h, quantized.code_vectors.detach()),
        }

    # --- codebook usage and dead-code re-seeding ---------------------------------------

    @torch.no_grad()
    def _record_usage(self, indices: Tensor, classes: Tensor, h: Tensor) -> None:
        """Count used codes; keep one random encoder vector per example for re-seeding."""
        self.code_hits += torch.bincount(indices.flatten(), minlength=len(self.code_hits))
        capacity = self.reservoir.shape[1]
        if capacity == 0:
            return
        batch, dim = h.shape[:2]
        vectors = h.reshape(batch, dim, -1)  # (B, D, HW)
        positions = torch.randint(vectors.shape[-1], (batch,), device=h.device)
        for example in range(batch):
            label = int(classes[example])
            slot = int(self.reservoir_count[label]) % capacity
            self.reservoir[label, slot] = vectors[example, :, positions[example]]
            self.reservoir_count[label] += 1

    @torch.no_grad()
    def codebook_usage(self) -> CodebookUsage:
        """Usage since the last :meth:`end_epoch` (summed over processes under DDP)."""
        hits = self.code_hits.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(hits)
        used = hits > 0
        owners = self.codebook.owners
        per_class_used = torch.bincount(owners, weights=used.float(), minlength=self.n_classes)
        per_class_size = torch.bincount(owners, minlength=self.n_classes).float()
        seen = torch.bincount(owners, weights=hits, minlength=self.n_classes) > 0
        return CodebookUsage(
            used=float(used.float().mean()),
            per_class=(per_class_used / per_class_size).cpu(),
            classes_seen=seen.cpu(),
            code_used=used,
        )

    @torch.no_grad()
    def reseed_dead_codes(self, usage: CodebookUsage) -> int:
        """Re-initialise each seen class's unused codes from its recent encoder outputs.

        New codes are random reservoir vectors plus small noise (so two re-seeded codes
        differ). Under DDP rank 0's codebook is broadcast afterwards, so ranks agree.
        Returns the number of codes re-seeded.
        """
        weight = self.codebook.embedding.weight
        capacity = self.reservoir.shape[1]
        reseeded = 0
        for label in torch.nonzero(usage.classes_seen).flatten().tolist():
            filled = min(int(self.reservoir_count[label]), capacity)
            dead = torch.nonzero((self.codebook.owners == label) & ~usage.code_used).flatten()
            if filled == 0 or len(dead) == 0:
                continue
            pool = self.reservoir[label, :filled]  # (filled, D)
            picks = pool[torch.randint(filled, (len(dead),), device=pool.device)]
            noise = 0.01 * pool.std(dim=0, unbiased=False) * torch.randn_like(picks)
            weight[dead] = picks + noise
            reseeded += len(dead)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(weight.data, src=0)
        return reseeded

    @torch.no_grad()
    def end_epoch(self) -> dict[str, float]:
        """Epoch statistics for the log; re-seeds dead codes if configured; resets counts."""
        usage = self.codebook_usage()
        stats = usage.summary()
        if self.config.reseed_dead_codes:
            stats["codebook/reseeded"] = float(self.reseed_dead_codes(usage))
        self.code_hits.zero_()
        return stats
