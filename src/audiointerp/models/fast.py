"""Inference-only copies of a module that do the same math faster on CPU.

:func:`fast_copy` deep-copies a module (a classifier, an interpreter) for explaining,
evaluating or serving, where no gradient is needed, and rewrites it layer by layer:

* an ``nn.ConvTranspose2d`` (groups 1) with many inputs and few outputs becomes a
  :class:`FoldConvTranspose2d`: one matrix product of the weight with the input, then
  ``F.fold`` (col2im) with the layer's stride, dilation, padding and output padding; the
  stock layer runs at a few GFLOP/s there (PIQ's and L2I's kernel-12 256 -> 1 layer: ~8x
  faster here);
* stride-2 layers with at least 64 channels on both sides, the reference's
  ``Conv2d(k4, s2)`` encoder layers and ``ConvTranspose2d(k3 or k4, s2)`` decoder
  layers, become :class:`WinogradConv2d` / :class:`WinogradConvTranspose2d`: Winograd
  F(4x4, 2x2) over sub-pixel phases (:mod:`audiointerp.models.winograd`), 2.56x fewer
  multiplications; PIQ's largest decoder layer 1.69 -> 0.77 s, the classifier's
  largest 256 -> 256 encoder layer 0.36 -> 0.17 s a clip (1 thread, against the stock
  layer on channels-first input, as the plain path runs it; 0.26 s channels-last), less
  than 2.56x because the transforms and copies move memory. Every other ``Conv2d`` and
  ``ConvTranspose2d`` keeps the stock implementation in channels-last memory, which
  oneDNN runs up to ~2x faster than channels-first (the classifier's 1 -> 256 first
  layer: 2x, when it is not fused as a stem);
* a Winograd layer that reads ``relu(stem(x))``, ``stem`` a convolution with few inputs
  (the conv2d encoder's 1 -> 256 first layer, declared as ``relu_stem``), computes the
  stem chunk by chunk where it reads it (:class:`WinogradConv2d`): its whole output is
  never made (1 -> 256 over 215 x 256: 56 MB, fresh memory the system faults in on every
  call);
* ``BatchNorm2d`` that directly follows a ``Conv2d`` or ``ConvTranspose2d`` in an
  ``nn.Sequential`` is folded into it, and one directly before a fold or Winograd
  transposed layer is absorbed into that (the fold layer with a border-exact shift map,
  the Winograd layer while it reads its input); a Sequential is the only chain whose
  data flow is certain without tracing ``forward``. ReLUs there that read a fresh output
  run in place. Elsewhere a module declares the pairs its ``forward`` chains directly, as
  attribute names in ``conv_norm_pairs`` (e.g. ``(("conv1", "bn1"),)``), and those fold;
* the copy is in eval mode with gradients off. Training keeps the original module.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.models import winograd
from audiointerp.models.winograd import winograd_applies

FOLD_MIN_IN_CHANNELS = 64  # matmul + col2im pays off from this many inputs (the product's
FOLD_MAX_OUT_CHANNELS = 16  # inner size) and up to this many outputs (oneDNN's weak case)
STEM_MAX_INPUTS = 64  # a stem's im2col product stays cheap up to this inner size
COLUMN_BUDGET_BYTES = 4 * 2**20  # col2im columns per chunk of input rows (cache-sized:
# PIQ's k12 layer 290 ms at 64 MiB, 218 ms at 4 MiB, 211 ms at 1 MiB, 1 thread)


class AffineInputConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution that can absorb a per-channel affine map of its input (an
    eval BatchNorm before it) with :meth:`absorb_input_affine`; subclasses compute the
    layer and add :meth:`_shift_map` when ``input_shift`` is set."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.input_shift: Tensor | None  # (1, C_out, kh, kw): an absorbed shift through W
        self.register_buffer("input_shift", None, persistent=False)
        self._shift_maps: dict[tuple[object, ...], Tensor] = {}

    @classmethod
    def like(cls, layer: nn.ConvTranspose2d) -> AffineInputConvTranspose2d:
        """This class with ``layer``'s geometry and weights."""
        copy_ = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.output_padding,
            layer.groups,
            layer.bias is not None,
            layer.dilation,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        copy_.load_state_dict(layer.state_dict())
        return copy_

    def absorb_input_affine(self, scale: Tensor, shift: Tensor) -> None:
        """Compute ``layer(scale * x + shift)`` from then on (scale, shift: (C_in,)).

        ``W (s x + t) = (W s) x + W t``, and ``W t`` is the layer applied to a constant
        image: the same everywhere but near the borders, where fewer taps land, so it is
        computed once per input size as a one-channel transposed convolution of ones.
        """
        assert self.input_shift is None, "one affine map per layer"
        with torch.no_grad():
            through = torch.einsum("c,cokl->okl", shift, self.weight).unsqueeze(0)
            self.weight.mul_(scale.view(-1, 1, 1, 1))
        self.input_shift = through
        self._shift_maps.clear()

    def _shift_map(self, height: int, width: int, extra: list[int]) -> Tensor:
        """(1, C_out, H_out, W_out) contribution of the absorbed shift, cached per size."""
        assert self.input_shift is not None
        key = (height, width, *extra, str(self.input_shift.device), self.input_shift.dtype)
        if key not in self._shift_maps:
            ones = self.input_shift.new_ones(1, 1, height, width)
            self._shift_maps[key] = F.conv_transpose2d(
                ones, self.input_shift, None, self.stride, self.padding, extra, 1, self.dilation
            )
        return self._shift_maps[key]


class FoldConvTranspose2d(AffineInputConvTranspose2d):
    """``nn.ConvTranspose2d`` computed as ``W^T x`` then col2im, input rows in chunks.

    The columns ``W^T x`` (B, C_out k_h k_w, H W) hold k_h k_w values per input pixel, so
    they are computed for chunks of input rows of at most ``COLUMN_BUDGET_BYTES`` and
    overlap-added into the uncropped output; padding crops it and output padding extends
    it, exactly as the stock layer.
    """

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H_out, W_out), the stock layer's sizes."""
        assert self.groups == 1 and self.padding_mode == "zeros", (self.groups, self.padding_mode)
        batched = input.dim() == 4
        x = input if batched else input.unsqueeze(0)
        extra = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        out = self._transpose(x, self.weight, extra)
        if self.bias is not None:
            out += self.bias.view(1, -1, 1, 1)
        if self.input_shift is not None:
            out += self._shift_map(x.shape[2], x.shape[3], extra)
        return out if batched else out.squeeze(0)

    def _transpose(self, x: Tensor, weight: Tensor, extra: list[int]) -> Tensor:
        """The bias-free transposed convolution of x (B, C_in, H, W) by weight (C_in,
        C_out, kh, kw) with this layer's geometry and output padding ``extra``."""
        (b, c_in, height, width), c_out = x.shape, weight.shape[1]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        (ph, pw), (oph, opw) = self.padding, extra
        full_h = (height - 1) * sh + dh * (kh - 1) + 1
        full_w = (width - 1) * sw + dw * (kw - 1) + 1 + max(0, opw - pw)
        out_h = full_h - 2 * ph + oph
        out_w = (width - 1) * sw + dw * (kw - 1) + 1 - 2 * pw + opw
        matrix = weight.reshape(c_in, c_out * kh * kw).t()  # (C_out kh kw, C_in)
        columns_per_row = c_out * kh * kw * width * x.element_size()
        rows = max(1, min(height, COLUMN_BUDGET_BYTES // max(1, columns_per_row)))
        full = x.new_zeros(b, c_out, full_h + max(0, oph - ph), full_w)
        for top in range(0, height, rows):
            chunk = x[:, :, top : top + rows]
            if x.stride(1) == 1:  # channels-last (maybe a cropped view): copy rows as such
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            chunk = chunk.flatten(2)  # (B, C_in, h W), a view where the rows are dense
            chunk_h = (chunk.shape[-1] // width - 1) * sh + dh * (kh - 1) + 1
            for item in range(b):  # 2-D products: no transposed copy of the columns
                columns = torch.mm(matrix, chunk[item])  # (C_out kh kw, h W)
                full[item, :, top * sh : top * sh + chunk_h] += F.fold(
                    columns, (chunk_h, full_w), (kh, kw), dilation=(dh, dw), stride=(sh, sw)
                )
        return full[:, :, ph : ph + out_h, pw : pw + out_w].contiguous()


class _WinogradWeight:
    """The Winograd-domain weight of a layer, recomputed when its weight changed in place
    (version counter: optimizer steps, ``load_state_dict``; not writes to ``.data``, which
    a fast copy, a snapshot, is not meant to see)."""

    weight: Tensor

    def _winograd_weight(self, rearranged: Callable[[Tensor], Tensor]) -> Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        cached = self.__dict__.get("_transformed")
        if cached is None or cached[0] != key:
            cached = (key, winograd.transform_weight(rearranged(self.weight)))
            self.__dict__["_transformed"] = cached
        return cached[1]


class WinogradConv2d(_WinogradWeight, nn.Conv2d):
    """``nn.Conv2d`` (kernel 4, stride 2) by Winograd over its input's sub-pixel phases
    (:mod:`audiointerp.models.winograd`); the same sizes and math as the stock layer.

    With a ``stem`` (set by :func:`fast_copy` where a module declares ``relu_stem``), it
    computes ``layer(relu(stem(x)))`` from the stem's input x, the stem evaluated chunk by
    chunk where the layer reads it: the stem's whole output (the conv2d encoder's first
    map: 56 MB a 5-s clip at dim 256) is never made.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stem: nn.Conv2d | None = None

    def forward(self, input: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H_out, W_out) (or from the stem's input)."""
        transformed = self._winograd_weight(winograd.phase_weight)
        stem = None
        if self.stem is not None:
            layer = self.stem
            stem = winograd.Stem(layer.weight, layer.bias, layer.stride, layer.padding)  # type: ignore[arg-type]
        out = winograd.conv2d_stride2(input, transformed, self.padding, stem)  # type: ignore[arg-type]
        if self.bias is not None:
            out += self.bias.view(1, -1, 1, 1)
        return out


class WinogradConvTranspose2d(_WinogradWeight, AffineInputConvTranspose2d):
    """``nn.ConvTranspose2d`` (stride 2, kernel 3 or 4) by Winograd: its four output phases
    are kernel-2 convolutions (:mod:`audiointerp.models.winograd`); the same sizes and
    math as the stock layer. An absorbed input affine map is applied per channel while the
    input's tiles are gathered (no extra pass, and no shift map: ``input_shift`` stays
    None)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.input_scale: Tensor | None  # (C_in,) each: the absorbed affine map
        self.input_offset: Tensor | None
        self.register_buffer("input_scale", None, persistent=False)
        self.register_buffer("input_offset", None, persistent=False)

    def absorb_input_affine(self, scale: Tensor, shift: Tensor) -> None:
        """Compute ``layer(scale * x + shift)`` from then on (scale, shift: (C_in,))."""
        assert self.input_scale is None, "one affine map per layer"
        self.input_scale, self.input_offset = scale.clone(), shift.clone()

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H_out, W_out), the stock layer's sizes."""
        extra = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        sizes = zip(input.shape[2:], self.padding, self.kernel_size, extra, strict=True)
        size = tuple(2 * (n - 1) - 2 * p + k + e for n, p, k, e in sizes)
        affine = None
        if self.input_scale is not None and self.input_offset is not None:
            affine = (self.input_scale, self.input_offset)
        return winograd.conv_transpose2d_stride2(
            input,
            self._winograd_weight(winograd.transposed_phase_weight),
            self.bias,
            self.padding,  # type: ignore[arg-type]
            size,  # type: ignore[arg-type]
            affine,
        )


class ChannelsLast(nn.Module):
    """Runs ``module`` on a channels-last copy of its 4-D input (oneDNN's fast layout)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)  # weights converted once

    def forward(self, input: Tensor, *args: object, **kwargs: object) -> Tensor:
        if input.dim() == 4:
            input = input.contiguous(memory_format=torch.channels_last)
        return self.module(input, *args, **kwargs)


def fold_batch_norm(conv: nn.Conv2d | nn.ConvTranspose2d, norm: nn.BatchNorm2d) -> nn.Module:
    """A copy of ``conv`` whose output equals ``norm(conv(x))`` with ``norm`` in eval mode."""
    assert conv.out_channels == norm.num_features, (conv.out_channels, norm.num_features)
    fused = copy.deepcopy(conv)
    scale, shift = _affine(norm)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    with torch.no_grad():
        if isinstance(conv, nn.ConvTranspose2d):  # weight (C_in, C_out, kh, kw)
            fused.weight.mul_(scale.view(1, -1, 1, 1))
        else:  # weight (C_out, C_in, kh, kw)
            fused.weight.mul_(scale.view(-1, 1, 1, 1))
        fused.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
    return fused


def fast_conv_transpose(layer: nn.ConvTranspose2d) -> nn.Module:
    """The fastest equivalent of ``layer`` measured on CPU (see the module notes)."""
    if layer.groups != 1 or layer.padding_mode != "zeros":
        return layer
    if layer.in_channels >= FOLD_MIN_IN_CHANNELS and layer.out_channels <= FOLD_MAX_OUT_CHANNELS:
        return FoldConvTranspose2d.like(layer)
    if winograd_applies(layer):
        return WinogradConvTranspose2d.like(layer)
    return ChannelsLast(layer)


def fast_conv(layer: nn.Conv2d) -> nn.Module:
    """The fastest equivalent of ``layer`` measured on CPU (see the module notes)."""
    if winograd_applies(layer):
        fast = WinogradConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,  # type: ignore[arg-type]
            layer.stride,  # type: ignore[arg-type]
            layer.padding,  # type: ignore[arg-type]
            bias=layer.bias is not None,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        fast.load_state_dict(layer.state_dict())
        return fast
    return ChannelsLast(layer)


def _affine(norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) (C,) with ``norm(x) = scale * x + shift`` in eval mode."""
    assert norm.running_mean is not None and norm.running_var is not None, "no running stats"
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def _foldable(norm: nn.Module) -> bool:
    return isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats


def _fold_into_previous(sequence: nn.Sequential) -> None:
    """Fold every BatchNorm2d that directly follows a conv of ``sequence`` into it."""
    names = list(sequence._modules)
    for first, second in zip(names, names[1:], strict=False):
        conv, norm = sequence._modules[first], sequence._modules[second]
        if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and _foldable(norm):
            sequence._modules[first] = fold_batch_norm(conv, norm)
            sequence._modules[second] = nn.Identity()


def _fold_into_next(sequence: nn.Sequential) -> None:
    """Fold every BatchNorm2d directly followed by a fold layer of ``sequence`` into it,
    and make ReLUs in-place where they read a fresh output of an earlier layer."""
    names = list(sequence._modules)
    for first, second in zip(names, names[1:], strict=False):
        norm, layer = sequence._modules[first], sequence._modules[second]
        if _foldable(norm) and isinstance(layer, AffineInputConvTranspose2d):
            layer.absorb_input_affine(*_affine(norm))
            sequence._modules[first] = nn.Identity()
    layers = list(sequence)
    for index, layer in enumerate(layers):
        producers = [m for m in layers[:index] if not isinstance(m, nn.Identity)]
        if isinstance(layer, nn.ReLU) and producers and _fresh_output(producers[-1]):
            layer.inplace = True


def _fresh_output(layer: nn.Module) -> bool:
    """Whether ``layer`` returns a new tensor (so a following in-place op is safe)."""
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear, ChannelsLast)
    return isinstance(layer, layers)


def _fold_declared_pairs(module: nn.Module) -> None:
    """Fold the BatchNorms of ``module.conv_norm_pairs`` into their convs (module notes)."""
    for conv_name, norm_name in getattr(module, "conv_norm_pairs", ()):
        conv, norm = getattr(module, conv_name), getattr(module, norm_name)
        assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)), (conv_name, type(conv))
        if _foldable(norm):
            setattr(module, conv_name, fold_batch_norm(conv, norm))
            setattr(module, norm_name, nn.Identity())


def _fuse_declared_stem(module: nn.Module) -> None:
    """Fuse ``module.relu_stem`` (stem conv, its norm, layer, its norm: ``forward``
    computes ``relu(norm(layer(relu(norm(stem(x))))))``) into one
    :class:`WinogradConv2d` with a stem, once the norms are folded, when the stem has at
    most ``STEM_MAX_INPUTS`` inputs per output (C_in kh kw). The fused layer takes the
    stem's place and the layer's becomes an identity, which ``forward`` skips with its
    norm and ReLU."""
    names = getattr(module, "relu_stem", None)
    if names is None:
        return
    stem, stem_norm, layer, layer_norm = (getattr(module, name) for name in names)
    if isinstance(stem, ChannelsLast):
        stem = stem.module
    fusable = (
        isinstance(layer, WinogradConv2d)
        and type(stem) is nn.Conv2d
        and all(isinstance(norm, nn.Identity) for norm in (stem_norm, layer_norm))
        and stem.groups == 1
        and stem.dilation == (1, 1)
        and stem.padding_mode == "zeros"
        and isinstance(stem.padding, tuple)
        and stem.weight[0].numel() <= STEM_MAX_INPUTS
    )
    if fusable:
        layer.stem = stem.to(memory_format=torch.contiguous_format)
        setattr(module, names[0], layer)
        setattr(module, names[2], nn.Identity())


def _rewrite(module: nn.Module) -> None:
    """Rewrite ``module``'s children in place, depth first."""
    if isinstance(module, nn.Sequential):
        _fold_into_previous(module)
    _fold_declared_pairs(module)
    for name, child in module.named_children():
        if type(child) is nn.ConvTranspose2d:
            setattr(module, name, fast_conv_transpose(child))
        elif type(child) is nn.Conv2d:
            setattr(module, name, fast_conv(child))
        else:
            _rewrite(child)
    _fuse_declared_stem(module)
    if isinstance(module, nn.Sequential):
        _fold_into_next(module)


def fast_copy(module: nn.Module) -> nn.Module:
    """An eval-only deep copy of ``module`` doing the same math faster (module notes).

    The copy shares nothing with ``module``: train ``module``, explain with the copy, and
    call this again after changing its weights. Parameter names may differ from the
    original's (folded BatchNorms, wrapped layers): save checkpoints from the original.
    """
    fast = copy.deepcopy(module).eval()
    _rewrite(fast)
    return fast.eval().requires_grad_(False)


def peak_activation_bytes(run: Callable[[], object], module: nn.Module) -> int:
    """The largest inputs + output of one leaf layer of ``module`` while ``run()`` runs.

    A forward's peak memory is about this: a layer's input and output live at once, while
    earlier activations are freed. Used to size batches from a memory budget. TorchScript
    layers (a user's classifier) run no hooks and are not counted.
    """
    peak = 0

    def record(_: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        nonlocal peak
        tensors = [t for t in (*inputs, output) if isinstance(t, Tensor)]
        peak = max(peak, sum(t.numel() * t.element_size() for t in tensors))

    leaves = [  # a Winograd layer with a stem runs the stem's weights, not the stem
        m
        for m in module.modules()
        if (not list(m.children()) or isinstance(m, WinogradConv2d))
        and not isinstance(m, torch.jit.ScriptModule)
    ]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return peak
