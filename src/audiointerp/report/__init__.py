"""Static HTML report of an evaluation run (``audiointerp report RUN_DIR``)."""

from audiointerp.report.html import build_report

__all__ = ["build_report"]
