"""PIQ: class-partitioned VQ, straight-through gradients, mask shapes, batch independence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from audiointerp.checkpoints import load_checkpoint
from audiointerp.config import ConfigError
from audiointerp.data.esc50 import class_names_from_metadata, read_metadata
from audiointerp.data.synthetic import generate_synthetic
from audiointerp.features import FeatureConfig, FeatureExtractor, Features
from audiointerp.interpreters.piq import PIQ, code_classes
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.io import load_audio
from audiointerp.models import ClassifierConfig, build_classifier, save_classifier
from audiointerp.models.base import ClassifierOutput
from audiointerp.models.conv2d import Conv2dClassifier


def make_classifier(dim: int = 4, n_classes: int = 3) -> Conv2dClassifier:
    torch.manual_seed(0)
    names = [f"class{i}" for i in range(n_classes)]
    return Conv2dClassifier(FeatureConfig(), names, dim=dim, lin_neurons=8).eval()


def make_features(batch: int, seconds: float, seed: int = 1) -> Features:
    generator = torch.Generator().manual_seed(seed)
    waveform = torch.randn(batch, int(16000 * seconds), generator=generator)
    waveform[:, 2000:4000] *= 8.0  # a loud region, so the energy target is not empty
    return FeatureExtractor()(waveform)


def make_piq(classifier: Conv2dClassifier, **config: object) -> PIQ:
    torch.manual_seed(2)
    piq = build_interpreter("piq", {"n_keys": 12, **config}, classifier)
    assert isinstance(piq, PIQ)
    return piq


def test_registered_and_config_round_trip() -> None:
    classifier = make_classifier()
    piq = make_piq(classifier, loud_threshold=0.3, mask_domain="linear")
    assert INTERPRETERS["piq"] is PIQ and piq.mask_domain == "linear"
    config = piq.config_dict()
    assert config["dim"] == 4 and config["n_keys"] == 12 and config["loud_threshold"] == 0.3
    rebuilt = PIQ.from_config(config, classifier)
    assert rebuilt.config == piq.config
    assert rebuilt.codebook.embedding.weight.shape == (12, 4)


def test_config_errors_name_the_key() -> None:
    classifier = make_classifier(dim=4, n_classes=3)
    with pytest.raises(ConfigError, match="interpreter.dim"):
        PIQ.from_config({"dim": 8}, classifier)
    with pytest.raises(ConfigError, match="interpreter.n_keys"):
        PIQ.from_config({"n_keys": 2}, classifier)
    with pytest.raises(ConfigError, match="interpreter.codebook_size"):
        PIQ.from_config({"codebook_size": 2}, classifier)


def test_code_classes_are_the_reference_partition() -> None:
    owners = code_classes(1024, 50)
    counts = torch.bincount(owners, minlength=50)
    assert set(counts.tolist()) == {20, 21} and int(counts.sum()) == 1024
    assert owners[:21].eq(0).all() and owners[21:41].eq(1).all() and int(owners[41]) == 2
    assert torch.all(owners[1:] >= owners[:-1])  # contiguous blocks
    assert code_classes(3, 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot be split"):
        code_classes(49, 50)


def test_nearest_code_within_the_class_partition_brute_force() -> None:
    classifier = make_classifier(dim=4, n_classes=3)
    codebook = make_piq(classifier).codebook
    torch.manual_seed(3)
    codebook.embedding.weight.data.normal_()
    h = torch.randn(4, 4, 2, 3)
    target = torch.tensor([0, 2, 1, 2])
    indices = codebook.nearest(h, target)
    weight = codebook.embedding.weight.detach()
    for b in range(4):
        allowed = [k for k in range(12) if int(codebook.owners[k]) == int(target[b])]
        for i in range(2):
            for j in range(3):
                distances = [float(((h[b, :, i, j] - weight[k]) ** 2).sum()) for k in allowed]
                assert int(indices[b, i, j]) == allowed[distances.index(min(distances))]
    # The unrestricted nearest code is often another class's: the partition matters.
    unrestricted = torch.cdist(h.permute(0, 2, 3, 1).reshape(-1, 4), weight).argmin(-1)
    assert not torch.equal(unrestricted, indices.flatten())
    quantized = codebook(h, target)
    assert torch.equal(quantized.codes, quantized.code_vectors)  # exact code values
    assert torch.equal(quantized.code_vectors[1, :, 0, 0], weight[indices[1, 0, 0]])


def _grad_norms(piq: PIQ, loss: torch.Tensor) -> dict[str, float]:
    piq.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    groups = {"encoder": (piq.adapter, piq.down), "codebook": (piq.codebook,)}
    groups["decoder"] = (piq.up, piq.decoder)
    return {
        name: sum(
            float(p.grad.abs().sum()) if p.grad is not None else 0.0
            for module in modules
            for p in module.parameters()
        )
        for name, modules in groups.items()
    }


def test_straight_through_gradients_reach_only_the_intended_side() -> None:
    classifier = make_classifier()
    piq = make_piq(classifier).train()
    features = make_features(2, 0.5)
    with torch.no_grad():
        out = classifier(features.magnitude)
    losses = piq.loss(features, out, classifier)
    assert set(losses) == {"loss/rec", "loss/vq", "loss/commit"}
    rec = _grad_norms(piq, losses["loss/rec"])
    vq = _grad_norms(piq, losses["loss/vq"])
    commit = _grad_norms(piq, losses["loss/commit"])
    assert rec["encoder"] > 0 and rec["decoder"] > 0 and rec["codebook"] == 0
    assert vq["codebook"] > 0 and vq["encoder"] == 0 and vq["decoder"] == 0
    assert commit["encoder"] > 0 and commit["codebook"] == 0 and commit["decoder"] == 0
    # The reference's weights are 1, 1, 1 and vq == commit in value.
    assert torch.allclose(losses["loss/vq"], losses["loss/commit"])


def test_rec_loss_is_bce_against_the_per_clip_energy_target() -> None:
    classifier = make_classifier()
    piq = make_piq(classifier, loud_threshold=0.5).eval()
    features = make_features(2, 0.5)
    features.magnitude[1] *= 100.0  # a louder batch-mate must not move clip 0's target
    out = classifier(features.magnitude)
    with torch.no_grad():
        logits = piq.decode(piq.quantize(piq.encode(out.hidden[0]), out.prediction).codes)
        log_magnitude = features.log_magnitude[:, : logits.shape[1]]
        peak = log_magnitude.amax(dim=(1, 2), keepdim=True)
        target = (log_magnitude > 0.5 * peak).float()
        mask = torch.sigmoid(logits)
        expected = -(target * mask.log() + (1 - target) * (1 - mask).log()).mean()
        loss = piq.loss(features, out, classifier)["loss/rec"]
    assert torch.allclose(loss, expected, atol=1e-6)
    assert 0.0 < float(target[0].mean()) < 1.0


def test_mask_covers_a_reference_size_input() -> None:
    classifier = make_classifier(dim=4)
    piq = make_piq(classifier).eval()
    features = make_features(1, 5.0)
    assert features.magnitude.shape == (1, 431, 513)
    with torch.no_grad():
        out = classifier(features.magnitude)
        h = piq.encode(out.hidden[0])
        logits = piq.decode(piq.quantize(h, out.prediction).codes)
        mask = piq(features, out)
    assert out.hidden[0].shape == (1, 4, 26, 32) and h.shape == (1, 4, 13, 16)
    assert logits.shape == (1, 417, 513)
    assert mask.shape == (1, 431, 513)
    assert torch.equal(mask[:, :417], torch.sigmoid(logits))
    assert torch.equal(mask[:, 417:], mask[:, 416:417].expand(1, 14, 513))
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0


def _randomise(piq: PIQ) -> None:
    """Unit-scale codes and non-trivial BN statistics, so masks differ between classes."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        piq.codebook.embedding.weight.normal_(generator=generator)
        for module in piq.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)


def test_batch_independence_and_target_selection() -> None:
    classifier = make_classifier()
    piq = make_piq(classifier).eval()
    _randomise(piq)
    features = make_features(3, 0.5)
    features.magnitude[2] *= 50.0
    with torch.no_grad():
        out = classifier(features.magnitude)
        batched = piq(features, out)
        for b in range(3):
            single_out = ClassifierOutput(
                out.logits[b : b + 1], out.embedding[b : b + 1], (out.hidden[0][b : b + 1],)
            )
            single = piq(features[b : b + 1], single_out)
            assert torch.allclose(single, batched[b : b + 1], atol=1e-6)
        assert torch.equal(piq(features, out, target=out.prediction), batched)
        other = (out.prediction + 1) % 3
        assert not torch.allclose(piq(features, out, target=other), batched, atol=1e-3)


def test_codebook_usage_and_dead_code_reseeding() -> None:
    classifier = make_classifier()
    piq = make_piq(classifier, reseed_dead_codes=True, reservoir_size=4).train()
    features = make_features(2, 0.5)
    with torch.no_grad():
        out = classifier(features.magnitude)
        piq.loss(features, out, classifier)
        indices = piq.quantize(piq.encode(out.hidden[0]), out.prediction).indices
    before = piq.codebook.embedding.weight.detach().clone()
    usage = piq.codebook_usage()
    used = torch.zeros(12, dtype=torch.bool)
    used[indices.flatten()] = True
    assert torch.equal(usage.code_used.cpu(), used)
    assert usage.used == pytest.approx(float(used.float().mean()))
    classes = set(out.prediction.tolist())
    assert usage.classes_seen.tolist() == [c in classes for c in range(3)]
    for c in range(3):
        owned = piq.codebook.owners == c
        assert float(usage.per_class[c]) == pytest.approx(float(used[owned].float().mean()))

    stats = piq.end_epoch()
    after = piq.codebook.embedding.weight.detach()
    dead = torch.tensor([bool(usage.classes_seen[int(o)]) for o in piq.codebook.owners]) & ~used
    assert stats["codebook/reseeded"] == float(dead.sum()) > 0
    assert torch.equal(after[~dead], before[~dead])
    # Each re-seeded code is one of its class's recent encoder outputs (+1% noise).
    for code in torch.nonzero(dead).flatten().tolist():
        owner = int(piq.codebook.owners[code])
        pool = piq.reservoir[owner, : min(int(piq.reservoir_count[owner]), 4)]
        gap = (pool - after[code]).norm(dim=1).min()
        assert float(gap) < 0.05 * float(after[code].norm())
        assert float(gap) < 0.05 * float((before[code] - after[code]).norm())
    assert float(piq.code_hits.sum()) == 0.0  # counts restart each epoch


# --- train_piq.py through its real entry point, on a tiny synthetic set ------------------

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "esc50"
TINY_FEATURES = FeatureConfig(n_fft=256, win_ms=16.0, hop_ms=8.0)  # 1 s -> 126 x 129


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_argv(root: Path, output: Path, *extra: str) -> list[str]:
    return [
        "hparams/piq_demo.yaml", f"--data_folder={root / 'data'}", f"--output_folder={output}",
        f"--classifier_folder={root / 'classifier'}", "--interpreter.n_keys=6",
        "--interpreter.reseed_dead_codes=true", "--duration_s=1.0", "--train.epochs=2",
        "--train.batch_size=3", "--device=cpu", "--seed=5", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_recipe_trains_resumes_after_a_kill_and_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = generate_synthetic(tmp_path / "data", n_classes=3, clips_per_class=5, duration_s=1.0)
    torch.manual_seed(0)
    config = ClassifierConfig(name="conv2d", dim=4, lin_neurons=8, features=TINY_FEATURES)
    names = class_names_from_metadata(read_metadata(data), [1, 2, 3])
    save_classifier(tmp_path / "classifier", build_classifier(config, names).eval(), config)
    monkeypatch.chdir(tmp_path)
    script = load_script("train_piq")
    straight = tmp_path / "straight"
    assert script.main(recipe_argv(tmp_path, straight)) == 0

    # 3 train batches + 1 validation batch per epoch: loss call 6 is mid-epoch 2.
    calls = {"n": 0}
    original_loss = PIQ.loss

    def killed_loss(self: PIQ, *args: object) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated kill")
        return original_loss(self, *args)

    killed = tmp_path / "killed"
    monkeypatch.setattr(PIQ, "loss", killed_loss)
    assert script.main(recipe_argv(tmp_path, killed)) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert torch.load(killed / "train_state/state.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(PIQ, "loss", original_loss)
    assert script.main(recipe_argv(tmp_path, killed)) == 0

    final = {name: load_checkpoint(folder / "model").tensors for name, folder in
             (("straight", straight), ("killed", killed))}  # fmt: skip
    assert final["straight"].keys() == final["killed"].keys()
    assert final["straight"]["interpreter.codebook.embedding.weight"].shape == (6, 4)
    for key, value in final["straight"].items():
        torch.testing.assert_close(final["killed"][key], value, rtol=0, atol=0)
    saved = load_checkpoint(straight / "model").config["interpreter"]
    assert saved["name"] == "piq" and saved["dim"] == 4 and saved["mask_domain"] == "linear"

    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["n_test"] == 3 and 0.0 <= metrics["methods"]["piq_conv2d"]["fid_in"] <= 1.0
    argv = recipe_argv(tmp_path, straight, "--test_only", "--save_interpretations=true")
    assert script.main(argv) == 0
    assert json.loads((straight / "metrics.json").read_text()) == metrics
    clips = sorted((straight / "interpretations").iterdir())
    assert len(clips) == 3
    for clip in clips:
        files = {p.name for p in clip.iterdir()}
        assert files == {"original.wav", "interpretation.wav", "spectra.png"}
        assert load_audio(clip / "interpretation.wav").shape == (16000,)
