"""Your own data and ``audiointerp train lmac --classifier ... --data ... --out ...``:
class folders and CSVs with their problems reported, a killed run resumed, and the trained
folder explaining with ``interpret`` and ``Explainer.from_pretrained``."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from external_model import WaveformNet, build

from audiointerp.cli import main
from audiointerp.data.labelled import LabelledClips, read_labelled, train_valid_split
from audiointerp.errors import CheckpointError, DataError
from audiointerp.models.external import ExternalClassifier
from audiointerp.pipeline import Explainer
from audiointerp.training.tasks import InterpreterTask

MODEL = Path(__file__).with_name("external_model.py")
RATE = 8000


def write_clip(path: Path, kind: str, index: int, rate: int = RATE) -> Path:
    t = np.arange(rate // 2) / rate
    if kind == "tone":
        audio = 0.5 * np.sin(2 * np.pi * (400 + 100 * index) * t)
    elif kind == "click":
        audio = np.zeros_like(t)
        audio[:: rate // 10] = 0.9
    else:
        audio = 0.3 * np.random.default_rng(index).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), rate)
    return path


def esc50_folder(root: Path) -> Path:
    """Two clips of each model class in folds 1 and 2, in ESC-50's layout."""
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for target, kind in enumerate(("tone", "noise", "click")):
        for fold in (1, 2):
            name = f"{fold}-{kind}-A-{target}.wav"
            write_clip(root / "audio" / name, kind, fold)
            rows.append(f"{name},{fold},{target},{kind},False,{kind}{fold},A")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for kind in ("tone", "noise", "click", "cow"):
        for index in range(3):
            write_clip(root / kind / f"{index}.wav", kind, index, 16000 if index == 2 else RATE)
    (root / "tone" / "broken.wav").write_bytes(b"not audio")
    return root


def test_class_folders_report_unknown_classes_and_unreadable_files(class_folders):
    listed = read_labelled(class_folders)
    assert len(listed) == 13
    assert {item.label for item in listed} == {"tone", "noise", "click", "cow"}
    clips = LabelledClips(listed, ["tone", "noise", "click", "bird"], RATE, duration_s=0.5)
    assert len(clips) == 9 and clips.labels.count(0) == 3
    waveform, label, clip_id = clips[0]
    assert waveform.shape == (4000,) and float(waveform.abs().max()) == pytest.approx(1.0)
    problems = "\n".join(clips.problems)
    assert "broken.wav: not an audio file" in problems
    assert "skipped 3 clip(s) of 'cow': not a class of the model" in problems
    assert (
        "1 unreadable file(s) skipped" in problems
        and "no clips of the model's class(es) bird" in problems
    )
    train, valid = train_valid_split(clips)
    assert len(train) == 9 - len(valid) and len(valid) >= 1


def test_csv_with_folds_and_its_errors(tmp_path):
    for i, kind in enumerate(["tone", "noise", "click", "tone"]):
        write_clip(tmp_path / "audio" / f"{i}.wav", kind, i)
    table = tmp_path / "clips.csv"
    table.write_text("path,label,fold\naudio/0.wav,tone,1\naudio/1.wav,noise,1\n"
                     "audio/2.wav,click,2\naudio/3.wav,tone,2\n")  # fmt: skip
    clips = LabelledClips(read_labelled(table), ["tone", "noise", "click"], RATE, 0.5)
    assert train_valid_split(clips) == ([0, 1], [2, 3])  # the last fold validates
    table.write_text("audio/0.wav,tone\naudio/1.wav\n")
    with pytest.raises(DataError, match=r"clips.csv: line 2: expected path,label\[,fold\]"):
        read_labelled(table)
    table.write_text("audio/0.wav,tone,x\n")
    with pytest.raises(DataError, match="line 1: fold 'x' is not an integer"):
        read_labelled(table)
    with pytest.raises(DataError, match="no such file or folder"):
        read_labelled(tmp_path / "missing")


def test_train_lmac_for_your_classifier_resumes_and_interprets(
    class_folders, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    command = ["train", "lmac", "--classifier", f"{MODEL}:build_small", "--data",
               str(class_folders), "--out", str(out), "--epochs", "2", "--duration_s=0.5",
               "--train.batch_size=4", "--interpreter.width=0.25"]  # fmt: skip
    real_step, calls = InterpreterTask.training_step, []

    def killed_in_epoch_2(self, batch):
        calls.append(1)
        if len(calls) == 4:  # 7 training clips: 2 batches an epoch
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(InterpreterTask, "training_step", killed_in_epoch_2)
    assert main(command) == 130
    assert (out / "train_log.txt").read_text().count("epoch: ") == 1
    monkeypatch.setattr(InterpreterTask, "training_step", real_step)
    assert main(command) == 0
    out_text, err = capsys.readouterr()
    assert "resuming" in out_text and "continuing from epoch 2" in out_text
    assert "skipped 3 clip(s) of 'cow'" in err and "broken.wav: not an audio file" in err
    assert (out / "train_log.txt").read_text().count("epoch: ") == 2

    clip = class_folders / "noise" / "0.wav"
    assert main(["interpret", str(out / "model"), str(clip), "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "0.explanation.wav").is_file()
    result = Explainer.from_pretrained(out / "model").explain_file(clip)
    assert result.mask.shape == (32, 129) and 0 <= result.mask.min() <= result.mask.max() <= 1

    other = ExternalClassifier(WaveformNet(2), RATE, ["tone", "hum"], layer="conv")
    with pytest.raises(CheckpointError, match=r"trained for classes \['tone', 'noise', 'click'\]"):
        Explainer.from_pretrained(out / "model", classifier=other)
    with pytest.raises(CheckpointError, match="trained on layer 'conv'.*no layer"):
        Explainer.from_pretrained(out / "model", classifier=build(layer=None))
    config = (out / "model" / "config.yaml").read_text()
    (out / "model" / "config.yaml").write_text(config.replace(f"{MODEL}:build_small", ""))
    with pytest.raises(CheckpointError, match="cannot load again; pass it"):
        Explainer.from_pretrained(out / "model")

    # eval reads the ESC-50 layout; the folder no longer names its classifier: given here
    esc50 = esc50_folder(tmp_path / "esc50")
    evaluation = ["eval", str(out / "model"), "--data_folder", str(esc50), "--test_folds",
                  "1", "2", "--n_mixtures", "2", "--sanity_clips", "2",
                  "--out", str(tmp_path / "e"), "--classifier", f"{MODEL}:build_small"]  # fmt: skip
    assert main(evaluation) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["methods"]
    assert {"lmac_external", "energy_external"} <= set(metrics)
    lmac = metrics["lmac_external"]
    assert lmac["n_clips"] == 6 and lmac["classifier"] == "external"
    assert -1 <= lmac["FF"] <= 1 and 0 <= lmac["AI"] <= 100


def test_train_and_interpret_usage_errors(class_folders, tmp_path, capsys):
    assert main(["train", "lmac", "--data", str(class_folders), "--out", str(tmp_path)]) == 2
    assert "missing --classifier" in capsys.readouterr().err
    assert main(["train", "saliency", "--classifier", "x.py:f"]) == 2
    assert "'saliency' is not a trainable method" in capsys.readouterr().err
    clip = str(class_folders / "tone" / "0.wav")
    bad = ["interpret", "saliency", clip, "--out", str(tmp_path), "--classifier", f"{MODEL}:broken"]
    assert main(bad) == 2
    assert "broken: RuntimeError: weights file missing" in capsys.readouterr().err
