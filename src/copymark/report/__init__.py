"""copymark.report: HTML/Markdown reports, image grids and plots.

- :mod:`copymark.report.tables`: the A/B/C tables as rows and as Markdown (``tables_markdown``).
- :mod:`copymark.report.grids`: labelled image grids, zoomed crops, visibility rows.
- :mod:`copymark.report.plots`: learning curve and metric bar charts as PNG bytes.
- :mod:`copymark.report.html`: ``write_report(run_dir)``, one self-contained HTML file.

Submodules are imported on use so that ``import copymark.report`` stays light.
"""
