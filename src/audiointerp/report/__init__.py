"""Static HTML report of an evaluation run (``audiointerp report RUN_DIR``):
:func:`audiointerp.report.html.build_report`; pictures in :mod:`audiointerp.report.figures`.

Nothing is imported here, so the pictures load without the evaluation.
"""
