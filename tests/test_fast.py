"""The fast inference path: every rewrite against the plain layer, then whole explanations.

Random weights and inputs, odd sizes; outputs equal to float tolerance. End to end, PIQ,
L2I and L-MAC explanations with and without ``fast`` agree to >= 40 dB.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audiointerp.features import FeatureConfig
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import ClassifierConfig, build_classifier, native, winograd
from audiointerp.models import fast as fast_module
from audiointerp.models.cnn14 import ConvBlock
from audiointerp.models.conv2d import Conv2dEncoder
from audiointerp.models.fast import (
    ChannelsLast,
    FoldConvTranspose2d,
    WinogradConv2d,
    WinogradConvTranspose2d,
    fast_conv,
    fast_conv_transpose,
    fast_copy,
    fold_batch_norm,
    peak_activation_bytes,
)
from audiointerp.pipeline import Explainer


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(params=["compiled", "pytorch"])
def kernels(request, monkeypatch) -> str:
    """The Winograd input transform from the compiled kernel, then from PyTorch."""
    if request.param == "pytorch":
        monkeypatch.setattr(native, "input_transform", lambda: None)
    elif native.input_transform() is None:
        pytest.skip("no compiled kernels on this machine")
    return request.param


# (C_in, C_out, kernel, stride, padding, output_padding, dilation, bias, (H, W))
TRANSPOSED = [
    (5, 1, 12, 1, 1, 0, 1, True, (9, 7)),  # PIQ's / L2I's last layer
    (4, 3, 12, 2, 1, 1, 1, True, (5, 8)),
    (3, 2, 12, 4, 5, 3, 1, False, (6, 5)),
    (6, 4, 4, 2, 1, 0, 1, True, (7, 11)),  # the decoders' doubling layers
    (4, 5, 3, 2, 1, 1, 1, True, (9, 6)),
    (3, 4, (7, 5), (1, 4), 0, 0, 1, True, (5, 3)),  # CNN14 decoders' shapes
    (3, 2, (4, 3), (2, 2), (0, 5), 0, 1, True, (6, 9)),
    (2, 3, 3, 2, 2, 0, 2, True, (7, 5)),  # dilation
]


def _random_norm(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    generator = torch.Generator().manual_seed(seed)
    norm = nn.BatchNorm2d(channels).eval()
    norm.running_mean.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
    norm.weight.copy_(torch.randn(channels, generator=generator))
    norm.bias.copy_(torch.randn(channels, generator=generator))
    return norm


def _randomise_norms(module: nn.Module) -> None:
    for index, norm in enumerate(m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.load_state_dict(_random_norm(norm.num_features, index).state_dict())


def _fold_copy(layer: nn.ConvTranspose2d) -> FoldConvTranspose2d:
    fold = FoldConvTranspose2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
        layer.output_padding, 1, layer.bias is not None, layer.dilation,
    )  # fmt: skip
    fold.load_state_dict(layer.state_dict())
    return fold


@pytest.mark.parametrize("chunk_bytes", [64 * 2**20, 1])  # one chunk; one input row a chunk
@pytest.mark.parametrize(("c_in", "c_out", "k", "s", "p", "op", "d", "bias", "size"), TRANSPOSED)
def test_fold_transposed_convolution_equals_the_stock_layer(
    monkeypatch, chunk_bytes, c_in, c_out, k, s, p, op, d, bias, size
) -> None:
    monkeypatch.setattr(fast_module, "COLUMN_BUDGET_BYTES", chunk_bytes)
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(c_in, c_out, k, s, p, op, bias=bias, dilation=d)
    x = torch.randn(2, c_in, *size)
    expected = layer(x)
    got = _fold_copy(layer)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_fold_copy(layer)(x[0]), expected[0], rtol=1e-5, atol=1e-5)


def test_fold_follows_output_size_and_channels_last_input() -> None:
    """L-MAC's decoder asks for output sizes; inputs may arrive channels-last."""
    torch.manual_seed(1)
    layer = nn.ConvTranspose2d(6, 1, 4, 2, 1)
    x = torch.randn(1, 6, 13, 17).contiguous(memory_format=torch.channels_last)
    for size in ((26, 34), (27, 35)):
        expected = layer(x, output_size=size)
        torch.testing.assert_close(_fold_copy(layer)(x, output_size=size), expected)
        assert expected.shape[-2:] == size


@pytest.mark.parametrize(("c_in", "c_out", "k", "s", "p", "op", "d", "bias", "size"), TRANSPOSED)
def test_absorbed_batch_norm_before_a_fold_layer(c_in, c_out, k, s, p, op, d, bias, size) -> None:
    """The shift map is exact at the borders, where fewer taps land."""
    torch.manual_seed(2)
    layer = nn.ConvTranspose2d(c_in, c_out, k, s, p, op, bias=bias, dilation=d)
    norm = _random_norm(c_in)
    x = torch.randn(2, c_in, *size)
    fold = _fold_copy(layer)
    fold.absorb_input_affine(*fast_module._affine(norm))
    for _ in range(2):  # computed, then cached
        torch.testing.assert_close(fold(x), layer(norm(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
def test_batch_norm_folded_into_the_previous_convolution(transposed: bool) -> None:
    torch.manual_seed(3)
    conv = nn.ConvTranspose2d(3, 5, 4, 2, 1) if transposed else nn.Conv2d(3, 5, 3, 2, 1)
    norm = _random_norm(5)
    x = torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(fold_batch_norm(conv, norm)(x), norm(conv(x)), rtol=1e-5, atol=1e-5)
    no_bias = nn.Conv2d(3, 5, 3, bias=False)
    torch.testing.assert_close(
        fold_batch_norm(no_bias, norm)(x), norm(no_bias(x)), atol=1e-5, rtol=1e-5
    )


def test_layer_choice_and_channels_last_equality() -> None:
    """Few outputs from many inputs: the fold layer; otherwise stock layers channels-last."""
    torch.manual_seed(4)
    narrow = nn.ConvTranspose2d(64, 1, 12, 1, 1)
    wide = nn.ConvTranspose2d(8, 8, 4, 2, 1)
    assert isinstance(fast_conv_transpose(narrow), FoldConvTranspose2d)
    assert isinstance(fast_conv_transpose(wide), ChannelsLast)
    x = torch.randn(1, 8, 7, 9)
    torch.testing.assert_close(fast_conv_transpose(wide)(x), wide(x))
    torch.testing.assert_close(
        fast_conv_transpose(wide)(x, output_size=(15, 19)), wide(x, output_size=(15, 19))
    )


def test_fast_copy_of_a_chain_is_equal_and_leaves_the_original_alone() -> None:
    torch.manual_seed(5)
    chain = nn.Sequential(
        nn.ReLU(),  # first: must not modify the caller's input in place
        nn.Conv2d(64, 8, 3, 1, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 64, 4, 2, 1),
        nn.ReLU(),
        nn.BatchNorm2d(64),
        nn.ConvTranspose2d(64, 1, 12, 1, 1),
    )
    _randomise_norms(chain)
    chain.eval()
    x = torch.randn(2, 64, 11, 9)
    before = x.clone()
    expected = chain(x)
    fast = fast_copy(chain)
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x, before)
    kinds = [type(m) for m in fast]
    assert kinds == [
        nn.ReLU, ChannelsLast, nn.Identity, nn.ReLU, ChannelsLast, nn.ReLU, nn.Identity,
        FoldConvTranspose2d,
    ]  # fmt: skip
    assert not fast[0].inplace and fast[3].inplace and fast[5].inplace
    assert [type(m) for m in chain][1:3] == [nn.Conv2d, nn.BatchNorm2d]
    assert all(p.requires_grad for p in chain.parameters())
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training


def test_declared_conv_norm_pairs_fold_in_the_encoders() -> None:
    """The conv2d encoder and CNN14's conv block chain conv -> BN in ``forward``."""
    torch.manual_seed(7)
    encoder, block = Conv2dEncoder(dim=8), ConvBlock(3, 5)
    for module in (encoder, block):
        _randomise_norms(module)
        module.eval()
    spectrogram, x = torch.rand(2, 37, 45), torch.randn(2, 3, 11, 9)  # odd sizes
    expected = encoder(spectrogram), block(x, 2)
    fast_encoder, fast_block = fast_copy(encoder), fast_copy(block)
    torch.testing.assert_close(fast_encoder(spectrogram), expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_block(x, 2), expected[1], rtol=1e-5, atol=1e-5)
    folded = [fast_encoder.bn1, fast_encoder.bn4, fast_block.norm1, fast_block.norm2]
    assert all(isinstance(norm, nn.Identity) for norm in folded)
    assert isinstance(fast_encoder.conv1, ChannelsLast)  # every Conv2d, one input or many
    assert isinstance(encoder.bn1, nn.BatchNorm2d) and block.conv1.bias is None  # originals


@pytest.mark.parametrize("chunk_bytes", [64 * 2**20, 1])  # one chunk; one tile row a chunk
def test_the_encoder_stem_fuses_into_its_winograd_layer(monkeypatch, kernels, chunk_bytes) -> None:
    """conv1 -> BN -> ReLU -> conv2 of the conv2d encoder: conv1 computed inside conv2's
    chunks equals the stock chain (odd sizes, a batch of 2, stem-padded edges)."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(3)
    encoder = Conv2dEncoder(dim=64)
    _randomise_norms(encoder)
    encoder.eval()
    spectrogram = torch.rand(2, 45, 37)
    fast = fast_copy(encoder)
    assert isinstance(fast.conv1, WinogradConv2d) and isinstance(fast.conv1.stem, nn.Conv2d)
    assert isinstance(fast.conv2, nn.Identity)
    torch.testing.assert_close(fast(spectrogram), encoder(spectrogram), rtol=1e-4, atol=1e-5)
    unfused = Conv2dEncoder(dim=64)
    _randomise_norms(unfused)
    unfused.bn1 = nn.BatchNorm2d(64, track_running_stats=False)  # cannot fold
    unfused.eval()
    fast_unfused = fast_copy(unfused)
    assert isinstance(fast_unfused.conv2, WinogradConv2d) and fast_unfused.conv2.stem is None
    torch.testing.assert_close(
        fast_unfused(spectrogram), unfused(spectrogram), rtol=1e-4, atol=1e-5
    )


# (B, stem C_in, C, (H, W), stem kernel, stride, padding, bias)
STEMS = [
    (1, 1, 4, (37, 45), 4, 2, 1, True),  # the conv2d encoder's
    (2, 1, 3, (64, 64), 4, 2, 1, False),
    (2, 3, 5, (29, 53), 3, 1, 1, True),
    (1, 2, 4, (50, 31), 5, 2, 2, True),
]


@pytest.mark.parametrize("chunk_bytes", [64 * 2**20, 1])
@pytest.mark.parametrize(("b", "c_in", "c", "size", "k", "s", "p", "bias"), STEMS)
def test_winograd_convolution_of_a_fused_stem(
    monkeypatch, kernels, chunk_bytes, b, c_in, c, size, k, s, p, bias
) -> None:
    """``conv2d_stride2(x, ..., stem)`` is the layer applied to ReLU(stem(x))."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(4)
    x, stem = torch.randn(b, c_in, *size), nn.Conv2d(c_in, c, k, s, p, bias=bias)
    weight = torch.randn(3, c, 4, 4) / (4 * c**0.5)
    expected = nn.functional.conv2d(torch.relu(stem(x)), weight, None, 2, 1)
    transformed = winograd.transform_weight(winograd.phase_weight(weight))
    spec = winograd.Stem(stem.weight, stem.bias, stem.stride, stem.padding)
    got = winograd.conv2d_stride2(x, transformed, (1, 1), spec)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_winograd_transforms_compute_the_two_tap_correlation_exactly() -> None:
    """``A^T [(G g) * (B^T d)]`` is ``y_k = g_0 d_k + g_1 d_(k+1)`` (float64, any g, d)."""
    at, g, bt = winograd._transforms()
    generator = torch.Generator().manual_seed(0)
    kernel = torch.randn(2, 100, dtype=torch.float64, generator=generator)
    data = torch.randn(winograd.SPAN, 100, dtype=torch.float64, generator=generator)
    got = at @ ((g @ kernel) * (bt @ data))
    expected = torch.stack([kernel[0] * data[k] + kernel[1] * data[k + 1] for k in range(4)])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _inputs(channels: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The same values channels-first, channels-last, and as a cropped channels-last view
    (what a Winograd transposed layer hands the next layer)."""
    x = torch.randn(2, channels, *size)
    larger = torch.zeros(2, channels, size[0] + 3, size[1] + 2)
    larger = larger.contiguous(memory_format=torch.channels_last)
    larger[:, :, 1 : 1 + size[0], 2 : 2 + size[1]] = x
    return {
        "first": x,
        "last": x.contiguous(memory_format=torch.channels_last),
        "view": larger[:, :, 1 : 1 + size[0], 2 : 2 + size[1]],
    }


# (C_in, C_out, padding, bias, (H, W)): odd, even and tiny sizes, one tile and several
STRIDED = [
    (3, 5, 1, True, (37, 45)),  # the encoders' layer
    (4, 2, 0, False, (8, 8)),
    (2, 3, 2, True, (13, 6)),
    (5, 4, 1, True, (4, 4)),  # one output row and column short of a tile
    (3, 3, (1, 0), True, (10, 27)),
]


@pytest.mark.parametrize("chunk_bytes", [64 * 2**20, 1])  # one chunk; one tile row a chunk
@pytest.mark.parametrize(("c_in", "c_out", "p", "bias", "size"), STRIDED)
def test_winograd_convolution_equals_the_stock_layer(
    monkeypatch, kernels, chunk_bytes, c_in, c_out, p, bias, size
) -> None:
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    torch.manual_seed(8)
    layer = nn.Conv2d(c_in, c_out, 4, 2, p, bias=bias)
    fast = fast_conv(layer)
    assert isinstance(fast, WinogradConv2d)
    for x in _inputs(c_in, size).values():
        expected = layer(x)
        got = fast(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# (C_in, C_out, kernel, padding, output_padding, bias, (H, W))
WINOGRAD_TRANSPOSED = [
    (3, 5, 4, 1, 0, True, (9, 11)),  # the decoders' doubling layer
    (4, 2, 3, 1, 1, False, (8, 8)),  # PIQ's first decoder layer, output padding
    (2, 3, 4, 0, 0, True, (5, 6)),
    (5, 4, 3, 1, 0, True, (1, 4)),  # one input row
    (3, 3, (3, 4), (1, 2), (1, 0), True, (7, 5)),
    (2, 2, 4, 2, 1, True, (6, 9)),  # padding 2 and output padding: both edges move
]


@pytest.mark.parametrize("chunk_bytes", [64 * 2**20, 1])
@pytest.mark.parametrize(("c_in", "c_out", "k", "p", "op", "bias", "size"), WINOGRAD_TRANSPOSED)
def test_winograd_transposed_convolution_equals_the_stock_layer(
    monkeypatch, kernels, chunk_bytes, c_in, c_out, k, p, op, bias, size
) -> None:
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    torch.manual_seed(9)
    layer = nn.ConvTranspose2d(c_in, c_out, k, 2, p, op, bias=bias)
    fast = fast_conv_transpose(layer)
    assert isinstance(fast, WinogradConvTranspose2d)
    norm = _random_norm(c_in)
    absorbed = fast_conv_transpose(layer)
    absorbed.absorb_input_affine(*fast_module._affine(norm))
    for x in _inputs(c_in, size).values():
        expected = layer(x)
        assert fast(x).shape == expected.shape
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(absorbed(x), layer(norm(x)), rtol=1e-5, atol=1e-5)
    bigger = tuple(2 * (n - 1) - 2 * pad + kk + 1 for n, pad, kk in zip(
        size, layer.padding, layer.kernel_size, strict=True
    ))  # fmt: skip
    x = torch.randn(1, c_in, *size)
    torch.testing.assert_close(
        fast(x, output_size=bigger), layer(x, output_size=bigger), rtol=1e-5, atol=1e-5
    )


def test_winograd_applies_to_wide_stride_two_layers_only() -> None:
    wide = nn.Conv2d(64, 64, 4, 2, 1), nn.ConvTranspose2d(64, 64, 3, 2, 1)
    assert isinstance(fast_conv(wide[0]), WinogradConv2d)
    assert isinstance(fast_conv_transpose(wide[1]), WinogradConvTranspose2d)
    others = [
        nn.Conv2d(64, 32, 4, 2, 1),  # too few outputs to gain
        nn.Conv2d(64, 64, 3, 1, 1),  # stride 1
        nn.Conv2d(64, 64, 4, 2, 1, dilation=2),
        nn.Conv2d(64, 64, 4, 2, 1, groups=2),
        nn.ConvTranspose2d(64, 64, 5, 2, 1),  # three taps a phase
        nn.ConvTranspose2d(64, 64, 4, (2, 4), 1),  # CNN14 decoders' strides
    ]
    for layer in others:
        chosen = fast_conv(layer) if type(layer) is nn.Conv2d else fast_conv_transpose(layer)
        assert isinstance(chosen, ChannelsLast), layer


def test_winograd_weights_follow_in_place_changes() -> None:
    """The Winograd-domain weight is cached, and recomputed after an in-place change."""
    torch.manual_seed(10)
    layer = nn.Conv2d(64, 64, 4, 2, 1)
    fast = fast_conv(layer)
    x = torch.randn(1, 64, 9, 9)  # sums of 1024 products: float32 error ~1e-5
    torch.testing.assert_close(fast(x), layer(x), rtol=1e-4, atol=1e-4)
    layer.weight.mul_(2.0)  # (under no_grad, as optimizer steps and load_state_dict)
    fast.weight.mul_(2.0)
    torch.testing.assert_close(fast(x), layer(x), rtol=1e-4, atol=1e-4)


def test_peak_activation_bytes_is_the_largest_layer_input_plus_output() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    assert peak_activation_bytes(lambda: model(x), model) == (3 * 8 + 3 * 8) * 4
    assert not model[0]._forward_hooks  # hooks removed


# --- end to end: explanations with and without the fast path ---------------------------

FEATURES = FeatureConfig(sample_rate=8000, n_fft=256, hop_ms=16.0, win_ms=32.0)
METHODS = {  # wide enough (64) that the fold layers and absorbed norms are exercised
    "piq": {"n_keys": 8},
    "l2i": {"n_components": 6, "width": 64, "n_frames": 63},
    "lmac": {"width": 0.25},  # decoder 64, 32, 16 -> 1 from the 64-channel map
}


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    error = float(np.sum((reference - estimate) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(float(np.sum(reference**2)) / error)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fast_explanations_equal_plain_ones(method: str) -> None:
    torch.manual_seed(6)
    config = ClassifierConfig(dim=64, lin_neurons=16, features=FEATURES)
    classifier = build_classifier(config, ["a", "b", "c", "d"])
    interpreter = build_interpreter(method, METHODS[method], classifier)
    for module in (classifier, interpreter):
        _randomise_norms(module)
        module.eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    t = np.arange(13000) / 8000  # 1.6 s: three 1-s windows
    audio = (np.sin(2 * np.pi * 600 * t) + 0.3 * rng.standard_normal(len(t))).astype(np.float32)
    results = {
        fast: Explainer(classifier, interpreter, window_seconds=1.0, fast=fast).explain(audio, 8000)
        for fast in (False, True)
    }
    plain, fast = results[False], results[True]
    assert _snr_db(plain.waveform, fast.waveform) >= 40.0
    assert _snr_db(plain.removed, fast.removed) >= 40.0
    np.testing.assert_allclose(fast.mask, plain.mask, atol=1e-4)
    assert fast.predicted == plain.predicted and fast.top_k[0][0] == plain.top_k[0][0]


def test_window_batch_follows_the_memory_budget() -> None:
    torch.manual_seed(7)
    config = ClassifierConfig(dim=8, lin_neurons=16, features=FEATURES)
    classifier = build_classifier(config, ["a", "b"]).eval().requires_grad_(False)
    interpreter = build_interpreter("lmac", {"width": 0.05}, classifier).eval()
    audio = np.sin(np.arange(20000) / 7.0).astype(np.float32)  # 2.5 s: four 1-s windows
    explainers = {
        budget: Explainer(classifier, interpreter, window_seconds=1.0, memory_budget=budget)
        for budget in (1, 2**40)
    }
    results = {budget: e.explain(audio, 8000) for budget, e in explainers.items()}
    assert explainers[1].window_batch == 1
    assert explainers[2**40].window_batch == 64  # the cap
    np.testing.assert_allclose(results[1].waveform, results[2**40].waveform, atol=1e-5)
    fixed = Explainer(classifier, interpreter, window_seconds=1.0, window_batch=3)
    fixed.explain(audio, 8000)
    assert fixed.window_batch == 3
