"""Ranking the evaluated methods and the printed summary table.

``rank_methods`` gives ``metrics.json["ranking"]``; ``format_table`` is what ``audiointerp
eval`` prints: one row per method beside the oracle, every mean with the half-width of its
95 % bootstrap interval over clips or mixtures; the SI-SNRi ranking with "tied" where
intervals overlap; each method's sanity verdict with its reason; then the lines where a
trained method falls below an attribution baseline by more than the noise
(``baseline_shortfalls``, a paired bootstrap over the same mixtures).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from audiointerp.interpreters.registry import INTERPRETERS
from audiointerp.metrics.uncertainty import overlap, paired_difference_interval

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
# Printed columns of the two blocks: row key -> header; a key with an interval ("_ci")
# prints as mean +- half-width.
FAITHFULNESS_COLUMNS = {
    "classifier_id": "clf",
    "classifier_accuracy": "acc",
    "AI": "AI",
    "AD": "AD",
    "AG": "AG",
    "FF": "FF",
    "fid_in": "FidIn",
    "SPS": "SPS",
    "COMP": "COMP",
    "clips_per_s": "clips/s",
}
SEPARATION_COLUMNS = {
    "si_snri": "SI-SNRi",
    "si_snri_rank": "#SI-SNRi",
    "si_snri_oracle_fraction": "frac",
    "sanity_reproducibility": "R",
    "sanity_sensitivity": "D",
    "sanity_passed": "sanity",
}
CELL_WIDTH = 12
TINY = 1e-6  # smaller magnitudes are float noise around 0 in the table


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
    """{method: rank} on ``metric`` from ``result["ranking"]`` (1 = best). A method shares
    the rank of the one before it when they are tied: equal values, or 95 % intervals
    (``<metric>_ci``) that overlap."""
    order = result.get("ranking", {}).get(metric, [])
    rows = result["methods"]
    ranks: dict[str, int] = {}
    for position, name in enumerate(order):
        before = order[position - 1] if position else name
        tied = position and (
            rows[before][metric] == rows[name][metric]
            or overlap(
                rows[before].get(f"{metric}_ci") or (1, 0), rows[name].get(f"{metric}_ci") or (1, 0)
            )
        )
        ranks[name] = ranks[before] if tied else position + 1
    return ranks


def ranking_line(result: dict[str, Any], metric: str = "si_snri") -> str | None:
    """The ranking on ``metric`` as one line, tied methods in braces: "a > {b, c tied} > d"."""
    ranks = metric_ranks(result, metric)
    if not ranks:
        return None
    groups: dict[int, list[str]] = {}
    for name, rank in ranks.items():
        groups.setdefault(rank, []).append(name)
    parts = [g[0] if len(g) == 1 else "{" + ", ".join(g) + " tied}" for g in groups.values()]
    return f"{metric} ranking (tied: 95 % intervals overlap): " + " > ".join(parts)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(result: dict[str, Any]) -> str:
    """The printed summary: faithfulness, then separation and sanity, each mean +- the
    half-width of its 95 % interval; the SI-SNRi ranking with ties; each sanity verdict
    with its reason and the tier it came from; the significant baseline shortfalls.

    ``clf`` is the explained classifier's id; rows marked ``[bound]`` are the random and
    all-ones masks, which bound the compared methods from below and above.
    """
    ranks = metric_ranks(result, "si_snri")
    rows = result["methods"]
    labels = {name: f"{name} [bound]" if row.get("bound") else name for name, row in rows.items()}
    width = max(len(label) for label in labels.values()) + 2
    shared = {rank for rank in ranks.values() if list(ranks.values()).count(rank) > 1}
    rank_cells = {name: f"{rank}{'=' if rank in shared else ''}" for name, rank in ranks.items()}
    lines = []
    for columns in (FAITHFULNESS_COLUMNS, SEPARATION_COLUMNS):
        lines.append(_table_line("method", columns.values(), width))
        for name, row in rows.items():
            row = {**row, "si_snri_rank": rank_cells.get(name)}
            lines.append(_table_line(labels[name], [_row_cell(row, key) for key in columns], width))
        lines.append("")
    oracle = result["oracle"].get("si_snri")
    if oracle is not None:
        lines.append(
            f"oracle (ideal ratio mask) SI-SNRi {oracle:.2f} dB on "
            f"{result['oracle']['n_mixtures']} mixtures; the mixture itself: 0 dB"
        )
    ranking = ranking_line(result)
    if ranking:
        lines.append(ranking)
    lines += sanity_lines(result)
    ids = {row.get("classifier_id") for row in rows.values()}
    if len(ids) > 1:
        lines.append(
            f"rows explain {len(ids)} different classifiers (column clf): compare within one"
        )
    return "\n".join(lines + baseline_shortfalls(result)).strip("\n")


def sanity_lines(result: dict[str, Any]) -> list[str]:
    """The randomised classifier's accuracy beside chance, then one line per method: the
    verdict, its reason and where it was computed."""
    lines = []
    randomized = result.get("randomized_classifier")
    if randomized:
        source = randomized.get("source", "re-initialised")
        kind = (
            "f with every layer re-initialised"
            if source == "re-initialised"
            else f"trained on shuffled labels, {source}"
        )
        lines.append(
            f"sanity: the randomised classifier f~ ({kind}) is {randomized['accuracy']:.2f} "
            f"accurate (chance {randomized['chance']:.2f}); R = reproducibility, D = "
            "sensitivity to the model (module audiointerp.metrics.sanity)"
        )
    for name, row in result["methods"].items():
        if "sanity_reason" not in row:
            continue
        lines.append(f"  {name}: {sanity_summary(row)}")
    return lines


def sanity_summary(row: dict[str, Any]) -> str:
    """A method's sanity verdict, its reason, the diagnostics on its sanity mixtures (R and
    D of the masks, SI-SNRi on f and on f~: what a separating explainer does, which clean
    clips do not show) and its tier: "FAIL, blind to ...; on its mixtures R 1.00, D 0.00
    [0.00, 0.00], SI-SNRi -0.2 dB, -0.2 dB on f~ [eval]"."""
    verdict = {True: "pass", False: "FAIL", None: "not checked"}[row.get("sanity_passed")]
    mixtures = []
    r, d = row.get("sanity_mixtures_reproducibility"), row.get("sanity_mixtures_sensitivity")
    interval = row.get("sanity_mixtures_sensitivity_interval")
    if _is_number(r) and _is_number(d) and interval:
        mixtures.append(f"R {r:.2f}, D {d:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]")
    before, after = row.get("sanity_si_snri"), row.get("sanity_si_snri_randomized")
    if _is_number(before) and _is_number(after):
        mixtures.append(f"SI-SNRi {before:.1f} dB, {after:.1f} dB on f~")
    separation = f"; on its mixtures {', '.join(mixtures)}" if mixtures else ""
    return f"{verdict}, {row['sanity_reason']}{separation} [{row.get('sanity_tier')}]"


def _table_line(label: str, cells: Iterable[str], width: int) -> str:
    """``label`` left-aligned in ``width``, then each cell right-aligned in its column."""
    return label.ljust(width) + "".join(" " + cell.rjust(CELL_WIDTH - 1) for cell in cells)


def _row_cell(row: dict[str, Any], key: str) -> str:
    """A printed value; a mean with an interval (``<key>_ci``) as mean+-half-width."""
    value, interval = row.get(key), row.get(f"{key}_ci")
    if key == "sanity_sensitivity":
        interval = row.get("sanity_sensitivity_interval")
    if _is_number(value) and interval and all(_is_number(v) for v in interval):
        value, half = (_round_off(v) for v in (value, (interval[1] - interval[0]) / 2))
        return f"{value:.3g}\u00b1{half:.2g}"
    return _table_cell(value)


def _round_off(value: float) -> float:
    """Float noise (|value| < 1e-6, e.g. the all-ones mask's SI-SNRi) printed as 0."""
    return 0.0 if abs(value) < TINY else value


def _table_cell(value: Any) -> str:
    """A printed value: the sanity verdict as pass/FAIL, floats to 3 digits, None as -."""
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{_round_off(value):.3g}"
    if isinstance(value, str):
        return value
    return "-"


def baseline_shortfalls(result: dict[str, Any], metric: str = "si_snri") -> list[str]:
    """One line per (trained method, attribution baseline) pair of the same classifier
    where the trained method scores lower on ``metric`` by more than the noise: the 95 %
    paired bootstrap interval of the per-mixture difference lies below 0 (rows without
    per-item values, ``<metric>_per_mixture``, compare their means). The comparison users
    ask for ("does training an interpreter beat a gradient map?"), stated where it fails."""
    rows = {
        name: row
        for name, row in result["methods"].items()
        if not row.get("bound") and not row.get("control") and isinstance(row.get(metric), float)
    }
    trained = {
        n: r for n, r in rows.items() if INTERPRETERS[r["interpreter"]].capabilities.needs_training
    }
    baselines = {n: r for n, r in rows.items() if n not in trained}
    lines = []
    for name, row in trained.items():
        for other, base in baselines.items():
            if row.get("classifier_id") != base.get("classifier_id") or row[metric] >= base[metric]:
                continue
            items = row.get(f"{metric}_per_mixture"), base.get(f"{metric}_per_mixture")
            scores = f"{row[metric]:.3g} vs {base[metric]:.3g}"
            line = f"{name} is below the baseline {other} on {metric}: {scores}"
            if items[0] and items[1] and len(items[0]) == len(items[1]):
                low, high = paired_difference_interval(*items)
                if high >= 0.0:
                    continue  # within the noise
                line += (
                    f" (difference {row[metric] - base[metric]:.3g}, 95 % [{low:.3g}, {high:.3g}])"
                )
            lines.append(line)
    return lines
