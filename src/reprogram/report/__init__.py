"""Interpretability reports for finished runs: ``explain(run_dirs, out_dir)`` writes an HTML page.

* :mod:`reprogram.report.attribution`: the computation (per-description and per-prompt
  contributions, shares, what drove a prediction), shared with ``reprogram predict``.
* :mod:`reprogram.report.plots`: matplotlib figures (Agg).
* :mod:`reprogram.report.html`: the page builders (inline CSS, no external resources).
* :mod:`reprogram.report.explain`: the report itself; :mod:`reprogram.report.cli` the command.
"""

from __future__ import annotations


def explain(*args, **kwargs):
    """See :func:`reprogram.report.explain.explain` (imported lazily: it pulls in matplotlib)."""
    from reprogram.report.explain import explain as _explain

    return _explain(*args, **kwargs)


__all__ = ["explain"]
