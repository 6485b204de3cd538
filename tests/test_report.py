"""`audiointerp eval` then `audiointerp report` end to end on a tiny PIQ and 1-s synthetic clips."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch

from audiointerp.checkpoints import prefixed, save_checkpoint
from audiointerp.cli import build_parser, main
from audiointerp.data.esc50 import class_names_from_metadata, read_metadata
from audiointerp.data.synthetic import generate_synthetic
from audiointerp.evaluation import CSV_COLUMNS
from audiointerp.interpreters.piq import PIQ, PIQConfig
from audiointerp.models import ClassifierConfig, build_classifier, classifier_checkpoint

METRIC_KEYS = ("AI", "AD", "AG", "FF", "fid_in", "SPS", "COMP", "si_snri",
               "si_snri_oracle_fraction", "sanity_reason", "sanity_reused_correlation",
               "clips_per_s", "classifier_accuracy")  # fmt: skip


def make_model_run(root: Path) -> tuple[Path, Path]:
    """(data folder, run folder): synthetic data (2 classes, 1-s clips) and a tiny PIQ run."""
    data = generate_synthetic(root / "data", n_classes=2, clips_per_class=5, sample_rate=16000,
                              duration_s=1.0)  # fmt: skip
    names = class_names_from_metadata(read_metadata(data), (1, 2, 3))
    torch.manual_seed(0)
    config = ClassifierConfig(dim=4, lin_neurons=8)
    classifier = build_classifier(config, names).eval()
    interpreter = PIQ(PIQConfig(dim=4, n_keys=8), len(names)).eval()
    tensors, checkpoint_config, meta = classifier_checkpoint(classifier, config)
    tensors |= prefixed("interpreter", interpreter.state_dict())
    checkpoint_config["interpreter"] = {"name": "piq", **interpreter.config_dict()}
    run = root / "run"
    save_checkpoint(run / "model", tensors, checkpoint_config, {**meta, "duration_s": 1.0})
    return data, run


def make_evaluated_run(root: Path) -> Path:
    """The tiny PIQ run evaluated (its own methods only: no --methods) and reported."""
    data, run = make_model_run(root)
    args = ["eval", str(run), "--data_folder", str(data), "--n_mixtures", "2"]
    assert main([*args, "--n_examples", "1", "--methods"]) == 0
    assert main(["report", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_evaluated_run(tmp_path_factory.mktemp("evaluated"))


def test_metrics_json_holds_every_method_and_metric(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["piq_conv2d", "energy_conv2d"]
    for row in metrics["methods"].values():
        for key in METRIC_KEYS:
            assert row[key] is not None, key
        assert 0.0 <= row["classifier_accuracy"] <= 1.0
        assert row["n_clips"] == 2 and row["n_mixtures"] == 2
        assert 0 <= row["SPS"] <= 1 and 0 <= row["COMP"] <= math.log(87 * 513) + 1e-4
    piq, energy = metrics["methods"]["piq_conv2d"], metrics["methods"]["energy_conv2d"]
    assert piq["classifier_accuracy"] == energy["classifier_accuracy"]  # one classifier
    assert energy["sanity_passed"] is False and energy["sanity_reused_correlation"] == 1.0
    assert energy["sanity_reason"].startswith("blind to the model")
    assert piq["sanity_passed"] is None  # a trained explainer needs its runs: not checked
    assert piq["sanity_reason"].startswith("not checked") and piq["sanity_tier"] == "eval"
    for row in (piq, energy):  # every mean with its interval
        for key in ("AI", "FF", "si_snri", "si_snri_oracle_fraction"):
            low, high = row[f"{key}_ci"]
            assert low <= row[key] <= high, key
    assert metrics["randomized_classifier"]["chance"] == 0.5
    assert energy["control"] is True and piq["control"] is False
    assert energy["bound"] is False and piq["bound"] is False
    assert piq["classifier_id"] == energy["classifier_id"] and len(piq["classifier_id"]) == 8
    assert metrics["ranking"]["si_snri"] == ["piq_conv2d"]  # the energy control is not ranked
    assert metrics["oracle"]["si_snri"] > 3.0  # the ideal ratio mask separates
    assert piq["oracle_si_snri"] == metrics["oracle"]["si_snri"]
    assert metrics["mixture"]["si_snri"] == 0.0
    # pitfall 6: the reference evaluates mixtures on the validation fold; we use the test fold.
    assert metrics["test_folds"] == [5]
    with open(metrics["mixtures"]) as handle:
        mixed = list(csv.DictReader(handle))
    assert all(row["clip_a"].startswith("5-") and row["clip_b"].startswith("5-") for row in mixed)


def test_csv_has_one_row_per_method(run_dir: Path) -> None:
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["method"] for row in rows] == list(metrics["methods"])
    assert tuple(rows[0]) == CSV_COLUMNS
    for row in rows:
        expected = metrics["methods"][row["method"]]
        assert float(row["si_snri"]) == pytest.approx(expected["si_snri"], rel=1e-5)
        passed = expected["sanity_passed"]
        assert row["sanity_passed"] == ("" if passed is None else str(passed))


def test_examples_hold_audio_and_masks(run_dir: Path) -> None:
    index = json.loads((run_dir / "examples" / "index.json").read_text())
    for entries in index.values():
        assert [entry["kind"] for entry in entries] == ["clip", "mixture"]
        for entry in entries:
            folder = run_dir / "examples" / entry["folder"]
            for name in entry["files"].values():
                assert sf.info(str(folder / name)).frames == 16000
            assert 0.0 < entry["probability"] <= 1.0
        assert set(entries[1]["files"]) >= {"source_a", "source_b"}


def test_report_references_only_files_it_holds(run_dir: Path) -> None:
    report = run_dir / "report"
    html = (report / "index.html").read_text()
    sources = re.findall(r'src="([^"]+)"', html)
    assert sum(s.endswith(".wav") for s in sources) == 2 * (3 + 5)  # 2 methods: clip + mixture
    assert sum(s.endswith(".png") for s in sources) == 2 * 2 * 4 + 2  # + a sanity figure each
    assert 'alt="Sanity check: FAIL, blind to the model' in html
    for source in sources:
        assert (report / source).is_file(), source
    assert "http://" not in html and "https://" not in html  # viewable offline
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name, row in metrics["methods"].items():
        value = re.search(rf'data-method="{name}".*?data-key="FF" data-value="([^"]+)"', html)
        assert value and float(value.group(1)) == row["FF"]


def test_report_rerun_leaves_no_stale_files(run_dir: Path) -> None:
    stale = run_dir / "report" / "img" / "stale.png"
    stale.write_bytes(b"old")
    assert main(["report", str(run_dir)]) == 0
    assert not stale.exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report")]


def test_report_without_metrics_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.json" in capsys.readouterr().err


def test_eval_options_parse() -> None:
    args = build_parser().parse_args(
        ["eval", "a", "b", "--data_folder=d", "--mixtures", "m", "--reference-compatible"]
    )
    assert [str(p) for p in args.model_dirs] == ["a", "b"]
    assert str(args.data_folder) == "d" and str(args.mixtures) == "m"
    assert args.reference_compatible is True and args.out is None
    assert args.methods == ["random", "ones"]  # the bounds, by default
    args = build_parser().parse_args(["eval", "a", "--data_folder=d", "--methods"])
    assert args.methods == []
