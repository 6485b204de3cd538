"""Winograd F(4x4, 2x2) convolutions: the reference's stride-2 kernel-4 layers in fewer
multiplications (inference only, used by :mod:`audiointerp.models.fast`).

A stride-2 kernel-4 convolution is a stride-1 kernel-2 one over the input's four
sub-pixel phases (4 C_in input channels), and a stride-2 transposed convolution with a
kernel of at most 4 is a stride-1 kernel-2 one over the input padded by 1, with 4 C_out
output channels that are the output's four sub-pixel phases. Winograd's minimal filtering
algorithm (Lavin & Gray, "Fast algorithms for convolutional neural networks", CVPR 2016)
computes a kernel-2 convolution in 4 x 4 output tiles with 25 products per tile and
channel pair instead of 64, a 2.56x smaller matrix product: the reference decoders'
256 -> 256 layers and the classifier's 256 -> 256 encoder layers are most of an
explanation's time (README, "Speed"). The transforms are exact in exact arithmetic; in
float32 they add errors of ~1e-6 relative. The work is done in chunks of tile rows so the
transformed tiles stay cache-sized: each chunk's input pixels are copied into a
zero-padded slab (or, for a fused :class:`Stem`, computed there), its tiles transformed
from the slab and multiplied, and its outputs written into the layer's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.models import native

TILE = 4  # output rows and columns per tile
SPAN = TILE + 1  # input rows and columns per tile (kernel 2)
POINTS = (0.0, 1.0, -1.0, 0.5)  # the finite interpolation points; the fifth is infinity
CHUNK_BYTES = 16 * 2**20  # transformed tiles per chunk (Winograd domain, the largest array)
_LAST = torch.channels_last
MIN_CHANNELS = 64  # below this on either side the matrix products are too small to gain


@cache
def _transforms() -> tuple[Tensor, Tensor, Tensor]:
    """float64 (A^T (4, 5), G (5, 2), B^T (5, 5)) with ``y = A^T [(G g) * (B^T d)]``, the
    1-D 2-tap correlation ``y_k = g_0 d_k + g_1 d_(k+1)``, k < 4, for any g and d.

    A^T and G evaluate the output and kernel polynomials at the points (and infinity);
    B^T then follows from that identity as a linear system, solved exactly.
    """
    at = torch.zeros(TILE, SPAN, dtype=torch.float64)
    g = torch.zeros(SPAN, 2, dtype=torch.float64)
    for index, point in enumerate(POINTS):
        at[:, index] = torch.tensor([point**power for power in range(TILE)])
        g[index] = torch.tensor([1.0, point])
    at[TILE - 1, SPAN - 1] = g[SPAN - 1, 1] = 1.0
    coefficients = torch.stack([at[k] * g[:, t] for k in range(TILE) for t in range(2)])
    targets = torch.zeros(2 * TILE, SPAN, dtype=torch.float64)
    for k in range(TILE):
        for t in range(2):
            targets[2 * k + t, k + t] = 1.0
    bt = torch.linalg.lstsq(coefficients, targets).solution
    assert torch.allclose(coefficients @ bt, targets, atol=1e-12), "no exact B^T"
    bt = torch.where(bt.abs() < 1e-12, 0.0, bt)  # exact zeros, not rounding noise
    return at, g, bt.contiguous()  # row-major (lstsq solves column-major)


def transform_weight(weight: Tensor) -> Tensor:
    """(C_out, C_in, 2, 2) correlation kernel -> (25, C_in, C_out) Winograd-domain weight."""
    c_out, c_in = weight.shape[:2]
    g = _transforms()[1].to(weight)
    product = torch.einsum("ik,ockl,jl->ijco", g, weight, g)
    return product.reshape(SPAN * SPAN, c_in, c_out).contiguous()


class _ChunkBuffers:
    """A layer call's chunk arrays, allocated on first use (grown if a later chunk needs
    more) and reused by every chunk: arrays allocated and freed per chunk are handed back
    to the system and faulted in again each time (the tile copy ran at ~2 GB/s that way)."""

    def __init__(self, like: Tensor):
        self.like = like
        self.arrays: dict[str, Tensor] = {}

    def get(self, name: str, *shape: int) -> Tensor:
        """An uninitialised (shape) array, a view of the buffer ``name``."""
        size = math.prod(shape)
        array = self.arrays.get(name)
        if array is None or array.numel() < size:
            array = self.arrays[name] = self.like.new_empty(size)
        return array[:size].view(shape)


def _multiply(spectra: Tensor, transformed: Tensor, buffers: _ChunkBuffers) -> Tensor:
    """(25, N, C_in) Winograd-domain input tiles -> (16, N, C_out) output tiles (tile
    rows, columns first)."""
    at = _transforms()[0].to(spectra)
    n, c_out = spectra.shape[1], transformed.shape[2]
    products = buffers.get("products", SPAN * SPAN, n, c_out)
    # a batched product gives each thread whole matrices: as many as split evenly over
    # the threads go together, the rest one by one with all threads (2 threads: 24 + 1,
    # 4 % faster than 25 at once)
    even = SPAN * SPAN - SPAN * SPAN % torch.get_num_threads()
    torch.bmm(spectra[:even], transformed[:even], out=products[:even])
    for point in range(even, SPAN * SPAN):
        torch.mm(spectra[point], transformed[point], out=products[point])
    outputs = buffers.get("outputs", TILE * TILE, n * c_out)
    return torch.mm(torch.kron(at, at), products.flatten(1), out=outputs).view(
        TILE * TILE, n, c_out
    )


def _tile_rows_per_chunk(channels: int, tiles_per_row: int) -> int:
    """Tile rows per chunk: the Winograd-domain arrays of a chunk within ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // (SPAN * SPAN * channels * tiles_per_row * 4))


class Stem(NamedTuple):
    """A convolution with few inputs whose ReLU'd output feeds a Winograd layer
    (:func:`conv2d_stride2`): computed per chunk into the slab instead of as a whole
    image. ``weight`` (C, C_in, kh, kw), ``bias`` (C,) or None, ``stride``, ``padding``."""

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The stem's output (rows, columns) for an input of (height, width)."""
        sizes = zip((height, width), self.weight.shape[2:], self.stride, self.padding, strict=True)
        return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in sizes)  # type: ignore[return-value]


Fill = Callable[[Tensor, tuple[int, int]], None]  # (slab (B, H, W, C), its first pixel)


def _overlap(
    start: tuple[int, int], span: tuple[int, int], size: tuple[int, int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Where a (span) window from ``start`` meets a (size) image: the window's
    (top, bottom, left, right) and the image's (r0, r1, c0, c1)."""
    r0, c0 = max(0, start[0]), max(0, start[1])
    r1 = max(r0, min(size[0], start[0] + span[0]))
    c1 = max(c0, min(size[1], start[1] + span[1]))
    return (r0 - start[0], r1 - start[0], c0 - start[1], c1 - start[1]), (r0, r1, c0, c1)


def _zero_outside(slab: Tensor, top: int, bottom: int, left: int, right: int) -> None:
    """Zero ``slab`` (B, H, W, C) outside rows [top, bottom) x columns [left, right)."""
    inner = slab[:, top:bottom]
    for edge in (slab[:, :top], slab[:, bottom:], inner[:, :, :left], inner[:, :, right:]):
        edge.zero_()


def _copy_fill(x: Tensor, affine: tuple[Tensor, Tensor] | None) -> Fill:
    """Fills a slab with ``x``'s (B, H, W, C) pixels from a start (zero past its edges),
    mapped per channel by ``affine`` (scale, shift), each (C,), when given (an eval
    BatchNorm before the layer; the padding stays zero)."""

    def fill(slab: Tensor, start: tuple[int, int]) -> None:
        (top, bottom, left, right), (r0, r1, c0, c1) = _overlap(
            start, slab.shape[1:3], x.shape[1:3]
        )
        _zero_outside(slab, top, bottom, left, right)
        source, target = x[:, r0:r1, c0:c1], slab[:, top:bottom, left:right]
        if affine is None:
            target.copy_(source)
        else:
            torch.addcmul(affine[1], source, affine[0], out=target)

    return fill


def _stem_fill(
    raw: Tensor, stem: Stem, column_start: int, span_w: int, buffers: _ChunkBuffers
) -> Fill:
    """Fills a slab with ReLU(stem(raw)) from a start (zero past the stem output's edges),
    computed for just the slab's rows: an im2col of ``raw`` (B, C_in, H, W) with a column
    of ones times the stem's weight with its bias as a last row, written straight into the
    slab. Every chunk's columns start at ``column_start`` and span ``span_w``, those past
    the edges computed and then zeroed so that the slab's rows stay one contiguous block."""
    (kh, kw), (sh, sw), (ph, pw) = stem.weight.shape[2:], stem.stride, stem.padding
    size = stem.output_size(*raw.shape[2:])
    last = column_start + span_w - 1
    pad_left = max(0, pw - sw * column_start)
    pad_right = max(0, sw * last - pw + kw - raw.shape[3])
    pad_bottom = max(0, sh * (size[0] - 1) - ph + kh - raw.shape[2])
    padded = F.pad(raw, (pad_left, pad_right, ph, pad_bottom))
    matrix = stem.weight.reshape(stem.weight.shape[0], -1).t()  # (C_in kh kw, C)
    inputs = matrix.shape[0]
    if stem.bias is not None:
        matrix = torch.cat([matrix, stem.bias.unsqueeze(0)])
    _, s_c, s_h, s_w = padded.stride()

    def fill(slab: Tensor, start: tuple[int, int]) -> None:
        assert start[1] == column_start and slab.shape[2] == span_w, (start, slab.shape)
        (top, bottom, left, right), (r0, *_) = _overlap(start, slab.shape[1:3], size)
        if bottom > top:
            offset = r0 * sh * s_h + (sw * column_start - pw + pad_left) * s_w
            shape = (bottom - top, span_w, raw.shape[1], kh, kw)
            columns = buffers.get("columns", (bottom - top) * span_w, len(matrix))
            columns[:, inputs:] = 1.0  # the bias's column
            for item in range(len(raw)):
                windows = padded[item].as_strided(
                    shape,
                    (sh * s_h, sw * s_w, s_c, s_h, s_w),
                    padded[item].storage_offset() + offset,
                )
                columns[:, :inputs].unflatten(0, shape[:2]).unflatten(2, shape[2:]).copy_(windows)
                torch.mm(columns, matrix, out=slab[item, top:bottom].view(-1, matrix.shape[1]))
            slab[:, top:bottom].relu_()
        _zero_outside(slab, top, bottom, left, right)

    return fill


def _input_spectra(
    slab: Tensor, shape: tuple[int, int], phases: int, buffers: _ChunkBuffers
) -> Tensor:
    """The Winograd-domain input tiles ``B^T d B`` of the kernel-2 correlation of the
    ``phases`` x ``phases`` sub-pixel phase images of ``slab`` (B, H, W, C) (the pixels
    the tiles read, zero padding included), for ``shape`` (rows, columns) of tiles: (25,
    B rows cols, phases^2 C), channels phase-major.

    ``B^T`` is applied in two passes with an inner size of 5, where one 25 x 25 product
    would do 2.5x the arithmetic: along rows on the slab itself, where each tile row's
    input rows are one contiguous block, then along columns after one strided copy puts
    the tiles in the layout of the Winograd products (the copy moves whole channel
    vectors: a copy per tile position and phase measured 4x slower, from Python-loop
    overhead).
    """
    b, _, span_w, c = slab.shape
    (rows, cols), step = shape, TILE * phases  # input pixels between tiles
    bt = _transforms()[2].to(slab)
    compiled = native.input_transform() if slab.dtype == torch.float32 else None
    if compiled is not None:  # one pass, module notes of audiointerp.models.native
        spectra = buffers.get("spectra", SPAN * SPAN, b * rows * cols, phases * phases * c)
        compiled(slab, spectra, shape, phases, bt)
        return spectra
    pixel_row = span_w * c
    row = phases * pixel_row  # a tile row's i-th input row of every phase: contiguous
    rowed = buffers.get("rowed", b, rows, SPAN, row)  # B^T along rows: (B, rows, k, [a, W, C])
    for item in range(b):
        windows = slab[item].as_strided((rows, SPAN, row), (step * pixel_row, row, 1))
        torch.bmm(bt.expand(rows, SPAN, SPAN), windows, out=rowed[item])
    shape8 = (SPAN, SPAN, b, rows, cols, phases, phases, c)  # (k, j, B, rows, cols, a, b, C)
    tiles = buffers.get("tiles", *shape8).copy_(
        rowed.as_strided(
            shape8, (row, phases * c, rows * SPAN * row, SPAN * row, step * c, pixel_row, c, 1)
        )
    )
    tiles = tiles.view(SPAN, SPAN, -1)
    spectra = buffers.get("spectra", *tiles.shape)
    torch.bmm(bt.expand(SPAN, SPAN, SPAN), tiles, out=spectra)  # B^T along columns
    return spectra.view(SPAN * SPAN, b * rows * cols, phases * phases * c)


def _span(shape: tuple[int, int], phases: int) -> tuple[int, int]:
    """The input pixels (rows, columns) that ``shape`` (rows, columns) of tiles read."""
    return (TILE * phases * shape[0] + phases, TILE * phases * shape[1] + phases)


def _channels_inner(input: Tensor) -> Tensor:
    """(B, C, H, W) -> a (B, H, W, C) view with C contiguous, copying only if needed (a
    channels-last input, or a cropped view of one, is read in place)."""
    x = input.permute(0, 2, 3, 1)
    return x if x.stride(3) == 1 else x.contiguous()


def _channels_last_empty(like: Tensor, channels: int, height: int, width: int) -> Tensor:
    """An uninitialised (B, channels, height, width) tensor in channels-last memory."""
    shape = (like.shape[0], channels, height, width)
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_LAST)


def phase_weight(weight: Tensor) -> Tensor:
    """A kernel-4 stride-2 conv's weight (C_out, C_in, 4, 4) as the kernel-2 one over its
    input's phases (C_out, 4 C_in, 2, 2): phase (a, b), tap (t, u) is the weight at
    (2t + a, 2u + b); channels phase-major, as :func:`conv2d_stride2` orders its tiles."""
    c_out, c_in = weight.shape[:2]
    phases = weight.reshape(c_out, c_in, 2, 2, 2, 2).permute(0, 3, 5, 1, 2, 4)  # o a b c t u
    return phases.reshape(c_out, 4 * c_in, 2, 2)


def transposed_phase_weight(weight: Tensor) -> Tensor:
    """A stride-2 transposed conv's weight (C_in, C_out, k, k'), k, k' <= 4, as the kernel-2
    correlation (4 C_out, C_in, 2, 2) giving its output phases from the input padded by 1:
    phase a at tap s reads the weight at 2 (1 - s) + a (zero past the kernel)."""
    padded = F.pad(weight, (0, 4 - weight.shape[3], 0, 4 - weight.shape[2]))
    c_in, c_out = weight.shape[:2]
    taps = padded.reshape(c_in, c_out, 2, 2, 2, 2).flip(2, 4)  # c o s a s' b, with s = 1 - t
    return taps.permute(3, 5, 1, 0, 2, 4).reshape(4 * c_out, c_in, 2, 2)


def conv2d_stride2(
    input: Tensor, transformed: Tensor, padding: tuple[int, int], stem: Stem | None = None
) -> Tensor:
    """``F.conv2d(input, weight, None, 2, padding)`` for a kernel-4 ``weight``, given
    ``transform_weight(phase_weight(weight))``: (B, C_in, H, W) -> (B, C_out, H', W'),
    channels-last. With ``stem``, ``input`` is the stem's input and the layer reads
    ReLU(stem(input)) (:class:`Stem`)."""
    b, c_in, height, width = input.shape
    if stem is not None:
        c_in, (height, width) = stem.weight.shape[0], stem.output_size(height, width)
    (ph, pw), c_out = padding, transformed.shape[2]
    out_h, out_w = (height + 2 * ph - 4) // 2 + 1, (width + 2 * pw - 4) // 2 + 1
    rows, cols = -(-out_h // TILE), -(-out_w // TILE)
    out = _channels_last_empty(input, c_out, rows * TILE, cols * TILE)
    tiled = out.permute(0, 2, 3, 1).unflatten(2, (cols, TILE)).unflatten(1, (rows, TILE))
    step, buffers = _tile_rows_per_chunk(c_out + 4 * c_in, b * cols), _ChunkBuffers(input)
    if stem is None:
        fill = _copy_fill(_channels_inner(input), None)
    else:
        fill = _stem_fill(input, stem, -pw, _span((step, cols), 2)[1], buffers)
    for top in range(0, rows, step):
        n = min(step, rows - top)
        slab = buffers.get("slab", b, *_span((n, cols), 2), c_in)
        fill(slab, (2 * TILE * top - ph, -pw))
        spectra = _input_spectra(slab, (n, cols), 2, buffers)
        outputs = _multiply(spectra, transformed, buffers).view(TILE, TILE, b, n, cols, c_out)
        tiled[:, top : top + n] = outputs.permute(2, 3, 0, 4, 1, 5)  # B n k cols l C
    return out[:, :, :out_h, :out_w]


def conv_transpose2d_stride2(
    input: Tensor,
    transformed: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    output_size: tuple[int, int],
    input_affine: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``F.conv_transpose2d(input, weight, bias, 2, padding, ...)`` for a kernel of at most
    4, given ``transform_weight(transposed_phase_weight(weight))`` and the stock layer's
    output size: (B, C_in, H, W) -> (B, C_out, *output_size), channels-last (maybe a view
    of a slightly larger tensor). ``input_affine``: (scale, shift) applied to the input
    first, per channel."""
    (b, c_in, height, width), (ph, pw) = input.shape, padding
    c_out = transformed.shape[2] // 4
    rows, cols = -(-(height + 1) // TILE), -(-(width + 1) // TILE)
    # full[2q + a] = z_a[q], z_a the phase-a correlation of the input padded by 1; past
    # the phases (only output padding reaches there) the output is the bias alone
    full_h = max(2 * rows * TILE, ph + output_size[0])
    full_w = max(2 * cols * TILE, pw + output_size[1])
    full = _channels_last_empty(input, c_out, full_h, full_w)
    constant = bias.view(1, -1, 1, 1) if bias is not None else 0.0
    full[:, :, 2 * rows * TILE :] = constant
    full[:, :, :, 2 * cols * TILE :] = constant
    phases = full[:, :, : 2 * rows * TILE, : 2 * cols * TILE].permute(0, 2, 3, 1)
    phases = phases.unflatten(2, (cols, TILE, 2)).unflatten(1, (rows, TILE, 2))
    fill = _copy_fill(_channels_inner(input), input_affine)
    step, buffers = _tile_rows_per_chunk(4 * c_out + c_in, b * cols), _ChunkBuffers(input)
    for top in range(0, rows, step):
        n = min(step, rows - top)
        slab = buffers.get("slab", b, *_span((n, cols), 1), c_in)
        fill(slab, (TILE * top - 1, -1))
        spectra = _input_spectra(slab, (n, cols), 1, buffers)
        outputs = _multiply(spectra, transformed, buffers)
        if bias is not None:
            outputs = outputs.view(TILE * TILE, -1, 4, c_out).add_(bias)
        # (k, l, B, n, cols, a, b, C) -> (B, n, k, a, cols, l, b, C): rows 2 (4 n + k) + a
        outputs = outputs.view(TILE, TILE, b, n, cols, 2, 2, c_out)
        phases[:, top : top + n] = outputs.permute(2, 3, 0, 5, 4, 1, 6, 7)
    return full[:, :, ph : ph + output_size[0], pw : pw + output_size[1]]


def winograd_applies(layer: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    """Whether ``layer`` has a Winograd form here that is worth it (module notes): on the
    CPU (a GPU's convolution libraries choose their own algorithms)."""
    plain = (
        layer.weight.device.type == "cpu"
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and layer.dilation == (1, 1)
    )
    wide = min(layer.in_channels, layer.out_channels) >= MIN_CHANNELS
    if isinstance(layer, nn.ConvTranspose2d):
        shape = layer.stride == (2, 2) and all(k in (3, 4) for k in layer.kernel_size)
    else:
        shape = layer.stride == (2, 2) and layer.kernel_size == (4, 4)
    return plain and wide and shape and isinstance(layer.padding, tuple)
