"""Ranking the evaluated methods and the printed summary table.

``rank_methods`` gives ``metrics.json["ranking"]``; ``format_table`` is what ``audiointerp
eval`` prints: one row per method beside the oracle, then the lines where a trained method
falls below an attribution baseline (``baseline_shortfalls``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from audiointerp.interpreters.registry import INTERPRETERS

# Ranked metrics: True when higher is better.
METRIC_DIRECTIONS = {
    "AI": True,
    "AD": False,
    "AG": True,
    "FF": True,
    "fid_in": True,
    "SPS": True,
    "COMP": False,
    "si_snri": True,
    "si_snri_oracle_fraction": True,
    "clips_per_s": True,
}
# Printed columns: row key -> header.
TABLE_COLUMNS = {
    "classifier_id": "clf",
    "classifier_accuracy": "acc",
    "AI": "AI",
    "AD": "AD",
    "AG": "AG",
    "FF": "FF",
    "fid_in": "FidIn",
    "SPS": "SPS",
    "COMP": "COMP",
    "si_snri": "SI-SNRi",
    "si_snri_rank": "#SI-SNRi",
    "oracle_si_snri": "oracle",
    "si_snri_oracle_fraction": "frac",
    "sanity_passed": "sanity",
    "clips_per_s": "clips/s",
}
CELL_WIDTH = 9


def rank_methods(rows: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per metric of :data:`METRIC_DIRECTIONS`, method names best first.

    Ranked: every method except the controls, plus the controls shown as bounds
    (``random``, ``ones``); rows without a finite value are left out; ties keep table order.
    """
    ranked = {name: row for name, row in rows.items() if row.get("bound") or not row.get("control")}
    ranking = {}
    for metric, higher in METRIC_DIRECTIONS.items():
        scored = [
            (float(row[metric]), name)
            for name, row in ranked.items()
            if _is_number(row.get(metric)) and math.isfinite(row[metric])
        ]
        scored.sort(key=lambda item: -item[0] if higher else item[0])
        ranking[metric] = [name for _, name in scored]
    return ranking


def metric_ranks(result: dict[str, Any], metric: str) -> dict[str, int]:
    """{method: rank} on ``metric`` from ``result["ranking"]`` (1 = best; ties share a rank)."""
    order = result.get("ranking", {}).get(metric, [])
    ranks: dict[str, int] = {}
    for position, name in enumerate(order):
        before = order[position - 1] if position else name
        tied = position and result["methods"][before][metric] == result["methods"][name][metric]
        ranks[name] = ranks[before] if tied else position + 1
    return ranks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(result: dict[str, Any]) -> str:
    """The printed summary: each method beside the oracle's SI-SNRi, with its SI-SNRi rank.

    ``clf`` is the explained classifier's id; rows marked ``[bound]`` are the random and
    all-ones masks, which bound the compared methods from below and above.
    """
    ranks = metric_ranks(result, "si_snri")
    labels = {
        name: f"{name} [bound]" if row.get("bound") else name
        for name, row in result["methods"].items()
    }
    width = max(len(label) for label in labels.values()) + 2
    lines = [_table_line("method", TABLE_COLUMNS.values(), width)]
    for name, row in result["methods"].items():
        row = {**row, "si_snri_rank": ranks.get(name)}
        cells = [_table_cell(row.get(key)) for key in TABLE_COLUMNS]
        lines.append(_table_line(labels[name], cells, width))
    oracle = result["oracle"].get("si_snri")
    if oracle is not None:
        lines.append(
            f"oracle (ideal ratio mask) SI-SNRi {oracle:.2f} dB on "
            f"{result['oracle']['n_mixtures']} mixtures; the mixture itself: 0 dB"
        )
    ids = {row.get("classifier_id") for row in result["methods"].values()}
    if len(ids) > 1:
        lines.append(
            f"rows explain {len(ids)} different classifiers (column clf): compare within one"
        )
    return "\n".join(lines + baseline_shortfalls(result))


def _table_line(label: str, cells: Iterable[str], width: int) -> str:
    """``label`` left-aligned in ``width``, then each cell right-aligned in its column."""
    return label.ljust(width) + "".join(cell.rjust(CELL_WIDTH) for cell in cells)


def _table_cell(value: Any) -> str:
    """A printed value: the sanity verdict as pass/FLAGGED, floats to 3 digits, None as -."""
    if isinstance(value, bool):
        return "pass" if value else "FLAGGED"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value
    return "-"


def baseline_shortfalls(result: dict[str, Any], metric: str = "si_snri") -> list[str]:
    """One line per (trained method, attribution baseline) pair of the same classifier
    where the trained method scores lower on ``metric``: the comparison users ask for
    ("does training an interpreter beat a gradient map?"), stated where it fails."""
    rows = {
        name: row
        for name, row in result["methods"].items()
        if not row.get("bound") and not row.get("control") and isinstance(row.get(metric), float)
    }
    trained = {
        n: r for n, r in rows.items() if INTERPRETERS[r["interpreter"]].capabilities.needs_training
    }
    baselines = {n: r for n, r in rows.items() if n not in trained}
    return [
        f"{name} is below the baseline {other} on {metric}: {row[metric]:.3g} vs {base[metric]:.3g}"
        for name, row in trained.items()
        for other, base in baselines.items()
        if row.get("classifier_id") == base.get("classifier_id") and row[metric] < base[metric]
    ]
