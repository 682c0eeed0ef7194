"""Interpretability reports for finished runs: ``explain(run_dirs, out_dir)`` writes an HTML page.

* :mod:`reprogram.report.load`: a run read once (results, history, model, test images, and its
  attribution by :mod:`reprogram.model.attribution`, the maths shared with ``reprogram predict``).
* :mod:`reprogram.report.sections`: one module per section, each ``compute_x(data)`` (the numbers,
  as a dataclass) and ``render_x(view, out)`` (figures, tables, prose).
* :mod:`reprogram.report.plots`: matplotlib figures (Agg).
* :mod:`reprogram.report.html`: the page builders (inline CSS, no external resources).
* :mod:`reprogram.report.explain`: the page assembled; :mod:`reprogram.cli.report` the command.
"""

from __future__ import annotations


def explain(*args, **kwargs):
    """See :func:`reprogram.report.explain.explain` (imported lazily: it pulls in matplotlib)."""
    from reprogram.report.explain import explain as _explain

    return _explain(*args, **kwargs)


__all__ = ["explain"]
