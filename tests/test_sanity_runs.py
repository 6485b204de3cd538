"""Data randomisation's training set: labels shuffled within the training folds only."""

from collections import Counter
from pathlib import Path

import pytest

from audiointerp.data.esc50 import is_esc50_folder, read_metadata
from audiointerp.data.synthetic import generate_synthetic
from audiointerp.errors import UserError
from audiointerp.sanity_runs import permuted_label_data


def test_permuted_label_data_shuffles_the_training_folds_only(tmp_path: Path) -> None:
    data = generate_synthetic(tmp_path / "data", n_classes=4, clips_per_class=10, duration_s=0.5)
    out = permuted_label_data(data, tmp_path / "shuffled", seed=3, folds=(1, 2, 3))
    assert is_esc50_folder(out)
    before = {row.filename: row for row in read_metadata(data)}
    after = {row.filename: row for row in read_metadata(out)}
    assert before.keys() == after.keys()
    train = [name for name, row in before.items() if row.fold in (1, 2, 3)]
    held_out = [name for name in before if name not in train]
    assert held_out and all(after[n].category == before[n].category for n in held_out)
    # each class keeps its number of training clips, but the clips carrying it change
    assert Counter(after[n].category for n in train) == Counter(before[n].category for n in train)
    moved = sum(after[n].category != before[n].category for n in train)
    assert moved > len(train) // 2
    # target and category move together, and the audio is the original's
    names = {row.target: row.category for row in before.values()}
    assert all(names[after[n].target] == after[n].category for n in train)
    assert (out / "audio").resolve() == (data / "audio").resolve()
    # written once: a second call with another seed keeps the first shuffle
    permuted_label_data(data, out, seed=4, folds=(1, 2, 3))
    assert {r.filename: r.category for r in read_metadata(out)} == {
        n: r.category for n, r in after.items()
    }
    header = (data / "meta" / "esc50.csv").read_text().splitlines()[0]
    assert (out / "meta" / "esc50.csv").read_text().splitlines()[0] == header


def test_permuted_label_data_needs_two_training_clips(tmp_path: Path) -> None:
    data = generate_synthetic(tmp_path / "data", n_classes=2, clips_per_class=5, duration_s=0.5)
    with pytest.raises(UserError, match="fewer than two clips"):
        permuted_label_data(data, tmp_path / "shuffled", seed=0, folds=(9,))
