"""One evaluation for every model folder: faithfulness, mixtures, sanity check, speed.

Writes ``metrics.json``, ``metrics.csv`` and ``examples/`` (audio and mask arrays of a few
examples per method, read by :mod:`audiointerp.report`) into the output folder. One module
a job: ``methods`` (what is compared), ``table`` (the ranking and the printed table),
``files`` (what is written) and ``run``, which measures every method on the test clips and
mixtures and hands the rows to the other two.
"""

from audiointerp.evaluation.files import (
    CSV_COLUMNS,
    EXAMPLES_DIR,
    EXAMPLES_INDEX,
    METRICS_CSV,
    METRICS_JSON,
    SANITY_MASKS,
)
from audiointerp.evaluation.methods import BOUND_METHODS, EvalConfig, SanityRuns, classifier_id
from audiointerp.evaluation.run import evaluate
from audiointerp.evaluation.table import (
    METRIC_DIRECTIONS,
    baseline_shortfalls,
    format_table,
    metric_ranks,
    rank_methods,
    sanity_summary,
)

__all__ = [
    "BOUND_METHODS",
    "CSV_COLUMNS",
    "EXAMPLES_DIR",
    "EXAMPLES_INDEX",
    "METRICS_CSV",
    "METRICS_JSON",
    "METRIC_DIRECTIONS",
    "SANITY_MASKS",
    "EvalConfig",
    "SanityRuns",
    "baseline_shortfalls",
    "classifier_id",
    "evaluate",
    "format_table",
    "metric_ranks",
    "rank_methods",
    "sanity_summary",
]
