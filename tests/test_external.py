"""Your own classifier: a waveform-in model with its own log-mel front end, explained by
every method that applies, gradients end to end, L-MAC trained for it, TorchScript, and
the adapters that cannot work refused with one clear line."""

from pathlib import Path

import numpy as np
import pytest
import torch
from external_model import CLASSES, SAMPLE_RATE, WaveformNet, build

from audiointerp.config import ConfigError
from audiointerp.data.mixtures import MixingConfig
from audiointerp.explain import classify, explain
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.metrics.sanity import randomize_weights
from audiointerp.models.external import AdapterError, ExternalClassifier
from audiointerp.models.loading import load_external, save_torchscript
from audiointerp.pipeline import Explainer
from audiointerp.training.tasks import InterpreterTask

MODEL_FILE = Path(__file__).with_name("external_model.py")
UNTRAINED = ("saliency", "integrated_gradients", "gradcam", "occlusion", "energy", "random")


def clips(n: int = 2, seconds: float = 0.5) -> torch.Tensor:
    """Tones of different pitch over a little noise (B, N) at the model's rate."""
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tones = torch.stack([torch.sin(2 * torch.pi * (300 + 900 * i) * t) for i in range(n)])
    return 0.5 * tones + 0.01 * torch.randn(n, len(t), generator=torch.Generator().manual_seed(1))


def test_classify_matches_the_model_on_its_waveform():
    classifier = build()
    waveform = clips()
    _, out = classify(classifier, waveform)  # |X| and phase -> iSTFT -> the model
    torch.testing.assert_close(out.logits, classifier.model(waveform), rtol=0, atol=1e-4)
    assert out.hidden[0].shape == (2, 4, 32, 16)  # the "conv" layer: (B, K, T', mels)
    assert classifier.hidden_shape == (4, 63, 16)  # of the 1-s probe clip


@pytest.mark.parametrize("method", UNTRAINED)
def test_every_untrained_method_explains_it(method):
    classifier = build()
    settings = {"n_steps": 4} if method == "integrated_gradients" else {}
    interpreter = build_interpreter(method, settings, classifier)
    target = torch.tensor([2, 0])  # any class, not just the prediction
    result = explain(classifier, interpreter, clips(), target)
    frames, bins = 44, 513  # 0.5 s at 8 kHz, our STFT (hop 93, n_fft 1024)
    assert result.mask.shape == (2, frames, bins)
    assert 0 <= float(result.mask.min()) and float(result.mask.max()) <= 1
    assert result.target == ["click", "tone"] and result.waveform.shape == (2, 4000)
    if method in ("saliency", "integrated_gradients", "gradcam", "occlusion"):
        assert float(result.mask.std()) > 0.01  # the model's gradients reached the mask


def test_gradients_flow_from_the_logits_to_the_magnitude():
    classifier = build()
    features, _ = classify(classifier, clips())
    magnitude = features.magnitude.clone().requires_grad_()
    with classifier.explaining(features):
        classifier(magnitude).logits[:, 1].sum().backward()
    assert magnitude.grad is not None and float(magnitude.grad.abs().sum()) > 0


def test_no_phase_or_a_foreign_batch_is_an_assertion():
    classifier = build()
    features, _ = classify(classifier, clips())
    with pytest.raises(AssertionError, match="explaining"):
        classifier(features.magnitude)
    with classifier.explaining(features), pytest.raises(AssertionError, match="copies"):
        classifier(features.magnitude[:1])
    with classifier.explaining(features):  # k copies of the batch: L-MAC's in/out pass
        doubled = classifier(torch.cat([features.magnitude] * 2)).logits
    torch.testing.assert_close(doubled[2:], doubled[:2])


def test_methods_that_read_our_feature_maps_are_refused():
    classifier = build()
    for method in ("piq", "l2i"):
        with pytest.raises(ConfigError, match=f"'{method}' reads our own.*saliency"):
            build_interpreter(method, {}, classifier)
    with pytest.raises(ConfigError, match=r"gradcam.*\(B, 3\).*convolutional"):
        build_interpreter("gradcam", {}, build(layer=None))
    with pytest.raises(ConfigError, match="must be trained first"):
        Explainer.with_method(classifier, "lmac")
    applicable = {name for name, cls in INTERPRETERS.items() if cls.external_classifiers}
    assert applicable >= {"lmac", *UNTRAINED}


def test_lmac_trains_for_it_and_its_loss_falls():
    classifier = build(layer=None)  # the decoder reads the logits
    torch.manual_seed(0)
    interpreter = build_interpreter("lmac", {"width": 0.25}, classifier)
    task = InterpreterTask(interpreter, classifier, None)
    optimizer = torch.optim.Adam(interpreter.parameters(), lr=3e-3)
    batch = (clips(4), torch.zeros(4, dtype=torch.long), ["a", "b", "c", "d"])
    losses = []
    for _ in range(15):
        loss = task.training_step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.5, losses
    assert all(p.grad is None for p in classifier.parameters())  # the model stays frozen
    valid = task.validation_step(batch)
    assert valid["AI"].shape == (4,) and "loss/in" in valid


def test_torchscript_round_trip_gives_the_same_mask(tmp_path):
    classifier = build(layer=None)
    path = save_torchscript(classifier, tmp_path / "model.pt")
    scripted = load_external(str(path))
    assert scripted.class_names == CLASSES and scripted.feature_config.sample_rate == SAMPLE_RATE
    waveform = clips()
    masks = [
        explain(c, build_interpreter("saliency", {}, c), waveform).mask
        for c in (classifier, scripted)
    ]
    torch.testing.assert_close(masks[1], masks[0], rtol=0, atol=1e-5)
    before = scripted.classify_waveform(waveform).logits
    randomized = randomize_weights(scripted)  # the sanity check: no reset_parameters there
    assert float((randomized.classify_waveform(waveform).logits - before).abs().max()) > 0.05
    torch.testing.assert_close(scripted.classify_waveform(waveform).logits, before)
    long = Explainer.with_method(scripted, "saliency", window_seconds=0.5)  # sized by hooks
    assert long.explain(np.asarray(clips(1, 1.3)[0]), SAMPLE_RATE).mask.shape == (112, 513)
    with pytest.raises(AdapterError, match="TorchScript model runs no Python hooks"):
        ExternalClassifier(scripted.model, SAMPLE_RATE, CLASSES, layer="conv")


def test_a_factory_file_loads_and_bad_adapters_say_what_was_expected(tmp_path):
    loaded = load_external(f"{MODEL_FILE}:build")
    assert loaded.layer == "conv" and loaded.source == f"{MODEL_FILE}:build"
    with pytest.raises(AdapterError, match=r"broken: RuntimeError: weights file missing"):
        load_external(f"{MODEL_FILE}:broken")
    with pytest.raises(AdapterError, match="defines no function 'nothing'"):
        load_external(f"{MODEL_FILE}:nothing")
    with pytest.raises(AdapterError, match=r"expected logits \(B, C\) = \(2, 5\).*got \(2, 3\)"):
        ExternalClassifier(WaveformNet(), SAMPLE_RATE, [*CLASSES, "x", "y"])
    with pytest.raises(AdapterError, match=r"no layer 'conv9'; expected a name from .*conv\.0"):
        ExternalClassifier(WaveformNet(), SAMPLE_RATE, CLASSES, layer="conv9")
    (tmp_path / "other.py").write_text("def make():\n    return 3\n")
    with pytest.raises(AdapterError, match="returned int; expected an audiointerp.External"):
        load_external(f"{tmp_path / 'other.py'}:make")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(AdapterError, match="not a TorchScript file"):
        load_external(str(tmp_path / "junk.pt"))


def test_explainer_with_method_explains_a_file_of_any_rate():
    explainer = Explainer.with_method(build(), "saliency", window_seconds=0.5)
    audio = np.asarray(clips(1, 1.2)[0])
    result = explainer.explain(audio, SAMPLE_RATE, target="noise")
    assert result.target == "noise" and result.waveform.shape == audio.shape
    assert explainer.normalization == "none"


def test_class_conditional_lmac_trains_on_mixtures_and_explains_any_class():
    classifier = build()  # the decoder reads the conv layer's (B, K, T', mels) map
    lmac = build_interpreter(
        "lmac", {"width": 0.25, "class_conditional": True, "guidance_weight": 4.0}, classifier
    )
    task = InterpreterTask(lmac, classifier, None, mixing=MixingConfig(prob=1.0))
    terms = task.training_step((clips(4), torch.tensor([0, 1, 2, 0]), ["a", "b", "c", "d"]))
    assert "loss/guide" in terms and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(p.grad is not None for p in lmac.condition.parameters())
    result = explain(classifier, lmac.eval(), clips(), torch.tensor([1, 2]))
    assert result.target == ["noise", "click"] and result.mask.shape == (2, 44, 513)
