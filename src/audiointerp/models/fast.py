"""Inference-only copies of a module that do the same math faster on CPU.

:func:`fast_copy` deep-copies a module (a classifier, an interpreter) for explaining,
evaluating or serving, where no gradient is needed, and rewrites it layer by layer:

* an ``nn.ConvTranspose2d`` (groups 1) with many inputs and few outputs becomes a
  :class:`FoldConvTranspose2d`: one matrix product of the weight with the input, then
  ``F.fold`` (col2im) with the layer's stride, dilation, padding and output padding; the
  stock layer runs at a few GFLOP/s there (PIQ's and L2I's kernel-12 256 -> 1 layer: ~8x
  faster here). Other transposed convolutions keep the stock implementation in
  channels-last memory, which oneDNN runs ~2x faster than channels-first (sub-pixel phase
  convolutions measured slower than that here), and so does every ``Conv2d`` (the
  reference classifier's whole encoder 0.42 s instead of 0.50 s a clip, 1 thread: its
  1 -> 256 first layer is 2x faster, and the layers after it get channels-last inputs);
* ``BatchNorm2d`` that directly follows a ``Conv2d`` or ``ConvTranspose2d`` in an
  ``nn.Sequential`` is folded into it, and one directly before a fold layer is folded
  into that (with the border-exact shift map); a Sequential is the only chain whose data
  flow is certain without tracing ``forward``. ReLUs there that read a fresh output run
  in place. Elsewhere a module declares the pairs its ``forward`` chains directly, as
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

FOLD_MIN_IN_CHANNELS = 64  # matmul + col2im pays off from this many inputs (the product's
FOLD_MAX_OUT_CHANNELS = 16  # inner size) and up to this many outputs (oneDNN's weak case)
COLUMN_BUDGET_BYTES = 4 * 2**20  # col2im columns per chunk of input rows (cache-sized:
# PIQ's k12 layer 290 ms at 64 MiB, 218 ms at 4 MiB, 211 ms at 1 MiB, 1 thread)


class FoldConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` computed as ``W^T x`` then col2im, input rows in chunks.

    The columns ``W^T x`` (B, C_out k_h k_w, H W) hold k_h k_w values per input pixel, so
    they are computed for chunks of input rows of at most ``COLUMN_BUDGET_BYTES`` and
    overlap-added into the uncropped output; padding crops it and output padding extends
    it, exactly as the stock layer. :meth:`absorb_input_affine` folds a per-channel affine
    map of the input (an eval BatchNorm before the layer) into it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.input_shift: Tensor | None  # (1, C_out, kh, kw): an absorbed shift through W
        self.register_buffer("input_shift", None, persistent=False)
        self._shift_maps: dict[tuple[object, ...], Tensor] = {}

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
            self._shift_maps[key] = self._transpose(ones, self.input_shift, extra)
        return self._shift_maps[key]

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
            chunk = x[:, :, top : top + rows].flatten(2)  # (B, C_in, h W), a view if possible
            chunk_h = (chunk.shape[-1] // width - 1) * sh + dh * (kh - 1) + 1
            for item in range(b):  # 2-D products: no transposed copy of the columns
                columns = torch.mm(matrix, chunk[item])  # (C_out kh kw, h W)
                full[item, :, top * sh : top * sh + chunk_h] += F.fold(
                    columns, (chunk_h, full_w), (kh, kw), dilation=(dh, dw), stride=(sh, sw)
                )
        return full[:, :, ph : ph + out_h, pw : pw + out_w].contiguous()


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
        fold = FoldConvTranspose2d(
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
        fold.load_state_dict(layer.state_dict())
        return fold
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
        if _foldable(norm) and isinstance(layer, FoldConvTranspose2d):
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


def _rewrite(module: nn.Module) -> None:
    """Rewrite ``module``'s children in place, depth first."""
    if isinstance(module, nn.Sequential):
        _fold_into_previous(module)
    _fold_declared_pairs(module)
    for name, child in module.named_children():
        if type(child) is nn.ConvTranspose2d:
            setattr(module, name, fast_conv_transpose(child))
        elif type(child) is nn.Conv2d:
            setattr(module, name, ChannelsLast(child))
        else:
            _rewrite(child)
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

    leaves = [
        m
        for m in module.modules()
        if not list(m.children()) and not isinstance(m, torch.jit.ScriptModule)
    ]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return peak
