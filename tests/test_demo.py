"""`audiointerp demo` end to end on a tiny data set with tiny versions of the demo configs."""

from pathlib import Path

import pytest
import yaml

import audiointerp.demo as demo
from audiointerp.cli import main
from audiointerp.config import PACKAGED
from audiointerp.data.synthetic import generate_synthetic

TINY_FEATURES = {"sample_rate": 16000, "n_fft": 256, "win_ms": 16.0, "hop_ms": 8.0}
TINY = {  # 1-s clips at a 8-ms hop: 126 frames x 129 bins
    "conv2d_demo.yaml": {
        "classifier": {"dim": 4, "lin_neurons": 8, "features": TINY_FEATURES},
        "train": {"epochs": 2, "batch_size": 4, "scheduler": "none", "lr": 0.01},
    },
    "nmf_demo.yaml": {"features": TINY_FEATURES, "nmf": {"n_components": 4, "epochs": 20}},
    "l2i_demo.yaml": {
        "interpreter": {"n_components": 4, "width": 8, "n_frames": 126},
        "train": {"epochs": 1, "batch_size": 3},
    },
    "piq_demo.yaml": {"interpreter": {"n_keys": 6}, "train": {"epochs": 1, "batch_size": 3}},
    "lmac_demo.yaml": {"train": {"epochs": 1, "batch_size": 3}},
    "conv2d_permuted.yaml": {
        "classifier": {"dim": 4, "lin_neurons": 8, "features": TINY_FEATURES},
        "train": {"epochs": 2, "batch_size": 4, "scheduler": "none", "lr": 0.01},
    },
}


@pytest.mark.slow
def test_demo_runs_every_stage_then_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    hparams = tmp_path / "hparams"
    hparams.mkdir()
    for name, changes in TINY.items():  # each extends the packaged demo config
        tiny = {"extends": str(PACKAGED / name), **changes, "duration_s": 1.0}
        (hparams / name).write_text(yaml.safe_dump(tiny))
    monkeypatch.setattr(demo, "HPARAMS", hparams)
    monkeypatch.setattr(demo, "N_MIXTURES", 4)
    data = generate_synthetic(tmp_path / "data", n_classes=3, clips_per_class=5, duration_s=1.0)
    out = tmp_path / "demo"

    assert main(["demo", "--out", str(out), "--data_folder", str(data)]) == 0
    printed = capsys.readouterr().out
    for stage in ("conv2d", "nmf", "l2i", "piq", "lmac"):
        assert (out / stage / "metrics.json").is_file()
    metrics = yaml.safe_load((out / "evaluation" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {
        "l2i_conv2d", "piq_conv2d", "lmac_conv2d", "energy_conv2d", "saliency_conv2d",
        "gradcam_conv2d", "random_conv2d", "ones_conv2d",
    }  # fmt: skip
    assert (out / "evaluation" / "report" / "index.html").is_file()
    rows = metrics["methods"]
    for name in ("l2i_conv2d", "piq_conv2d", "lmac_conv2d"):  # retrained in the demo tier
        assert rows[name]["sanity_passed"] is not None, rows[name]["sanity_reason"]
        assert rows[name]["sanity_tier"] == "demo tier, 1 epoch a run"
        assert (out / "sanity_demo" / f"{name}_randomized" / "model" / "config.yaml").is_file()
    assert rows["energy_conv2d"]["sanity_tier"] == "eval"
    assert "demo tier trained in" in printed
    explained = sorted(p.name for p in (out / "explained").glob("*.explanation.wav"))
    assert len(explained) == 3
    assert "Report: " in printed
    assert printed.count("oracle (ideal ratio mask)") == 1  # the table, printed once

    assert main(["demo", "--out", str(out), "--data_folder", str(data)]) == 0
    again = capsys.readouterr().out
    assert again.count(": reusing ") == 5 + 6  # the five stages and the six sanity runs

    assert main(["sanity", "--out", str(out), "--data_folder", str(data)]) == 0
    full = yaml.safe_load((out / "evaluation_sanity" / "metrics.json").read_text())
    assert full["methods"]["lmac_conv2d"]["sanity_tier"] == "make sanity, the recipe's budget"
    assert (out / "evaluation_sanity" / "report" / "index.html").is_file()

    shuffle = ["sanity", "--data_randomization", "--out", str(out), "--data_folder", str(data)]
    assert main(shuffle) == 0
    printed = capsys.readouterr().out
    assert printed.count("_seed: reusing ") == 3  # the runs on f are shared with `sanity`
    shuffled = yaml.safe_load((out / "evaluation_data_randomization" / "metrics.json").read_text())
    permuted = out / "sanity_full" / "permuted_classifier"
    assert shuffled["randomized_classifier"]["source"] == str(permuted / "model")
    fit = yaml.safe_load((permuted / "fit.json").read_text())
    assert 0.0 <= fit["train_accuracy"] <= 1.0 and fit["chance"] == pytest.approx(1 / 3)
    assert f"fits {100 * fit['train_accuracy']:.1f} % of the shuffled training labels" in printed
    rows = shuffled["methods"]
    for name in ("l2i_conv2d", "piq_conv2d", "lmac_conv2d"):
        tier = "make sanity, data randomisation, the recipe's budget"
        assert rows[name]["sanity_tier"] == tier
        assert (out / "sanity_full" / f"{name}_permuted" / "model" / "config.yaml").is_file()
    assert "trained on shuffled labels" in printed
