"""`examples/` is swapped in whole on success and left as it was when the run fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiointerp.evaluation.files import EXAMPLES_DIR, EXAMPLES_INDEX, StagedExamples


def _old_examples(out: Path) -> Path:
    old = out / EXAMPLES_DIR / "old_method" / "mask.npy"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    return old


def test_clean_exit_replaces_examples_with_the_index(tmp_path: Path) -> None:
    old = _old_examples(tmp_path)
    with StagedExamples(tmp_path) as staged:
        staged.index["m"] = [{"folder": "m/clip_0"}]
    assert not old.exists()
    index = json.loads((tmp_path / EXAMPLES_DIR / EXAMPLES_INDEX).read_text())
    assert index == {"m": [{"folder": "m/clip_0"}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [EXAMPLES_DIR]  # no hidden folder


def test_failed_run_keeps_the_old_examples(tmp_path: Path) -> None:
    old = _old_examples(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), StagedExamples(tmp_path) as staged:
        (staged.staging / "half_written.wav").write_bytes(b"x")
        raise RuntimeError("boom")
    assert old.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [EXAMPLES_DIR]
