"""A tiny AST (random weights, built from a config: no download) explained through the
adapter: its torch front end matches the numpy feature extractor, gradients reach the
mask, and a saved folder loads with ``hf:FOLDER#LAYER``."""

import numpy as np
import pytest
import torch

from audiointerp.explain import explain
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models.external import AdapterError
from audiointerp.models.loading import load_external

transformers = pytest.importorskip("transformers")

from audiointerp.models.hf import ASTFrontEnd, Wav2Vec2FrontEnd, hf_classifier  # noqa: E402

LAYER = "audio_spectrogram_transformer.layers.1"


def tiny_ast() -> tuple[torch.nn.Module, object]:
    config = transformers.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_length=64, num_mel_bins=16, num_labels=3,
        id2label={0: "dog", 1: "rain", 2: "siren"}, label2id={"dog": 0, "rain": 1, "siren": 2},
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ASTForAudioClassification(config).eval()
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=16, max_length=64)
    return model, extractor


def clips() -> np.ndarray:
    return 0.1 * np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)


def test_ast_front_end_matches_the_feature_extractor():
    _, extractor = tiny_ast()
    audio = clips()
    expected = extractor(list(audio), sampling_rate=16000, return_tensors="pt")["input_values"]
    ours = ASTFrontEnd(extractor)(torch.from_numpy(audio))
    assert ours.shape == expected.shape == (2, 64, 16)  # 48 frames zero-padded to max_length
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_wav2vec2_front_end_matches_the_feature_extractor():
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    audio = clips()
    expected = extractor(list(audio), sampling_rate=16000, return_tensors="pt")["input_values"]
    torch.testing.assert_close(
        Wav2Vec2FrontEnd(extractor)(torch.from_numpy(audio)), expected, rtol=0, atol=1e-5
    )


def test_tiny_ast_is_explained_through_the_adapter(tmp_path):
    model, extractor = tiny_ast()
    classifier = hf_classifier(model, extractor, layer=LAYER)
    assert classifier.class_names == ["dog", "rain", "siren"]
    assert classifier.hidden_shape == (7, 32)  # 1-s probe: 5 patches + 2 tokens, width 32
    waveform = torch.from_numpy(clips())
    inputs = extractor(list(clips()), sampling_rate=16000, return_tensors="pt")["input_values"]
    torch.testing.assert_close(
        classifier.classify_waveform(waveform).logits,
        model(input_values=inputs).logits.detach(),
        rtol=0,
        atol=1e-5,
    )
    result = explain(classifier, build_interpreter("saliency", {}, classifier), waveform)
    assert result.mask.shape == (2, 44, 513) and float(result.mask.std()) > 0.01
    lmac = build_interpreter("lmac", {"width": 0.25}, classifier)  # reads the tokens
    assert explain(classifier, lmac, waveform).mask.shape == (2, 44, 513)

    model.save_pretrained(tmp_path / "ast")
    extractor.save_pretrained(tmp_path / "ast")
    loaded = load_external(f"hf:{tmp_path / 'ast'}#{LAYER}")
    assert loaded.source == f"hf:{tmp_path / 'ast'}#{LAYER}" and loaded.layer == f"model.{LAYER}"
    torch.testing.assert_close(
        explain(loaded, build_interpreter("saliency", {}, loaded), waveform).mask,
        result.mask,
        rtol=0,
        atol=1e-5,
    )
    with pytest.raises(AdapterError, match="not a transformers audio-classification folder"):
        load_external(f"hf:{tmp_path / 'missing'}")
