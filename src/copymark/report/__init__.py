"""copymark.report: HTML/Markdown reports, image grids and plots.

- :mod:`copymark.report.tables`: the A/B/C tables as rows and as Markdown (``tables_markdown``).
- :mod:`copymark.report.grids`: labelled image grids, zoomed crops, visibility rows.
- :mod:`copymark.report.plots`: learning curve, metric bar charts and the verification's
  sequential-test trace as PNG bytes.
- :mod:`copymark.report.html`: ``write_report(run_dir)``, one self-contained HTML file of an
  extraction run.
- :mod:`copymark.report.ownership_runs`: protect and verify run folders and the ownership kit,
  read as files (this package sits below :mod:`copymark.watermark`); the visibility panels.
- :mod:`copymark.report.ownership`: ``write_protect_report`` / ``write_verify_report``, the
  ownership report of a protected model and its verifications.

Submodules are imported on use so that ``import copymark.report`` stays light.
"""
