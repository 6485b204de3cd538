"""`audiointerp eval --methods`: baselines and bounds on one classifier, ranks, bound rows."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
from test_report import METRIC_KEYS, make_model_run

from audiointerp.cli import main
from audiointerp.config import ConfigError
from audiointerp.evaluation import (
    METRIC_DIRECTIONS,
    EvalConfig,
    baseline_shortfalls,
    classifier_id,
    format_table,
    metric_ranks,
    rank_methods,
)
from audiointerp.evaluation.methods import Method, build_methods, inference_parts
from audiointerp.explain import explain
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import ClassifierConfig, build_classifier

METHODS = ("saliency", "gradcam", "integrated_gradients", "occlusion", "random", "ones")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny PIQ run evaluated with every classifier-hosted method, then reported."""
    data, run = make_model_run(tmp_path_factory.mktemp("methods"))
    args = ["eval", str(run), "--data_folder", str(data), "--n_mixtures", "2", "--max_clips",
            "1", "--sanity_clips", "1", "--n_examples", "0", "--methods", *METHODS]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(args) == 0
    assert printed.getvalue().count("oracle (ideal ratio mask)") == 1  # the table, once
    assert main(["report", str(run)]) == 0
    return run


def test_methods_add_rows_with_every_metric(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = ["piq_conv2d", "energy_conv2d", *(f"{name}_conv2d" for name in METHODS)]
    assert list(metrics["methods"]) == expected
    ids = {row["classifier_id"] for row in metrics["methods"].values()}
    assert len(ids) == 1  # every method explained the first folder's classifier
    for name, row in metrics["methods"].items():
        for key in METRIC_KEYS:
            assert row[key] is not None, (name, key)
        assert row["n_clips"] == 1 and row["n_mixtures"] == 2  # max_clips respected
        assert row["classifier"] == "conv2d"
    rows = metrics["methods"]
    assert [name for name, row in rows.items() if row["sanity_passed"] is None] == ["piq_conv2d"]
    assert rows["random_conv2d"]["sanity_reason"].startswith("not reproducible")
    assert rows["integrated_gradients_conv2d"]["interpreter"] == "integrated_gradients"
    assert rows["ones_conv2d"]["COMP"] == pytest.approx(math.log(87 * 513), rel=1e-4)
    assert rows["ones_conv2d"]["SPS"] == pytest.approx(0.0, abs=1e-6)
    assert [rows[f"{n}_conv2d"]["bound"] for n in ("random", "ones", "saliency", "energy")] == [
        True, True, False, False,
    ]  # fmt: skip
    assert rows["saliency_conv2d"]["control"] is False and rows["random_conv2d"]["control"]


def test_ranking_covers_methods_and_bounds_not_energy(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows, ranking = metrics["methods"], metrics["ranking"]
    assert set(ranking) == set(METRIC_DIRECTIONS)
    ranked = set(rows) - {"energy_conv2d"}
    for metric, higher in METRIC_DIRECTIONS.items():
        assert set(ranking[metric]) == ranked, metric
        values = [rows[name][metric] for name in ranking[metric]]
        assert values == sorted(values, reverse=higher), metric


def test_csv_and_printed_table_show_classifier_and_rank(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["classifier_id"] for row in rows} == {
        metrics["methods"]["piq_conv2d"]["classifier_id"]
    }
    table = format_table(metrics).splitlines()
    n = len(metrics["methods"])
    first, second = table[: 1 + n], table[2 + n : 3 + 2 * n]  # two blocks, a blank between
    assert first[0].split()[1] == "clf" and "#SI-SNRi" in second[0].split()
    ranks = metric_ranks(metrics, "si_snri")
    assert sorted(ranks.values())[0] == 1 and "energy_conv2d" not in ranks
    header = second[0].split()
    for line, other in zip(first[1:], second[1:], strict=True):
        cells = line.replace(" [bound]", "").split()
        assert cells[1] == metrics["methods"][cells[0]]["classifier_id"]
        rank = ranks.get(cells[0])
        tied = list(ranks.values()).count(rank) > 1
        expected = "-" if rank is None else f"{rank}{'=' if tied else ''}"
        assert other.replace(" [bound]", "").split()[header.index("#SI-SNRi")] == expected
        assert ("[bound]" in line) == (cells[0] in ("random_conv2d", "ones_conv2d"))
    assert "\u00b1" in second[1]  # means with the half-width of their interval
    assert any(line.startswith("si_snri ranking") for line in table)
    energy = next(line for line in table if line.strip().startswith("energy_conv2d: FAIL, blind"))
    row = metrics["methods"]["energy_conv2d"]  # the separation diagnostic beside the verdict
    before, after = row["sanity_si_snri"], row["sanity_si_snri_randomized"]
    assert f"SI-SNRi {before:.1f} dB, {after:.1f} dB on f~ [eval]" in energy
    assert "; on its mixtures R 1.00, D 0.00 [0.00, 0.00], SI-SNRi" in energy  # blind there too
    assert not any("different classifiers" in line for line in table)


def test_report_shows_ranks_and_marks_bounds(run_dir: Path) -> None:
    html = (run_dir / "report" / "index.html").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for metric in ("si_snri", "AD"):
        ranks = metric_ranks(metrics, metric)
        for name, rank in ranks.items():
            cell = re.search(rf'data-method="{name}".*?(<td data-key="{metric}"[^>]*>)', html)
            assert cell and f'data-rank="{rank}"' in cell.group(1), (name, metric)
            assert ("best" in cell.group(1)) == (rank == 1)
    energy = re.search(r'data-method="energy_conv2d".*?(<td data-key="si_snri"[^>]*>)', html)
    assert energy and "data-rank" not in energy.group(1)
    for bound in ("random", "ones"):
        assert f'<tr data-method="{bound}_conv2d" class="bound" data-bound="{bound}">' in html
    assert '<tr class="bound" data-bound="oracle">' in html
    assert '<tr data-method="saliency_conv2d">' in html  # compared methods are not bounds
    assert "td[data-rank]::after" in html  # the rank is drawn beside the value


def test_unknown_method_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["eval", str(tmp_path), "--data_folder", str(tmp_path),
                   "--methods", "saliency", "nope", "piq"])  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'nope'" in err and "'piq'" in err and "saliency" in err and "occlusion" in err
    with pytest.raises(ConfigError, match="gradcam"):
        EvalConfig(methods=("lmac",))
    assert EvalConfig().methods == ("random", "ones")


def test_rank_methods_orders_by_direction() -> None:
    rows = {
        "a": {"si_snri": 2.0, "AD": 0.5, "control": False, "bound": False},
        "b": {"si_snri": 5.0, "AD": 0.1, "control": False, "bound": False},
        "c": {"si_snri": None, "AD": 0.9, "control": False, "bound": False},
        "random": {"si_snri": -1.0, "AD": 0.7, "control": True, "bound": True},
        "energy": {"si_snri": 9.0, "AD": 0.0, "control": True, "bound": False},
        "d": {"si_snri": 5.0, "AD": float("nan"), "control": False, "bound": False},
    }
    ranking = rank_methods(rows)
    assert ranking["si_snri"] == ["b", "d", "a", "random"]  # higher first; ties keep order
    assert ranking["AD"] == ["b", "a", "random", "c"]  # lower first; NaN left out
    assert ranking["FF"] == []
    ranks = metric_ranks({"methods": rows, "ranking": ranking}, "si_snri")
    assert ranks == {"b": 1, "d": 1, "a": 3, "random": 4}


def test_classifier_id_tells_weights_apart() -> None:
    torch.manual_seed(0)
    config = ClassifierConfig(dim=4, lin_neurons=8)
    first, second = (build_classifier(config, ["a", "b"]) for _ in range(2))
    assert classifier_id(first) == classifier_id(first) != classifier_id(second)
    rows = {"x": {"classifier_id": classifier_id(first)},
            "y": {"classifier_id": classifier_id(second)}}  # fmt: skip
    table = format_table({"methods": rows, "oracle": {}, "ranking": {}})
    assert "rows explain 2 different classifiers" in table


def test_table_states_where_a_trained_method_is_below_a_baseline() -> None:
    def row(interpreter: str, si_snri: float, clf: str = "c1", **flags: bool) -> dict:
        flags = {"bound": False, "control": False, **flags}
        return {"interpreter": interpreter, "si_snri": si_snri, "classifier_id": clf, **flags}

    rows = {
        "piq_conv2d": row("piq", 1.0),
        "lmac_conv2d": row("lmac", 4.0),
        "gradcam_conv2d": row("gradcam", 2.0),
        "saliency_conv2d": row("saliency", -5.0),
        "energy_conv2d": row("energy", 9.0, control=True),
        "ones_conv2d": row("ones", 0.0, bound=True, control=True),
        "l2i_other": row("l2i", -1.0, clf="c2"),  # another classifier: not compared
    }
    assert baseline_shortfalls({"methods": rows}) == [
        "piq_conv2d is below the baseline gradcam_conv2d on si_snri: 1 vs 2"
    ]
    table = format_table({"methods": rows, "oracle": {}, "ranking": {}})
    assert (
        table.splitlines()[-1]
        == "piq_conv2d is below the baseline gradcam_conv2d on si_snri: 1 vs 2"
    )


def test_inference_parts_are_fast_copies_unless_gradients_are_needed() -> None:
    """Evaluation explains with fast copies (the same outputs); gradient methods keep theirs."""
    torch.manual_seed(1)
    classifier = build_classifier(ClassifierConfig(dim=8, lin_neurons=8), ["a", "b"]).eval()
    for norm in classifier.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.normal_()
    host = Method("piq_conv2d", classifier, build_interpreter("piq", {"n_keys": 4}, classifier),
                  Path("."), 1.0, "none", "conv2d")  # fmt: skip
    fast_classifier, fast_interpreter = inference_parts(host)
    assert fast_classifier is not classifier and fast_interpreter is not host.interpreter
    assert isinstance(fast_classifier.encoder.bn1, torch.nn.Identity)  # folded
    waveforms = torch.randn(2, 16000)
    plain = explain(classifier, host.interpreter, waveforms)
    fast = explain(fast_classifier, fast_interpreter, waveforms)
    logits = fast.classifier_out.logits, plain.classifier_out.logits
    torch.testing.assert_close(*logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.mask, plain.mask, rtol=1e-4, atol=1e-4)
    (saliency,) = build_methods(host, ["saliency"])
    assert inference_parts(saliency) == (classifier, saliency.interpreter)
