"""A self-contained static HTML report of an evaluation run (no network needed to view it).

Reads ``metrics.json`` and ``examples/`` written by :func:`audiointerp.evaluation.evaluate`
and writes ``report/``: ``index.html`` (summary table; per method a few examples with the
input, the explanation and the removed part as audio players beside their spectrograms
and the mask; and its sanity figure, :func:`~audiointerp.report.figures.sanity_png`),
``audio/`` (WAV copies) and ``img/`` (PNGs). The folder is built beside the
target and swapped in, so a re-run replaces it entirely (no stale files).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audiointerp.evaluation import (
    EXAMPLES_DIR,
    EXAMPLES_INDEX,
    METRIC_DIRECTIONS,
    METRICS_JSON,
    SANITY_MASKS,
    metric_ranks,
    sanity_summary,
)
from audiointerp.io import replace_folder
from audiointerp.report.figures import explanation_pngs, sanity_png

REPORT_DIR = "report"
SUMMARY_COLUMNS = {
    "classifier_accuracy": "accuracy",
    "AI": "AI ↑",
    "AD": "AD ↓",
    "AG": "AG ↑",
    "FF": "FF ↑",
    "fid_in": "Fid-In ↑",
    "SPS": "SPS ↑",
    "COMP": "COMP ↓",
    "si_snri": "SI-SNRi (dB) ↑",
    "oracle_si_snri": "oracle SI-SNRi (dB)",
    "si_snri_oracle_fraction": "fraction of oracle",
    "sanity_passed": "sanity check",
    "sanity_reproducibility": "R (reproducibility)",
    "sanity_sensitivity": "D (model sensitivity)",
    "sanity_reused_correlation": "rank corr., decoder reused on f~ (diagnostic)",
    "sanity_empirt_ratio": "eMPRT ratio (diagnostic)",
    "clips_per_s": "clips/s",
}
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.5em; text-align: right; }
th[scope=row] { text-align: left; }
td.flagged { background: #fdd; } td.passed { background: #dfd; }
td[data-rank] { white-space: nowrap; }
td[data-rank]::after { content: " " attr(data-rank); font-size: 0.7em; vertical-align: super;
  color: #666; }
td.best { font-weight: bold; } td.best::after { color: #070; }
tr.bound { background: #eef; font-style: italic; }
caption { caption-side: bottom; text-align: left; font-size: 0.85em; padding-top: 0.3em; }
.example { border-top: 1px solid #ccc; margin-top: 1em; }
.panels { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; } figcaption { font-weight: bold; margin-bottom: 0.2em; }
audio { display: block; width: 340px; } img { display: block; width: 340px; }
"""


def _format(value: Any, interval: Any = None) -> tuple[str, str, str]:
    """(text, data-value, css class) of one table cell; a mean with its 95 % interval as
    mean ± half-width."""
    if isinstance(value, bool):
        return (
            ("pass" if value else "FAIL"),
            str(value).lower(),
            ("passed" if value else "flagged"),
        )
    if isinstance(value, (int, float)):
        text = f"{value:.4g}"
        if isinstance(interval, list) and all(isinstance(v, (int, float)) for v in interval):
            text += f" ± {(interval[1] - interval[0]) / 2:.2g}"
        return text, repr(float(value)), ""
    return "–", "", ""


def summary_table(metrics: dict[str, Any]) -> str:
    """The summary table: one row per method, then the oracle and the mixture itself.

    Each ranked metric's cell carries the method's rank (``data-rank``, drawn as a
    superscript; rank 1 in bold); bound rows (random and all-ones masks, the oracle, the
    mixture) have class ``bound``; the ``classifier`` column names the explained classifier.
    """
    head = "".join(f"<th>{escape(label)}</th>" for label in SUMMARY_COLUMNS.values())
    ranks = {metric: metric_ranks(metrics, metric) for metric in METRIC_DIRECTIONS}
    rows = []
    for name, row in metrics["methods"].items():
        cells = [f'<td class="classifier">{escape(str(row.get("classifier_id", "–")))}</td>']
        for key in SUMMARY_COLUMNS:
            interval = row.get(f"{key}_ci", row.get(f"{key}_interval"))
            text, value, css = _format(row.get(key), interval)
            attrs = f' data-key="{key}" data-value="{escape(value)}"'
            rank = ranks.get(key, {}).get(name)
            if rank is not None:
                attrs += f' data-rank="{rank}"'
                css = f"{css} best".strip() if rank == 1 else css
            cells.append(f'<td{attrs} class="{css}">{escape(text)}</td>')
        kind = escape(str(row.get("interpreter", "")))
        bound = f' class="bound" data-bound="{kind}"' if row.get("bound") else ""
        rows.append(
            f'<tr data-method="{escape(name)}"{bound}>'
            f'<th scope="row"><a href="#m-{escape(name)}">{escape(name)}</a></th>'
            f"{''.join(cells)}</tr>"
        )
    oracle = metrics.get("oracle", {})
    bounds = []
    for label, key, value in (
        ("oracle (ideal ratio mask)", "oracle", oracle.get("si_snri")),
        ("mixture itself", "mixture", metrics.get("mixture", {}).get("si_snri")),
    ):
        text, data, _ = _format(value)
        cells = ["<td></td>"] + [
            f'<td data-key="si_snri" data-value="{escape(data)}">{escape(text)}</td>'
            if column == "si_snri"
            else "<td></td>"
            for column in SUMMARY_COLUMNS
        ]
        bounds.append(
            f'<tr class="bound" data-bound="{key}"><th scope="row">{escape(label)}</th>'
            f"{''.join(cells)}</tr>"
        )
    caption = (
        "Superscripts: rank among the compared methods and the random / all-ones bounds "
        "(1 = best, in bold; the energy control is not ranked). Shaded rows are bounds. "
        "Rows on different classifiers (column classifier) are not comparable."
    )
    return (
        f'<table id="summary"><caption>{escape(caption)}</caption><thead><tr><th>method</th>'
        f"<th>classifier</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}{''.join(bounds)}</tbody></table>"
    )


def _figure(caption: str, audio: str | None, image: str | None, alt: str) -> str:
    parts = [f"<figure><figcaption>{escape(caption)}</figcaption>"]
    if audio:
        parts.append(f'<audio controls preload="auto" src="{escape(audio)}"></audio>')
    if image:
        parts.append(f'<img src="{escape(image)}" alt="{escape(alt)}">')
    return "".join(parts) + "</figure>"


def _render_example(entry: dict[str, Any], examples_dir: Path, staging: Path, key: str) -> str:
    """Copy one example's audio, draw its pictures, return its HTML section."""
    source = examples_dir / entry["folder"]
    files = entry["files"]
    (staging / "audio" / key).mkdir(parents=True, exist_ok=True)
    audio = {}
    for name, filename in files.items():
        shutil.copyfile(source / filename, staging / "audio" / key / filename)
        audio[name] = f"audio/{key}/{filename}"
    mask = np.load(source / entry["mask"]).astype(np.float32)  # (T, F)
    magnitude = np.load(source / entry["magnitude"]).astype(np.float32)
    rate = int(entry["sample_rate"])
    seconds = sf.info(str(source / files["input"])).frames / rate
    pictures = explanation_pngs(magnitude, mask, entry["mask_domain"], seconds, rate / 2000.0)
    images = {}
    for name, png in pictures.items():
        images[name] = f"img/{key}_{name}.png"
        (staging / images[name]).write_bytes(png)
    panels = [
        _figure("input", audio["input"], images["input"], "input spectrogram"),
        _figure(
            "explanation (mask-in)",
            audio["explanation"],
            images["explanation"],
            "explanation spectrogram",
        ),
        _figure(
            "removed part (mask-out)",
            audio["removed"],
            images["removed"],
            "removed-part spectrogram",
        ),
        _figure("mask", None, images["mask"], "mask"),
    ]
    for index, label in enumerate(entry.get("source_labels", [])):
        name = "source_a" if index == 0 else "source_b"
        panels.append(_figure(f"true source: {label}", audio[name], None, ""))
    heading = (
        f"{entry['kind']} {entry['id']} — true: {entry['label']}; predicted: "
        f"{entry['predicted']} (p = {entry['probability']:.3f})"
    )
    return (
        f'<section class="example" data-kind="{escape(entry["kind"])}">'
        f"<h3>{escape(heading)}</h3>"
        f'<div class="panels">{"".join(panels)}</div></section>'
    )


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of ``run_dir`` (default into ``run_dir/report``); returns index.html.

    Raises:
        FileNotFoundError: ``run_dir`` has no metrics.json (run ``audiointerp eval`` first).
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_JSON
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: no metrics; run `audiointerp eval` first")
    metrics = json.loads(metrics_path.read_text())
    examples_dir = run_dir / EXAMPLES_DIR
    index_path = examples_dir / EXAMPLES_INDEX
    examples = json.loads(index_path.read_text()) if index_path.is_file() else {}
    out = Path(out) if out is not None else run_dir / REPORT_DIR
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "img").mkdir()
        (staging / "audio").mkdir()
        sections = []
        for name in metrics["methods"]:
            entries = examples.get(name, [])
            rendered = [
                _render_example(entry, examples_dir, staging, f"{name}_{i}")
                for i, entry in enumerate(tqdm(entries, desc=f"report {name}", disable=None))
            ]
            sanity = _render_sanity(name, metrics, examples_dir, staging)
            sections.append(
                f'<section class="method" id="m-{escape(name)}"><h2>{escape(name)}</h2>'
                f"{sanity}{''.join(rendered) or '<p>no saved examples</p>'}</section>"
            )
        page = _page(metrics, summary_table(metrics), "".join(sections))
        (staging / "index.html").write_text(page, encoding="utf-8")
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "index.html"


def _render_sanity(name: str, metrics: dict[str, Any], examples_dir: Path, staging: Path) -> str:
    """The sanity figure of one method (masks under f, f with another seed, f~; R and C
    per clip) and its verdict with the reason, if the evaluation saved its masks."""
    path = examples_dir / name / SANITY_MASKS
    row = metrics["methods"][name]
    if not path.is_file() or "sanity_reason" not in row:
        return ""
    text = f"Sanity check: {sanity_summary(row)}"
    with np.load(path) as arrays:
        masks = {key: arrays[key].astype(np.float32) for key in arrays.files}
    seconds, rate = float(masks.pop("seconds")), float(masks.pop("sample_rate"))
    low, high = row.get("sanity_cutoffs") or (0.5, 0.3)
    r, c = row.get("sanity_R") or [], row.get("sanity_C") or []
    png = sanity_png(masks, r, c, (low, high), text, seconds, rate / 2000)
    image = f"img/{name}_sanity.png"
    (staging / image).write_bytes(png)
    return (
        f'<figure class="sanity"><img src="{escape(image)}" alt="{escape(text)}">'
        f"<figcaption>{escape(text)}</figcaption></figure>"
    )


def _page(metrics: dict[str, Any], table: str, sections: str) -> str:
    flagged = [n for n, row in metrics["methods"].items() if row.get("sanity_passed") is False]
    notes = (
        "AI, AD, AG, FF and Fid-In compare the classifier on the input, on the explanation "
        "(mask-in) and on the removed part (mask-out); SPS and COMP describe the mask. "
        "SI-SNRi: explanation of each source's class in two-class mixtures against that "
        "source, beside the ideal-ratio-mask oracle. ± : half the 95 % bootstrap interval "
        "over clips or mixtures. Sanity check: each method is applied to f and to f~, the "
        "same classifier with every layer re-initialised (a trained explainer is trained "
        "again on f~, and once more on f with another seed); R = rank correlation of the "
        "masks of two runs on f, C = of the runs on f and f~, D = R - C. A method passes "
        "if mean R >= 0.5 and D's 95 % interval lies above 0.3 (our cut-offs); each "
        "method's section shows why."
    )
    formulas = "reference-compatible" if metrics.get("reference_compatible") else "corrected"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>audiointerp evaluation report</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>audiointerp evaluation report</h1>"
        f"<p>Data: {escape(str(metrics.get('data_folder', '')))}, test folds "
        f"{escape(str(metrics.get('test_folds', '')))}; mixtures: "
        f"{escape(str(metrics.get('mixtures', '')))}; metric formulas: {formulas}.</p>"
        f"<h2>Summary</h2>{table}<p>{escape(notes)}</p>"
        f"<p>Failing the sanity check: {escape(', '.join(flagged) or 'none')}.</p>"
        f"{sections}</body></html>\n"
    )
