"""The README's "Your own classifier" Python block, run as written, on the test model."""

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from external_model import WaveformNet

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block() -> str:
    section = README.read_text().split("## Your own classifier", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_own_classifier_block_runs_as_written(tmp_path, monkeypatch, capsys):
    shutil.copy(Path(__file__).with_name("external_model.py"), tmp_path / "my_model.py")
    torch.manual_seed(3)
    torch.save(WaveformNet().state_dict(), tmp_path / "weights.pt")
    t = np.arange(12000) / 11025
    sf.write(tmp_path / "clip.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 11025)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_model", raising=False)
    block = readme_block()
    assert len(block.strip().splitlines()) <= 13
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    result = namespace["result"]
    predicted, probability, shape = capsys.readouterr().out.split(" ", 2)
    assert predicted in ("tone", "noise", "click") and 0 < float(probability) <= 1
    assert result.waveform.shape == (12000,) and shape.strip() == "(12000,)"
    assert result.mask.shape[1] == 513 and 0 <= result.mask.min() <= result.mask.max() <= 1
