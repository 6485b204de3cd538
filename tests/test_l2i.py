"""L2I on the real conv2d and CNN14 classifiers at narrow widths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from audiointerp.checkpoints import load_checkpoint, prefixed, save_checkpoint
from audiointerp.config import ConfigError
from audiointerp.data.esc50 import class_names_from_metadata, read_metadata
from audiointerp.data.synthetic import generate_synthetic
from audiointerp.features import FeatureConfig, FeatureExtractor, apply_mask
from audiointerp.interpreters.l2i import L2I, L2IConfig
from audiointerp.interpreters.nmf import NMFDictionary, save_nmf
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.io import load_audio
from audiointerp.models import ClassifierConfig, build_classifier, save_classifier

CLASSES = ["dog", "rain", "siren", "crow", "wind"]
CLASSIFIERS = {
    "conv2d": (ClassifierConfig(name="conv2d", dim=8, lin_neurons=8), 8),
    "cnn14": (ClassifierConfig(name="cnn14", cnn14_width=1 / 32), 16),
}
K = 12


def build(name: str, **overrides):
    """(classifier in eval mode, L2I in eval mode) with a seeded initialisation."""
    torch.manual_seed(0)
    classifier_config, width = CLASSIFIERS[name]
    classifier = build_classifier(classifier_config, CLASSES).eval()
    config = {"width": width, "n_components": K, **overrides}
    return classifier, build_interpreter("l2i", config, classifier).eval()


def clips(n: int, seconds: float = 5.0):
    """Waveforms (n, N) and their features (431 x 513 for 5 s)."""
    generator = torch.Generator().manual_seed(1)
    waveform = 0.1 * torch.randn(n, int(16000 * seconds), generator=generator)
    return waveform, FeatureExtractor()(waveform)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_shapes_on_reference_input_size(name: str) -> None:
    classifier, interpreter = build(name)
    _, features = clips(2)
    assert features.magnitude.shape == (2, 431, 513)
    with torch.no_grad():
        out = classifier(features.magnitude)
        raw = interpreter.psi(out.hidden)
        activations = interpreter.activations(out, 431)
        mask = interpreter(features, out)
        losses = interpreter.loss(features, out, classifier)
    assert raw.shape == ((2, K, 417) if name == "conv2d" else (2, K, 431))
    assert activations.shape == (2, K, 431)
    assert bool((activations >= 0).all())
    assert interpreter.theta(activations).shape == (2, len(CLASSES))
    assert mask.shape == (2, 431, 513)
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    assert set(losses) == {"loss/rec", "loss/fid", "loss/l1"}
    assert all(value.dim() == 0 and torch.isfinite(value) for value in losses.values())


def test_conv2d_tail_frames_repeat_the_last_decoded_frame() -> None:
    classifier, interpreter = build("conv2d")
    _, features = clips(1)
    with torch.no_grad():
        out = classifier(features.magnitude)
        activations = interpreter.activations(out, 431)
    torch.testing.assert_close(activations[..., 417:], activations[..., 416:417].expand(-1, -1, 14))


def test_other_lengths_and_theta_frames() -> None:
    classifier, interpreter = build("cnn14", n_frames=431)
    _, features = clips(2, seconds=2.3)  # 198 frames: theta pools a padded H
    with torch.no_grad():
        out = classifier(features.magnitude)
        mask = interpreter(features, out)
        losses = interpreter.loss(features, out, classifier)
    assert mask.shape == features.magnitude.shape == (2, 198, 513)
    assert torch.isfinite(losses["loss/fid"])


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_all_components_selected_gives_ones_and_the_input_back(name: str) -> None:
    classifier, interpreter = build(name, relevance_threshold=-2.0)  # relevance is in [-1, 1]
    with torch.no_grad():  # strictly positive H everywhere
        last = interpreter.psi.decoder[14] if name == "conv2d" else interpreter.psi.convt9
        last.weight.abs_()
        last.bias.fill_(0.5)
    waveform, features = clips(2, seconds=1.0)
    with torch.no_grad():
        mask = interpreter(features, classifier(features.magnitude))
    torch.testing.assert_close(mask, torch.ones_like(mask), atol=1e-6, rtol=0)
    extractor = FeatureExtractor()
    audio = extractor.synthesize(apply_mask(mask, features.magnitude, "linear"), features)
    assert audio.shape == waveform.shape
    torch.testing.assert_close(audio, waveform, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_batch_equals_one_by_one(name: str) -> None:
    classifier, interpreter = build(name)
    _, features = clips(3, seconds=2.0)
    with torch.no_grad():
        batched = interpreter(features, classifier(features.magnitude))
        single = [
            interpreter(features[i : i + 1], classifier(features[i : i + 1].magnitude))
            for i in range(3)
        ]
    torch.testing.assert_close(batched, torch.cat(single), atol=1e-5, rtol=1e-4)


def reference_loop_masks(interpreter: L2I, activations: torch.Tensor, targets: torch.Tensor):
    """The reference's interpret_computation_steps, one sample at a time."""
    templates = interpreter.nmf.W.clamp_min(0)  # relu(W), (F, K)
    masks = []
    for h, target in zip(activations, targets, strict=True):  # h: (K, T)
        pooled = interpreter.theta.hard_att(h).squeeze(-1)  # (K,)
        scores = interpreter.theta.classifier[0].weight[target] * pooled
        relevance = scores / scores.abs().max()
        kept = relevance > interpreter.config.relevance_threshold
        mask = (templates[:, kept] @ h[kept]) / (templates @ h + 1e-10)  # (F, T)
        masks.append(mask.T)
    return torch.stack(masks)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_vectorised_equals_reference_loop(name: str) -> None:
    classifier, interpreter = build(name, n_frames=173, relevance_threshold=0.1)
    _, features = clips(4, seconds=2.0)  # 173 frames
    with torch.no_grad():
        out = classifier(features.magnitude)
        activations = interpreter.activations(out, 173)
        for targets in (out.prediction, torch.tensor([4, 0, 2, 1])):
            expected = reference_loop_masks(interpreter, activations, targets)
            got = interpreter(features, out, target=targets)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
            selected = interpreter.relevance(activations, targets) > 0.1
            assert 0 < int(selected.sum()) < selected.numel()  # a real selection happened


def test_target_changes_the_explanation() -> None:
    classifier, interpreter = build("conv2d", relevance_threshold=0.5)
    _, features = clips(1, seconds=2.0)
    with torch.no_grad():
        out = classifier(features.magnitude)
        masks = torch.stack([interpreter(features, out, torch.tensor([c])) for c in range(5)])
        default = interpreter(features, out)
    torch.testing.assert_close(default, masks[int(out.prediction)])
    assert len({round(float(m.sum()), 3) for m in masks}) > 1


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_training_step_leaves_classifier_and_dictionary_alone(name: str) -> None:
    classifier, interpreter = build(name)
    interpreter.train()
    classifier_before = {k: v.clone() for k, v in classifier.state_dict().items()}
    w_before = interpreter.nmf.W.clone()
    psi_before = [p.clone() for p in interpreter.psi.parameters()]
    trainable = [p for p in interpreter.parameters() if p.requires_grad]
    assert all(p is not interpreter.nmf.W for p in trainable)
    optimizer = torch.optim.Adam(trainable, lr=1e-2, weight_decay=1e-4)
    _, features = clips(2, seconds=1.0)
    out = classifier(features.magnitude)  # with autograd on: the classifier's graph exists
    loss = sum(interpreter.loss(features, out, classifier).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in classifier.parameters())
    assert interpreter.nmf.W.grad is None
    for key, value in classifier.state_dict().items():
        torch.testing.assert_close(value, classifier_before[key], rtol=0, atol=0)
    torch.testing.assert_close(interpreter.nmf.W, w_before, rtol=0, atol=0)
    assert any(
        not torch.equal(p, q) for p, q in zip(interpreter.psi.parameters(), psi_before, strict=True)
    )
    assert interpreter.theta.class_weight.grad is not None


def test_loss_terms_follow_the_reference_formula() -> None:
    classifier, interpreter = build("conv2d", alpha=3.0, beta=0.5, classifier_temperature=0.1)
    _, features = clips(2, seconds=1.0)
    with torch.no_grad():
        out = classifier(features.magnitude)
        losses = interpreter.loss(features, out, classifier)
        activations = interpreter.activations(out, features.magnitude.shape[1])
        reconstruction = torch.einsum("fk,bkt->btf", interpreter.nmf.W.clamp_min(0), activations)
        target = (out.logits / 0.1).softmax(-1)
        log_theta = interpreter.theta(activations).log_softmax(-1)
    rec = 3.0 * ((reconstruction - torch.log1p(features.magnitude)) ** 2).mean()
    torch.testing.assert_close(losses["loss/rec"], rec)
    torch.testing.assert_close(losses["loss/fid"], -(target * log_theta).sum(-1).mean())
    torch.testing.assert_close(losses["loss/l1"], 0.5 * activations.mean())


def test_dictionary_from_folder_and_checkpoint_round_trip(tmp_path) -> None:
    dictionary = NMFDictionary(513, K)
    save_nmf(tmp_path / "nmf", dictionary, FeatureConfig())
    classifier, interpreter = build("conv2d", nmf_folder=str(tmp_path / "nmf"))
    torch.testing.assert_close(interpreter.nmf.W, dictionary.W.detach())
    config = interpreter.config_dict()
    assert config["nmf_folder"] == "" and config["hidden_channels"] == [8]
    save_checkpoint(
        tmp_path / "l2i",
        prefixed("interpreter", interpreter.state_dict()),
        {"interpreter": {"name": "l2i", **config}},
    )
    checkpoint = load_checkpoint(tmp_path / "l2i")
    section = dict(checkpoint.config["interpreter"])
    rebuilt = build_interpreter(section.pop("name"), section, classifier).eval()
    rebuilt.load_state_dict(checkpoint.state_dict("interpreter"), strict=True)
    assert "nmf.W" in checkpoint.state_dict("interpreter")
    _, features = clips(2, seconds=1.0)
    with torch.no_grad():
        out = classifier(features.magnitude)
        torch.testing.assert_close(rebuilt(features, out), interpreter(features, out))


def test_config_errors_name_the_key(tmp_path) -> None:
    save_nmf(tmp_path / "nmf", NMFDictionary(513, 7), FeatureConfig())
    with pytest.raises(ConfigError, match="n_components"):
        build("conv2d", nmf_folder=str(tmp_path / "nmf"))
    with pytest.raises(ConfigError, match="interpreter.widht"):
        build("conv2d", widht=3)
    with pytest.raises(ConfigError, match="multiple of 8"):
        build("cnn14", width=12)
    assert L2I.config_class is L2IConfig


# --- train_l2i.py through its real entry point, on a tiny synthetic set ---------------

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "esc50"
TINY_FEATURES = {"sample_rate": 16000, "n_fft": 256, "win_ms": 16.0, "hop_ms": 8.0}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-class 1-s synthetic set, a random narrow conv2d classifier, a tiny NMF yaml."""
    root = tmp_path_factory.mktemp("l2i_recipe")
    data = generate_synthetic(root / "data", n_classes=3, clips_per_class=5, duration_s=1.0)
    names = class_names_from_metadata(read_metadata(data), [1, 2, 3])
    torch.manual_seed(0)
    config = ClassifierConfig(name="conv2d", dim=4, lin_neurons=8,
                              features=FeatureConfig(**TINY_FEATURES))  # fmt: skip
    save_classifier(root / "classifier", build_classifier(config, names).eval(), config)
    nmf_yaml = root / "nmf_tiny.yaml"
    nmf_yaml.write_text(
        yaml.safe_dump(
            {"features": TINY_FEATURES, "duration_s": 1.0, "nmf": {"n_components": 4, "epochs": 20}}
        )  # fmt: skip
    )
    return {"root": root, "data": data, "classifier": root / "classifier", "nmf": nmf_yaml}


def recipe_argv(setup: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return [
        "hparams/l2i_demo.yaml", f"--data_folder={setup['data']}", f"--output_folder={output}",
        f"--classifier_folder={setup['classifier']}", f"--interpreter.nmf_hparams={setup['nmf']}",
        "--interpreter.n_components=4", "--interpreter.width=8", "--interpreter.n_frames=126",
        "--duration_s=1.0", "--train.epochs=2", "--train.batch_size=3", "--train.lr=0.01",
        "--device=cpu", "--seed=5", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_recipe_trains_resumes_after_a_kill_and_tests(
    tiny_setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tiny_setup["root"])
    script = load_script("train_l2i")
    straight = tiny_setup["root"] / "straight"
    assert script.main(recipe_argv(tiny_setup, straight)) == 0
    assert "learning one with" in capsys.readouterr().out  # the default dictionary, first
    dictionary = tiny_setup["root"] / "results" / "train_nmf" / "5" / "model"
    assert load_checkpoint(dictionary).tensors["nmf.W"].shape == (129, 4)

    # 3 train batches + 1 validation batch per epoch: loss call 6 is mid-epoch 2
    calls = {"n": 0}
    original_loss = L2I.loss

    def killed_loss(self, *args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated kill")
        return original_loss(self, *args)

    killed = tiny_setup["root"] / "killed"
    monkeypatch.setattr(L2I, "loss", killed_loss)
    assert script.main(recipe_argv(tiny_setup, killed)) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert torch.load(killed / "train_state/state.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(L2I, "loss", original_loss)
    assert script.main(recipe_argv(tiny_setup, killed)) == 0
    capsys.readouterr()

    final = {name: load_checkpoint(folder / "model").tensors for name, folder in
             (("straight", straight), ("killed", killed))}  # fmt: skip
    assert final["straight"].keys() == final["killed"].keys()
    assert "interpreter.nmf.W" in final["straight"]
    for key, value in final["straight"].items():
        torch.testing.assert_close(final["killed"][key], value, rtol=0, atol=0)
    saved = load_checkpoint(straight / "model").config["interpreter"]
    assert saved["name"] == "l2i" and saved["nmf_folder"] == ""

    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["n_test"] == 3 and "l2i_conv2d" in metrics["methods"]
    assert script.main(recipe_argv(tiny_setup, straight, "--test_only",
                                   "--save_interpretations=true")) == 0  # fmt: skip
    assert json.loads((straight / "metrics.json").read_text()) == metrics
    clips = sorted((straight / "interpretations").iterdir())
    assert len(clips) == 3
    for clip in clips:
        assert {p.name for p in clip.iterdir()} == {
            "original.wav",
            "interpretation.wav",
            "spectra.png",
        }
        original, interpretation = (
            load_audio(clip / "original.wav"),
            load_audio(clip / "interpretation.wav"),
        )
        assert original.shape == interpretation.shape == (16000,)


@pytest.mark.slow
def test_cnn14_recipe_trains_end_to_end(
    tiny_setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_setup["root"])
    torch.manual_seed(0)
    config = ClassifierConfig(name="cnn14", cnn14_width=1 / 32,
                              features=FeatureConfig(**TINY_FEATURES, n_mels=64))  # fmt: skip
    names = class_names_from_metadata(read_metadata(tiny_setup["data"]), [1, 2, 3])
    save_classifier(tiny_setup["root"] / "cnn14", build_classifier(config, names).eval(), config)
    output = tiny_setup["root"] / "cnn14_run"
    argv = recipe_argv(tiny_setup, output, "--train.epochs=1", "--interpreter.classifier_temp=1")
    argv[0] = "hparams/l2i_cnn14.yaml"
    argv[3] = f"--classifier_folder={tiny_setup['root'] / 'cnn14'}"
    assert load_script("train_l2i").main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert "l2i_cnn14" in metrics["methods"] and metrics["n_test"] == 3
    saved = load_checkpoint(output / "model")
    assert saved.config["interpreter"]["hidden_channels"] == [64, 32, 16, 8]
    assert saved.tensors["interpreter.psi.convt9.weight"].shape == (1, 4, 7, 5)


def test_component_mask_gathers_any_selection() -> None:
    """Per-clip selections of different sizes (none, one, several, all) give the share of
    the selected components in the full reconstruction, as a masked full decode does."""
    _, interpreter = build("conv2d")
    n_components = interpreter.config.n_components
    activations = torch.rand(4, n_components, 30, generator=torch.Generator().manual_seed(3))
    selected = torch.zeros(4, n_components, dtype=torch.bool)
    selected[1, 5] = True
    selected[2, ::3] = True
    selected[3] = True
    expected = interpreter.nmf.decode(activations * selected.unsqueeze(-1)) / (
        interpreter.nmf.decode(activations) + interpreter.config.eps
    )
    got = interpreter.component_mask(activations, selected)
    torch.testing.assert_close(got, expected.clamp(0, 1), atol=1e-6, rtol=1e-5)
    assert float(got[0].abs().max()) == 0.0 and float(got[3].min()) > 0.99
