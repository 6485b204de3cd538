"""Decoders shared by the interpreters: classifier hidden maps -> full-resolution maps.

* :class:`Cnn14Decoder`: the reference's CNN14 transposed-conv decoder (``convt1`` ...
  ``convt9`` over blocks 6, 5, 4, 3), L-MAC's mask decoder (``CNN14PSI_stft``) and L2I's
  psi (``CNN14PSI_stft_2d``); the two differ only in the last layer and one ReLU.
* :func:`upsampling_stack`: the reference's ``PsiOptimized`` stack for the conv2d map
  (four ConvTranspose2d + ReLU + BatchNorm stages, then a k12 layer to one map), PIQ's
  decoder and the start of L2I's conv2d psi.
* :class:`ClassFiLM`: per-class scale and shift of hidden maps (L-MAC's class
  conditioning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fit2d(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    """Crop or zero-pad the last two axes of (B, C, H, W) to ``size`` (at the end)."""
    return F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


def xavier_init(module: nn.Module) -> None:
    """The reference's init for conv-type layers: xavier-uniform weights, zero bias
    (for ``module.apply``)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def upsampling_stack(in_channels: int, dim: int) -> list[nn.Module]:
    """The ``PsiOptimized`` layers: (B, C, H, W) -> (B, 1, 16 H + 1, 16 W + 1).

    ConvTranspose2d(k3, then k4 three times; stride 2, padding 1), each followed by ReLU
    and BatchNorm, then ConvTranspose2d(dim -> 1, k12, s1, p1): convs at indices 0, 3, 6,
    9, 12, BatchNorms at 2, 5, 8, 11, as the reference's state-dict keys.
    26 x 32 -> 417 x 513 (the conv2d classifier's map of a 5-s clip).
    """
    layers: list[nn.Module] = []
    for kernel in (3, 4, 4, 4):
        layers += [nn.ConvTranspose2d(in_channels, dim, kernel, 2, 1), nn.ReLU()]
        layers += [nn.BatchNorm2d(dim)]
        in_channels = dim
    layers.append(nn.ConvTranspose2d(dim, 1, 12, 1, 1))
    return layers


class Cnn14Decoder(nn.Module):
    """CNN14 blocks (6, 5, 4, 3) -> (B, out_channels, T', F'), the reference's topology.

    Transposed convolutions upsample block 6 and add the upsampled blocks 5, 4, 3 on the
    way (both ReLU'd; the upsampled path is cropped/zero-padded to the skip's size, so
    inputs of any length work; at the reference's sizes the two already agree). For
    blocks (13, 2), (13, 2), (26, 5), (53, 10) (a 431 x 80 log-mel input) it gives
    425 x 513 with ``last_kernel_frames`` 1 (L-MAC) and 431 x 513 with 7 (L2I).

    Args:
        in_channels: channels of (block6, block5, block4, block3).
        dim: width (reference 2048); layers use dim, dim/2, dim/4, dim/8.
        out_channels: channels of ``convt9`` (L-MAC: 1 mask; L2I: K components).
        last_kernel_frames: time extent of ``convt9``'s kernel (L-MAC 1, L2I 7).
        relu_before_last: ReLU on ``convt8``'s output (L2I yes; L-MAC's reference no).
    """

    def __init__(
        self,
        in_channels: tuple[int, ...] | list[int],
        dim: int,
        out_channels: int,
        last_kernel_frames: int,
        relu_before_last: bool,
    ):
        super().__init__()
        c6, c5, c4, c3 = in_channels
        d1, d2, d4, d8 = dim, max(1, dim // 2), max(1, dim // 4), max(1, dim // 8)
        self.convt1 = nn.ConvTranspose2d(c6, d1, 3, (2, 4), 1)
        self.convt2 = nn.ConvTranspose2d(c5, d1, 3, (2, 4), 1)
        self.convt3 = nn.ConvTranspose2d(d1, d1, (7, 4), (2, 4), 1)
        self.convt4 = nn.ConvTranspose2d(c4, d1, (5, 4), (2, 4), 1)
        self.convt5 = nn.ConvTranspose2d(d1, d2, (3, 5), (2, 2), 1)
        self.convt6 = nn.ConvTranspose2d(c3, d2, (3, 3), (2, 4), 1)
        self.convt7 = nn.ConvTranspose2d(d2, d4, (4, 3), (2, 2), (0, 5))
        self.convt8 = nn.ConvTranspose2d(d4, d8, (3, 4), (2, 2), (0, 2))
        self.convt9 = nn.ConvTranspose2d(d8, out_channels, (last_kernel_frames, 5), (1, 4), 0)
        self.relu_before_last = relu_before_last

    @staticmethod
    def _merge(main: Tensor, skip: Tensor) -> Tensor:
        skip = F.relu(skip)
        return fit2d(F.relu(main), skip.shape[-2:]) + skip

    def forward(self, hidden: tuple[Tensor, ...]) -> Tensor:
        """(block6, block5, block4, block3) -> (B, out_channels, T', F')."""
        block6, block5, block4, block3 = hidden
        h = self._merge(self.convt1(block6), self.convt2(block5))  # (B, d, 25, 5)
        h = self._merge(self.convt3(h), self.convt4(block4))  # (B, d, 53, 18)
        h = self._merge(self.convt5(h), self.convt6(block3))  # (B, d/2, 105, 37)
        h = F.relu(self.convt7(h))  # (B, d/4, 212, 65)
        h = self.convt8(h)  # (B, d/8, 425, 128)
        if self.relu_before_last:
            h = F.relu(h)
        return self.convt9(h)  # (B, out, 425 or 431, 513)


class ClassFiLM(nn.Module):
    """Per-class scale and shift of each hidden map's channels: h * (1 + a[c]) + b[c].

    Both start at zero, so an untrained conditioning leaves the maps unchanged.
    """

    def __init__(self, n_classes: int, channels: tuple[int, ...]):
        super().__init__()
        self.scale = nn.ParameterList(nn.Parameter(torch.zeros(n_classes, c)) for c in channels)
        self.shift = nn.ParameterList(nn.Parameter(torch.zeros(n_classes, c)) for c in channels)

    def forward(self, hidden: tuple[Tensor, ...], classes: Tensor) -> tuple[Tensor, ...]:
        """Maps (B, C_i, H_i, W_i) conditioned on ``classes`` (B,); shapes unchanged."""
        return tuple(
            h * (1 + scale[classes][:, :, None, None]) + shift[classes][:, :, None, None]
            for h, scale, shift in zip(hidden, self.scale, self.shift, strict=True)
        )


class ActivationMaskDecoder(nn.Module):
    """Our log-spectrogram + any classifier's activations -> mask logits (B, T, F).

    For a user's classifier (:mod:`audiointerp.models.external`), whose named layer may
    give (B, D) (logits, a pooled embedding), (B, L, D) (a transformer's tokens, L taken
    along time) or (B, K, H, W) (a CNN's map, H along time, averaged over W). They become
    a sequence (B, D, L) (:meth:`sequence`), layer-normalised over D, linearly
    interpolated to the T frames, and scale and shift (FiLM) the channels of a small conv
    stack over log1p|X| frame by frame; one last conv gives the logits.

    Args:
        hidden_shape: the activations' shape without the batch axis.
        dim: channels of the conv stack.
    """

    def __init__(self, hidden_shape: tuple[int, ...], dim: int):
        super().__init__()
        assert len(hidden_shape) in (1, 2, 3), hidden_shape
        self.channels = hidden_shape[-1] if len(hidden_shape) < 3 else hidden_shape[0]
        self.film = nn.Conv1d(self.channels, 2 * dim, 1)
        self.spectrum = nn.Sequential(
            nn.Conv2d(1, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1)
        )
        self.out = nn.Conv2d(dim, 1, 3, padding=1)

    @staticmethod
    def sequence(hidden: Tensor) -> Tensor:
        """(B, D), (B, L, D) or (B, K, H, W) activations -> (B, D or K, L or H)."""
        if hidden.dim() == 2:
            return hidden.unsqueeze(-1)
        if hidden.dim() == 3:
            return hidden.transpose(1, 2)
        assert hidden.dim() == 4, tuple(hidden.shape)
        return hidden.mean(dim=-1)

    def forward(self, log_magnitude: Tensor, sequence: Tensor) -> Tensor:
        """log1p|X| (B, T, F) and :meth:`sequence` (B, D, L) -> logits (B, T, F)."""
        frames = log_magnitude.shape[1]
        z = F.layer_norm(sequence.transpose(1, 2), (self.channels,)).transpose(1, 2)
        z = F.interpolate(z, size=frames, mode="linear", align_corners=False)
        scale, shift = self.film(z).chunk(2, dim=1)  # (B, dim, T) each
        h = self.spectrum(log_magnitude.unsqueeze(1))  # (B, dim, T, F)
        h = F.relu(h * (1 + scale[..., None]) + shift[..., None])
        return self.out(h).squeeze(1)
