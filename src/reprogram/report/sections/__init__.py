"""The sections of a run's report: each ``compute_x(data) -> dataclass`` (the numbers, testable
without HTML) and ``render_x(view, out) -> html`` (figures, tables and prose)."""
