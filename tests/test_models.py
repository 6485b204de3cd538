"""Classifier shapes, cosine-head bounds, config registry and our checkpoint round trip."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from audiointerp.checkpoints import CheckpointError, load_checkpoint, prefixed, save_checkpoint
from audiointerp.config import ConfigError, from_dict, to_dict
from audiointerp.features import FeatureConfig
from audiointerp.models import (
    ClassifierConfig,
    build_classifier,
    classifier_checkpoint,
    load_classifier,
    save_classifier,
)
from audiointerp.models.cnn14 import Cnn14Encoder, cnn14_channels
from audiointerp.models.conv2d import Conv2dEncoder, CosineHead

CLASSES = [f"class_{i}" for i in range(5)]
FRAMES, BINS = 431, 513  # a 5-s clip at the reference settings


def magnitude(batch: int = 1, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, BINS, generator=generator) * 3.0


def test_conv2d_full_width_shapes_on_a_5s_clip():
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierConfig(name="conv2d"), CLASSES * 10).eval()
    with torch.no_grad():
        out = classifier(magnitude())
    (feature_map,) = out.hidden
    assert feature_map.shape == (1, 256, 26, 32)
    assert out.embedding.shape == (1, 256)
    assert out.logits.shape == (1, 50)
    torch.testing.assert_close(out.embedding, feature_map.mean(dim=(2, 3)))


def test_conv2d_input_is_log1p_of_the_magnitude():
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierConfig(dim=8, lin_neurons=6), CLASSES).eval()
    mag = magnitude(frames=40)
    torch.testing.assert_close(classifier.input_features(mag), torch.log1p(mag))
    with torch.no_grad():
        direct = classifier.forward_features(torch.log1p(mag)).logits
        torch.testing.assert_close(classifier(mag).logits, direct)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cosine_logits_are_bounded_by_the_scale(scale: float):
    torch.manual_seed(0)
    head = CosineHead(dim=16, lin_neurons=8, n_classes=5, logit_scale=scale).eval()
    embedding = torch.randn(64, 16) * 10
    with torch.no_grad():
        logits = head(embedding)
        projected = head.blocks[1].w(head.blocks[0].norm(embedding))
    assert logits.shape == (64, 5)
    assert logits.abs().max() <= scale * (1 + 1e-6)
    expected = scale * F.cosine_similarity(projected[:, None, :], head.weight[None], dim=-1)
    torch.testing.assert_close(logits, expected, atol=1e-5 * scale, rtol=1e-5)


def test_logit_scale_multiplies_the_same_cosines():
    torch.manual_seed(0)
    raw = build_classifier(ClassifierConfig(dim=8, lin_neurons=6, logit_scale=1.0), CLASSES)
    scaled = build_classifier(ClassifierConfig(dim=8, lin_neurons=6, logit_scale=30.0), CLASSES)
    scaled.load_state_dict(raw.state_dict())
    mag = magnitude(batch=2, frames=48)
    with torch.no_grad():
        torch.testing.assert_close(scaled.eval()(mag).logits, 30.0 * raw.eval()(mag).logits)


def test_cnn14_full_width_hidden_shapes_on_a_5s_clip():
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierConfig(name="cnn14"), CLASSES * 10).eval()
    with torch.no_grad():
        out = classifier(magnitude())
    assert [tuple(h.shape) for h in out.hidden] == [
        (1, 2048, 13, 2),
        (1, 1024, 13, 2),
        (1, 512, 26, 5),
        (1, 256, 53, 10),
    ]
    assert out.embedding.shape == (1, 2048)
    assert out.logits.shape == (1, 50)
    # eval: no dropout, so the embedding is max + mean over time of block6's frequency mean
    pooled = out.hidden[0].mean(dim=3)
    torch.testing.assert_close(out.embedding, pooled.amax(dim=2) + pooled.mean(dim=2))


def test_cnn14_width_scales_channels_not_the_time_frequency_grid():
    assert cnn14_channels(1.0) == (64, 128, 256, 512, 1024, 2048)
    assert cnn14_channels(1 / 16) == (4, 8, 16, 32, 64, 128)
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierConfig(name="cnn14", cnn14_width=1 / 16), CLASSES)
    with torch.no_grad():
        out = classifier.eval()(magnitude(batch=2))
    assert [tuple(h.shape) for h in out.hidden] == [
        (2, 128, 13, 2),
        (2, 64, 13, 2),
        (2, 32, 26, 5),
        (2, 16, 53, 10),
    ]
    assert out.embedding.shape == (2, 128) and out.logits.shape == (2, 5)


def test_cnn14_input_is_log1p_mel_and_norm0_covers_the_mel_bins():
    features = FeatureConfig(n_mels=40)
    config = ClassifierConfig(name="cnn14", cnn14_width=1 / 32, features=features)
    classifier = build_classifier(config, CLASSES)
    mag = magnitude(frames=32)
    inputs = classifier.input_features(mag)
    assert inputs.shape == (1, 32, 40)
    torch.testing.assert_close(inputs, torch.log1p(mag @ classifier.feature_extractor.mel_filters))
    assert classifier.encoder.norm0.num_features == 40


def test_cnn14_dropout_only_in_training():
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierConfig(name="cnn14", cnn14_width=1 / 32), CLASSES)
    mag = magnitude(batch=2, frames=64)
    classifier.eval()
    with torch.no_grad():
        first, second = classifier(mag).logits, classifier(mag).logits
    torch.testing.assert_close(first, second)
    classifier.train()
    torch.manual_seed(1)
    with torch.no_grad():
        train_a = classifier(mag).embedding
        train_b = classifier(mag).embedding
    assert not torch.allclose(train_a, train_b)


def test_full_width_parameter_counts_without_allocating():
    with torch.device("meta"):
        conv2d = Conv2dEncoder(256)
        cnn14 = Cnn14Encoder(80, 1.0)
    assert sum(p.numel() for p in conv2d.parameters()) == 3_809_792
    assert sum(p.numel() for p in cnn14.parameters()) == 75_477_472  # encoder, head excluded


def test_config_round_trips_through_a_plain_mapping():
    config = ClassifierConfig(name="cnn14", cnn14_width=0.25, features=FeatureConfig(n_mels=64))
    assert from_dict(ClassifierConfig, to_dict(config)) == config
    with pytest.raises(ConfigError, match="classifier.name"):
        build_classifier(ClassifierConfig(name="resnet"), CLASSES)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name"):
        from_dict(ClassifierConfig, {"name": "resnet"})


@pytest.mark.parametrize(
    "config",
    [
        ClassifierConfig(name="conv2d", dim=8, lin_neurons=6, logit_scale=30.0),
        ClassifierConfig(name="cnn14", cnn14_width=1 / 32),
    ],
    ids=["conv2d", "cnn14"],
)
def test_save_load_gives_identical_outputs_without_pickle(tmp_path, monkeypatch, config):
    torch.manual_seed(0)
    classifier = build_classifier(config, CLASSES)
    classifier.train()
    with torch.no_grad():
        classifier(magnitude(batch=4, frames=64, seed=1))  # move the BatchNorm statistics
    classifier.eval()
    mag = magnitude(batch=2, frames=64, seed=2)
    with torch.no_grad():
        expected = classifier(mag)
    folder = save_classifier(tmp_path / "model", classifier, config, meta={"metrics": {"acc": 1}})
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml",
        "meta.json",
        "model.safetensors",
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("loading our format must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded, loaded_config = load_classifier(folder)
    assert loaded_config == config and not loaded.training
    assert loaded.class_names == CLASSES
    with torch.no_grad():
        got = loaded(mag)
    assert torch.equal(got.logits, expected.logits)
    assert all(torch.equal(a, b) for a, b in zip(got.hidden, expected.hidden, strict=True))
    meta = load_checkpoint(folder).meta
    assert meta["class_names"] == CLASSES and meta["sample_rate"] == 16000
    assert meta["features"]["n_fft"] == 1024 and meta["metrics"] == {"acc": 1}


def test_checkpoint_tensors_carry_the_classifier_prefix():
    config = ClassifierConfig(dim=8, lin_neurons=6)
    classifier = build_classifier(config, CLASSES)
    tensors, config_map, meta = classifier_checkpoint(classifier, config)
    assert all(key.startswith("classifier.") for key in tensors)
    assert "classifier.encoder.conv1.weight" in tensors and "classifier.head.weight" in tensors
    assert config_map == {"classifier": to_dict(config)}
    assert meta["class_names"] == CLASSES


def test_load_classifier_reads_an_interpreter_folder(tmp_path):
    config = ClassifierConfig(dim=8, lin_neurons=6)
    classifier = build_classifier(config, CLASSES).eval()
    tensors, config_map, meta = classifier_checkpoint(classifier, config)
    tensors.update(prefixed("interpreter", {"codebook": torch.zeros(3, 2)}))
    config_map["interpreter"] = {"name": "piq"}
    save_checkpoint(tmp_path / "piq", tensors, config_map, meta)
    loaded, _ = load_classifier(tmp_path / "piq")
    mag = magnitude(frames=48)
    with torch.no_grad():
        assert torch.equal(loaded(mag).logits, classifier(mag).logits)


def test_load_classifier_is_strict(tmp_path):
    config = ClassifierConfig(dim=8, lin_neurons=6)
    tensors, config_map, meta = classifier_checkpoint(build_classifier(config, CLASSES), config)
    del tensors["classifier.encoder.bn2.running_var"]
    tensors["classifier.encoder.extra"] = torch.zeros(1)
    save_checkpoint(tmp_path / "bad", tensors, config_map, meta)
    with pytest.raises(CheckpointError, match="encoder.bn2.running_var") as error:
        load_classifier(tmp_path / "bad")
    assert "encoder.extra" in str(error.value)
    save_checkpoint(tmp_path / "no_section", tensors, {"interpreter": {}}, meta)
    with pytest.raises(CheckpointError, match="no 'classifier' section"):
        load_classifier(tmp_path / "no_section")
