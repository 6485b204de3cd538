"""Import of SpeechBrain's PIQ-ESC50 (psi_model.ckpt + conv2d classifier) and parity with
a direct re-implementation of the reference's explanation (docs/reference.md §2, §4a)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor
from toys import reference_batch_norm

from audiointerp.checkpoints import CheckpointError, load_checkpoint
from audiointerp.cli import main
from audiointerp.features import apply_mask
from audiointerp.pipeline import Explainer

N_CLASSES = 50


def bn_keys(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    stats = ("weight", "bias", "running_mean", "running_var")
    return {f"{prefix}.{k}": (channels,) for k in stats} | {f"{prefix}.num_batches_tracked": ()}


def reference_psi_shapes(dim: int, n_keys: int) -> dict[str, tuple[int, ...]]:
    """psi_model.ckpt of VectorQuantizedPSI_Audio, written out from docs/reference.md §4a."""
    shapes = {"codebook.embedding.weight": (n_keys, dim)}
    shapes |= {"adapter.block.0.weight": (dim, dim, 3, 3), "adapter.block.0.bias": (dim,)}
    shapes |= bn_keys("adapter.block.1", dim)
    shapes |= {"adapter.block.3.weight": (dim, dim, 1, 1), "adapter.block.3.bias": (dim,)}
    shapes |= bn_keys("adapter.block.4", dim)
    shapes |= {"down.weight": (dim, dim, 4, 4), "down.bias": (dim,)}
    shapes |= {"up.weight": (dim, dim, 4, 4), "up.bias": (dim,)}  # ConvTranspose: (in, out, k, k)
    for index, kernel in zip((0, 3, 6, 9), (3, 4, 4, 4), strict=True):
        shapes |= {f"decoder.{index}.weight": (dim, dim, kernel, kernel)}
        shapes |= {f"decoder.{index}.bias": (dim,)} | bn_keys(f"decoder.{index + 2}", dim)
    return shapes | {"decoder.12.weight": (dim, 1, 12, 12), "decoder.12.bias": (1,)}


def reference_classifier_shapes(dim: int) -> tuple[dict, dict]:
    """embedding_modelft.ckpt (Conv2dEncoder_v2) and classifier.ckpt (ECAPA head), §3a."""
    encoder: dict[str, tuple[int, ...]] = {}
    for index in range(1, 5):
        encoder[f"conv{index}.weight"] = (dim, 1 if index == 1 else dim, 4, 4)
        encoder[f"conv{index}.bias"] = (dim,)
        encoder |= bn_keys(f"bn{index}", dim)
    encoder |= {"resblock.block.0.weight": (dim, dim, 3, 3), "resblock.block.0.bias": (dim,)}
    encoder |= bn_keys("resblock.block.1", dim)
    encoder |= {"resblock.block.3.weight": (dim, dim, 1, 1), "resblock.block.3.bias": (dim,)}
    encoder |= bn_keys("resblock.block.4", dim)
    head = bn_keys("blocks.0.norm", dim)
    head |= {"blocks.1.w.weight": (192, dim), "blocks.1.w.bias": (192,)}
    return encoder, head | {"weight": (N_CLASSES, 192)}


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Tensor]:
    """Reproducible tensors of the given shapes; BN variances positive, fan-in scaled."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 10
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return state


def write_reference(
    folder: Path, dim: int, n_keys: int, psi: dict[str, Tensor] | None = None
) -> dict[str, dict[str, Tensor]]:
    folder.mkdir(parents=True, exist_ok=True)
    encoder_shapes, head_shapes = reference_classifier_shapes(dim)
    states = {
        "embedding_modelft.ckpt": random_state(encoder_shapes, 1),
        "classifier.ckpt": random_state(head_shapes, 2),
        "psi_model.ckpt": psi
        if psi is not None
        else random_state(reference_psi_shapes(dim, n_keys), 3),
    }
    for name, state in states.items():
        torch.save(state, folder / name)
    return states


def test_reference_psi_has_the_published_parameter_count() -> None:
    shapes = reference_psi_shapes(256, 1024)
    learned = [
        s for k, s in shapes.items() if not k.rsplit(".", 1)[1].startswith(("running", "num"))
    ]
    assert sum(math.prod(s) for s in learned) == 6_792_193


def test_full_size_import_round_trip_is_bit_exact(tmp_path: Path) -> None:
    states = write_reference(tmp_path / "src", dim=256, n_keys=1024)
    folder = main(["import", "speechbrain", "piq", str(tmp_path / "src"), str(tmp_path / "out")])
    assert folder == 0
    checkpoint = load_checkpoint(tmp_path / "out")
    psi = states["psi_model.ckpt"]
    interpreter = checkpoint.state_dict("interpreter")
    assert set(interpreter) == set(psi)
    for key, tensor in psi.items():
        assert interpreter[key].dtype == tensor.dtype and torch.equal(interpreter[key], tensor), key
    classifier = checkpoint.state_dict("classifier")
    expected = {f"encoder.{k}": v for k, v in states["embedding_modelft.ckpt"].items()}
    expected |= {f"head.{k}": v for k, v in states["classifier.ckpt"].items()}
    assert set(classifier) == set(expected)
    assert all(torch.equal(classifier[k], v) for k, v in expected.items())
    section = checkpoint.config["interpreter"]
    assert section["name"] == "piq" and section["dim"] == 256 and section["n_keys"] == 1024
    assert section["mask_domain"] == "log1p"
    assert checkpoint.meta["imported_from"]["interpreter_file"] == "psi_model.ckpt"
    assert checkpoint.meta["class_names"][:2] == ["dog", "chirping_birds"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("decoder.12.bias"), "missing keys: decoder.12.bias"),
        (lambda s: s.update({"decoder.13.weight": torch.zeros(1)}), "unexpected keys: decoder.13"),
        (lambda s: s.update({"up.bias": torch.zeros(3)}), r"up.bias: \(3,\) != expected \(8,\)"),
        (lambda s: s.update({"codebook.embedding.weight": torch.zeros(40, 8)}), "40 keys"),
        (lambda s: s.update({"codebook.embedding.weight": torch.zeros(64, 4)}), "dim 4"),
        (lambda s: s.pop("codebook.embedding.weight"), "codebook.embedding.weight"),
    ],
)
def test_bad_psi_checkpoints_name_the_problem(tmp_path: Path, edit, message: str) -> None:
    psi = random_state(reference_psi_shapes(8, 64), 3)
    edit(psi)
    write_reference(tmp_path / "src", dim=8, n_keys=64, psi=psi)
    with pytest.raises(CheckpointError, match=message):
        from audiointerp.interpreters.speechbrain import import_piq

        import_piq(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the reference's explanation, re-implemented directly on the raw state dicts ----------


def _conv(x: Tensor, state: dict[str, Tensor], prefix: str, stride: int, padding: int) -> Tensor:
    return F.conv2d(x, state[f"{prefix}.weight"], state[f"{prefix}.bias"], stride, padding)


def _convt(x: Tensor, state: dict[str, Tensor], prefix: str, stride: int, padding: int) -> Tensor:
    weight, bias = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
    return F.conv_transpose2d(x, weight, bias, stride, padding)


def _resblock(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    y = F.relu(reference_batch_norm(_conv(x, state, f"{prefix}.0", 1, 1), state, f"{prefix}.1"))
    return x + reference_batch_norm(_conv(y, state, f"{prefix}.3", 1, 0), state, f"{prefix}.4")


def reference_explanation(wav: Tensor, states: dict[str, dict[str, Tensor]]) -> tuple[Tensor, ...]:
    """InterpreterBrain / PIQAudioInterpreter.interpret_batch, step by step (mask output on)."""
    window = torch.hamming_window(372)
    stft = torch.stft(
        wav, 1024, 186, 372, window, center=True, pad_mode="constant", return_complex=True
    )
    X = torch.view_as_real(stft).transpose(2, 1)  # (B, T, F, 2)
    logpow = torch.log1p(torch.sqrt(X[..., 0] ** 2 + X[..., 1] ** 2 + 1e-14))
    encoder, head, psi = (
        states[n] for n in ("embedding_modelft.ckpt", "classifier.ckpt", "psi_model.ckpt")
    )
    x = logpow.unsqueeze(1)
    for i in range(1, 5):
        x = F.relu(reference_batch_norm(_conv(x, encoder, f"conv{i}", 2, 1), encoder, f"bn{i}"))
    hcat = _resblock(x, encoder, "resblock.block")
    emb = hcat.mean((-1, -2))
    emb = F.batch_norm(
        emb,
        head["blocks.0.norm.running_mean"],
        head["blocks.0.norm.running_var"],
        head["blocks.0.norm.weight"],
        head["blocks.0.norm.bias"],
        training=False,
    )
    emb = F.linear(emb, head["blocks.1.w.weight"], head["blocks.1.w.bias"])
    class_pred = F.linear(F.normalize(emb), F.normalize(head["weight"])).argmax(-1)

    h = _conv(_resblock(hcat, psi, "adapter.block"), psi, "down", 2, 1)  # (B, D, 13, 16)
    codebook = psi["codebook.embedding.weight"]
    n_keys = codebook.shape[0]
    owners = torch.round(torch.linspace(-0.5, N_CLASSES - 0.51, n_keys))
    z = h.permute(0, 2, 3, 1)
    flat = z.reshape(-1, z.shape[-1])
    dist = (flat**2).sum(1, keepdim=True) + (codebook**2).sum(1) - 2 * flat @ codebook.t()
    dist = dist.reshape(*z.shape[:3], n_keys)
    foreign = owners[None, None, None, :] != class_pred[:, None, None, None].float()
    dist = torch.where(foreign, torch.full_like(dist, float("inf")), dist)
    z_q = codebook[dist.argmin(-1)].permute(0, 3, 1, 2)
    x = _convt(z_q, psi, "up", 2, 1)
    for conv, norm, kernel in ((0, 2, 3), (3, 5, 4), (6, 8, 4), (9, 11, 4)):
        x = reference_batch_norm(
            F.relu(_convt(x, psi, f"decoder.{conv}", 2, 1)), psi, f"decoder.{norm}"
        )
        assert kernel == psi[f"decoder.{conv}.weight"].shape[-1]
    m = torch.sigmoid(_convt(x, psi, "decoder.12", 1, 1).squeeze(1))  # (B, 417, 513)
    frames = m.shape[1]
    x_int = torch.expm1(m * logpow[:, :frames])
    phase = torch.atan2(X[:, :frames, :, 1], X[:, :frames, :, 0])
    spec = torch.complex(x_int * torch.cos(phase), x_int * torch.sin(phase))
    audio = torch.istft(spec.transpose(1, 2), 1024, 186, 372, window, center=True)
    return m, audio, class_pred


def test_imported_model_explains_exactly_as_the_reference(tmp_path: Path) -> None:
    states = write_reference(tmp_path / "src", dim=8, n_keys=64)
    from audiointerp.interpreters.speechbrain import import_piq

    import_piq(tmp_path / "src", tmp_path / "model")
    explainer = Explainer.from_pretrained(tmp_path / "model")
    classifier, piq = explainer.classifier, explainer.interpreter
    generator = torch.Generator().manual_seed(4)
    wav = torch.randn(2, 80000, generator=generator) * torch.linspace(0.1, 1.0, 80000)
    wav[1, 30000:50000] += torch.sin(torch.arange(20000) * 0.3)
    wav = wav / wav.abs().amax(dim=1, keepdim=True)

    ref_mask, ref_audio, ref_pred = reference_explanation(wav, states)
    with torch.no_grad():
        features = classifier.feature_extractor(wav)
        out = classifier(features.magnitude)
        mask = piq(features, out)
        audio = classifier.feature_extractor.synthesize(
            apply_mask(mask, features.magnitude, piq.mask_domain), features
        )
    assert torch.equal(out.prediction, ref_pred)
    assert ref_mask.shape == (2, 417, 513) and mask.shape == (2, 431, 513)
    assert torch.allclose(mask[:, :417], ref_mask, atol=1e-5)
    assert float((ref_mask - ref_mask.mean()).abs().max()) > 1e-2  # not a constant mask
    # The reference's audio stops at 77,376 samples; ours continues to the input's length.
    assert ref_audio.shape == (2, 77376) and audio.shape == (2, 80000)
    scale = float(ref_audio.abs().max())
    assert torch.allclose(audio[:, :77376], ref_audio, atol=1e-4 * scale)
    assert float(audio[:, 77376:].abs().max()) > 0.01 * scale


def reference_interpret_file(path: Path, states: dict[str, dict[str, Tensor]]) -> Tensor:
    """SpeechBrain's ``PIQAudioInterpreter.interpret_file`` on a mono 16-kHz file: the
    waveform as loaded (no resampling at 16 kHz, no normalisation) through
    ``interpret_batch``; returns the explanation waveform (77,376 samples for 5 s)."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == 16000 and audio.shape[1] == 1
    _, explanation, _ = reference_explanation(torch.from_numpy(audio.T.copy()), states)
    return explanation[0]


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def test_imported_model_explains_a_file_as_speechbrains_interface(tmp_path: Path) -> None:
    """Default settings of an imported model reproduce interpret_file's waveform; peak
    normalisation (our trained models' default) would not, the mask acting on log1p|X|."""
    states = write_reference(tmp_path / "src", dim=8, n_keys=64)
    from audiointerp.interpreters.speechbrain import import_piq

    import_piq(tmp_path / "src", tmp_path / "model")
    assert load_checkpoint(tmp_path / "model").meta["normalization"] == "none"
    generator = torch.Generator().manual_seed(5)
    clip = torch.randn(80000, generator=generator) * torch.linspace(0.2, 1.0, 80000)
    clip[20000:40000] += 3 * torch.sin(torch.arange(20000) * 0.2)
    clip = 0.6 * clip / clip.abs().max()  # a clip of peak 0.6, as files usually are
    sf.write(str(tmp_path / "clip.wav"), clip.numpy(), 16000, subtype="FLOAT")

    reference = reference_interpret_file(tmp_path / "clip.wav", states).numpy()
    ours = Explainer.from_pretrained(tmp_path / "model").explain_file(tmp_path / "clip.wav")
    assert ours.sample_rate == 16000 and ours.waveform.shape == (80000,)
    assert snr_db(reference, ours.waveform[: len(reference)]) >= 40.0
    peak = Explainer.from_pretrained(tmp_path / "model", normalization="peak")
    scaled = peak.explain_file(tmp_path / "clip.wav").waveform
    assert snr_db(reference, scaled[: len(reference)]) < 30.0
