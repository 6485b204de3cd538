"""`audiointerp interpret`: folders in, mirrored outputs out, bad files reported, exit codes.

The model is a tiny conv2d classifier with a test-only threshold interpreter, saved in our
checkpoint format, run in-process through :func:`audiointerp.cli.main`.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import Tensor, nn

from audiointerp.checkpoints import prefixed, save_checkpoint
from audiointerp.cli import main
from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.registry import INTERPRETERS, register
from audiointerp.models import ClassifierConfig, build_classifier, classifier_checkpoint
from audiointerp.models.base import Classifier, ClassifierOutput

RATE = 8000
FEATURES = FeatureConfig(sample_rate=RATE, n_fft=256, hop_ms=16.0, win_ms=32.0)  # hop 128
NAME = "test-cli-threshold"
CLASSES = ["dog", "rain", "siren"]


class ThresholdInterpreter(Interpreter):
    """sigmoid(4 (log1p|X| - threshold)) with a learnable ``threshold``."""

    def __init__(self) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(0.1))

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> ThresholdInterpreter:
        return cls()

    def config_dict(self) -> dict[str, Any]:
        return {}

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        return torch.sigmoid(4.0 * (features.log_magnitude - self.threshold))


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register(NAME)(ThresholdInterpreter)
    yield
    INTERPRETERS.pop(NAME)


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = ClassifierConfig(dim=4, lin_neurons=8, features=FEATURES)
    tensors, config_map, meta = classifier_checkpoint(build_classifier(config, CLASSES), config)
    tensors.update(prefixed("interpreter", ThresholdInterpreter().state_dict()))
    config_map["interpreter"] = {"name": NAME}
    return save_checkpoint(tmp_path / "model", tensors, config_map, {**meta, "duration_s": 0.5})


def _tone(freq: float, n_samples: int, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n_samples) / rate)).astype(np.float32)


def _good_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Write good inputs; returns relative stem -> (frames, rate) of each."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    sf.write(folder / "tone.wav", _tone(440.0, 6000, RATE), RATE)
    stereo = np.stack([_tone(300.0, 30_000, 44_100), _tone(900.0, 30_000, 44_100)], axis=1)
    sf.write(folder / "sub" / "stereo44k.flac", stereo, 44_100)
    sf.write(folder / "sub" / "long.ogg", _tone(1200.0, 24_000, 16_000), 16_000)  # 1.5 s
    return {"tone": (6000, RATE), "sub/stereo44k": (30_000, 44_100), "sub/long": (24_000, 16_000)}


def _bad_files(folder: Path) -> list[str]:
    """Write bad inputs; returns their names."""
    (folder / "bad").mkdir(parents=True, exist_ok=True)
    (folder / "bad" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    sf.write(folder / "bad" / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    nan = _tone(440.0, 4000, RATE)
    nan[100] = np.nan
    sf.write(folder / "bad" / "nan.wav", nan, RATE, subtype="FLOAT")
    sf.write(folder / "bad" / "silent.wav", np.zeros(4000, dtype=np.float32), RATE)
    (folder / "bad" / "notes.wav").write_text("this is a text file, not audio\n")
    (folder / "bad" / "folder.wav").mkdir()
    return ["corrupt.wav", "empty.wav", "nan.wav", "silent.wav", "notes.wav", "folder.wav"]


def _check_outputs(out: Path, stem: str, frames: int, rate: int) -> None:
    audio, audio_rate = sf.read(out / f"{stem}.explanation.wav", dtype="float32")
    assert audio.shape == (frames,) and audio_rate == rate
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
    mask = np.load(out / f"{stem}.mask.npy")
    model_samples = round(frames * RATE / rate)
    assert abs(mask.shape[0] - (model_samples // FEATURES.hop_length + 1)) <= 1
    assert mask.shape[1] == FEATURES.n_freqs and 0.0 <= mask.min() and mask.max() <= 1.0
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mixed_folder_writes_good_outputs_and_reports_each_bad_file(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    good = _good_files(inputs)
    bad = _bad_files(inputs)
    assert main(["interpret", str(model_dir), str(inputs), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("audiointerp: error")]
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(name in line for line in errors) == 1
    assert any("silent" in line for line in errors) and any("NaN" in line for line in errors)
    lines = captured.out.splitlines()
    assert len(lines) == len(good)
    for line in lines:
        path, predicted, probability = line.split("\t")
        assert Path(path).exists() and predicted in CLASSES and 0.0 < float(probability) <= 1.0
    for stem, (frames, rate) in good.items():
        _check_outputs(out, stem, frames, rate)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(written) == 3 * len(good)  # nothing for the bad files, no temp files left


def test_all_good_exits_zero_and_single_files_work(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    _good_files(inputs)
    assert main(["interpret", str(model_dir), str(inputs), "--out", str(out)]) == 0
    single = inputs / "sub" / "stereo44k.flac"
    assert main(["interpret", str(model_dir), str(single), "--out", str(tmp_path / "one")]) == 0
    _check_outputs(tmp_path / "one", "stereo44k", 30_000, 44_100)
    assert capsys.readouterr().err.count("error") == 0


def test_json_lists_results_and_errors(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    good = _good_files(inputs)
    bad = _bad_files(inputs)
    argv = ["interpret", str(model_dir), str(inputs), "--out", str(out), "--json", "--top-k", "2"]
    assert main(argv) == 1
    records = json.loads(capsys.readouterr().out)
    assert len(records) == len(good) + len(bad)
    failed = [r for r in records if "error" in r]
    assert sorted(Path(r["file"]).name for r in failed) == sorted(bad)
    for record in (r for r in records if "error" not in r):
        assert record["predicted"] in CLASSES and record["target"] == record["predicted"]
        assert len(record["top_k"]) == 2 and record["top_k"][0][0] == record["predicted"]
        assert record["top_k"][0][1] == pytest.approx(record["probability"])
        assert all(Path(path).is_file() for path in record["outputs"].values())


def test_target_is_explained_and_an_unknown_one_is_a_usage_error(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    _good_files(inputs)
    argv = ["interpret", str(model_dir), str(inputs), "--out", str(tmp_path / "out"), "--json"]
    assert main([*argv, "--target", "siren"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in records] == ["siren"] * 3
    assert main([*argv, "--target", "cat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'cat'" in err[0] and "dog, rain, siren" in err[0]


def test_a_missing_input_among_others_is_one_failed_file(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tone = tmp_path / "tone.wav"
    sf.write(tone, _tone(440.0, 4000, RATE), RATE)
    argv = ["interpret", str(model_dir), str(tone), str(tmp_path / "typo.wav")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert (
        captured.err.count("audiointerp: error") == 1 and "typo.wav: no such file" in captured.err
    )
    assert captured.out.count("tone.wav") == 1


def test_usage_errors_exit_two_with_one_line(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = tmp_path / "inputs", str(tmp_path / "out")
    _good_files(inputs)
    (tmp_path / "nothing").mkdir()
    cases = [
        ([str(tmp_path / "no_model"), str(inputs)], "no such model folder"),
        ([str(inputs), str(inputs)], "not a model checkpoint folder"),
        ([str(model_dir), str(tmp_path / "nothing")], "no audio files"),
        ([str(model_dir), str(tmp_path / "typo.wav")], "no audio files"),
    ]
    for args, message in cases:
        assert main(["interpret", *args, "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["interpret", str(model_dir), str(inputs), "--out", out, "--top-k", "0"])
    assert exit_info.value.code == 2


def test_random_bytes_fail_with_one_clear_line_and_no_decoder_chatter(
    tmp_path: Path, model_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sf.write(inputs / "tone.wav", _tone(440.0, 4000, RATE), RATE)
    noise = np.random.default_rng(1).bytes(20_000)  # libsndfile tries its mp3 decoder on it
    for name in ("bytes.mp3", "noise.wav"):
        (inputs / name).write_bytes(noise)
    assert main(["interpret", str(model_dir), str(inputs), "--out", str(tmp_path / "out")]) == 1
    captured = capfd.readouterr()  # file descriptors 1 and 2: native libraries' output too
    assert captured.err.splitlines() == [
        f"audiointerp: error: {inputs / name}: not an audio file soundfile can read"
        for name in ("bytes.mp3", "noise.wav")
    ]
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(inputs / "tone.wav")]


@pytest.mark.parametrize("warnoptions, shown", [([], 0), (["default"], 2)])
def test_library_warnings_stay_out_unless_asked_for(
    tmp_path: Path,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    warnoptions: list[str],
    shown: int,
) -> None:
    def chatty_forward(self, features, classifier_out, target=None):
        warnings.warn("a library's UserWarning", UserWarning, stacklevel=1)
        np.log(np.zeros(1))  # numpy's RuntimeWarning: divide by zero
        return torch.sigmoid(4.0 * (features.log_magnitude - self.threshold))

    monkeypatch.setattr(ThresholdInterpreter, "forward", chatty_forward)
    monkeypatch.setattr(sys, "warnoptions", warnoptions)  # as `python -W default` sets it
    tone = tmp_path / "tone.wav"
    sf.write(tone, _tone(440.0, 4000, RATE), RATE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["interpret", str(model_dir), str(tone), "--out", str(tmp_path / "o")]) == 0
    assert len(caught) == shown
