"""Two-class mixtures: exact sums, SNRs, determinism, the dataset and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.cli import main
from audiointerp.data.esc50 import DataError
from audiointerp.data.mixtures import MANIFEST_COLUMNS, MixtureDataset, make_mixtures
from audiointerp.data.synthetic import class_names, generate_synthetic

SNRS = (0.0, 6.0, -3.5)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    return generate_synthetic(
        tmp_path_factory.mktemp("synth") / "set",
        n_classes=3,
        clips_per_class=5,
        sample_rate=16000,
        duration_s=0.5,
    )


def _records(manifest: Path) -> list[dict]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _mix(data_folder: Path, out: Path, seed: int = 0) -> Path:
    return make_mixtures(
        data_folder, out, folds=(1, 2, 3, 4, 5), n_mixtures=6, snrs_db=SNRS, seed=seed
    )


def test_mixture_is_the_exact_sum_at_the_requested_snr(data_folder, tmp_path):
    manifest = _mix(data_folder, tmp_path / "mix")
    records = _records(manifest)
    assert len(records) == 6 and tuple(records[0]) == MANIFEST_COLUMNS
    assert json.loads((manifest.parent / "mixtures.json").read_text())[2]["snr_db"] == -3.5
    for i, record in enumerate(records):
        audio = {}
        for key in ("mixture", "source_a", "source_b"):
            audio[key], rate = sf.read(manifest.parent / record[key], dtype="float32")
            assert rate == 16000 and sf.info(str(manifest.parent / record[key])).subtype == "FLOAT"
        mixture, a, b = audio["mixture"], audio["source_a"], audio["source_b"]
        np.testing.assert_array_equal(mixture, a + b)
        snr = 10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(b.astype(np.float64) ** 2))
        assert float(record["snr_db"]) == SNRS[i % 3]
        assert abs(snr - SNRS[i % 3]) < 0.01
        assert record["class_a"] != record["class_b"]
        assert max(np.abs(x).max() for x in (mixture, a, b)) == pytest.approx(1.0)
        assert len(mixture) == 8000


def test_mixtures_are_deterministic(data_folder, tmp_path):
    first = _mix(data_folder, tmp_path / "first")
    second = _mix(data_folder, tmp_path / "second")
    assert _records(first) == _records(second)
    for record in _records(first):
        path = record["mixture"]
        assert (first.parent / path).read_bytes() == (second.parent / path).read_bytes()
    other = _mix(data_folder, tmp_path / "other", seed=1)
    pairs = [(r["clip_a"], r["clip_b"]) for r in _records(other)]
    assert pairs != [(r["clip_a"], r["clip_b"]) for r in _records(first)]


def test_dataset_items(data_folder, tmp_path):
    manifest = _mix(data_folder, tmp_path / "mix")
    names = class_names(3)
    dataset = MixtureDataset(manifest.parent, names)
    assert len(dataset) == 6
    item = dataset[1]
    assert item["mixture"].shape == (8000,) and item["sources"].shape == (2, 8000)
    assert torch.equal(item["mixture"], item["sources"].sum(0))
    record = _records(manifest)[1]
    assert item["labels"].tolist() == [
        names.index(record["class_a"]),
        names.index(record["class_b"]),
    ]
    assert item["snr_db"] == 6.0 and item["id"] == "mix0001"
    with pytest.raises(DataError, match="not in class_names"):
        MixtureDataset(manifest, names[:1])


def test_errors(data_folder, tmp_path):
    with pytest.raises(DataError, match="fewer than two classes"):
        make_mixtures(data_folder, tmp_path / "none", folds=(9,))
    with pytest.raises(FileNotFoundError, match="mixtures.csv"):
        MixtureDataset(tmp_path, class_names(3))


def test_cli(data_folder, tmp_path, capsys):
    out = tmp_path / "mix"
    argv = ["data", "mix", "--data_folder", str(data_folder), "--out", str(out), "--n", "2"]
    assert main([*argv, "--snr", "3", "--folds", "1", "2", "--seed", "4"]) == 0
    assert str(out / "mixtures.csv") in capsys.readouterr().out
    records = _records(out / "mixtures.csv")
    assert [float(r["snr_db"]) for r in records] == [3.0, 3.0]
    assert all(r["clip_a"][0] in "12" and r["clip_b"][0] in "12" for r in records)
    assert main(["data", "mix", "--data_folder", str(tmp_path / "nowhere"), "--out", "x"]) == 2
    assert "esc50.csv" in capsys.readouterr().err
