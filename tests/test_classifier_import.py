"""SpeechBrain checkpoint import: reference key layouts, strict checks, safety, parity.

The reference layouts below are written from docs/reference.md §3a/§3b, independently of
our modules, and the reference forward passes are re-implemented with torch.nn.functional
on the raw state dicts, so an import that loads the wrong tensor into a slot fails.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from toys import reference_batch_norm

from audiointerp.checkpoints import CheckpointError, load_checkpoint
from audiointerp.cli import main
from audiointerp.data.esc50 import ESC50_REFERENCE_CLASSES
from audiointerp.models import load_classifier
from audiointerp.models.cnn14 import Cnn14Encoder
from audiointerp.models.conv2d import Conv2dEncoder, CosineHead
from audiointerp.models.speechbrain import import_cnn14, import_conv2d

Shapes = dict[str, tuple[int, ...]]
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_layout(prefix: str, n: int) -> Shapes:
    return {
        f"{prefix}.weight": (n,),
        f"{prefix}.bias": (n,),
        f"{prefix}.running_mean": (n,),
        f"{prefix}.running_var": (n,),
        f"{prefix}.num_batches_tracked": (),
    }


def conv2d_encoder_layout(dim: int) -> Shapes:
    """``PIQ.Conv2dEncoder_v2(dim)`` state dict (embedding_model[ft].ckpt)."""
    shapes: Shapes = {}
    channels_in = 1
    for index in range(1, 5):
        shapes[f"conv{index}.weight"] = (dim, channels_in, 4, 4)
        shapes[f"conv{index}.bias"] = (dim,)
        shapes.update(batchnorm_layout(f"bn{index}", dim))
        channels_in = dim
    shapes["resblock.block.0.weight"] = (dim, dim, 3, 3)
    shapes["resblock.block.0.bias"] = (dim,)
    shapes.update(batchnorm_layout("resblock.block.1", dim))
    shapes["resblock.block.3.weight"] = (dim, dim, 1, 1)
    shapes["resblock.block.3.bias"] = (dim,)
    shapes.update(batchnorm_layout("resblock.block.4", dim))
    return shapes


def conv2d_head_layout(dim: int, lin_neurons: int, n_classes: int) -> Shapes:
    """``ECAPA_TDNN.Classifier(dim, lin_blocks=1, lin_neurons, n_classes)`` (classifier.ckpt)."""
    return {
        **batchnorm_layout("blocks.0.norm", dim),
        "blocks.1.w.weight": (lin_neurons, dim),
        "blocks.1.w.bias": (lin_neurons,),
        "weight": (n_classes, lin_neurons),
    }


def cnn14_encoder_layout(channels: tuple[int, ...], n_mels: int = 80) -> Shapes:
    """SpeechBrain ``Cnn14(mel_bins, emb_dim)`` state dict (embedding_model.ckpt)."""
    shapes = batchnorm_layout("norm0", n_mels)
    for index, (c_in, c_out) in enumerate(zip((1, *channels[:-1]), channels, strict=True), start=1):
        shapes[f"conv_block{index}.conv1.weight"] = (c_out, c_in, 3, 3)
        shapes[f"conv_block{index}.conv2.weight"] = (c_out, c_out, 3, 3)
        shapes.update(batchnorm_layout(f"conv_block{index}.norm1", c_out))
        shapes.update(batchnorm_layout(f"conv_block{index}.norm2", c_out))
    return shapes


def linear_head_layout(dim: int, n_classes: int) -> Shapes:
    return {"weight": (n_classes, dim), "bias": (n_classes,)}


def parameter_count(layout: Shapes) -> int:
    return sum(math.prod(s) for k, s in layout.items() if not k.endswith(BN_BUFFERS))


def random_state(layout: Shapes, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in ``layout``: plausible BN statistics, fan-in-scaled weights."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state


def reference_conv2d_logits(encoder: dict, head: dict, log_magnitude: torch.Tensor) -> torch.Tensor:
    """The reference conv2d classifier on raw state dicts: (B, T, F) log1p -> cosines (B, C)."""
    x = log_magnitude.unsqueeze(1)
    for i in range(1, 5):
        x = F.conv2d(x, encoder[f"conv{i}.weight"], encoder[f"conv{i}.bias"], stride=2, padding=1)
        x = F.relu(reference_batch_norm(x, encoder, f"bn{i}"))
    r = F.conv2d(x, encoder["resblock.block.0.weight"], encoder["resblock.block.0.bias"], padding=1)
    r = F.relu(reference_batch_norm(r, encoder, "resblock.block.1"))
    r = F.conv2d(r, encoder["resblock.block.3.weight"], encoder["resblock.block.3.bias"])
    x = x + reference_batch_norm(r, encoder, "resblock.block.4")
    embedding = reference_batch_norm(x.mean(dim=(-1, -2)), head, "blocks.0.norm")
    embedding = F.linear(embedding, head["blocks.1.w.weight"], head["blocks.1.w.bias"])
    return F.linear(F.normalize(embedding), F.normalize(head["weight"]))


def reference_cnn14_logits(encoder: dict, head: dict, log_mel: torch.Tensor) -> torch.Tensor:
    """The reference CNN14 + Linear head on raw state dicts: (B, T, M) -> logits (B, C)."""
    x = reference_batch_norm(log_mel.unsqueeze(1).transpose(1, 3), encoder, "norm0").transpose(1, 3)
    for i in range(1, 7):
        for j in (1, 2):
            x = F.conv2d(x, encoder[f"conv_block{i}.conv{j}.weight"], padding=1)
            x = F.relu(reference_batch_norm(x, encoder, f"conv_block{i}.norm{j}"))
        if i < 6:
            x = F.avg_pool2d(x, 2)
    x = x.mean(dim=3)
    return F.linear(x.max(dim=2).values + x.mean(dim=2), head["weight"], head["bias"])


def write_conv2d(folder, dim=8, lin=6, n_classes=50, encoder_name="embedding_modelft.ckpt"):
    folder.mkdir(parents=True, exist_ok=True)
    encoder = random_state(conv2d_encoder_layout(dim), seed=1)
    head = random_state(conv2d_head_layout(dim, lin, n_classes), seed=2)
    torch.save(encoder, folder / encoder_name)
    torch.save(head, folder / "classifier.ckpt")
    return encoder, head


CNN14_SMALL = (4, 8, 16, 32, 64, 128)  # width 1/16


def write_cnn14(folder, channels=CNN14_SMALL, n_classes=50):
    folder.mkdir(parents=True, exist_ok=True)
    encoder = random_state(cnn14_encoder_layout(channels), seed=3)
    head = random_state(linear_head_layout(channels[-1], n_classes), seed=4)
    torch.save(encoder, folder / "embedding_model.ckpt")
    torch.save(head, folder / "classifier.ckpt")
    return encoder, head


def magnitude(batch: int = 2, frames: int = 96) -> torch.Tensor:
    return torch.rand(batch, frames, 513, generator=torch.Generator().manual_seed(5)) * 3


def assert_bit_exact(tensors: dict, prefix: str, state: dict) -> None:
    for key, value in state.items():
        got = tensors[f"{prefix}{key}"]
        assert got.dtype == value.dtype and torch.equal(got, value), key


def test_full_width_reference_layouts_match_our_modules():
    conv2d_layout = conv2d_encoder_layout(256)
    cnn14_layout = cnn14_encoder_layout((64, 128, 256, 512, 1024, 2048))
    assert parameter_count(conv2d_layout) == 3_809_792
    assert parameter_count(cnn14_layout) == 75_477_472  # the doc's size: encoder, no head
    assert parameter_count(linear_head_layout(2048, 50)) == 102_450
    assert conv2d_layout["conv1.weight"] == (256, 1, 4, 4)
    assert conv2d_layout["conv4.weight"] == (256, 256, 4, 4)
    assert cnn14_layout["conv_block6.conv2.weight"] == (2048, 2048, 3, 3)
    with torch.device("meta"):
        ours = {
            "conv2d": Conv2dEncoder(256).state_dict(),
            "head": CosineHead(256, 192, 50).state_dict(),
            "cnn14": Cnn14Encoder(80, 1.0).state_dict(),
        }
    shapes = {name: {k: tuple(v.shape) for k, v in sd.items()} for name, sd in ours.items()}
    assert shapes["conv2d"] == conv2d_layout
    assert shapes["head"] == conv2d_head_layout(256, 192, 50)
    assert shapes["cnn14"] == cnn14_layout


def test_conv2d_import_round_trip(tmp_path):
    encoder, head = write_conv2d(tmp_path / "sb")
    folder = import_conv2d(tmp_path / "sb", tmp_path / "ours")
    checkpoint = load_checkpoint(folder)
    assert len(checkpoint.tensors) == len(encoder) + len(head)
    assert_bit_exact(checkpoint.tensors, "classifier.encoder.", encoder)
    assert_bit_exact(checkpoint.tensors, "classifier.head.", head)
    assert checkpoint.meta["class_names"] == list(ESC50_REFERENCE_CLASSES)
    assert checkpoint.meta["class_names"][:3] == ["dog", "chirping_birds", "vacuum_cleaner"]
    assert checkpoint.meta["imported_from"]["encoder_file"] == "embedding_modelft.ckpt"
    assert checkpoint.meta["sample_rate"] == 16000

    classifier, config = load_classifier(folder)
    assert (config.dim, config.lin_neurons, config.logit_scale) == (8, 6, 1.0)
    assert config.features.hop_length == 186 and config.features.win_length == 372
    mag = magnitude()
    with torch.no_grad():
        logits = classifier(mag).logits
    expected = reference_conv2d_logits(encoder, head, torch.log1p(mag))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert logits.abs().max() <= 1.0 + 1e-6  # raw cosines, as the reference


def test_conv2d_import_prefers_the_finetuned_encoder_and_falls_back(tmp_path):
    write_conv2d(tmp_path / "both", encoder_name="embedding_model.ckpt")
    finetuned, _ = write_conv2d(tmp_path / "both")  # same seeds: make it differ
    finetuned["conv1.bias"] += 1.0
    torch.save(finetuned, tmp_path / "both" / "embedding_modelft.ckpt")
    checkpoint = load_checkpoint(import_conv2d(tmp_path / "both", tmp_path / "a"))
    assert checkpoint.meta["imported_from"]["encoder_file"] == "embedding_modelft.ckpt"
    assert torch.equal(checkpoint.tensors["classifier.encoder.conv1.bias"], finetuned["conv1.bias"])

    initial, _ = write_conv2d(tmp_path / "init_only", encoder_name="embedding_model.ckpt")
    checkpoint = load_checkpoint(import_conv2d(tmp_path / "init_only", tmp_path / "b"))
    assert checkpoint.meta["imported_from"]["encoder_file"] == "embedding_model.ckpt"
    assert_bit_exact(checkpoint.tensors, "classifier.encoder.", initial)

    with pytest.raises(FileNotFoundError, match="embedding_modelft.ckpt nor embedding_model"):
        import_conv2d(tmp_path / "b", tmp_path / "c")  # our format, no .ckpt files


def test_cnn14_import_round_trip(tmp_path):
    encoder, head = write_cnn14(tmp_path / "sb")
    folder = import_cnn14(tmp_path / "sb", tmp_path / "ours")
    checkpoint = load_checkpoint(folder)
    assert len(checkpoint.tensors) == len(encoder) + len(head)
    assert_bit_exact(checkpoint.tensors, "classifier.encoder.", encoder)
    assert_bit_exact(checkpoint.tensors, "classifier.head.", head)
    assert checkpoint.meta["imported_from"]["source"] == "fpaissan/r"

    classifier, config = load_classifier(folder)
    assert config.name == "cnn14" and config.cnn14_width == 1 / 16
    assert config.features.n_mels == 80
    mag = magnitude()
    with torch.no_grad():
        out = classifier(mag)
    log_mel = classifier.feature_extractor.log1p_mel(mag)
    expected = reference_cnn14_logits(encoder, head, log_mel)
    torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)
    assert out.hidden[0].shape[1] == 128 and out.hidden[3].shape[1] == 16


def test_cnn14_import_refuses_the_ecapa_head_of_cnn14_esc50(tmp_path):
    write_cnn14(tmp_path / "sb")
    torch.save(random_state(conv2d_head_layout(128, 192, 50), 6), tmp_path / "sb/classifier.ckpt")
    with pytest.raises(CheckpointError, match="ECAPA-style head.*cnn14-esc50"):
        import_cnn14(tmp_path / "sb", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize("problem", ["missing", "extra", "shape"])
def test_import_errors_name_the_keys(tmp_path, problem):
    encoder, _ = write_conv2d(tmp_path / "sb")
    if problem == "missing":
        del encoder["bn3.running_var"], encoder["resblock.block.3.bias"]
        names = ["missing keys", "bn3.running_var", "resblock.block.3.bias"]
    elif problem == "extra":
        encoder["conv5.weight"] = torch.zeros(8, 8, 4, 4)
        names = ["unexpected keys", "conv5.weight"]
    else:
        encoder["resblock.block.3.weight"] = torch.zeros(8, 8, 3, 3)
        names = ["shape mismatch", "resblock.block.3.weight", "(8, 8, 3, 3)", "(8, 8, 1, 1)"]
    torch.save(encoder, tmp_path / "sb/embedding_modelft.ckpt")
    with pytest.raises(CheckpointError) as error:
        import_conv2d(tmp_path / "sb", tmp_path / "ours")
    assert "embedding_modelft.ckpt" in str(error.value)
    for name in names:
        assert name in str(error.value)


def test_import_checks_the_class_count_and_the_head_layout(tmp_path):
    write_conv2d(tmp_path / "ten", n_classes=10)
    with pytest.raises(CheckpointError, match="10 classes"):
        import_conv2d(tmp_path / "ten", tmp_path / "a")
    write_cnn14(tmp_path / "cnn14")
    with pytest.raises(CheckpointError, match="missing key conv1.weight.*not a conv2d encoder"):
        import_conv2d(tmp_path / "cnn14", tmp_path / "b")  # a CNN14 folder given as conv2d
    write_conv2d(tmp_path / "mixed")
    torch.save(random_state(linear_head_layout(8, 50), 7), tmp_path / "mixed/classifier.ckpt")
    with pytest.raises(CheckpointError, match="missing key blocks.1.w.weight"):
        import_conv2d(tmp_path / "mixed", tmp_path / "c")  # a Linear head given as conv2d


executed: list[str] = []


def _run_code(tag: str) -> str:
    executed.append(tag)
    return tag


class Payload:
    """An object whose unpickling would call code (a stand-in for a malicious .ckpt)."""

    def __reduce__(self):
        return (_run_code, ("unpickled",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    write_conv2d(tmp_path / "sb")
    torch.save({"conv1.weight": torch.zeros(1), "hook": Payload()}, tmp_path / "sb/classifier.ckpt")
    with pytest.raises(CheckpointError, match="classifier.ckpt: refused or unreadable"):
        import_conv2d(tmp_path / "sb", tmp_path / "ours")
    assert executed == []


def test_cli_imports_and_reports(tmp_path, capsys):
    encoder, head = write_conv2d(tmp_path / "sb")
    code = main(["import", "speechbrain", "conv2d", str(tmp_path / "sb"), str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{len(encoder) + len(head)} tensors" in printed
    assert "50 classes: dog, chirping_birds" in printed
    assert "embedding_modelft.ckpt" in printed
    assert load_classifier(tmp_path / "out")[1].dim == 8

    code = main(["import", "speechbrain", "cnn14", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "nowhere" in error
